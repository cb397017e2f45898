"""Throughput of one SAE training step (tokens/s): jaxsae vs SAELens's training SAE.

Both sides run the same step on the same resident batch, float32, Adam:
forward (ReLU encoder, decoder), loss ``MSE + α·Σ z_k‖W_dec[k]‖`` (SAELens
``standard``; jaxsae ``DecoderNormL1``), backward, Adam update and the
dead-latent counters. SAELens's step mirrors ``SAETrainer._train_step``
(``training_forward_pass``, firing counters, ``backward``, grad-norm clipping,
``Adam.step``, ``zero_grad``); jaxsae's is the jitted, buffer-donating step
``train_sae`` runs. The machine's float32 matmul peak is measured in the same
run; a dense step is counted as ``6·B·d·K`` flops (the convention of the issue;
the five matmuls of forward + backward are ``10·B·d·K``, also reported).

Run: ``.venv/bin/python benchmarks/sae_training.py [--quick]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from _harness import best_time, write_result  # noqa: E402

import jaxsae  # noqa: E402
from jaxsae.learning._sae_step import _ADAM, LinearSchedule, TrainState, _train_step  # noqa: E402

SIZES = [(256, 4096, 4096), (256, 1024, 1024)]  # (d_in, d_sae, batch)


def matmul_peak(repeat: int) -> float:
    a = jax.random.normal(jax.random.key(0), (512, 512), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (512, 8192), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    t = best_time(lambda: f(a, b).block_until_ready(), repeat=repeat)
    return 2 * 512 * 512 * 8192 / t


def jaxsae_step_time(d_in, d_sae, B, repeat, steps_per_call=5):
    X = jax.random.normal(jax.random.key(0), (B, d_in), jnp.float32)
    sae = jaxsae.SAE.init(d_in, d_sae, jaxsae.ReLU(), key=jax.random.key(1))
    optimizer = _ADAM  # train_sae's default: scale_by_adam, then −lr_t
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    schedule = LinearSchedule(f32(4e-4), f32(0), f32(10**6), f32(0))
    state = TrainState(
        sae=sae,
        opt_state=optimizer.init(eqx.filter(sae, eqx.is_inexact_array)),
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(jax.random.key(2)),
        since_fired=jnp.zeros((d_sae,), jnp.int32),
        fire_count=jnp.zeros((d_sae,), jnp.int32),
    )
    perm = jnp.arange(B, dtype=jnp.int32)[None]
    lam = jnp.asarray(2.5, jnp.float32)  # λ = α/2 for SAELens's α = 5
    zero = jnp.zeros((), jnp.int32)  # no L1 warm-up
    box = [state, 0]

    def run():
        s, k = box
        for _ in range(steps_per_call):
            # offset = step, so every step reads row 0 of perm: the whole resident batch
            static = (
                X,
                perm,
                jnp.asarray(k, jnp.int32),
                lam,
                zero,
                schedule,
                optimizer,
                jaxsae.DecoderNormL1(),
                None,  # batch sharding: one device
            )
            s, _ = _train_step(static, s)
            k += 1
        jax.block_until_ready(s.sae.W_dec)
        box[:] = [s, k]

    return best_time(run, repeat=repeat) / steps_per_call


def saelens_step_time(d_in, d_sae, B, repeat, steps_per_call=5):
    import torch
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    torch.manual_seed(0)
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=5.0))
    opt = torch.optim.Adam(sae.parameters(), lr=4e-4)
    X = torch.randn(B, d_in)
    since_fired = torch.zeros(d_sae)
    freq = torch.zeros(d_sae)

    def run():
        for _ in range(steps_per_call):
            out = sae.training_forward_pass(
                TrainStepInput(
                    X, {"l1": 5.0}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False
                )
            )
            with torch.no_grad():
                firing = out.feature_acts.bool().float()
                did_fire = firing.sum(-2).bool()
                since_fired.add_(1)
                since_fired[did_fire] = 0
                freq.add_(firing.sum(0))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            opt.step()
            opt.zero_grad()

    return best_time(run, repeat=repeat) / steps_per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args()
    repeat = 2 if args.quick else 5
    peak = matmul_peak(repeat)
    print(f"float32 matmul peak (512x512 @ 512x8192): {peak / 1e9:.1f} GFLOP/s")
    try:
        import sae_lens  # noqa: F401
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads()))
        have_saelens = True
    except ImportError:
        have_saelens = False
        print("sae-lens/torch not importable: reporting jaxsae only")
    rows = []
    for d_in, d_sae, B in SIZES:
        t_j = jaxsae_step_time(d_in, d_sae, B, repeat)
        flops6 = 6 * B * d_in * d_sae
        row = {
            "d_in": d_in, "d_sae": d_sae, "batch": B,
            "jaxsae_step_s": t_j, "jaxsae_tokens_per_s": B / t_j,
            "jaxsae_gflops_6BdK": flops6 / t_j / 1e9, "jaxsae_peak_fraction_6BdK": flops6 / t_j / peak,
            "jaxsae_peak_fraction_10BdK": 10 / 6 * flops6 / t_j / peak,
        }  # fmt: skip
        line = f"d_sae={d_sae} batch={B}: jaxsae {B / t_j:,.0f} tok/s ({row['jaxsae_peak_fraction_6BdK']:.0%} of peak, 6BdK)"
        if have_saelens:
            t_s = saelens_step_time(d_in, d_sae, B, repeat)
            row.update(
                {
                    "saelens_step_s": t_s,
                    "saelens_tokens_per_s": B / t_s,
                    "ratio_vs_saelens": t_s / t_j,
                }
            )
            line += f" | SAELens {B / t_s:,.0f} tok/s | ratio {t_s / t_j:.2f}x"
        print(line)
        rows.append(row)
    path = write_result(
        "sae_training",
        {"matmul_peak_gflops": peak / 1e9, "saelens": have_saelens, "quick": args.quick, "rows": rows,
         "note": "timings under CPU contention are not meaningful; rerun on a quiet machine"},
    )  # fmt: skip
    print(f"wrote {path} ({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
