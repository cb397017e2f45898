"""Certified nonnegative sparse coding: ``sparse_code`` (THEORY §1).

For a fixed dictionary each code solves ``min_{z ≥ 0} ½‖y − Dz‖² + λ1ᵀz`` with
``y = x − b``. A round on a batch of points runs

1. Gauss–Seidel block coordinate descent on the Gram form
   ``½zᵀGz − (Dᵀy − λ)ᵀz`` (``_bcd``; float32 for float64 problems), which
   converges from anywhere and identifies supports in few passes, then
2. an exact active-set polish on the support plus the strongest violators
   (``_active_set``), accepted per point only when it lowers the duality gap.

The first round covers every point (PDAS in float32, one exact solve in the
working dtype); later rounds revisit only uncertified points, in small gathered
batches, with a monotone primal active set in the working dtype. Every point
stops on the duality gap of THEORY §1 (computed without cancellation in the
data space), never on an iteration count.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Float, Int, Real

from .._sharding import place_on, resolve_data_mesh
from .._typing import ArrayLike
from .._validate import as_float_array, check_data, check_lam, is_concrete
from ..models._dictionary import Dictionary
from ..models._sae_dictionary import as_dictionary
from ._bcd import block_lipschitz
from ._coder import CoderSettings, _Problem, _solve_chunk
from ._homotopy import homotopy as jax_homotopy
from ._implicit import implicit_codes
from ._lars_ffi import available as path_available, lars
from ._results import RESULTS


class CodeSolution(eqx.Module):
    """Codes and their certificate (THEORY §1).

    Attributes:
        codes: ``(N, K)`` nonnegative codes ``Z``.
        gap: ``(N,)`` duality gap per point: an upper bound on ``P(z_n) − P*``
            (per point; the gap of the mean objective L is ``gap.mean()``).
        kkt: ``(N,)`` ``max_k |min(z_kn, λ − g_kn)| / λ``.
        converged: ``(N,)`` whether the point met ``gap ≤ tol · ½‖x_n − b‖²`` with a
            finite gap (never True for a NaN or infinite gap).
        steps: ``(N,)`` number of rounds (FISTA block + polish) the point used.
        result: ``RESULTS.successful`` when every point converged.
    """

    codes: Float[Array, "N K"]
    gap: Float[Array, " N"]
    kkt: Float[Array, " N"]
    converged: Array
    steps: Int[Array, " N"]
    result: RESULTS


def default_tol(dtype) -> float:
    """Relative duality-gap tolerance by dtype: 1e-12 (float64), 1e-5 (float32)."""
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-5


def _chunked(fn, Yc, Z0, chunk_size):
    N = Yc.shape[0]
    if chunk_size is None or chunk_size >= N:
        return fn(Yc, Z0)
    n_chunks = -(-N // chunk_size)
    pad = n_chunks * chunk_size - N
    Yp = jnp.pad(Yc, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, -1)
    Zp = jnp.pad(Z0, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, -1)
    out = jax.lax.map(lambda args: fn(*args), (Yp, Zp))
    return jax.tree.map(lambda a: a.reshape(n_chunks * chunk_size, *a.shape[2:])[:N], out)


def _solve_points(atoms, bias, mask, lam, X, Z0, *, tol, max_steps, cfg, chunk_size, cold, path):
    """Certified codes for the points ``X`` on one device (all of them, or its shard)."""
    Yc = X - bias
    G = jnp.where(mask[:, None] & mask[None, :], atoms @ atoms.T, 0)
    P = _Problem(atoms=atoms, mask=mask, lam=lam, G=G, Ls=block_lipschitz(G, cfg.block), cfg=cfg)

    def solve(Yc, Z0):
        return _solve_chunk(P, Yc, Z0, tol, max_steps, cold, path)

    return _chunked(solve, Yc, Z0, chunk_size)


def _data_parallel(solve, mesh: Mesh, atoms, bias, mask, lam, X, Z0):
    """``solve`` on every device of ``mesh``'s ``"data"`` axis, each on its share of points.

    The lasso is separable over points, so the natural parallelism is over them:
    ``shard_map`` gathers the (small) dictionary whole on every device (an atom-
    sharded one is all-gathered once, on entry) and each device runs the solver's
    loops on its own points, with no collective inside them. Under plain GSPMD the
    loops' bodies would hold collectives (top-k, nonzero, gathers over a sharded
    axis), whose rendezvous on 8 simulated CPU devices never completed.
    Points are padded to a multiple of the device count with ``x = b`` (``y = 0``),
    which the zero start already certifies.
    """
    N, pad = X.shape[0], -X.shape[0] % mesh.shape["data"]
    Xp = jnp.concatenate([X, jnp.broadcast_to(bias, (pad, X.shape[1]))])
    Z0p = jnp.pad(Z0, ((0, pad), (0, 0)))
    rep, rows = PartitionSpec(), PartitionSpec("data")
    fn = jax.shard_map(
        solve, mesh=mesh, in_specs=(rep, rep, rep, rep, rows, rows), out_specs=rows, check_vma=False
    )
    return tuple(a[:N] for a in fn(atoms, bias, mask, lam, Xp, Z0p))


def _power_of_two_scale(Y):
    """``2^e ≈ max|Y|`` (1 for zero data): dividing by it is exact, so the rescaled
    problem is the same problem, with every square far from over- and underflow."""
    top = jnp.max(jnp.abs(Y))
    _, e = jnp.frexp(jnp.where((top > 0) & jnp.isfinite(top), top, 1))
    return jnp.ldexp(jnp.ones((), Y.dtype), e)


@eqx.filter_jit
def _sparse_code(dictionary, X, lam, init, tol, max_steps, cfg, chunk_size, mesh, path):
    atoms, mask, bias = dictionary.atoms, dictionary.mask, dictionary.bias
    cold = init is None
    Z0 = jnp.zeros((X.shape[0], atoms.shape[0]), X.dtype) if cold else init
    kw = dict(tol=tol, max_steps=max_steps, cfg=cfg, chunk_size=chunk_size, cold=cold, path=path)
    solve = functools.partial(_solve_points, **kw)
    # z(y, λ) = c·z(y/c, λ/c): solve at unit scale, report in the data's units (the
    # gap scales by c², the KKT residual is scale-free).
    c = _power_of_two_scale(X - bias)
    # the solver is not differentiated: implicit_codes below gives the derivative
    args = jax.lax.stop_gradient((atoms, bias / c, mask, lam / c, X / c, Z0 / c))
    if mesh is None:
        Z, gap, kkt, conv, steps = solve(*args)
    else:
        Z, gap, kkt, conv, steps = _data_parallel(solve, mesh, *args)
    Z, gap = Z * c, gap * (c * c)
    conv = conv & jnp.isfinite(gap)  # never "converged" with a gap that is not a number
    # Differentiable view of the solution: implicit differentiation on the active set.
    cap_implicit = cfg.wide_cap(*atoms.shape)
    Z = implicit_codes(Z, atoms, dictionary.bias, mask, X, lam, cap_implicit)
    finite = jnp.all(jnp.isfinite(gap))
    result = RESULTS.where(
        finite,
        RESULTS.where(jnp.all(conv), RESULTS.successful, RESULTS.max_steps_reached),
        RESULTS.nonfinite,
    )
    return CodeSolution(codes=Z, gap=gap, kkt=kkt, converged=conv, steps=steps, result=result)


def _check_scale(X, dictionary) -> None:
    """Refuse data whose squared norms overflow the dtype: its gap cannot be represented."""
    if not (is_concrete(X) and is_concrete(dictionary.bias)):
        return
    with jax.ensure_compile_time_eval():  # values known under an outer jit: look at them
        top = float(jnp.max(jnp.abs(X - dictionary.bias)))
    big = float(jnp.finfo(X.dtype).max)
    if top * top * X.shape[1] > big / 16:
        raise ValueError(
            f"the data's scale (max |x − b| = {top:.3g}) squares beyond {X.dtype}'s range "
            f"({big:.3g}): duality gaps cannot be represented. Rescale the data (e.g. "
            "X / X.std(), with λ scaled alike) or use float64."
        )


def sparse_code(
    dictionary: Dictionary | Real[ArrayLike, "K d"],
    X: Real[ArrayLike, "N d"],
    lam,
    *,
    tol: float | ArrayLike | None = None,
    max_steps: int = 100,
    init: Real[ArrayLike, "N K"] | None = None,
    chunk_size: int | None = None,
    support_cap: int | None = None,
    sweeps: int = 6,
    mesh: Mesh | None | bool = None,
    homotopy: bool | None = None,
    throw: bool = False,
) -> CodeSolution:
    """Optimal nonnegative codes with a duality-gap certificate (THEORY §1).

    Solves, for every point, ``min_{z ≥ 0} ½‖x_n − b − D z‖² + λ 1ᵀz`` and stops
    when the duality gap ``P(z_n) − Q(u_n)`` (dual point ``u = s·r``, §1) is at
    most ``tol · ½‖x_n − b‖²`` — a certificate, not an iteration count.
    Masked atoms get zero codes. The codes are differentiable with respect to
    the atoms, the bias, the data and λ by implicit differentiation on the
    active set (``G_SS ż_S = Ḋ_Sᵀ r + D_Sᵀ(ẏ − Ḋ z) − λ̇ 1``).

    Method (per round): block coordinate descent on the Gram form identifies
    the supports (in float32 for float64 problems), a primal–dual active-set
    iteration on the support plus the strongest violators makes them exact, and
    the codes are solved once more on the final support in the working dtype.
    Polished codes are kept only where they lower the gap. The first round
    covers every point; later rounds revisit only the uncertified points.

    Args:
        dictionary: the dictionary ``(D, b, mask)``.
        X: data ``(N, d)``.
        lam: λ > 0 (a scalar; may be a traced array, so ``vmap`` over λ works).
        tol: relative gap tolerance; default 1e-12 in float64, 1e-5 in float32 (a
            value, not a shape: changing it never recompiles; may be traced).
        max_steps: maximum number of rounds (the first on all points, later
            ones on up to ``max(64, ceil(N/64))`` uncertified points each).
        init: warm-start codes ``(N, K)`` (clipped at 0); points whose warm
            start is already certified take no round at all.
        chunk_size: solve this many points at a time (bounded memory for large N).
        support_cap: candidate-set size of the first round's exact polish
            (default ``min(K, d, 40)``; later rounds use
            ``min(K, max(2·cap, min(d, 128) + 16))``). A unique solution has ``|S| ≤ d``.
        sweeps: block-coordinate sweeps per round before the polish.
        mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis to split the points
            over (each device codes its share against the whole dictionary, which
            is gathered if it arrives split by atom, e.g. from ``shard_atoms``).
            Default ``None``: the devices the inputs already live on, or all
            devices, when there are several (inside a trace, only the former);
            ``False``: one device. The codes equal the one-device run.
        homotopy: solve every point by the exact nonnegative LARS path (default):
            the compiled CPU kernel ``solvers/_lars.cc`` where it is built, else the
            same path in pure JAX (``solvers/_homotopy.py``; GPU/TPU); block
            coordinate descent and active-set rounds then only finish the points it
            leaves uncertified. ``False``: those rounds only.
        throw: raise if not every point converged.

    Returns:
        A ``CodeSolution`` (codes, per-point ``gap``, ``kkt``, ``converged``,
        ``steps``, ``result``).

    Example:
        >>> sol = jaxsae.sparse_code(D, X, 0.1)
        >>> float(sol.gap.max())   # certified sub-optimality of the worst point
    """
    dictionary = as_dictionary(dictionary, X, fn="jaxsae.sparse_code")
    X = check_data(X, dictionary.n_features, dictionary.dtype)
    lam = check_lam(lam, dictionary.dtype)
    N, K = X.shape[0], dictionary.n_atoms
    if init is not None:
        init = as_float_array(init, "init").astype(dictionary.dtype)
        if init.shape != (N, K):
            raise ValueError(f"init must have shape (N, K) = ({N}, {K}), got {tuple(init.shape)}.")
    if max_steps < 1:
        raise ValueError(f"max_steps must be ≥ 1, got {max_steps}.")
    if sweeps < 1:
        raise ValueError(f"sweeps must be ≥ 1, got {sweeps}.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    tol = jnp.asarray(default_tol(dictionary.dtype) if tol is None else tol, dictionary.dtype)
    if is_concrete(tol) and not float(tol) > 0:  # an array: new values never recompile
        raise ValueError(f"tol must be > 0, got {float(tol)}.")
    cap = min(K, dictionary.n_features, 40) if support_cap is None else min(int(support_cap), K)
    if cap < 1:
        raise ValueError(f"support_cap must be ≥ 1, got {support_cap}.")
    cfg = CoderSettings(sweeps=int(sweeps), cap=cap)
    mesh = resolve_data_mesh(mesh, dictionary, X, lam, init)
    if mesh is not None and mesh.devices.size == 1:
        mesh = None
    _check_scale(X, dictionary)
    # the homotopy: the compiled kernel where it is built (CPU), else the same path in JAX
    path = None if homotopy is False else lars if path_available() else jax_homotopy
    dictionary, (X, init) = place_on(mesh, dictionary, (X, init))
    sol = _sparse_code(
        dictionary,
        X,
        lam,
        init,
        tol,
        int(max_steps),
        cfg,
        None if chunk_size is None or chunk_size >= N else int(chunk_size),  # one program
        mesh,
        path,
    )
    if throw:
        sol = eqx.tree_at(
            lambda s: s.codes, sol, sol.result.error_if(sol.codes, sol.result != RESULTS.successful)
        )
    return sol


def codes_first(fn, dictionary_of=None):
    """The chunk statistic ``fn`` of a ``jaxsae._streaming.Pass`` (arguments ``(chunks, w,
    start, first, lam, ...)``) with the chunk's lasso codes appended to ``chunks`` first.

    The codes are solved by ``sparse_code``'s own program (on streamed chunks: one
    compilation per chunk shape, shared by every pass that codes this dictionary), so
    ``fn``'s program holds no solver. The dictionary is ``first``, or
    ``dictionary_of(first)``. Build it once, at import: a resident pass compiles per ``fn``."""

    def solved_then(chunks, w, start, first, lam, *rest):
        D = first if dictionary_of is None else dictionary_of(first)
        return fn((*chunks, sparse_code(D, chunks[0], lam).codes), w, start, first, lam, *rest)

    return solved_then
