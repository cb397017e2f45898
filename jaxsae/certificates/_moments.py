"""Centred moments of data ``x`` and errors ``e`` merged over chunks without cancellation.

The variance ``E‖x − Ex‖²`` and the least-squares fit of ``e`` on ``x`` (the
dark-matter R² of THEORY §7b) need ``C_xx = Σ(x − x̄)(x − x̄)ᵀ``,
``C_xe = Σ(x − x̄)(e − ē)ᵀ`` and ``Σ‖e − ē‖²``. Each chunk computes them about
its own means (two passes over a chunk in memory), and chunks are merged on the
device by the pairwise update of Chan, Golub & LeVeque (1979),

    C = C_a + C_b + (n_a n_b / n) δ_x δ_eᵀ,   δ = mean_b − mean_a,

with Neumaier-compensated sums, so nothing is formed as ``Σxxᵀ − n x̄x̄ᵀ`` (a
large common offset in float32 data would cancel digits away) and the running
sums stay accurate to the dtype's precision however many chunks there are.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

_SUMS = ("Cxx", "Cxe", "tee")


class Moments(eqx.Module):
    """Means and centred sums of ``(x, e)``; ``comp`` holds the compensation of ``sums``."""

    mx: Float[Array, " d"]
    me: Float[Array, " d"]
    sums: dict
    comp: dict


def chunk_moments(Xc, E, w) -> Moments:
    """Moments of one chunk about its own means (``w`` zeroes padded rows)."""
    n = jnp.sum(w)
    mx, me = w @ Xc / n, w @ E / n
    Xo, Eo = (Xc - mx) * w[:, None], (E - me) * w[:, None]
    sums = {"Cxx": Xo.T @ Xo, "Cxe": Xo.T @ Eo, "tee": jnp.sum(Eo * Eo)}
    return Moments(mx, me, sums, {k: jnp.zeros_like(v) for k, v in sums.items()})


def _add(s, c, x):
    """Neumaier's compensated ``s + x``: the new sum and compensation."""
    t = s + x
    return t, c + jnp.where(jnp.abs(s) >= jnp.abs(x), (s - t) + x, (x - t) + s)


@eqx.filter_jit
def merge_moments(a: Moments, b: Moments, f, wb) -> Moments:
    """Moments of the union of two sets of ``n_a`` and ``n_b`` points.

    ``f = n_a n_b / n`` and ``wb = n_b / n`` are passed in (arrays of the dtype),
    so counts beyond float32's exact integers stay exact on the host.
    """
    dx, de = b.mx - a.mx, b.me - a.me
    terms = {
        "Cxx": b.sums["Cxx"] + f * jnp.outer(dx, dx),
        "Cxe": b.sums["Cxe"] + f * jnp.outer(dx, de),
        "tee": b.sums["tee"] + f * (de @ de),
    }
    sums, comp = {}, {}
    for k in _SUMS:
        sums[k], comp[k] = _add(a.sums[k], a.comp[k], terms[k])
    return Moments(a.mx + dx * wb, a.me + de * wb, sums, comp)


def moments_float64(m: Moments) -> dict[str, np.ndarray]:
    """The compensated sums as float64 NumPy arrays (``s + c``)."""
    return {k: np.asarray(m.sums[k], np.float64) + np.asarray(m.comp[k], np.float64) for k in _SUMS}


def r2_from_moments(Cxx, Cxe, tee, eps: float) -> float:
    """``R²`` of the least-squares fit ``e ≈ W x + c`` from centred moments.

    With ``C_xx = V Λ Vᵀ`` the explained sum of squares is ``‖Λ^{-1/2} Vᵀ C_xe‖²_F``
    and ``R² = 1 − (tr C_ee − that) / tr C_ee``. Directions with
    ``Λ_i ≤ d·eps·Λ_max`` are dropped (the fit is the minimum-norm one, as
    ``lstsq`` computes with its cutoff). NaN when ``e`` is constant.
    """
    lam, V = np.linalg.eigh(Cxx)
    keep = lam > max(lam[-1], 0.0) * eps * Cxx.shape[0]
    M = (V[:, keep].T @ Cxe) / np.sqrt(lam[keep])[:, None]
    return 1 - (tee - np.sum(M * M)) / tee if tee > 0 else np.nan
