"""What the dictionary learners share: settings, results, the starting point, the finish.

``learn_dictionary`` (resident data) and ``_dl_stream`` (streamed data) both build
a :class:`LearnerConfig`, start from :func:`initial_point` and end in :func:`finish`.
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..models._dictionary import Dictionary
from ..solvers._lasso import default_tol
from ._dl_manifold import stack
from ._dl_policy import AbstractDeadAtomPolicy, ReseedDead


class LearningResult(eqx.Enumeration):
    """Outcome of ``learn_dictionary`` (``throw=True`` turns failures into errors)."""

    successful = ""
    max_steps_reached = (
        "learn_dictionary stopped at max_steps before the first-order tolerance was met. "
        "Raise max_steps or loosen tol; history.grad_norm shows the progress."
    )
    stalled = (
        "learn_dictionary stopped improving before the tolerance was met: the line search "
        "failed twice, or F stayed flat to rounding while the first-order measures stopped "
        "halving for 30 steps (the rounding floor, typical of float32). Use float64, or loosen tol."
    )


class DictionaryHistory(eqx.Module):
    """Per-iteration record of ``learn_dictionary``.

    Attributes:
        objective: ``(T,)`` the objective L at each iterate (THEORY §0, per-point mean);
            in phase 0 at the approximate codes (an upper bound on F), in phase 1
            at certified codes (F itself).
        grad_norm: ``(T,)`` ``max_k`` Riemannian gradient norm of F (atoms and bias rows).
        alignment: ``(T,)`` ``max_k ‖d_k − c_k/(λ‖z_k‖₁)‖``, the error in (A).
        time: ``(T,)`` seconds since the start (compilation included).
        phase: ``(T,)`` 0 = alternating warm-up, 1 = Riemannian L-BFGS polishing.
        codes: ``(N, K)`` the certified codes at the returned dictionary; an empty
            ``(0, K)`` array for streamed data (N × K would not fit in memory).
        converged: whether both first-order measures met ``tol``.
        result: a ``LearningResult``.
    """

    objective: Float[Array, " T"]
    grad_norm: Float[Array, " T"]
    alignment: Float[Array, " T"]
    time: Float[Array, " T"]
    phase: Array
    codes: Float[Array, "N K"]
    converged: Array
    result: LearningResult


def default_learning_tol(dtype) -> float:
    """First-order tolerance by dtype: 1e-10 (float64), 1e-4 (float32)."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def data_init(X, n_atoms: int, *, key, bias=None):
    """``n_atoms`` distinct random data points (centred by ``bias``), normalised.

    The points are the first ``n_atoms`` of one random permutation, so a narrower
    initialisation with the same key is a prefix of a wider one (what makes a
    masked width inside ``sweep`` equal a separate run of that width).
    """
    Y = X if bias is None else X - bias
    return unit_rows(Y[init_rows(key, Y.shape[0], n_atoms)], Y.shape[0], key=key)


@functools.partial(jax.jit, static_argnames=("n_points", "n_atoms"))  # one program, not ten ops
def init_rows(key, n_points: int, n_atoms: int):
    """Which points become the initial atoms: a prefix of one random permutation."""
    return jnp.resize(jax.random.permutation(key, n_points), (n_atoms,))


@functools.partial(jax.jit, static_argnames=("n_points",))
def unit_rows(rows, n_points: int, *, key):
    """The chosen (centred) points as unit atoms: repeats beyond ``n_points`` jittered,
    zero rows replaced by ``e_0``."""
    n_atoms = rows.shape[0]
    if n_atoms > n_points:  # more atoms than points: jitter the repeats
        noise = jax.random.normal(jax.random.fold_in(key, 1), rows.shape, rows.dtype)
        rows = rows + 1e-3 * jnp.where((jnp.arange(n_atoms) >= n_points)[:, None], noise, 0)
    norms = jnp.linalg.norm(rows, axis=1, keepdims=True)
    fallback = jnp.zeros_like(rows).at[:, 0].set(1)
    return jnp.where(norms > 0, rows / jnp.where(norms > 0, norms, 1), fallback)


class LearnerConfig(eqx.Module):
    """The dictionary learner's settings, named (``LearnerConfig.make`` checks them).

    ``warm_steps`` alternating steps (``inner_steps`` FISTA steps on the codes each),
    then at most ``max_steps`` Riemannian L-BFGS steps with ``memory`` pairs, until
    both first-order measures are ``≤ tol``; codes are solved to a duality gap of
    ``code_tol`` (``max_code_steps`` rounds) and the Armijo search tries
    ``max_backtracks`` halvings. ``policy`` handles dead atoms; ``free_bias`` learns b.
    """

    max_steps: int
    warm_steps: int
    tol: float
    memory: int
    policy: AbstractDeadAtomPolicy
    free_bias: bool
    code_tol: float
    inner_steps: int = 10
    max_code_steps: int = 200
    max_backtracks: int = 30

    @classmethod
    def make(cls, dtype, *, max_steps, warm_steps, tol, memory, dead_atoms, bias, code_tol,
             inner_steps=10) -> LearnerConfig:  # fmt: skip
        """The settings with defaults filled in for ``dtype``; bad values are refused."""
        if max_steps < 0 or warm_steps < 0:
            raise ValueError(
                f"max_steps and warm_steps must be ≥ 0, got {max_steps}, {warm_steps}."
            )
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be ≥ 1, got {inner_steps}.")
        if memory < 1:
            raise ValueError(f"memory (L-BFGS pairs) must be ≥ 1, got {memory}.")
        if dead_atoms is None:
            dead_atoms = ReseedDead()
        if not isinstance(dead_atoms, AbstractDeadAtomPolicy):
            raise ValueError(
                "dead_atoms must be a policy object such as jaxsae.ReseedDead() or "
                f"jaxsae.KeepDead(), got {type(dead_atoms).__name__}."
            )
        tol = default_learning_tol(dtype) if tol is None else float(tol)
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}.")
        f64 = jnp.dtype(dtype) == jnp.float64
        code_tol = (1e-14 if f64 else default_tol(dtype)) if code_tol is None else float(code_tol)
        return cls(
            int(max_steps), int(warm_steps), tol, int(memory), dead_atoms, bool(bias), code_tol,
            int(inner_steps),
        )  # fmt: skip

    def settings(self) -> dict:
        """The settings as a dict (what a checkpoint's fingerprint hashes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def initial_point(X, n_atoms, init, bias: bool, *, key):
    """``(P, mask)`` from ``init`` (``"data"`` or a ``Dictionary``)."""
    d = X.shape[1]
    if isinstance(init, Dictionary):
        if init.n_atoms != n_atoms or init.n_features != d:
            raise ValueError(
                f"init has {init.n_atoms} atoms of dimension {init.n_features}, but n_atoms={n_atoms} "
                f"and X has {d} features. Pass a matching Dictionary or init='data'."
            )
        init = init.astype(X.dtype)
        b = init.bias if bias else jnp.zeros((d,), X.dtype)
        return stack(init.atoms, b), init.mask
    if not (isinstance(init, str) and init == "data"):
        raise ValueError(f"init must be 'data' or a jaxsae.Dictionary, got {init!r}.")
    if int(n_atoms) < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms}.")
    b = jnp.mean(X, axis=0) if bias else jnp.zeros((d,), X.dtype)
    atoms = data_init(X, int(n_atoms), key=key, bias=b)
    return stack(atoms, b), jnp.ones((int(n_atoms),), bool)


def finish(state, hist, mask, bias: bool, throw: bool):
    converged = state.done & ~state.stalled
    result = LearningResult.where(
        converged,
        LearningResult.successful,
        LearningResult.where(
            state.stalled, LearningResult.stalled, LearningResult.max_steps_reached
        ),
    )
    D = Dictionary(state.P[:-1], state.P[-1], mask, free_bias=bias)
    history = DictionaryHistory(
        objective=jnp.asarray(hist["objective"]),
        grad_norm=jnp.asarray(hist["grad_norm"]),
        alignment=jnp.asarray(hist["alignment"]),
        time=jnp.asarray(hist["time"]),
        phase=jnp.asarray(hist["phase"]),
        codes=jnp.where(mask, state.codes, 0),
        converged=converged,
        result=result,
    )
    if throw:
        D = eqx.tree_at(
            lambda D: D.atoms, D, result.error_if(D.atoms, result != LearningResult.successful)
        )
    return D, history
