"""SAE training with optax: ``train_sae``.

The loss of a batch is the per-point mean of THEORY §0's
``½‖x − x̂‖² + λ_t · penalty(z)`` (``λ_t`` ramps up linearly over
``l1_warmup_steps``); with ``L1()`` and the unit-norm decoder this is exactly
``L(D, Z_sae, b)``. An SAELens ``l1_coefficient`` α corresponds to ``λ = α/2``.

Resumable bit for bit: the data order is a pure function of ``(key, step)``
(one permutation per epoch, ``fold_in(key, epoch)``), and a checkpoint holds
the parameters, the optax state, the step, the key, the dead-latent counters
and the metric history.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool

from .._checkpoint import (
    data_fingerprint,
    fingerprint_mismatch,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .._lock import RunLock
from .._rows import Rows
from .._sharding import check_batch_divisible, replicate, resolve_data_mesh
from .._validate import as_float_array, check_finite, check_lam
from ..models._penalties import AbstractPenalty, default_penalty
from ..models._sae import SAE
from ._sae_step import _ADAM, LinearSchedule, TrainState, _train_batch_step, _train_step, _unit_rows


class TrainResult(eqx.Module):
    """The trained SAE and what happened on the way.

    Attributes:
        sae: the trained SAE.
        history: metric name → array over the logged steps: ``step``, ``loss``,
            ``mse`` (``E‖x − x̂‖²``, the full squared error; the loss uses half of
            it, ``½‖x − x̂‖²``, as THEORY §0 does), ``l0``, ``explained_variance`` (THEORY §7b:
            ``1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²)`` on the batch), ``shrinkage``
            (``E‖x̂‖²/E⟨x, x̂⟩``), ``dead`` (latents silent for ``dead_after``
            steps), ``dense`` (firing rate above ``dense_threshold`` since the
            previous log), ``lam`` (λ after warm-up) and ``lr``.
        dead_latents: ``(K,)`` latents that did not fire in the last ``dead_after`` steps.
        state: the final ``TrainState`` (optax state included).
        resumed_from: the checkpoint step the run resumed from (0 for a fresh run).
        lam: the penalty's weight (``None`` for ``NoPenalty``, e.g. TopK).
        penalty: the penalty's name (``"L1"``, ``"DecoderNormL1"``, ``"L0"``, ``"NoPenalty"``).
    """

    sae: SAE
    history: dict
    dead_latents: Bool[Array, " K"]
    state: TrainState
    resumed_from: int = eqx.field(static=True)
    lam: float | None = eqx.field(static=True, default=None)
    penalty: str = eqx.field(static=True, default="L1")

    @property
    def objective(self) -> dict:
        """What the SAE was trained for, as ``save_sae`` records it:
        ``save_sae(out.sae, path, **out.objective)``."""
        return {"lam": self.lam, "penalty": self.penalty}


@eqx.filter_jit
def _epoch_order(key, epoch, N: int, B: int):
    perm = jax.random.permutation(jax.random.fold_in(jax.random.wrap_key_data(key), epoch), N)
    return perm[: (N // B) * B].reshape(N // B, B)


def _key_data(key):
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.dtype != jnp.uint32:
        raise ValueError("key must be a JAX PRNG key, e.g. key=jax.random.key(0).")
    return key


def train_sae(
    sae: SAE,
    data,
    *,
    key,
    steps: int,
    batch_size: int,
    lam=None,
    penalty: AbstractPenalty | None = None,
    optimizer: optax.GradientTransformation | None = None,
    lr: float = 3e-4,
    lr_warmup_steps: int = 0,
    lr_decay_steps: int = 0,
    l1_warmup_steps: int = 0,
    log_every: int = 100,
    dead_after: int = 1000,
    dense_threshold: float = 0.1,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    mesh: Mesh | None | bool = None,
    progress: bool = True,
) -> TrainResult:
    """Train an SAE with optax on ``data`` ``(N, d_in)`` (minibatches without replacement).

    Args:
        sae: the initial SAE (``SAE.init``); its dtype is the training dtype.
        data: ``(N, d_in)`` array (NumPy or JAX), or a ``numpy.memmap``: then each
            minibatch is gathered on the host (rows read in sorted order), so memory
            stays bounded by the batch; the run equals the in-memory one bit for bit.
        key: PRNG key; fixes the data order (one permutation per epoch).
        steps: total number of optimizer steps (a resumed run continues to it).
        batch_size: points per step (``≤ N``; the last partial batch of an epoch is dropped).
        lam: λ of the penalty (THEORY §0 scale, ``λ = α/2`` for an SAELens α);
            required unless the penalty is ``NoPenalty`` (TopK, where ``k`` sets L0).
        penalty: ``L1()`` (unit-norm decoder, projected after each step; default
            for ReLU), ``DecoderNormL1()``, ``L0()`` (default for JumpReLU) or
            ``NoPenalty()`` (default for TopK; decoder kept at unit norm).
        optimizer: an optax transformation; default ``optax.adam`` on the schedule
            below (linear warm-up over ``lr_warmup_steps``, constant ``lr``, linear
            decay to 0 over the last ``lr_decay_steps``). The optimizer is part of the
            compiled step: pass the same object again to reuse the compilation.
        l1_warmup_steps: λ ramps linearly from ``λ/l1_warmup_steps`` to λ.
        log_every: record metrics (see ``TrainResult.history``) every this many steps.
        dead_after: a latent silent for this many steps counts as dead.
        dense_threshold: a latent firing on more than this fraction counts as dense.
        checkpoint_dir, checkpoint_every: save a checkpoint every ``checkpoint_every``
            steps (atomically); if ``checkpoint_dir`` holds one, resume from the latest.
        mesh: data-parallel training over a ``jax.sharding.Mesh`` with a ``"data"``
            axis: each minibatch is split over it, the SAE and optimizer state are
            replicated. Default ``None``: all devices when there are several (or the
            devices the SAE / data already live on); ``False``: one device.
            ``batch_size`` must be a multiple of the number of devices.
        progress: show a tqdm progress bar.

    Example:
        >>> sae = jaxsae.SAE.init(64, 256, jaxsae.ReLU(), key=k1, decoder_norm=1.0)
        >>> out = jaxsae.train_sae(sae, X, lam=0.05, steps=2000, batch_size=512, key=k2)
        >>> out.history["explained_variance"][-1]
    """
    if not isinstance(sae, SAE):
        raise ValueError(
            f"sae must be a jaxsae.SAE (use jaxsae.SAE.init), got {type(sae).__name__}."
        )
    data, batches = _batches(sae, data)
    mesh = _mesh(mesh, sae, batches, batch_size)
    if steps < 0 or log_every < 1:
        raise ValueError(
            f"steps must be ≥ 0 and log_every ≥ 1, got steps={steps}, log_every={log_every}."
        )
    penalty, lam = _penalty_and_lam(sae, penalty, lam)
    if checkpoint_dir is not None and (checkpoint_every is None or checkpoint_every < 1):
        raise ValueError("checkpoint_dir needs checkpoint_every=N (a positive number of steps).")
    optimizer, schedule_lr = _optimizer(optimizer, sae.dtype, lr, lr_warmup_steps, steps,
                                        lr_decay_steps)  # fmt: skip
    if penalty.unit_decoder:
        sae = _unit_rows(sae)
    zeros = jnp.zeros((sae.d_sae,), jnp.int32)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    state = TrainState(sae, opt_state, jnp.zeros((), jnp.int32), _key_data(key), zeros, zeros)
    train_kw = dict(
        mesh=mesh, lam=lam, l1_warmup_steps=l1_warmup_steps,
        schedule_lr=schedule_lr, optimizer=optimizer, penalty=penalty, steps=steps,
        batch_size=batch_size, log_every=log_every, dead_after=dead_after,
        dense_threshold=dense_threshold, checkpoint_every=checkpoint_every, progress=progress,
    )  # fmt: skip
    fingerprint = _fingerprint(
        sae, data, state, lam, penalty, optimizer, schedule_lr, batch_size, steps, l1_warmup_steps
    )
    if checkpoint_dir is None:
        return _train(state, batches, fingerprint, None, 0, [], **train_kw)
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    with RunLock(checkpoint_dir, "checkpoint_dir"):  # one process per checkpoint folder
        state, start, history = _resume(checkpoint_dir, state, fingerprint)
        return _train(state, batches, fingerprint, checkpoint_dir, start, history, **train_kw)


def _batches(sae: SAE, data):
    """The validated data and where its minibatches come from (a memmap's batches are
    checked for NaN/inf as they are read; an array is checked once, on the device)."""
    on_host = isinstance(data, np.memmap)
    if on_host and np.dtype(data.dtype).kind not in "fiub":
        raise ValueError(f"data must hold real numbers, got dtype {data.dtype}.")
    if not on_host:
        data = as_float_array(data, "data")
    if data.ndim != 2 or data.shape[1] != sae.d_in:
        raise ValueError(
            f"data must have shape (N, {sae.d_in}) to match the SAE's d_in, got {data.shape}."
        )
    if on_host:
        return data, _HostBatches(data, sae.dtype)
    data = data.astype(sae.dtype)
    check_finite(data, "data")
    return data, _DeviceBatches(data)


def _mesh(mesh, sae: SAE, batches, batch_size: int):
    """The data-parallel mesh (``None``: one device), with ``batch_size`` checked for it."""
    N = batches.shape[0]
    if not 1 <= batch_size <= N:
        raise ValueError(f"batch_size must be between 1 and N = {N}, got {batch_size}.")
    mesh = resolve_data_mesh(mesh, sae, batches.resident)
    mesh = None if mesh is None or mesh.devices.size == 1 else mesh
    check_batch_divisible(batch_size, mesh, "batch_size", "pass mesh=False to train on one device")
    return mesh


def _penalty_and_lam(sae: SAE, penalty, lam):
    penalty = default_penalty(sae.activation) if penalty is None else penalty
    if not penalty.needs_lam:
        if lam is not None:
            raise ValueError(
                f"{type(penalty).__name__}() has no sparsity weight, so lam={lam} would be ignored; "
                "drop lam= (TopK's k sets the sparsity) or pass penalty=jaxsae.L1()."
            )
        return penalty, jnp.zeros((), sae.dtype)
    if lam is None:
        raise ValueError(
            f"{type(penalty).__name__}() needs lam=... (the weight of the sparsity penalty)."
        )
    return penalty, check_lam(lam, sae.dtype)


def _optimizer(optimizer, dtype, lr, warmup, steps, decay):
    """``(optimizer, schedule)``: the default is Adam on a ``LinearSchedule`` (arrays, so
    a new rate or length never recompiles); a given optax transformation has none."""
    if optimizer is not None:
        return optimizer, None
    sdtype = jnp.float64 if dtype == jnp.float64 else jnp.float32
    f = lambda v: jnp.asarray(v, sdtype)  # noqa: E731
    return _ADAM, LinearSchedule(f(lr), f(warmup), f(steps), f(decay))


def _resume(checkpoint_dir, state, fingerprint):
    """``(state, start step, history)`` from the newest checkpoint, or a fresh start."""
    if (folder := latest_checkpoint(checkpoint_dir)) is None:
        return state, 0, []
    state, meta = load_checkpoint(folder, state)
    if (why := fingerprint_mismatch(meta.get("fingerprint"), fingerprint)) is not None:
        raise ValueError(
            f"checkpoint {folder} was made by another run ({why}). Resume with the same "
            "data, key and settings, or use an empty checkpoint_dir for a new run."
        )
    return state, int(meta["step"]), meta["history"]


def _fingerprint(sae, data, state, lam, penalty, optimizer, schedule, batch_size, steps, l1_warmup):
    """Everything a resumed run must share with the run that wrote the checkpoint."""
    init = hashlib.sha256()
    for leaf in jax.tree.leaves(eqx.filter(state.sae, eqx.is_array)):
        init.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return {
        "data": data_fingerprint(data),
        "key": hashlib.sha256(np.asarray(state.key).tobytes()).hexdigest()[:16],
        "initial_sae": init.hexdigest()[:16],
        "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": str(sae.dtype),
        "activation": sae.activation.describe(),
        "penalty": type(penalty).__name__, "lam": float(lam), "batch_size": int(batch_size),
        "steps": int(steps), "l1_warmup_steps": int(l1_warmup),
        "schedule": None if schedule is None else [float(v) for v in jax.tree.leaves(schedule)],
        "optimizer": "adam" if schedule is not None else type(optimizer).__name__,
    }  # fmt: skip


def _train(state, data, fingerprint, checkpoint_dir, start, history, *, mesh, lam,
           l1_warmup_steps, schedule_lr, optimizer, penalty, steps, batch_size, log_every,
           dead_after, dense_threshold, checkpoint_every, progress) -> TrainResult:  # fmt: skip
    state = jax.tree.map(lambda a: jnp.array(a, copy=True) if eqx.is_array(a) else a, state)
    sharding = None
    if mesh is not None:
        sharding = NamedSharding(mesh, PartitionSpec("data", None))
        state = replicate(state, mesh)
        data = data.on(mesh)
    warmup = jnp.asarray(l1_warmup_steps, jnp.int32)
    rest = (lam, warmup, schedule_lr, optimizer, penalty, sharding)
    out = _run(state, data, rest, start, steps, batch_size,
               log_every, dead_after, dense_threshold, checkpoint_dir, checkpoint_every, fingerprint, history,
               progress)  # fmt: skip
    state, history = out
    hist = {k: np.asarray([h[k] for h in history]) for k in (history[0] if history else ())}
    return TrainResult(
        sae=state.sae,
        history=hist,
        dead_latents=state.since_fired >= dead_after,
        state=state,
        resumed_from=start,
        lam=float(lam) if penalty.needs_lam else None,
        penalty=type(penalty).__name__,
    )


def _run(state, data, rest, start, steps, B, log_every, dead_after,
         dense_threshold, checkpoint_dir, checkpoint_every, fingerprint, history, progress):  # fmt: skip
    from tqdm.auto import tqdm

    N = data.shape[0]
    per_epoch = N // B
    epoch, plan = None, None
    since_log = start % log_every
    with tqdm(
        total=steps, initial=start, disable=not progress, desc="train_sae", unit="step"
    ) as bar:
        for step in range(start, steps):
            if step // per_epoch != epoch:
                epoch = step // per_epoch
                order = _epoch_order(state.key, jnp.asarray(epoch, jnp.int32), N, B)
                plan = data.epoch(order, epoch * per_epoch)
            state, metrics = data.step(state, plan, step, rest)
            since_log += 1
            done = step + 1
            if done % log_every == 0 or done == steps:
                rate = np.asarray(state.fire_count) / (since_log * B)
                entry = {"step": done, **{k: float(v) for k, v in metrics.items()}}
                entry["dead"] = int(np.sum(np.asarray(state.since_fired) >= dead_after))
                entry["dense"] = int(np.sum(rate > dense_threshold))
                history.append(entry)
                state = eqx.tree_at(lambda s: s.fire_count, state, jnp.zeros_like(state.fire_count))
                since_log = 0
                bar.set_postfix(l0=f"{entry['l0']:.1f}", ev=f"{entry['explained_variance']:.3f}")
            if checkpoint_dir is not None and done % checkpoint_every == 0:
                meta = {"fingerprint": fingerprint, "history": history}
                save_checkpoint(checkpoint_dir, done, state, meta)
            bar.update(1)
    return state, history


class _DeviceBatches:
    """Data on the device: each minibatch is gathered inside the compiled step."""

    def __init__(self, data):
        self.data, self.shape, self.resident = data, data.shape, data

    def on(self, mesh):
        if self.data.sharding.device_set != set(mesh.devices.flat):
            self.data = replicate(self.data, mesh)
        return self

    def epoch(self, perm, offset: int):
        """The epoch's order and first step, on the device (set once per epoch)."""
        return perm, jnp.asarray(offset, jnp.int32)

    def step(self, state, plan, step: int, rest):
        del step  # the compiled step indexes the order by state.step
        return _train_step((self.data, *plan, *rest), state)


class _HostBatches:
    """Data in a memmap: each minibatch is read on the host (``Rows.gather``: sorted
    reads, pages dropped) and checked for NaN/inf before it goes to the device(s)."""

    def __init__(self, data: np.memmap, dtype):
        self.rows, self.shape, self.dtype = Rows(data, "train_sae"), data.shape, dtype
        self.resident = None  # nothing on a device to take a mesh from

    def on(self, mesh):
        return self  # each batch is placed on the mesh as it is read

    def epoch(self, perm, offset: int):
        return np.asarray(perm), offset

    def step(self, state, plan, step: int, rest):
        perm, offset = plan
        X = self.rows.gather(perm[step - offset]).astype(self.dtype, copy=False)
        if not np.all(np.isfinite(X)):
            raise ValueError(
                "data holds NaN or inf values (found in a minibatch read from the memmap). "
                "Clean or drop those rows before training."
            )
        sharding = rest[-1]
        X = jnp.asarray(X) if sharding is None else jax.device_put(X, sharding)
        return _train_batch_step((X, *rest), state)
