"""Test configuration: float64 on, strict dtype promotion, a key fixture."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
os.environ.setdefault("MPLBACKEND", "Agg")

import itertools

import equinox as eqx
import jax
import jaxtyping
import numpy as np
import pytest
from jaxtyping import install_import_hook

# jaxtyping shapes are checked by beartype in the test run: every annotated function of
# jaxsae imported below (and by the test modules, which import it after this) is wrapped.
with install_import_hook("jaxsae", "beartype.beartype"):
    import jaxsae  # noqa: F401

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def getkey():
    """Hand out fresh PRNG keys: ``key = getkey()``."""
    counter = itertools.count()
    base = jax.random.key(0)
    return lambda: jax.random.fold_in(base, next(counter))


@pytest.fixture
def traces(monkeypatch):
    """Count the traces of jitted functions with ``eqx.debug.assert_max_traces``.

    ``watch(module, name)`` re-jits ``module.name`` (an ``eqx.filter_jit`` function)
    around equinox's trace counter; ``count()`` is the number of traces so far. A
    second call with the same shapes and new values (λ, tolerances) must add none.
    """
    counted = []

    def watch(module, name):
        raw = getattr(module, name).__wrapped__
        counted.append(eqx.debug.assert_max_traces(raw, max_traces=None))
        monkeypatch.setattr(module, name, eqx.filter_jit(counted[-1]))

    def count():
        return sum(eqx.debug.get_num_traces(f) for f in counted)

    return watch, count


@pytest.fixture
def unchecked():
    """Turn the beartype/jaxtyping checks off for a test of jaxsae's own input errors:
    users run without them and must see jaxsae's one-line ``ValueError``, which a
    shape check at the call boundary would pre-empt."""
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture
def data_file(tmp_path):
    """300 sparse combinations of 4 unit atoms in R⁶ plus a little noise, as ``x.npy``
    (the CLI tests' training data)."""
    rng = np.random.default_rng(0)
    atoms = rng.standard_normal((4, 6))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    Z = rng.uniform(0, 1, (300, 4)) * (rng.uniform(size=(300, 4)) < 0.3)
    np.save(tmp_path / "x.npy", Z @ atoms + 0.01 * rng.standard_normal((300, 6)))
    return tmp_path / "x.npy"
