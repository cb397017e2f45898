"""train_sae: the loss is THEORY §0's objective, schedules and warm-ups, dead/dense
tracking, and bit-for-bit resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxsae
from jaxsae.learning._sae_step import _loss


def sparse_data(key, N=512, d=8, K=12, dtype=jnp.float64):
    k1, k2, k3 = jax.random.split(key, 3)
    atoms = jax.random.normal(k1, (K, d), dtype)
    atoms = atoms / jnp.linalg.norm(atoms, axis=1, keepdims=True)
    Z = jax.random.uniform(k2, (N, K), dtype, 0.5, 1.5) * (
        jax.random.uniform(k3, (N, K)) < 0.15
    ).astype(dtype)
    return Z @ atoms


@pytest.mark.parametrize("penalty", [jaxsae.L1(), jaxsae.DecoderNormL1()])
def test_training_loss_is_the_joint_objective(getkey, penalty):
    # THEORY §0: the L1-weighted-by-decoder-norms SAE is the joint problem after folding.
    sae = jaxsae.SAE.init(8, 12, jaxsae.ReLU(), key=getkey(), dtype=jnp.float64, decoder_norm=0.3)
    sae = eqx.tree_at(lambda s: s.b_enc, sae, jnp.full(12, 0.05))
    if penalty.unit_decoder:
        sae = jaxsae.fold_decoder_norms(sae)
    X = sparse_data(getkey(), N=40)
    loss, _ = _loss(sae, X, 0.1, penalty)
    D, Z = jaxsae.sae_dictionary(sae), jaxsae.sae_codes(sae, X)
    R = np.asarray(X) - np.asarray(D.bias) - np.asarray(Z) @ np.asarray(D.atoms)
    direct = np.mean(0.5 * np.sum(R**2, 1) + 0.1 * np.asarray(Z).sum(1))
    np.testing.assert_allclose(loss, direct, rtol=1e-12)
    np.testing.assert_allclose(loss, jaxsae.objective(D, X, Z, 0.1), rtol=1e-12)


def test_one_sgd_step_is_a_gradient_step(getkey):
    # Full batch, plain SGD, no projection: the update must be −lr·∇L, ∇L by finite differences.
    X = sparse_data(getkey(), N=64)
    sae = jaxsae.SAE.init(8, 12, jaxsae.ReLU(), key=getkey(), dtype=jnp.float64)
    sae = eqx.tree_at(lambda s: s.b_enc, sae, jnp.full(12, 0.02))
    lr, lam = 0.05, 0.1
    out = jaxsae.train_sae(sae, X, lam=lam, penalty=jaxsae.DecoderNormL1(), optimizer=optax.sgd(lr),
                           steps=1, batch_size=64, key=getkey(), progress=False)  # fmt: skip

    def L(W_dec):
        s = eqx.tree_at(lambda s: s.W_dec, sae, W_dec)
        Z = np.maximum(
            (np.asarray(X) - np.asarray(s.b_dec)) @ np.asarray(s.W_enc) + np.asarray(s.b_enc), 0
        )
        R = np.asarray(X) - Z @ np.asarray(W_dec) - np.asarray(s.b_dec)
        return np.mean(0.5 * np.sum(R**2, 1) + lam * Z @ np.linalg.norm(W_dec, axis=1))

    h, W = 1e-6, np.asarray(sae.W_dec)
    for i, j in [(0, 0), (3, 5), (11, 7)]:
        E = np.zeros_like(W)
        E[i, j] = h
        g = (L(W + E) - L(W - E)) / (2 * h)
        np.testing.assert_allclose(out.sae.W_dec[i, j], W[i, j] - lr * g, rtol=1e-8, atol=1e-9)


def test_learns_sparse_data_with_unit_decoder(getkey):
    X = sparse_data(getkey(), N=1024, dtype=jnp.float32)
    sae = jaxsae.SAE.init(8, 24, jaxsae.ReLU(), key=getkey(), decoder_norm=1.0)
    out = jaxsae.train_sae(sae, X, lam=0.02, steps=400, batch_size=128, lr=1e-2, key=getkey(),
                           log_every=100, progress=False)  # fmt: skip
    np.testing.assert_allclose(out.sae.decoder_norms(), 1, rtol=1e-5)
    Xh = jax.vmap(out.sae)(X)
    ev = float(jaxsae.explained_variance(X, Xh))
    assert ev > 0.9, ev
    assert out.history["explained_variance"][0] < out.history["explained_variance"][-1]
    assert out.history["loss"][-1] < out.history["loss"][0]
    assert out.sae.dtype == jnp.float32


def test_warmups_schedules_dead_and_dense(getkey):
    X = sparse_data(getkey(), N=96)
    sae = jaxsae.SAE.init(8, 12, jaxsae.ReLU(), key=getkey(), dtype=jnp.float64, decoder_norm=1.0)
    b_enc = jnp.zeros(12).at[:3].set(-1e3).at[3:5].set(1e3)  # 3 never fire, 2 always fire
    sae = eqx.tree_at(lambda s: s.b_enc, sae, b_enc)
    out = jaxsae.train_sae(sae, X, lam=0.2, steps=24, batch_size=32, lr=1e-4, lr_warmup_steps=8,
                           lr_decay_steps=8, l1_warmup_steps=10, log_every=4, dead_after=5,
                           key=getkey(), progress=False)  # fmt: skip
    h = out.history
    np.testing.assert_array_equal(h["step"], np.arange(4, 25, 4))
    # λ after warm-up at the logged step s (the step's index is s − 1): λ·min(1, s/10)
    np.testing.assert_allclose(h["lam"], 0.2 * np.minimum(1, h["step"] / 10), rtol=1e-12)
    # lr: linear 0 → 1e-4 over 8 steps, constant, then linear to 0 over the last 8
    s = h["step"] - 1
    lr_ref = np.where(s < 8, 1e-4 * s / 8, np.where(s < 16, 1e-4, 1e-4 * (1 - (s - 16) / 8)))
    np.testing.assert_allclose(h["lr"], lr_ref, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(h["dead"], np.where(h["step"] >= 5, 3, 0))
    np.testing.assert_array_equal(out.dead_latents, np.arange(12) < 3)
    assert np.all(h["dense"] >= 2)
    assert np.all(h["l0"] >= 2)


def test_topk_and_jumprelu_train(getkey):
    X = sparse_data(getkey(), N=256, dtype=jnp.float32)
    topk = jaxsae.SAE.init(8, 16, jaxsae.TopK(3), key=getkey())
    out = jaxsae.train_sae(
        topk, X, steps=20, batch_size=64, key=getkey(), log_every=10, progress=False
    )
    np.testing.assert_allclose(out.history["l0"], 3)
    jump = jaxsae.SAE.init(8, 16, jaxsae.JumpReLU(0.05, 0.05), key=getkey(), decoder_norm=1.0)
    out = jaxsae.train_sae(
        jump, X, lam=0.05, steps=20, batch_size=64, key=getkey(), lr=1e-2, progress=False
    )
    # the threshold is a trained parameter: it moves (straight-through gradient)
    assert float(jnp.max(jnp.abs(out.sae.activation.threshold - 0.05))) > 1e-3
    with pytest.raises(ValueError, match="needs lam"):
        jaxsae.train_sae(jump, X, steps=2, batch_size=8, key=getkey(), progress=False)
    with pytest.raises(ValueError, match="shape"):
        jaxsae.train_sae(
            jump, X[:, :5], lam=0.1, steps=2, batch_size=8, key=getkey(), progress=False
        )


CHILD = textwrap.dedent(
    """
    import sys, time, json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import jaxsae
    from jaxsae.learning import _train_sae

    mode, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "slow":  # pretend the run is long: stall after the second checkpoint
        real = _train_sae.save_checkpoint
        def stalled(directory, step, state, meta, **kw):
            path = real(directory, step, state, meta, **kw)
            if step == 10:
                time.sleep(600)
            return path
        _train_sae.save_checkpoint = stalled
    key = jax.random.key(0)
    X = jax.random.normal(key, (300, 6), jnp.float64) @ jax.random.normal(jax.random.key(1), (6, 6), jnp.float64)
    sae = jaxsae.SAE.init(6, 16, jaxsae.ReLU(), key=jax.random.key(2), dtype=jnp.float64)

    def run(ckpt):
        return jaxsae.train_sae(sae, X, lam=0.05, penalty=jaxsae.DecoderNormL1(), steps=30, batch_size=64,
                                lr=1e-2, l1_warmup_steps=12, lr_warmup_steps=4, log_every=4,
                                checkpoint_dir=ckpt, checkpoint_every=5, key=jax.random.key(3),
                                progress=False)

    def save(res, out):
        arrays = {f"p{i}": np.asarray(a) for i, a in enumerate(jax.tree.leaves(res.state))}
        np.savez(out, resumed_from=res.resumed_from, **arrays)
        with open(out + ".json", "w") as fh:
            json.dump({k: v.tolist() for k, v in res.history.items()}, fh)

    if mode == "resume":  # resume from ckpt, then an uninterrupted run in a fresh folder
        save(run(ckpt), out + "-resumed.npz")
        save(run(ckpt + "-fresh"), out + "-fresh.npz")
    else:
        save(run(ckpt), out)
    """
)


def test_resume_after_kill_is_bit_for_bit(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    ckpt = tmp_path / "ckpt"
    child = subprocess.Popen(
        [sys.executable, str(script), "slow", str(ckpt), str(tmp_path / "killed.npz")], env=env
    )
    try:
        deadline = time.time() + 400
        while not (ckpt / "step-000000010").exists():
            assert child.poll() is None, "training exited before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert not (tmp_path / "killed.npz").exists()
    # a new process resumes (from step 10), then runs uninterrupted in a fresh folder
    subprocess.run(
        [sys.executable, str(script), "resume", str(ckpt), str(tmp_path / "run")],
        env=env,
        check=True,
    )
    resumed, fresh = np.load(tmp_path / "run-resumed.npz"), np.load(tmp_path / "run-fresh.npz")
    assert int(resumed["resumed_from"]) == 10 and int(fresh["resumed_from"]) == 0
    names = [n for n in fresh.files if n != "resumed_from"]
    assert len(names) > 8
    for n in names:
        np.testing.assert_array_equal(resumed[n], fresh[n])  # bit for bit
    h_res = json.loads((tmp_path / "run-resumed.npz.json").read_text())
    h_fresh = json.loads((tmp_path / "run-fresh.npz.json").read_text())
    assert h_res == h_fresh and h_res["step"][-1] == 30
    steps = sorted(p.name for p in ckpt.iterdir() if p.name != ".jaxsae.lock")  # the run lock
    assert steps == ["step-000000025", "step-000000030"]


def test_checkpoint_of_another_run_is_refused(tmp_path, getkey):
    X = sparse_data(getkey(), N=96)
    sae = jaxsae.SAE.init(8, 12, jaxsae.ReLU(), key=getkey(), dtype=jnp.float64)
    kw = dict(
        steps=4,
        batch_size=32,
        key=getkey(),
        checkpoint_dir=tmp_path,
        checkpoint_every=2,
        progress=False,
    )
    jaxsae.train_sae(sae, X, lam=0.1, **kw)
    again = jaxsae.train_sae(sae, X, lam=0.1, **kw)
    assert again.resumed_from == 4
    with pytest.raises(ValueError, match="another run"):
        jaxsae.train_sae(sae, X, lam=0.2, **kw)


def test_training_step_compiles_once(getkey, monkeypatch):
    from jaxsae.learning import _sae_step, _train_sae

    step = eqx.filter_jit(
        eqx.debug.assert_max_traces(_sae_step._step, max_traces=1), donate="all-except-first"
    )
    monkeypatch.setattr(_train_sae, "_train_step", step)
    X = sparse_data(getkey(), N=96)
    sae = jaxsae.SAE.init(8, 12, jaxsae.ReLU(), key=getkey(), dtype=jnp.float64)
    # several epochs, logs and two calls with the same shapes: one trace in total
    for lam in (0.1, 0.2):
        out = jaxsae.train_sae(
            sae, X, lam=lam, steps=13, batch_size=32, log_every=5, key=getkey(), progress=False
        )
        np.testing.assert_array_equal(out.history["step"], [5, 10, 13])
    assert np.isfinite(out.history["loss"]).all()
