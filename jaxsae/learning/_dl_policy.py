"""What to do with dead atoms during dictionary learning (THEORY §2).

A dead atom (``z_k = 0`` on every point) is first-order stationary in every
direction, so gradient methods never revive it. The policy runs between
alternating-minimisation steps; masked atoms are never touched.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp


class AbstractDeadAtomPolicy(eqx.Module):
    """Maps ``(atoms, codes, residuals, mask) → atoms``. ``reseeds``: whether it needs
    the highest-residual points (on streamed data, an extra pass when an atom is dead)."""

    reseeds: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, atoms, Z, R, mask): ...


class KeepDead(AbstractDeadAtomPolicy):
    """Leave dead atoms where they are."""

    reseeds: ClassVar[bool] = False

    def __call__(self, atoms, Z, R, mask):
        return atoms


class ReseedDead(AbstractDeadAtomPolicy):
    """Move each dead (unmasked, never-firing) atom onto the normalised residual of
    one of the points with the largest residual norm ``‖r_n‖``.

    By THEORY §5 ("adding an atom"), an atom ``r_n/‖r_n‖`` fires on point n as soon
    as ``‖r_n‖ > λ``, so the worst-fit points are the most useful places to reseed.
    """

    reseeds: ClassVar[bool] = True

    def __call__(self, atoms, Z, R, mask):
        K = atoms.shape[0]
        dead = mask & (jnp.sum(jnp.abs(Z), axis=0) == 0)
        r_sq = jnp.sum(R * R, axis=1)
        n_top = min(K, R.shape[0])
        top_val, top = jax.lax.top_k(r_sq, n_top)
        rank = jnp.clip(jnp.cumsum(dead) - 1, 0, n_top - 1)
        pick = R[top[rank]]
        ok = dead & (top_val[rank] > 0)
        new = pick / jnp.sqrt(jnp.where(ok, top_val[rank], 1))[:, None]
        return jnp.where(ok[:, None], new, atoms)
