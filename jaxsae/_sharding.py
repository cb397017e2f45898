"""Placing data and models on device meshes (data-parallel and atom-parallel).

Every computation in jaxsae is written for one device; running it on many is a
matter of where its inputs live. ``jax.jit`` partitions a computation by the
shardings of its arguments (GSPMD), so:

- data-parallel: put the points on ``NamedSharding(mesh, P("data", None))``
  (``shard_rows``) and the model everywhere (``replicate``); sums over points
  (objective, gradients, the certificate's accumulators, Hessian-vector
  products) become per-device partial sums that XLA all-reduces;
- atom-parallel (wide dictionaries): put the atoms on ``P("model", None)``
  (``shard_atoms``, ``shard_sae``); products ``Z @ D`` then reduce over the
  model axis and ``R @ Dᵀ`` stays split by atom.

No communication is written by hand; the results equal the single-device run
up to the order of floating-point sums.
"""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ._streaming import data_mesh as data_mesh, resolve_mesh
from .models._dictionary import Dictionary
from .models._sae import SAE


def model_mesh(devices=None) -> Mesh | None:
    """A 1-d mesh over ``devices`` (default: all) with axis ``"model"``; None for one device."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), ("model",))


def _check_divisible(n: int, mesh: Mesh, axis: str, what: str) -> None:
    size = mesh.shape[axis]
    if n % size:
        raise ValueError(
            f"{what} ({n}) is not a multiple of the {size} devices on mesh axis {axis!r}. "
            f"Pad it to {-(-n // size) * size} (zero rows with zero weight, or masked atoms)."
        )


def shard_rows(X, mesh: Mesh | None, axis: str = "data"):
    """Put the rows (points) of ``X`` ``(N, ...)`` on ``mesh`` along ``axis``; others replicated."""
    if mesh is None:
        return jax.numpy.asarray(X)
    if axis not in mesh.axis_names:
        raise ValueError(
            f"mesh has axes {mesh.axis_names}, not {axis!r}. Build one with data_mesh()."
        )
    _check_divisible(X.shape[0], mesh, axis, "the number of points")
    spec = P(axis, *([None] * (np.ndim(X) - 1)))
    return jax.device_put(X, NamedSharding(mesh, spec))


def replicate(tree, mesh: Mesh | None):
    """A copy of the pytree ``tree`` with every array on every device of ``mesh``."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_atoms(dictionary: Dictionary, mesh: Mesh | None, axis: str = "model") -> Dictionary:
    """Atom-parallel dictionary: atoms ``(K, d)`` and mask split by atom, bias replicated."""
    if mesh is None:
        return dictionary
    _check_divisible(dictionary.n_atoms, mesh, axis, "the number of atoms")
    return _place(dictionary, mesh, {"atoms": P(axis, None), "bias": P(), "mask": P(axis)})


def shard_sae(sae: SAE, mesh: Mesh | None, axis: str = "model") -> SAE:
    """Latent-parallel SAE: ``W_enc`` columns, ``b_enc`` and ``W_dec`` rows split by latent."""
    if mesh is None:
        return sae
    _check_divisible(sae.d_sae, mesh, axis, "the number of latents")
    specs = {"W_enc": P(None, axis), "b_enc": P(axis), "W_dec": P(axis, None), "b_dec": P()}
    return _place(sae, mesh, specs)


def _place(module, mesh: Mesh, specs: dict):
    names = tuple(specs)
    arrays = [jax.device_put(getattr(module, n), NamedSharding(mesh, specs[n])) for n in names]
    return eqx.tree_at(lambda m: tuple(getattr(m, n) for n in names), module, arrays)


def _spanned_devices(leaves) -> list:
    """The devices that the concrete JAX arrays among ``leaves`` live on (mesh order kept)."""
    devices: list = []
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if sharding is None:
            continue
        mesh = getattr(sharding, "mesh", None)
        found = (
            list(mesh.devices.flat)
            if isinstance(mesh, Mesh)
            else sorted(sharding.device_set, key=lambda dev: dev.id)
        )
        devices += [dev for dev in found if dev not in devices]
    return devices


def resolve_data_mesh(mesh, *trees) -> Mesh | None:
    """The ``"data"`` mesh a data-parallel entry point should use.

    ``mesh=False``: None (one device). A ``Mesh``: itself (it must have a ``"data"``
    axis). ``None`` (default): the devices the concrete arrays in ``trees`` already
    span when they span several, else all devices when there are several, except
    inside a trace (where inputs may be committed to one device): then None.
    """
    if mesh is not None:
        return resolve_mesh(mesh)
    leaves = [leaf for leaf in jax.tree.leaves(trees) if isinstance(leaf, jax.Array)]
    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)
    spanned = _spanned_devices([leaf for leaf in leaves if not isinstance(leaf, jax.core.Tracer)])
    if len(spanned) > 1:
        return data_mesh(spanned)
    # inside a trace the inputs may be committed to one device: do not move them
    return None if traced else data_mesh()


def place_on(mesh: Mesh | None, replicated, rows):
    """Replicate the pytree ``replicated`` and split the arrays in ``rows`` by row over
    ``mesh``'s ``"data"`` axis (replicated when their length does not split evenly).
    Does nothing inside a trace (placements belong to the caller there)."""
    leaves = jax.tree.leaves((replicated, rows))
    if mesh is None or any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return replicated, rows
    size = mesh.shape["data"]

    def split(a):
        if not eqx.is_array(a):
            return a
        spec = P("data", *([None] * (a.ndim - 1))) if a.shape[0] % size == 0 else P()
        return jax.device_put(a, NamedSharding(mesh, spec))

    return replicate(replicated, mesh), jax.tree.map(split, rows)


def check_batch_divisible(n: int, mesh: Mesh | None, what: str, fix: str) -> None:
    """Refuse a batch of ``n`` points that does not split evenly over the ``"data"`` axis."""
    if mesh is None or n % mesh.shape["data"] == 0:
        return
    size = mesh.shape["data"]
    lo, hi = (n // size) * size, -(-n // size) * size
    near = f"{hi}" if lo == 0 else f"{lo} or {hi}"
    raise ValueError(
        f"{what} ({n}) is not a multiple of the {size} devices on the 'data' mesh axis. "
        f"Use {what} = {near}, or {fix}."
    )
