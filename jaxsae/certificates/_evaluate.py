"""``evaluate``: every standard measurement of THEORY §7b in one streamed pass.

The metrics of ``models._metrics`` and ``phenomena.dark_matter_r2`` need the
whole data in memory. Here the data comes as an array, a ``numpy.memmap`` or an
iterable of chunks (a ``jaxsae._streaming.Streamed`` pass: fixed shape, last chunk
padded, memmap pages released), and each chunk contributes sufficient statistics:

- small sums and counts, accumulated on the host in float64 / int64:
  ``Σ‖x − x̂‖²``, ``Σ‖x̂‖²``, ``Σ⟨x, x̂⟩``, ``Σ ‖x̂‖/‖x‖``, nonzero codes per
  latent, and with λ the objective and duality gaps;
- centred moments of ``x`` and ``e = x − x̂`` for the variance and the dark-matter
  fit, merged on the device without cancellation (``_moments``).

Memory is ``O(chunk_size · (d + K) + d²)``, independent of N.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._streaming import DEFAULT_CHUNK, Streamed, is_streamable, resolve_mesh
from .._validate import check_lam
from ..models._dictionary import Dictionary
from ..models._sae import SAE
from ..models._sae_dictionary import sae_dictionary
from ..solvers._kkt import point_gap
from ..solvers._lasso import codes_first
from ._moments import chunk_moments, merge_moments, moments_float64, r2_from_moments


class Evaluation(eqx.Module):
    """The measurements of THEORY §7b on a whole dataset, from one streamed pass.

    ``E`` is the mean over the N points, ``x̂`` the reconstruction, ``e = x − x̂``.

    Attributes:
        n_points: N.
        explained_variance: ``1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²)`` (§7b; SAELens ≥ 6.45.1).
        fvu: ``1 − explained_variance``.
        mse: ``E‖x − x̂‖²`` (summed over features, mean over points).
        l0: mean number of nonzero codes per point.
        shrinkage: ``γ = E‖x̂‖² / E⟨x, x̂⟩`` (< 1: reconstructions shrink).
        norm_ratio: ``E[‖x̂‖/‖x‖]`` over the points with ``x ≠ 0``.
        firing_rate: ``(K,)`` fraction of points on which latent k is nonzero.
        dead: ``(K,)`` latents nonzero on no point (masked atoms included).
        dense: ``(K,)`` latents with ``firing_rate > dense_threshold``.
        dark_matter_r2: ``R² = 1 − Σ‖e − ê‖² / Σ‖e − ē‖²`` of the least-squares fit
            ``ê = W x + c`` (Engels et al. 2024; (R) predicts part of it). Input
            directions with variance below ``d·ε·(largest variance)`` are dropped, as
            ``lstsq``'s cutoff does; NaN when ``e`` is constant.
        objective: with λ, ``L = E[½‖x − b − D z‖² + λ 1ᵀz]`` (§0) in the dictionary's
            scale (an SAE's folded dictionary and codes); else None.
        code_gap: with λ, the mean duality gap of the codes (§1): an upper bound on
            ``L − min_Z L``; code_gap_max: the worst point's. Else None.
        lam, dense_threshold: what the numbers were measured with.
    """

    n_points: int
    explained_variance: Float[Array, ""]
    fvu: Float[Array, ""]
    mse: Float[Array, ""]
    l0: Float[Array, ""]
    shrinkage: Float[Array, ""]
    norm_ratio: Float[Array, ""]
    firing_rate: Float[Array, " K"]
    dead: Bool[Array, " K"]
    dense: Bool[Array, " K"]
    dark_matter_r2: Float[Array, ""]
    objective: Float[Array, ""] | None
    code_gap: Float[Array, ""] | None
    code_gap_max: Float[Array, ""] | None
    lam: Float[Array, ""] | None
    dense_threshold: float

    def summary(self) -> dict[str, float]:
        """Scalar numbers as Python floats (counts for the per-latent masks)."""
        out = {"n_points": float(self.n_points)}
        for name in ("explained_variance", "fvu", "mse", "l0", "shrinkage", "norm_ratio"):
            out[name] = float(getattr(self, name))
        out["dark_matter_r2"] = float(self.dark_matter_r2)
        out["n_latents"] = float(np.size(self.dead))
        out["n_dead"] = float(np.sum(np.asarray(self.dead)))
        out["n_dense"] = float(np.sum(np.asarray(self.dense)))
        for name in ("lam", "objective", "code_gap", "code_gap_max"):
            if getattr(self, name) is not None:
                out[name] = float(getattr(self, name))
        return out

    def table(self) -> str:
        """A plain-text table of the measurements."""
        s = self.summary()
        rows = [
            ("points", f"{self.n_points}"),
            ("explained variance", f"{s['explained_variance']:.6g}"),
            ("FVU", f"{s['fvu']:.6g}"),
            ("MSE  E‖x − x̂‖²", f"{s['mse']:.6g}"),
            ("L0", f"{s['l0']:.6g}"),
            ("shrinkage  E‖x̂‖²/E⟨x,x̂⟩", f"{s['shrinkage']:.6g}"),
            ("norm ratio  E[‖x̂‖/‖x‖]", f"{s['norm_ratio']:.6g}"),
            ("dark-matter R²", f"{s['dark_matter_r2']:.6g}"),
            ("dead latents", f"{int(s['n_dead'])} / {int(s['n_latents'])}"),
            (f"dense latents (> {self.dense_threshold:g})", f"{int(s['n_dense'])}"),
        ]
        if self.objective is not None:
            rows += [
                (f"objective L (λ = {s['lam']:g})", f"{s['objective']:.10g}"),
                ("code duality gap mean / max", f"{s['code_gap']:.3g} / {s['code_gap_max']:.3g}"),
            ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class _SAECodes(eqx.Module):
    """An SAE's own codes and reconstruction; with λ also its folded dictionary (§0)."""

    sae: SAE
    folded: Dictionary | None

    def codes(self, chunks, lam):
        """``(Z, Z in the folded dictionary's scale or None)``."""
        Z = jax.vmap(self.sae.encode)(chunks[0])
        if self.folded is None:
            return Z, None
        return Z, jnp.where(self.folded.mask, Z * self.sae.decoder_norms(), 0)

    def reconstruct(self, Z):
        return jax.vmap(self.sae.decode)(Z)


class _DictionaryCodes(eqx.Module):
    """A dictionary's certified lasso codes at λ (``sparse_code``, §1), read beside the data
    (``chunks`` is ``(Xc, Zc)``: given, or solved per chunk by ``_solved_then_chunk``)."""

    folded: Dictionary

    def codes(self, chunks, lam):
        Z = jnp.where(self.folded.mask, chunks[1], 0)
        return Z, Z

    def reconstruct(self, Z):
        return self.folded.bias + Z @ self.folded.atoms


@eqx.filter_jit
def _chunk(chunks, w, start, view, lam):
    """One chunk's centred moments, small sums and counts, and its number of points."""
    del start
    Xc, D = chunks[0], view.folded
    Z, Zd = view.codes(chunks, lam)
    X_hat = view.reconstruct(Z)
    valid = w > 0
    E = Xc - X_hat
    e_sq = jnp.sum(E * E, axis=1)
    xn, hn = jnp.linalg.norm(Xc, axis=1), jnp.linalg.norm(X_hat, axis=1)
    pos = valid & (xn > 0)
    on = (Z != 0) & valid[:, None]
    small = {
        "err": w @ e_sq, "hat_sq": w @ (hn * hn), "cross": w @ jnp.sum(Xc * X_hat, axis=1),
        "ratio": jnp.sum(jnp.where(pos, hn / jnp.where(pos, xn, 1), 0)),
        "n_pos": jnp.sum(pos, dtype=jnp.int32),
        "nnz": jnp.sum(on, dtype=jnp.int32), "fire": jnp.sum(on, axis=0, dtype=jnp.int32),
    }  # fmt: skip
    if Zd is not None:
        gap, _ = point_gap(Zd, E @ D.atoms.T, e_sq, lam, D.mask)
        small["obj"] = w @ (0.5 * e_sq + lam * jnp.sum(Zd, axis=1))
        small["gap"] = w @ gap
        small["gap_max"] = jnp.max(jnp.where(valid, gap, -jnp.inf))
    return (chunk_moments(Xc, E, w), small, jnp.sum(valid, dtype=jnp.int32)), ()


_solved_then_chunk = codes_first(_chunk, lambda view: view.folded)  # a dictionary's codes


def _merge(a, b):
    """Host ``combine``: moments by the pairwise update (device), small sums in float64 /
    int64 on the host (no overflow or float32 drift at large N), counts as Python ints."""
    (ma, sa, na), (mb, sb, nb) = a, b
    na, nb = int(na), int(nb)
    dtype = ma.mx.dtype
    f, wb = np.asarray(na * nb / (na + nb), dtype), np.asarray(nb / (na + nb), dtype)
    return merge_moments(ma, mb, f, wb), _add_small(_add_small(None, sa), sb), na + nb


def _add_small(acc: dict | None, part: dict) -> dict:
    """Running host sums: float64, int64 counts (no overflow at large N), max of gaps."""
    part = {k: np.asarray(v, np.int64 if k in _INTS else np.float64) for k, v in part.items()}
    if acc is None:
        return part
    return {k: np.maximum(acc[k], v) if k == "gap_max" else acc[k] + v for k, v in part.items()}


_INTS = ("n_pos", "nnz", "fire")


def _view(model, lam):
    """``(view, d, dtype)`` of the model being evaluated; a wrong kind is one clear error."""
    if isinstance(model, SAE):
        folded = sae_dictionary(model) if lam is not None else None
        return _SAECodes(model, folded), model.d_in, model.dtype
    if isinstance(model, Dictionary):
        if lam is None:
            raise ValueError(
                "evaluating a Dictionary needs lam: its codes are the certified lasso codes "
                "at λ (jaxsae.sparse_code). Pass evaluate(dictionary, X, lam=0.1)."
            )
        return _DictionaryCodes(model), model.n_features, model.dtype
    raise ValueError(
        f"model must be a jaxsae.SAE or a jaxsae.Dictionary, got {type(model).__name__}."
    )


def evaluate(
    model: SAE | Dictionary,
    X,
    *,
    lam=None,
    chunk_size: int = DEFAULT_CHUNK,
    mesh=None,
    progress: bool = False,
    dense_threshold: float = 0.1,
    codes=None,
) -> Evaluation:
    """All measurements of THEORY §7b over data that need not fit in memory.

    One pass; the numbers equal ``explained_variance``, ``fvu``, ``l0``,
    ``shrinkage``, ``firing_rate``, ``dead_latents``, ``dense_latents`` and
    ``dark_matter_r2`` on the whole arrays (see :class:`Evaluation` for each
    definition), while memory stays bounded by ``chunk_size``.

    Args:
        model: a ``jaxsae.SAE`` (codes: its encoder ``f``, reconstruction
            ``decode(encode(x))``) or a ``jaxsae.Dictionary`` (codes: the certified
            nonnegative-lasso codes of ``jaxsae.sparse_code`` at ``lam``, §1).
        X: data ``(N, d)``: an array, a ``numpy.memmap``, a list of ``(n_i, d)``
            chunks or an iterator of them (re-chunked to ``chunk_size``). Cast to
            the model's dtype.
        lam: λ > 0. Required for a Dictionary; for an SAE, optional: then the
            objective (§0) and the duality gaps (§1) of its folded codes are
            reported in its folded dictionary (``sae_dictionary``).
        chunk_size: points per chunk; peak memory grows with it, not with N.
        mesh: a 1-d ``"data"`` mesh to shard chunks over (default: all devices when
            there are several; ``False``: the default device only).
        progress: show a progress bar.
        dense_threshold: firing rate above which a latent counts as dense (§7b).
        codes: a Dictionary only: its codes at ``lam`` solved already (e.g.
            ``sparse_code(D, X, lam).codes``; same kinds as ``X``), read beside ``X``
            instead of solved again. The gaps reported are those of these codes.

    Returns:
        An :class:`Evaluation` (its ``table()`` prints it).

    Example:
        >>> X = np.load("acts.npy", mmap_mode="r")
        >>> ev = jaxsae.evaluate(sae, X, chunk_size=4096)
        >>> print(ev.table())
    """
    view, d, dtype = _view(model, lam)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    if not 0 <= float(dense_threshold) <= 1:
        raise ValueError(f"dense_threshold is a firing rate in [0, 1], got {dense_threshold}.")
    if lam is not None:
        lam = check_lam(lam, dtype)
    if isinstance(X, list | tuple) and len(X) and not is_streamable(X):
        X = np.asarray(X)
    if hasattr(X, "shape") and (len(X.shape) != 2 or X.shape[1] != d):
        raise ValueError(
            f"X has shape {tuple(X.shape)} but the model has {d} features; pass data of "
            f"shape (N, {d}), one point per row."
        )
    data, widths = (X,), (d,)
    if codes is not None:
        if not isinstance(view, _DictionaryCodes):
            raise ValueError(
                "codes= is for a Dictionary (its lasso codes solved already); an SAE's codes "
                "come from its encoder: drop codes=."
            )
        data, widths = (X, codes), (d, model.n_atoms)
    fn = _solved_then_chunk if isinstance(view, _DictionaryCodes) and codes is None else _chunk
    how = Streamed(int(chunk_size), resolve_mesh(mesh), bool(progress), "evaluate")
    (moments, small, n), _, _ = how.run(fn, _merge, data, (view, lam), dtype, widths)
    small = _add_small(None, small)  # one chunk: not merged yet
    return _assemble(int(n), small, moments_float64(moments), dtype, lam, float(dense_threshold))


def _assemble(n: int, s: dict, m: dict, dtype, lam, dense_threshold: float) -> Evaluation:
    def f(x):
        return jnp.asarray(x, dtype)

    def coded(name):  # only measured with λ
        return None if lam is None else f(s[name] / (n if name != "gap_max" else 1))

    eps = float(np.finfo(np.dtype(dtype)).eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        ev = 1 - s["err"] / np.trace(m["Cxx"])
        rate = s["fire"] / n
        return Evaluation(
            n_points=n,
            explained_variance=f(ev),
            fvu=f(1 - ev),
            mse=f(s["err"] / n),
            l0=f(s["nnz"] / n),
            shrinkage=f(s["hat_sq"] / s["cross"]),
            norm_ratio=f(s["ratio"] / s["n_pos"]),
            firing_rate=f(rate),
            dead=jnp.asarray(s["fire"] == 0),
            dense=jnp.asarray(rate > dense_threshold),
            dark_matter_r2=f(r2_from_moments(m["Cxx"], m["Cxe"], m["tee"], eps)),
            objective=coded("obj"),
            code_gap=coded("gap"),
            code_gap_max=coded("gap_max"),
            lam=None if lam is None else jnp.asarray(jax.device_get(lam)),
            dense_threshold=dense_threshold,
        )
