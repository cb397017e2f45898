"""One driver for every iterative solver, in the shape of Optimistix.

A solver is a Module with three methods:

- ``init(y, args) -> state``: the solver's state at the starting iterate ``y``;
- ``step(y, state, args) -> (y, state)``: one iteration;
- ``terminate(y, state, args) -> (done, result)``: whether to stop, and with which
  ``RESULTS`` (``successful``, or a failure such as ``nonfinite``).

``iterate`` owns everything around the iterations, once for all solvers: the
step budget (``RESULTS.max_steps_reached`` when it runs out before ``done``), the
non-finite test on every iterate (``RESULTS.nonfinite``), ``throw=``, and the
``on_step`` hook (history, progress bars, checkpoints). *How* it loops is a
strategy: ``Compiled`` runs ``lax.while_loop`` (jit, vmap, no host round trip),
``Host`` a Python loop whose steps may stream data or call the hook. Solvers use
the same strategies for their own inner loops (a line search), so one step is
written once whether its data is resident or streamed.

To add a solver: subclass ``AbstractIterativeSolver``, give it named fields for its
settings, and call ``iterate(solver, y0, args, max_steps=...)``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._results import RESULTS


class AbstractIterativeSolver(eqx.Module):
    """``init / step / terminate``; run by ``iterate``."""

    @abc.abstractmethod
    def init(self, y, args) -> Any: ...

    @abc.abstractmethod
    def step(self, y, state, args) -> tuple[Any, Any]: ...

    @abc.abstractmethod
    def terminate(self, y, state, args) -> tuple[jax.Array, RESULTS]: ...


def _checked(solver, y, state, args, finite):
    """``(done, result)``: the solver's test, and ``nonfinite`` when ``finite`` is False."""
    done, result = solver.terminate(y, state, args)
    return done | ~finite, RESULTS.where(finite, result, RESULTS.nonfinite)


class AbstractLoop(eqx.Module):
    """Where a loop runs. ``while_loop(cond, body, carry)`` has ``lax.while_loop``'s
    contract (a solver's inner loops, e.g. a line search); ``run`` is ``iterate``'s loop.
    ``on_host``: whether the body runs in Python (so it may call the host)."""

    on_host: ClassVar[bool]

    @abc.abstractmethod
    def while_loop(self, cond: Callable, body: Callable, carry): ...

    @abc.abstractmethod
    def run(self, solver, y, state, args, k, max_steps, on_step): ...


class Compiled(AbstractLoop):
    """``lax.while_loop``: the loop is part of the compiled program (jit and vmap work)."""

    on_host: ClassVar[bool] = False

    def while_loop(self, cond, body, carry):
        return jax.lax.while_loop(cond, body, carry)

    def run(self, solver, y, state, args, k, max_steps, on_step):
        del on_step

        def cond(carry):
            return ~carry[3] & (carry[2] < max_steps)

        def body(carry):
            y, state, k, _, _ = carry
            y, state = solver.step(y, state, args)
            return y, state, k + 1, *_checked(solver, y, state, args, all_finite(y))

        done, result = solver.terminate(y, state, args)
        carry = (y, state, jnp.asarray(k, jnp.int32), done, result)
        return jax.lax.while_loop(cond, body, carry)


class Host(AbstractLoop):
    """A Python loop: each step may run passes over streamed data or call host hooks.
    The step count stays a Python int; the stopping test is fetched once per step (the
    finite check is compiled per iterate shape, not per solver)."""

    on_host: ClassVar[bool] = True

    def while_loop(self, cond, body, carry):
        while bool(cond(carry)):
            carry = body(carry)
        return carry

    def run(self, solver, y, state, args, k, max_steps, on_step):
        k = int(k)
        done, result = solver.terminate(y, state, args)
        while not bool(done) and k < max_steps:
            y, state = solver.step(y, state, args)
            k += 1
            done, result = _checked(solver, y, state, args, _all_finite_jit(y))
            if on_step is not None:
                on_step(k, y, state)
        return y, state, jnp.asarray(k, jnp.int32), done, result


class Solution(eqx.Module):
    """What ``iterate`` returns: the last iterate, the solver's state, why it stopped."""

    value: Any
    state: Any
    result: RESULTS
    num_steps: jax.Array


def all_finite(tree) -> jax.Array:
    """Whether every inexact array leaf of ``tree`` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def iterate(
    solver: AbstractIterativeSolver,
    y0,
    args,
    *,
    max_steps: int | jax.Array,
    loop: AbstractLoop | None = None,
    state=None,
    steps_done: int | jax.Array = 0,
    on_step: Callable | None = None,
    throw: bool = False,
) -> Solution:
    """Run ``solver`` from ``y0`` until it terminates or ``max_steps`` steps are done.

    Args:
        solver: an ``AbstractIterativeSolver``.
        y0, args: the starting iterate and the problem's data (passed to every method).
        max_steps: the step budget (counted from zero, including ``steps_done``).
        loop: ``Compiled()`` (the default, ``None``) or ``Host()``.
        state: resume from this solver state instead of ``solver.init(y0, args)``.
        steps_done: steps already taken before ``state`` (a resumed run).
        on_step: ``on_step(k, y, state)`` after step ``k`` (1-based); ``Host`` only.
        throw: raise (``eqx.error_if``) unless the result is ``successful``.
    """
    loop = Compiled() if loop is None else loop
    if on_step is not None and not loop.on_host:
        raise ValueError("on_step needs loop=Host(): a compiled loop cannot call the host.")
    state = solver.init(y0, args) if state is None else state
    y, state, k, done, result = loop.run(solver, y0, state, args, steps_done, max_steps, on_step)
    result = RESULTS.where(done, result, RESULTS.max_steps_reached)
    if throw:
        y = result.error_if(y, result != RESULTS.successful)
    return Solution(value=y, state=state, result=result, num_steps=k)


_all_finite_jit = eqx.filter_jit(all_finite)
