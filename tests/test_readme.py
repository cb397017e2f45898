"""The README's Python example runs and its assertions hold."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_readme_python_example_runs(capsys):
    blocks = python_blocks()
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    gap = float(re.search(r"max duality gap: (\S+)", out).group(1))
    kkt = float(re.search(r"max KKT residual: (\S+)", out).group(1))
    assert 0 <= gap < 1e-12
    assert 0 <= kkt < 1e-10


def test_readme_solver_example_runs():
    """The "add a solver" example converges to √2 in the 5 Newton steps counted by hand
    (1 → 1.5 → 1.41667 → 1.4142157 → 1.41421356237469 → 1.414213562373095)."""
    import jax.numpy as jnp

    import jaxsae

    (block,) = [b for b in python_blocks() if "AbstractIterativeSolver" in b]
    namespace: dict = {"jnp": jnp, "jaxsae": jaxsae}
    exec(compile(block, "README.md", "exec"), namespace)
    sol = namespace["sol"]
    assert int(sol.num_steps) == 5 and bool(sol.result == jaxsae.RESULTS.successful)
    assert abs(float(sol.value) - 2**0.5) <= 4e-16
