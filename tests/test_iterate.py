"""The one driver of the iterative solvers (``jaxsae.iterate``), on a solver with a closed form.

Newton's iteration for ``√a`` (``y ← (y + a/y)/2``) converges quadratically from any
``y0 > 0``; the number of steps to a relative error of 1e-15 is known by counting,
and ``y0 = 0`` makes the next iterate infinite (``a/0``), so every outcome of the
driver — success, budget exhausted, non-finite, ``throw`` — has a number to check.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae


class Sqrt(jaxsae.AbstractIterativeSolver):
    tol: float = 1e-15

    def init(self, y, args):
        return jnp.zeros((), jnp.int32)  # state: steps taken by this solver itself

    def step(self, y, state, args):
        return 0.5 * (y + args / y), state + 1

    def terminate(self, y, state, args):
        return jnp.abs(y * y - args) <= self.tol * args, jaxsae.RESULTS.successful


def _newton_steps(a, y0, tol=1e-15):
    """Steps Newton needs from ``y0``, counted in NumPy float64 (independent of the driver)."""
    y, k = np.float64(y0), 0
    while abs(y * y - a) > tol * a:
        y, k = 0.5 * (y + a / y), k + 1
    return y, k


@pytest.mark.parametrize("loop", [jaxsae.Compiled(), jaxsae.Host()])
def test_converges_to_the_closed_form_in_the_counted_steps(loop):
    y_np, k_np = _newton_steps(2.0, 10.0)
    sol = jaxsae.iterate(Sqrt(), jnp.asarray(10.0), jnp.asarray(2.0), max_steps=50, loop=loop)
    assert sol.result == jaxsae.RESULTS.successful
    assert int(sol.num_steps) == k_np == int(sol.state)
    np.testing.assert_allclose(float(sol.value), np.sqrt(2.0), rtol=1e-15)
    assert float(sol.value) == y_np


@pytest.mark.parametrize("loop", [jaxsae.Compiled(), jaxsae.Host()])
def test_budget_and_nonfinite_iterates(loop):
    _, k_np = _newton_steps(2.0, 10.0)
    short = jaxsae.iterate(
        Sqrt(), jnp.asarray(10.0), jnp.asarray(2.0), max_steps=k_np - 1, loop=loop
    )
    assert short.result == jaxsae.RESULTS.max_steps_reached and int(short.num_steps) == k_np - 1
    # from 0 the first step is (0 + 2/0)/2 = inf: the driver stops there and says so
    bad = jaxsae.iterate(Sqrt(), jnp.asarray(0.0), jnp.asarray(2.0), max_steps=50, loop=loop)
    assert bad.result == jaxsae.RESULTS.nonfinite and int(bad.num_steps) == 1
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(
            jaxsae.iterate(Sqrt(), jnp.asarray(0.0), jnp.asarray(2.0), max_steps=50, loop=loop,
                           throw=True).value
        )  # fmt: skip


def test_resume_hook_jit_and_vmap():
    a = jnp.asarray([2.0, 3.0, 5.0])
    seen = []
    full = jaxsae.iterate(Sqrt(), jnp.asarray(10.0), a[0], max_steps=50, loop=jaxsae.Host(),
                          on_step=lambda k, y, s: seen.append((k, float(y))))  # fmt: skip
    assert [k for k, _ in seen] == list(range(1, int(full.num_steps) + 1))
    # resuming from the state after 2 steps repeats no step and ends at the same iterate
    y2 = seen[1][1]
    resumed = jaxsae.iterate(Sqrt(), jnp.asarray(y2), a[0], max_steps=50, state=jnp.asarray(2),
                             steps_done=2)  # fmt: skip
    assert int(resumed.num_steps) == int(full.num_steps) and float(resumed.value) == float(
        full.value
    )
    # the compiled loop under jit and vmap: one program, every run its own step count
    run = eqx.filter_jit(
        jax.vmap(lambda x: jaxsae.iterate(Sqrt(), jnp.asarray(10.0), x, max_steps=50))
    )
    sols = run(a)
    for i, ai in enumerate(np.asarray(a)):
        y_np, k_np = _newton_steps(float(ai), 10.0)
        assert int(sols.num_steps[i]) == k_np
        np.testing.assert_allclose(float(sols.value[i]), np.sqrt(ai), rtol=1e-15)
    with pytest.raises(ValueError, match="on_step needs loop=Host"):
        jaxsae.iterate(Sqrt(), jnp.asarray(1.0), a[0], max_steps=5, on_step=print)
