"""sweep(learner=SAETrainer()) on a memmap / list of chunks equals the in-memory SAE sweep."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae._rows import Rows  # the minibatch reader shared by train_sae and the SAE sweep
from jaxsae.learning import _sweep_sae as stream  # private pieces: segment order and row reads
from jaxsae.learning._sweep_sae import _epoch_keys

N, D = 203, 6
KW = dict(
    widths=(2, 4), lams=(0.05, 0.1), seeds=(0,), progress=False,
    learner=jaxsae.SAETrainer(steps=40, batch_size=32, lr=1e-2),
)  # fmt: skip
COLUMNS = ("objective", "bound", "l0", "explained_variance", "grad_norm", "alignment")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((5, D))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    Z = rng.uniform(0.5, 1.5, (N, 5)) * (rng.uniform(size=(N, 5)) < 0.3)
    X = Z @ feats + 0.05 * rng.standard_normal((N, D)) + 0.3
    path = tmp_path_factory.mktemp("sae_stream") / "x.npy"
    np.save(path, X)
    return X, np.load(path, mmap_mode="r")


@pytest.fixture(scope="module")
def reference(data):
    return jaxsae.sweep(jnp.asarray(data[0]), **KW)


def _assert_same(res, ref, atol):
    assert res.lam.dtype == ref.lam.dtype
    for name in COLUMNS + ("atoms", "bias"):
        np.testing.assert_allclose(
            np.asarray(getattr(res, name)), np.asarray(getattr(ref, name)), rtol=0, atol=atol,
            err_msg=name,
        )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(res.dead), np.asarray(ref.dead))
    np.testing.assert_array_equal(np.asarray(res.mask), np.asarray(ref.mask))


@pytest.mark.parametrize(
    "kind, chunk", [("memmap", 100), ("chunks", 200)], ids=["memmap", "uneven-chunks"]
)
def test_streamed_sae_sweep_equals_in_memory(data, reference, kind, chunk, monkeypatch):
    X, Xm = data
    src = Xm if kind == "memmap" else [X[:17], X[17:100], X[100:101], X[101:]]
    shapes = []
    train = stream._train_segment

    def spy(states, masks, lams, source, Xs, lr):
        shapes.append(Xs.shape)
        return train(states, masks, lams, source, Xs, lr)

    monkeypatch.setattr(stream, "_train_segment", spy)
    res = jaxsae.sweep(src, chunk_size=chunk, **KW)
    _assert_same(res, reference, atol=1e-12)
    # chunk_size divides neither N = 203 nor the 40 steps: S = chunk // 32 steps per segment,
    # then one shorter segment; every step is run once and a segment never exceeds chunk rows.
    S = chunk // 32
    assert shapes == [(S, 32, D)] * (40 // S) + [(40 % S, 32, D)]
    # The table is the honest one: (W) at the learned bias, recomputed independently.
    for i in range(len(res)):
        want = jaxsae.wide_bound(jnp.asarray(X), res.lam[i], res.bias[i])
        np.testing.assert_allclose(float(res.bound[i]), float(want), rtol=1e-12)
    assert np.all(np.asarray(res.gap) >= 0)


def test_segments_follow_the_in_memory_batch_order():
    n, B, steps, S = 7, 3, 11, 4  # 33 positions over 5 epochs; segments straddle epochs
    keys = _epoch_keys(steps, B, n)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    want = np.asarray(perms).reshape(-1)[: steps * B].reshape(steps, B)
    got = list(stream._segments(keys, n, B, steps, S))
    assert [g.shape for g in got] == [(4, 3), (4, 3), (3, 3)]
    np.testing.assert_array_equal(np.concatenate(got), want)


def test_gather_reads_rows_in_batch_order(data):
    X, Xm = data
    idx = np.random.default_rng(1).integers(0, N, 50)  # repeats and any order
    for src in (Xm, [X[:17], X[17:100], X[100:101], X[101:]]):
        np.testing.assert_array_equal(Rows(src, "sweep").gather(idx), X[idx])


def test_float32_memmap(data, tmp_path):
    X = data[0].astype(np.float32)
    np.save(tmp_path / "x32.npy", X)
    kw = dict(KW, lams=(0.1,), learner=jaxsae.SAETrainer(steps=20, batch_size=32, lr=1e-2))
    ref = jaxsae.sweep(jnp.asarray(X), **kw)
    res = jaxsae.sweep(np.load(tmp_path / "x32.npy", mmap_mode="r"), chunk_size=64, **kw)
    assert res.objective.dtype == jnp.float32 and res.atoms.dtype == jnp.float32
    # only the data mean's summation order differs (float32 rounding, amplified by Adam)
    _assert_same(res, ref, atol=2e-5)


def test_clear_errors(data, tmp_path, unchecked):
    X, Xm = data
    with pytest.raises(ValueError, match="random access"):
        jaxsae.sweep(lambda: iter([X]), **KW)
    with pytest.raises(ValueError, match="random access"):
        jaxsae.sweep(iter([X[:100], X[100:]]), **KW)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        jaxsae.sweep(Xm, checkpoint_dir=str(tmp_path / "ckpt"), **KW)
    with pytest.raises(ValueError, match="features"):
        jaxsae.sweep([X[:10], X[10:, :3]], **KW)
    with pytest.raises(ValueError, match="chunk_size"):
        jaxsae.sweep(Xm, chunk_size=0, **KW)
    bad = np.array(X)
    bad[150, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        jaxsae.sweep([bad[:100], bad[100:]], **KW)


MEMORY_CHILD = """
import sys, numpy as np, jaxsae
path, chunk = sys.argv[1], int(sys.argv[2])
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
X = np.load(path, mmap_mode="r")
kw = dict(widths=[8], lams=[0.1], learner=jaxsae.SAETrainer(steps=300, batch_size=256),
          progress=False, chunk_size=chunk)
jaxsae.sweep(X[: 10 * chunk + 5], **kw)  # compile; allocators reach their steady state
before = hwm()
res = jaxsae.sweep(X, **kw)
print(before, hwm(), float(res.objective[0]), float(res.explained_variance[0]))
"""


@pytest.mark.slow
def test_streamed_sae_sweep_memory_is_bounded_by_the_chunk(tmp_path):
    """A 200k × 256 float32 memmap (205 MB), segments of 2048 rows (2 MB): 300 random
    minibatches of 256 and two full passes, yet peak RSS grows by far less than the file
    (what may grow: the 0.8 MB epoch permutation and allocator noise)."""
    import subprocess
    import sys

    N, d = 200_000, 256
    X = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(N, d))
    rng = np.random.default_rng(0)
    for i in range(0, N, 50_000):
        X[i : i + 50_000] = rng.standard_normal((50_000, d), dtype=np.float32) * 0.2
    X.flush()
    del X
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path / "x.npy"), "2048"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    before, after, objective, ev = (float(v) for v in out.stdout.split()[-4:])
    print(f"peak RSS +{(after - before) / 2**20:.1f} MiB; objective {objective:.4f}, EV {ev:.3f}")
    assert np.isfinite(objective) and 0 < ev < 1
    assert after - before < 80 * 2**20
