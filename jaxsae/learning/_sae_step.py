"""The SAE training step, shared by ``train_sae`` and the SAE sweep (which vmaps it).

The loss of a batch is the per-point mean of THEORY §0's
``½‖x − x̂‖² + λ_t · penalty(z)`` (``λ_t`` ramps up linearly over the warm-up);
with ``L1()`` and the unit-norm decoder (rows projected after each step) this is
exactly ``L(D, Z_sae, b)``. A latent ``mask`` (a sweep run's width) zeroes the codes
of the latents beyond it, so they get no gradient.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PyTree

from ..models import _metrics
from ..models._penalties import AbstractPenalty
from ..models._sae import SAE


class TrainState(eqx.Module):
    """Everything a training run needs to continue (saved in checkpoints)."""

    sae: SAE
    opt_state: PyTree
    step: Int[Array, ""]
    key: Array  # raw uint32 key data
    since_fired: Int[Array, " K"]
    fire_count: Int[Array, " K"]


def _loss(sae: SAE, X, lam, penalty: AbstractPenalty, mask=None):
    pre = jax.vmap(sae.pre_activation)(X)
    Z = jax.vmap(sae.activation)(pre)
    if mask is not None:  # latents beyond a sweep run's width: zero codes, no gradient
        Z = jnp.where(mask, Z, 0)
    X_hat = jax.vmap(sae.decode)(Z)
    rec = 0.5 * jnp.sum((X - X_hat) ** 2, axis=-1)
    pen = jax.vmap(lambda p, z: penalty(sae, p, z))(pre, Z)
    return jnp.mean(rec + lam * pen), (Z, X_hat)


def _unit_rows(sae: SAE) -> SAE:
    W = sae.W_dec
    return eqx.tree_at(lambda s: s.W_dec, sae, W / jnp.linalg.norm(W, axis=1, keepdims=True))


def _step(static, state: TrainState):
    """One step on the minibatch ``data[perm[step − offset]]`` (data on the device)."""
    data, perm, offset, *rest = static
    X = data[jax.lax.dynamic_index_in_dim(perm, state.step - offset, keepdims=False)]
    return _update(rest, state, X)


def _batch_step(static, state: TrainState):
    """One step on a minibatch gathered on the host (data in a memmap)."""
    X, *rest = static
    return _update(rest, state, X)


def _update(static, state: TrainState, X, mask=None):
    """One optimizer step on the minibatch ``X`` (the step ``sweep`` vmaps over its runs,
    with ``mask`` the run's latents)."""
    lam, warmup, schedule_lr, optimizer, penalty, sharding = static
    if sharding is not None:
        # data-parallel: each device takes a slice of the batch; the SAE and the
        # optimizer state are replicated, so the mean loss and its gradient become
        # per-device partial sums that XLA all-reduces.
        X = jax.lax.with_sharding_constraint(X, sharding)
    B = X.shape[0]
    # warm-up lengths and the schedule are arrays: changing them does not recompile
    ramp = jnp.minimum(1, (state.step + 1).astype(X.dtype) / jnp.maximum(warmup, 1).astype(X.dtype))
    lam_t = lam * ramp
    (loss, (Z, X_hat)), grads = eqx.filter_value_and_grad(_loss, has_aux=True)(
        state.sae, X, lam_t, penalty, mask
    )
    params = eqx.filter(state.sae, eqx.is_inexact_array)
    # optax mixes Python floats with int32 step counts, which strict promotion rejects.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
    if schedule_lr is None:
        lr_now = jnp.asarray(jnp.nan, X.dtype)
    else:  # default optimizer: scale_by_adam, then −lr_t (what optax.adam(schedule) computes)
        lr_now = schedule_lr(state.step).astype(X.dtype)
        updates = jax.tree.map(lambda u: -lr_now.astype(u.dtype) * u, updates)
    sae = eqx.apply_updates(state.sae, updates)
    if penalty.unit_decoder:
        sae = _unit_rows(sae)
    # one pass over the (B, K) codes serves the dead/dense counters and L0
    counts = jnp.sum(Z != 0, axis=0, dtype=state.fire_count.dtype)
    new = TrainState(
        sae=sae,
        opt_state=opt_state,
        step=state.step + 1,
        key=state.key,
        since_fired=jnp.where(counts > 0, 0, state.since_fired + 1),
        fire_count=state.fire_count + counts,
    )
    metrics = {
        "loss": loss,
        "mse": jnp.mean(jnp.sum((X - X_hat) ** 2, axis=-1)),
        "l0": jnp.sum(counts).astype(X.dtype) / B,
        "explained_variance": _metrics.explained_variance(X, X_hat),
        "shrinkage": _metrics.shrinkage(X, X_hat),
        "lam": lam_t,
        "lr": lr_now,
    }
    return new, metrics


# The state's buffers are donated: the update happens in place, no second copy of the
# parameters and Adam moments is allocated per step.
_train_step = eqx.filter_jit(_step, donate="all-except-first")
_train_batch_step = eqx.filter_jit(_batch_step, donate="all-except-first")


class LinearSchedule(eqx.Module):
    """Learning rate: linear warm-up from 0 over ``warmup`` steps, constant ``lr``, then
    linear decay to 0 over the last ``decay`` of ``steps`` steps. All fields are arrays."""

    lr: Array
    warmup: Array
    steps: Array
    decay: Array

    def __call__(self, step):
        step = step.astype(self.lr.dtype)
        warm = jnp.where(self.warmup > 0, jnp.minimum(1, step / jnp.maximum(self.warmup, 1)), 1)
        start = jnp.maximum(self.steps - self.decay, self.warmup)
        cool = jnp.where(
            self.decay > 0, jnp.clip(1 - (step - start) / jnp.maximum(self.decay, 1), 0, 1), 1
        )
        return self.lr * warm * cool


# The default optimizer, one object: optax transformations compare by identity, so every
# default run reuses the same compiled step.
_ADAM = optax.scale_by_adam()
