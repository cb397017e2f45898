"""Data-parallel training, data-parallel sparse coding on atom- or point-sharded inputs.

The 8-device checks share ONE subprocess (XLA_FLAGS must be set before jax starts);
its references are computed here, on one device, with LAPACK's Cholesky.
"""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae._sharding import check_batch_divisible, resolve_data_mesh
from jaxsae.solvers._cholesky import cholesky, spd_solve  # private: the CPU-safe Cholesky


def _coding_problem(N=203, d=24, K=128, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((K, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Z = rng.uniform(0, 1, (N, K)) * (rng.uniform(size=(N, K)) < 0.04)
    return A, Z @ A + 0.05 * rng.standard_normal((N, d))


def _train_data(N=256, d=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)) @ rng.standard_normal((d, d))


TRAIN = dict(lam=0.05, steps=5, batch_size=64, lr=1e-2, log_every=2, progress=False)


def test_memmap_training_equals_in_memory_bit_for_bit(tmp_path):
    X = _train_data()
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    sae = jaxsae.SAE.init(6, 16, jaxsae.ReLU(), key=jax.random.key(2), dtype=jnp.float64)
    a = jaxsae.train_sae(sae, X, key=jax.random.key(3), **TRAIN)
    b = jaxsae.train_sae(sae, mm, key=jax.random.key(3), **{**TRAIN, "steps": 9})  # 2 epochs
    c = jaxsae.train_sae(sae, X, key=jax.random.key(3), **{**TRAIN, "steps": 9})
    assert float(jnp.max(jnp.abs(a.sae.W_dec - sae.W_dec))) > 1e-4  # training moved
    for x, y in zip(jax.tree.leaves(b.state), jax.tree.leaves(c.state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(b.history["loss"], c.history["loss"])
    bad = np.lib.format.open_memmap(
        tmp_path / "bad.npy", mode="w+", dtype=np.float64, shape=X.shape
    )
    bad[:] = X
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaxsae.train_sae(sae, bad, key=jax.random.key(3), **{**TRAIN, "steps": 8})


def test_mesh_arguments_and_batch_errors():
    assert resolve_data_mesh(False, jnp.ones(3)) is None
    fake = jax.sharding.Mesh(np.asarray(jax.devices()[:1] * 8), ("data",))
    assert resolve_data_mesh(fake) is fake
    with pytest.raises(ValueError, match="'data'"):
        resolve_data_mesh(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("model",)))
    with pytest.raises(ValueError, match="96 or 104"):
        check_batch_divisible(100, fake, "batch_size", "pass mesh=False")
    with pytest.raises(ValueError, match="= 8,"):
        check_batch_divisible(3, fake, "batch_size", "pass mesh=False")
    sae = jaxsae.SAE.init(6, 16, jaxsae.ReLU(), key=jax.random.key(2), dtype=jnp.float64)
    with pytest.raises(ValueError, match="batch_size = 96 or 104"):
        jaxsae.train_sae(sae, _train_data(), key=jax.random.key(3), mesh=fake,
                         **{**TRAIN, "batch_size": 100})  # fmt: skip


def test_xla_cholesky_solve_matches_numpy_and_fails_like_lapack():
    """The plain-XLA Cholesky every batched solve uses on CPU (solvers/_cholesky.py)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 9, 9))
    M = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(9)
    b = rng.standard_normal((6, 9))
    x = spd_solve(jnp.asarray(M), jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(M, b[..., None])[..., 0], rtol=1e-10)
    B = rng.standard_normal((6, 9, 4))  # several right-hand sides
    np.testing.assert_allclose(np.asarray(spd_solve(jnp.asarray(M), jnp.asarray(B))),
                               np.linalg.solve(M, B), rtol=1e-10)  # fmt: skip
    np.testing.assert_allclose(np.asarray(cholesky(jnp.asarray(M))), np.linalg.cholesky(M),
                               rtol=1e-12, atol=1e-14)  # fmt: skip
    assert np.isnan(np.asarray(spd_solve(-jnp.eye(3), jnp.ones(3)))).all()


CHILD = textwrap.dedent(
    """
    import os, sys, json, time
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    import jaxsae
    from jaxsae._sharding import data_mesh, model_mesh, shard_atoms, shard_rows
    assert len(jax.devices()) == 8
    folder, full = sys.argv[1], sys.argv[3] == "full"
    A, X = np.load(folder + "/A.npy"), np.load(folder + "/X.npy")
    out, t0 = {}, time.time()
    D = jaxsae.Dictionary(A)
    # atom-parallel dictionary (model axis): gathered, points coded data-parallel
    atoms = jaxsae.sparse_code(shard_atoms(D, model_mesh()), X, 0.1)
    rows = jaxsae.sparse_code(D, shard_rows(X[:200], data_mesh()), 0.1)
    np.save(folder + "/codes_atoms.npy", np.asarray(atoms.codes))
    np.save(folder + "/codes_rows.npy", np.asarray(rows.codes))
    out["codes_on"] = len(atoms.codes.sharding.device_set)
    out["converged"] = bool(atoms.converged.all()) and bool(rows.converged.all())
    if full:  # one device inside the 8-device process, and the implicit gradient
        one = jaxsae.sparse_code(D, X, 0.1, mesh=False)
        np.save(folder + "/codes_one.npy", np.asarray(one.codes))
        grad = jax.grad(lambda a: jnp.sum(jaxsae.sparse_code(jaxsae.Dictionary(a), X, 0.1).codes ** 2))
        np.save(folder + "/grad.npy", np.asarray(grad(jnp.asarray(A))))
        # inside a trace (vmap over λ) on inputs committed to one device: stays there
        Xc = jax.device_put(X, jax.devices()[0])
        lams = jnp.asarray([0.1, 0.2])
        np.save(folder + "/vmap.npy", np.asarray(jax.vmap(lambda l: jaxsae.sparse_code(D, Xc, l).codes)(lams)))
    out["coding_s"] = time.time() - t0
    # data-parallel training: batch split over the data axis, SAE and Adam replicated
    T = np.load(folder + "/T.npy")
    sae = jaxsae.SAE.init(6, 16, jaxsae.ReLU(), key=jax.random.key(2), dtype=jnp.float64)
    kw = json.loads(sys.argv[2])
    many = jaxsae.train_sae(sae, T, key=jax.random.key(3), **kw)
    mm = jaxsae.train_sae(sae, np.load(folder + "/T.npy", mmap_mode="r"), key=jax.random.key(3), **kw)
    runs = [("many", many), ("memmap", mm)]
    if full:
        runs.append(("single", jaxsae.train_sae(sae, T, key=jax.random.key(3), mesh=False, **kw)))
    for name, r in runs:
        np.save(folder + f"/W_dec_{name}.npy", np.asarray(r.sae.W_dec))
        np.save(folder + f"/W_enc_{name}.npy", np.asarray(r.sae.W_enc))
        np.save(folder + f"/loss_{name}.npy", r.history["loss"])
    out["state_on"] = len(many.state.sae.W_dec.sharding.device_set)
    out["state_replicated"] = bool(many.state.sae.W_dec.sharding.is_fully_replicated)
    try:
        jaxsae.train_sae(sae, T, key=jax.random.key(3), **{**kw, "batch_size": 100})
    except ValueError as err:
        out["batch_error"] = str(err)
    out["total_s"] = time.time() - t0
    print("RESULT" + json.dumps(out))
    """
)


def test_eight_devices_equal_one_device(tmp_path):
    """8 simulated devices: sparse_code on model-sharded atoms / data-sharded points
    and data-parallel train_sae (in memory and from a memmap) equal the one-device
    run here (LAPACK Cholesky) to ~1e-12. Budget: ~40 s on a loaded 2-core machine."""
    _eight_devices(tmp_path, full=False)


@pytest.mark.slow  # ~70 s: adds the implicit gradient, vmap over λ and mesh=False on 8 devices
def test_eight_devices_gradient_and_mesh_false(tmp_path):
    _eight_devices(tmp_path, full=True)


def _eight_devices(tmp_path, full: bool):
    A, X = _coding_problem()
    T = _train_data()
    for name, a in (("A", A), ("X", X), ("T", T)):
        np.save(tmp_path / f"{name}.npy", a)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), json.dumps(TRAIN), "full" if full else "-"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    res = json.loads(out.stdout.split("RESULT")[-1])
    # references: one device, this process
    D = jaxsae.Dictionary(A)
    ref = jaxsae.sparse_code(D, X, 0.1)
    assert bool(ref.converged.all()) and res["converged"]
    assert np.count_nonzero(np.asarray(ref.codes)) > 300
    for name in ("atoms", "one") if full else ("atoms",):
        np.testing.assert_allclose(np.load(tmp_path / f"codes_{name}.npy"), ref.codes, atol=1e-12)
    np.testing.assert_allclose(np.load(tmp_path / "codes_rows.npy"), ref.codes[:200], atol=1e-12)
    assert res["codes_on"] == 8
    if full:
        grad = jax.grad(
            lambda a: jnp.sum(jaxsae.sparse_code(jaxsae.Dictionary(a), X, 0.1).codes ** 2)
        )
        g = np.asarray(grad(jnp.asarray(A)))
        assert np.abs(g).max() > 1e-2
        np.testing.assert_allclose(np.load(tmp_path / "grad.npy"), g, atol=1e-10 * np.abs(g).max())
        vm = np.load(tmp_path / "vmap.npy")
        np.testing.assert_allclose(vm[0], ref.codes, atol=1e-12)
        np.testing.assert_allclose(vm[1], jaxsae.sparse_code(D, X, 0.2).codes, atol=1e-12)

    sae = jaxsae.SAE.init(6, 16, jaxsae.ReLU(), key=jax.random.key(2), dtype=jnp.float64)
    r = jaxsae.train_sae(sae, T, key=jax.random.key(3), **TRAIN)
    assert float(jnp.max(jnp.abs(r.sae.W_dec - sae.W_dec))) > 1e-4
    for name in ("many", "memmap", "single") if full else ("many", "memmap"):
        for field, want in (("W_dec", r.sae.W_dec), ("W_enc", r.sae.W_enc)):
            np.testing.assert_allclose(np.load(tmp_path / f"{field}_{name}.npy"), want, atol=1e-12)
        np.testing.assert_allclose(
            np.load(tmp_path / f"loss_{name}.npy"), r.history["loss"], rtol=1e-12
        )
    assert res["state_on"] == 8 and res["state_replicated"]
    assert "96 or 104" in res["batch_error"] and "mesh=False" in res["batch_error"]
    print({k: v for k, v in res.items() if k.endswith("_s")})


MEMMAP_CHILD = textwrap.dedent(
    """
    import sys, numpy as np, jax
    import jaxsae
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    X = np.load(sys.argv[1], mmap_mode="r")
    sae = jaxsae.SAE.init(X.shape[1], 64, jaxsae.ReLU(), key=jax.random.key(0))
    before = hwm()
    out = jaxsae.train_sae(sae, X, lam=0.1, steps=3, batch_size=256, key=jax.random.key(1),
                           log_every=1, progress=False)
    print("RESULT", before, hwm(), out.history["step"][-1])
    """
)


def test_memmap_training_memory_is_bounded_by_the_batch(tmp_path):
    # a 512 MB memmap (a sparse file: nothing is written); 3 steps of 256 rows read 0.8 MB
    path = tmp_path / "x.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(500_000, 256))
    del mm
    out = subprocess.run(
        [sys.executable, "-c", MEMMAP_CHILD, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before, after, steps = (int(v) for v in out.stdout.split("RESULT")[-1].split())
    assert steps == 3
    # the data alone is 512 MB; measured: ~105 MB of compilation + ~65 MB for the O(N) epoch
    # permutation (the same run on a 5000-row memmap grows by ~105 MB)
    assert after - before < 300 * 2**20, (after - before) / 2**20
