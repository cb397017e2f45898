"""Per-latent statistics of an SAE's codes against the optimal codes of its own decoder.

One pass (``_streaming.Pass``: resident scan or streamed chunks) with the SAE's
folded codes ``Z`` beside the data and the certified codes ``Z*`` (THEORY §1), solved per
chunk or read beside them. Per latent ``k``:

- ``sae_active``, ``opt_active``: points where ``z_kn > 0`` / ``z*_kn > 0``;
- ``false_fire``: ``z_kn > 0`` where ``z*_kn = 0``; ``miss``: ``z_kn = 0`` where ``z*_kn > 0``;
- ``both``, ``z_both``, ``zopt_both``: co-active points and the two codes' sums there
  (``code_ratio = z_both / zopt_both``: < 1 where the encoder shrinks the codes);
- ``g_sum``, ``g_sq``: ``Σ g_kn`` and ``Σ g_kn²`` over the SAE's active points, with
  ``g_kn = d_kᵀ r_n`` at the SAE's own residual (THEORY §1: ``= λ`` at an optimum);
- the ``top`` largest SAE codes and their rows (the top-activating examples).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._streaming import Pass
from ..models._dictionary import Dictionary
from ..solvers._lasso import codes_first

_COUNTS = ("sae_active", "opt_active", "false_fire", "miss", "both")


@eqx.filter_jit
def _chunk(chunks, w, start, dictionary: Dictionary, lam, top: int):
    Xc, Zc, opt = chunks
    mask, atoms = dictionary.mask, dictionary.atoms
    valid = (w > 0)[:, None] & mask
    Z = jnp.where(valid, Zc, 0)
    opt = jnp.where(valid, opt, 0)
    on, on_opt = (Z > 0), (opt > 0)
    G = (Xc - dictionary.bias - Z @ atoms) @ atoms.T
    acc = jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    both = on & on_opt
    sums = {
        "sae_active": jnp.sum(on, axis=0),
        "opt_active": jnp.sum(on_opt, axis=0),
        "false_fire": jnp.sum(on & ~on_opt, axis=0),
        "miss": jnp.sum(~on & on_opt, axis=0),
        "both": jnp.sum(both, axis=0),
        "z_both": jnp.sum(jnp.where(both, Z, 0).astype(acc), axis=0),
        "zopt_both": jnp.sum(jnp.where(both, opt, 0).astype(acc), axis=0),
        "g_sum": jnp.sum(jnp.where(on, G, 0).astype(acc), axis=0),
        "g_sq": jnp.sum(jnp.where(on, G * G, 0).astype(acc), axis=0),
    }
    m = min(top, Xc.shape[0])
    values, rows = jax.lax.top_k(Z.T, m)  # (K, m) per latent
    return (sums, values.T, (rows.T + start).astype(jnp.int32)), ()


_solved_then_chunk = codes_first(_chunk)  # the optimal codes solved first


@eqx.filter_jit
def _combine(a, b):
    """Sums add; the top codes of two chunks merge into the top of their union."""
    (sa, va, ra), (sb, vb, rb) = a, b
    v, r = jnp.concatenate([va, vb]), jnp.concatenate([ra, rb])
    best, pick = jax.lax.top_k(v.T, va.shape[0])
    return jax.tree.map(jnp.add, sa, sb), best.T, jnp.take_along_axis(r.T, pick, axis=1).T


def latent_pass(dictionary: Dictionary, X, codes, lam, how: Pass, top: int = 8,
                optimal=None) -> dict:  # fmt: skip
    """The statistics above as NumPy arrays (``top_values`` / ``top_rows``: ``(top, K)``,
    largest first; rows where a latent is silent have value 0). ``optimal``: the optimal
    codes solved already, read beside the data (else solved per chunk)."""
    data = (X, codes) if optimal is None else (X, codes, optimal)
    K = dictionary.n_atoms
    args = (dictionary, jnp.asarray(lam, dictionary.dtype), int(top))  # λ traced: one program
    fn = _chunk if optimal is not None else _solved_then_chunk
    (sums, values, rows), _, n = how.run(
        fn, _combine, data, args, dictionary.dtype, (dictionary.n_features, K, K)[: len(data)]
    )
    out = {k: np.asarray(v) for k, v in sums.items()}
    out["top_values"], out["top_rows"], out["n"] = np.asarray(values), np.asarray(rows), int(n)
    return out


def kkt_fit_lam(Z, G, lams) -> tuple[float, np.ndarray]:
    """The λ among ``lams`` that minimises ``Σ_kn ρ_kn(λ)²``, ``ρ = min(z, λ − g)`` (THEORY
    §1's KKT residual of the codes ``Z`` with correlations ``G``), and the sums at every λ."""
    Z, G = np.asarray(Z, np.float64), np.asarray(G, np.float64)
    on = Z > 0
    za, ga, go = Z[on], G[on], G[~on]
    lams = np.asarray(lams, np.float64)
    cost = np.array(
        [
            np.sum(np.minimum(za, lam - ga) ** 2) + np.sum(np.maximum(go - lam, 0) ** 2)
            for lam in lams
        ]
    )
    return float(lams[int(np.argmin(cost))]), cost


def effective_lam(Z, G, mask) -> dict:
    """Per latent, over the points where it is active: the median, quartiles and count of
    ``g_kn`` (THEORY §1: every active entry of an optimum has ``g_kn = λ`` exactly)."""
    Z, G = np.asarray(Z), np.asarray(G)
    K = Z.shape[1]
    median, q25, q75 = (np.full(K, np.nan) for _ in range(3))
    count = np.zeros(K, int)
    for k in np.flatnonzero(np.asarray(mask)):
        g = G[Z[:, k] > 0, k]
        count[k] = g.size
        if g.size:
            q25[k], median[k], q75[k] = np.quantile(g, [0.25, 0.5, 0.75])
    return {"median": median, "q25": q25, "q75": q75, "iqr": q75 - q25, "count": count}
