"""learn_dictionary and sweep on streamed data (memmap, uneven chunks, callables).

The streamed learner must reach the in-memory learner's optimum from the same
initialisation (its iterates are the same up to rounding), and its optimum is
judged independently by ``jaxsae.certify`` on the in-memory data.
"""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae.learning import _dl_driver, _dl_stream
from jaxsae.learning._dl_manifold import stack
from jaxsae.learning._dl_setup import LearnerConfig, data_init
from jaxsae.learning._dl_steps import init_state
from jaxsae.learning._dl_stream_source import CodeCache

D_FEAT, K, N, LAM, CHUNK = 6, 4, 300, 0.05, 128
SPLITS = [70, 71, 250]  # uneven chunks: 70, 1, 179, 50 points


def _problem(noise=0.01, seed=1):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((K, D_FEAT))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    Z = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < 0.3)
    X = Z @ truth + noise * rng.standard_normal((N, D_FEAT))
    init = X[rng.choice(N, K, replace=False)] + 0.3 * rng.standard_normal((K, D_FEAT))
    return X, init / np.linalg.norm(init, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X, init = _problem()
    path = tmp_path_factory.mktemp("stream") / "X.npy"
    np.save(path, X)
    return X, np.load(path, mmap_mode="r"), jaxsae.Dictionary(jnp.asarray(init))


def _learn(X, init, **kw):
    kw = {"chunk_size": CHUNK, "progress": False, **kw}
    return jaxsae.learn_dictionary(X, K, LAM, key=jax.random.key(0), init=init, **kw)


@pytest.fixture(scope="module")
def reference(data):
    X, _, init = data
    return _learn(jnp.asarray(X), init)


@pytest.fixture(scope="module")
def streamed(data):
    _, Xm, init = data
    return _learn(Xm, init)


def test_memmap_reaches_the_in_memory_optimum(data, reference, streamed):
    D0, h0 = reference
    D1, h1 = streamed
    assert bool(h0.converged) and bool(h1.converged)
    # Same initialisation, same iterates up to rounding: same atoms (same order).
    np.testing.assert_allclose(np.asarray(D1.atoms), np.asarray(D0.atoms), atol=1e-8)
    assert abs(float(h1.objective[-1]) - float(h0.objective[-1])) <= 1e-12
    assert h1.codes.shape == (0, K) and h1.objective.shape == h0.objective.shape
    np.testing.assert_allclose(np.asarray(h1.objective), np.asarray(h0.objective), atol=1e-12)


def test_streamed_optimum_is_certified(data, streamed):
    X, _, _ = data
    D, hist = streamed
    cert = jaxsae.certify(D, jnp.asarray(X), LAM)
    assert float(jnp.max(cert.atom_alignment)) <= 1e-9
    assert float(jnp.max(cert.atom_grad_norm)) <= 1e-9
    # F recorded by the streamed learner equals L at the certificate's optimal codes.
    assert float(cert.code_gap_max) <= 1e-12
    assert abs(float(hist.objective[-1]) - float(cert.objective)) <= 1e-12


def test_uneven_chunks_and_callable_source(data, streamed):
    X, _, init = data
    D1, _ = streamed
    pieces = np.split(X, SPLITS)
    D2, h2 = _learn(pieces, init)
    np.testing.assert_allclose(np.asarray(D2.atoms), np.asarray(D1.atoms), atol=1e-8)
    calls = []

    def source():
        calls.append(1)
        return iter(pieces)

    D3, h3 = _learn(source, init)
    np.testing.assert_allclose(np.asarray(D3.atoms), np.asarray(D1.atoms), atol=1e-8)
    assert abs(float(h3.objective[-1]) - float(h2.objective[-1])) <= 1e-12
    # One fresh iterator per pass: warm-up passes, the polish pass, ≥ 1 per L-BFGS step.
    assert len(calls) >= h3.objective.shape[0] + 1


def test_clear_errors(data, unchecked):
    X, Xm, init = data
    with pytest.raises(ValueError, match="one-shot iterator"):
        _learn(iter(np.split(X, SPLITS)), init)
    with pytest.raises(ValueError, match="checkpoint_dir is not supported"):
        _learn(Xm, init, checkpoint_dir="ckpt")

    class Custom(jaxsae.AbstractDeadAtomPolicy):
        def __call__(self, atoms, Z, R, mask):
            return atoms

    with pytest.raises(ValueError, match="ReseedDead"):
        _learn(Xm, init, dead_atoms=Custom())
    with pytest.raises(ValueError, match="features"):
        _learn([X[:10], X[10:, :3]], init)
    with pytest.raises(ValueError, match="chunk_size"):
        _learn(Xm, init, chunk_size=0)
    bad = np.array(X[:20])
    bad[13, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _learn([bad], init)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        jaxsae.sweep(Xm, widths=[2], lams=[0.1], checkpoint_dir="ckpt")
    with pytest.raises(ValueError, match="one-shot iterator"):
        jaxsae.sweep(iter([X]), widths=[2], lams=[0.1])


def _one_alternating_step(X, P, mask, policy, free_bias):
    """In-memory ``alternating_step`` and the streamed step from the same state.

    The in-memory step is the driver's compiled one (shared with ``reference``).
    """
    cfg = LearnerConfig.make(
        X.dtype, max_steps=1, warm_steps=1, tol=None, memory=10, dead_atoms=policy,
        bias=free_bias, code_tol=None,
    )  # fmt: skip
    lam = jnp.asarray(LAM, X.dtype)
    state = init_state(P, jnp.asarray(X), cfg.memory)
    mem = _dl_driver._alternating(
        state, jnp.asarray(X), lam, mask, policy, free_bias, cfg.inner_steps, False
    )
    stream = _dl_stream.open_stream(np.split(X, SPLITS), CHUNK)
    cache = CodeCache(CHUNK, P.shape[0] - 1, X.dtype)
    sstate = init_state(P, jnp.zeros((0, X.shape[1]), X.dtype), cfg.memory)
    out = _dl_stream._alternating(stream, sstate, lam, mask, cfg, cache)
    codes = np.concatenate([cache.read(i) for i in range(-(-X.shape[0] // CHUNK))])
    cache.close()
    return mem, out, codes[: X.shape[0]]


@pytest.mark.parametrize("free_bias", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_phase1_step_equals_in_memory(data, free_bias):
    """Codes, atom pass from A and B only, bias, and the reported measures."""
    X, _, init = data
    Xs = X + np.linspace(-0.5, 0.5, D_FEAT) if free_bias else X
    b = jnp.asarray(Xs.mean(0)) if free_bias else jnp.zeros(D_FEAT)
    P = stack(init.atoms, b)
    mem, out, codes = _one_alternating_step(
        Xs, P, jnp.ones(K, bool), jaxsae.ReseedDead(), free_bias
    )
    np.testing.assert_allclose(codes, np.asarray(mem.codes), atol=1e-14)
    assert not np.allclose(np.asarray(out.P), np.asarray(P), atol=1e-3)  # the atoms moved
    np.testing.assert_allclose(np.asarray(out.P), np.asarray(mem.P), atol=1e-13)
    for name in ("value", "grad_norm", "align"):
        assert abs(float(getattr(out, name)) - float(getattr(mem, name))) <= 1e-13


def test_phase1_reseeds_dead_atoms_like_in_memory():
    """A dead atom (e_d, orthogonal to noise-free data) is reseeded onto the same residual."""
    X, init = _problem(noise=0.0)
    X[:, -1] = 0.0
    atoms = np.concatenate([init[:2], np.eye(D_FEAT)[-1:], np.eye(D_FEAT)[-2:-1]])
    atoms[:2, -1] = 0.0
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    P = stack(jnp.asarray(atoms), jnp.zeros(D_FEAT))
    mem, out, _ = _one_alternating_step(X, P, jnp.ones(K, bool), jaxsae.ReseedDead(), False)
    assert float(jnp.sum(jnp.abs(mem.codes[:, 2]))) == 0.0  # atom 2 was dead
    assert abs(float(mem.P[2, -1])) < 0.5  # ... and was moved by the policy
    np.testing.assert_allclose(np.asarray(out.P), np.asarray(mem.P), atol=1e-13)


def test_streamed_sweep_equals_in_memory_runs(data):
    """A streamed sweep (2 widths × 2 λ) against in-memory runs with the sweep's init."""
    X, Xm, _ = data
    res = jaxsae.sweep(Xm, widths=[2, 4], lams=[0.05, 0.1], progress=False, chunk_size=CHUNK)
    assert len(res) == 4 and bool(np.all(res.converged))
    atoms0 = data_init(jnp.asarray(X), K, key=jax.random.key(0))
    var = np.mean(np.sum(X**2, 1)) - np.sum(X.mean(0) ** 2)
    for i, r in enumerate(res.rows()):
        mask = jnp.arange(K) < r["width"]
        D, hist = jaxsae.learn_dictionary(
            jnp.asarray(X), K, r["lam"], key=jax.random.key(0), progress=False,
            init=jaxsae.Dictionary(atoms0, mask=mask),
        )  # fmt: skip
        assert abs(r["objective"] - float(hist.objective[-1])) <= 1e-10
        np.testing.assert_allclose(np.asarray(res.atoms[i]), np.asarray(D.atoms), atol=1e-8)
        Z = np.asarray(hist.codes)  # the in-memory run's certified codes
        t = np.linalg.norm(X, axis=1)
        lam = r["lam"]
        assert abs(r["bound"] - np.where(t <= lam, t**2 / 2, lam * t - lam**2 / 2).mean()) < 1e-12
        assert abs(r["l0"] - (Z > 0).sum(1).mean()) < 1e-12
        err = np.mean(np.sum((X - Z @ np.asarray(D.atoms)) ** 2, 1))
        assert abs(r["explained_variance"] - (1 - err / var)) < 1e-8
        assert r["dead"] == int(np.sum(np.asarray(mask) & (Z.sum(0) == 0)))
    obj = np.asarray(res.objective)
    assert obj[2] < obj[0] and obj[3] < obj[1]  # wider is better at each λ


@pytest.mark.slow
def test_streamed_sweep_equals_in_memory_sweep(data):
    X, Xm, _ = data
    kw = dict(
        widths=[2, 4],
        lams=[0.05, 0.1],
        seeds=[0, 1],
        progress=False,
        learner=jaxsae.DictionaryLearner(bias=True),
    )
    res = jaxsae.sweep(Xm, chunk_size=CHUNK, **kw)
    ref = jaxsae.sweep(jnp.asarray(X), **kw)
    np.testing.assert_allclose(np.asarray(res.objective), np.asarray(ref.objective), atol=1e-9)
    np.testing.assert_allclose(np.asarray(res.bound), np.asarray(ref.bound), atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.atoms), np.asarray(ref.atoms), atol=1e-7)


def test_float32_memmap_learned_in_float64_matches_the_float64_run(data, tmp_path):
    """``dtype=float64`` on a float32 memmap: every chunk is cast as it is read, so the run
    is the in-memory float64 run on the same (float32-rounded) numbers."""
    X, _, init = data
    X32 = np.asarray(X, np.float32)
    np.save(tmp_path / "x32.npy", X32)
    Xm = np.load(tmp_path / "x32.npy", mmap_mode="r")
    D0, h0 = _learn(jnp.asarray(X32, jnp.float64), init)
    D1, h1 = _learn(Xm, init, dtype=jnp.float64)
    assert D1.dtype == jnp.float64 and h1.objective.dtype == jnp.float64
    assert bool(h1.converged)
    np.testing.assert_allclose(np.asarray(D1.atoms), np.asarray(D0.atoms), atol=1e-8)
    assert abs(float(h1.objective[-1]) - float(h0.objective[-1])) <= 1e-12


@pytest.mark.slow
def test_float32_stream_matches_in_memory(data):
    X, _, init = data
    X32 = np.asarray(X, np.float32)
    init32 = init.astype(jnp.float32)
    D0, h0 = _learn(jnp.asarray(X32), init32)
    D1, h1 = _learn(np.split(X32, SPLITS), init32)
    assert D1.dtype == jnp.float32 and h1.objective.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(D1.atoms), np.asarray(D0.atoms), atol=1e-4)
    assert abs(float(h1.objective[-1]) - float(h0.objective[-1])) <= 1e-6


MEMORY_CHILD = textwrap.dedent(
    """
    import sys, jax, numpy as np
    import jaxsae
    path, chunk = sys.argv[1], int(sys.argv[2])
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    X = np.load(path, mmap_mode="r")
    kw = dict(key=jax.random.key(0), warm_steps=2, max_steps=2, chunk_size=chunk, progress=False)
    jaxsae.learn_dictionary(X[: 10 * chunk + 5], 64, 0.3, **kw)  # compile, warm the allocators
    before = hwm()
    D, hist = jaxsae.learn_dictionary(X, 64, 0.3, **kw)
    after = hwm()
    print(before, after, hist.objective.shape[0], float(hist.objective[-1]))
    """
)


@pytest.mark.slow
def test_streamed_learning_memory_is_bounded_by_the_chunk(tmp_path):
    """200k × 128 float32 memmap (102 MB), K = 64, chunks of 2048 (1 MB): peak RSS grows
    by far less than the file (reading it whole or keeping its pages would add ≥ 102 MB)
    or the N × K codes (51 MB each for the accepted and the trial point, which live in
    temporary files)."""
    N, d = 200_000, 128
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
    before, after, steps, F = out.stdout.split()[-4:]
    assert int(steps) >= 3 and np.isfinite(float(F))
    print(
        f"peak RSS +{(int(after) - int(before)) / 2**20:.1f} MiB over {N * d * 4 / 2**20:.0f} MiB"
    )
    assert int(after) - int(before) < 50 * 2**20, (int(after) - int(before)) / 2**20
