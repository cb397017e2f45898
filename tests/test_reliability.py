"""Reliability (issue 11): bad input, damaged files, kills, numerical edge cases, determinism.

Covered elsewhere and not repeated here: SIGKILL/resume of ``train_sae``
(tests/test_train_sae.py::test_resume_after_kill_is_bit_for_bit), of the data
harvest (tests/test_data.py::test_harvest_survives_sigkill), the low-level atomic
writer (tests/test_files.py::test_kill_during_atomic_write_leaves_previous_file_intact)
and SAELens config refusals (tests/test_sae_io.py).
"""

from __future__ import annotations

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
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import minimize

import jaxsae
from jaxsae._atomic import atomic_write_json
from jaxsae.cli._main import main

LAM = 0.1
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
PROPS = settings(max_examples=10, deadline=None, derandomize=True, database=None)


def _rand(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape)


def _dictionary(seed=0, K=5, d=4):
    return jaxsae.Dictionary(jnp.asarray(_rand(seed, K, d)))


def _nnlasso_scipy(atoms, y, lam):
    """Independent reference: L-BFGS-B on ½‖y − Dᵀz‖² + λ1ᵀz, z ≥ 0."""
    A = np.asarray(atoms).T

    def f(z):
        r = y - A @ z
        return 0.5 * r @ r + lam * z.sum(), -A.T @ r + lam

    K = A.shape[1]
    out = minimize(
        f,
        np.zeros(K),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * K,
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000},
    )
    return out.fun


def _gap_by_hand(atoms, y, z, lam):
    """The duality gap of THEORY §1 in NumPy: u = s·r, s = min(1, λ/max g)."""
    A = np.asarray(atoms).T
    r = y - A @ z
    g = A.T @ r
    s = 1.0 if g.max() <= 0 else min(1.0, lam / g.max())
    primal = 0.5 * r @ r + lam * z.sum()
    u = s * r
    dual = 0.5 * y @ y - 0.5 * (y - u) @ (y - u)
    return primal - dual


# ---------------------------------------------------------------- input validation


BAD_X = {
    "nan": (np.array([[np.nan, 0, 0, 0], [1, 2, 3, 4.0]]), "non-finite"),
    "inf": (np.array([[np.inf, 0, 0, 0]]), "non-finite"),
    "features": (np.ones((3, 5)), "features"),
    "rank": (np.ones(4), "2-d"),
    "empty": (np.ones((0, 4)), "empty"),
    "strings": (np.array([["a", "b", "c", "d"]]), "real numbers"),
}


@pytest.mark.parametrize("case", sorted(BAD_X))
@pytest.mark.parametrize("entry", ["sparse_code", "certify", "second_order"])
def test_bad_data_is_a_clear_value_error(entry, case, unchecked):
    X, message = BAD_X[case]
    with pytest.raises(ValueError, match=message):
        getattr(jaxsae, entry)(_dictionary(), X, LAM)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf"), np.ones(2)])
@pytest.mark.parametrize("entry", ["sparse_code", "certify", "learn_dictionary"])
def test_bad_lam_is_a_clear_value_error(entry, lam):
    X = jnp.asarray(_rand(1, 6, 4))
    with pytest.raises(ValueError, match="lam"):
        if entry == "learn_dictionary":
            jaxsae.learn_dictionary(X, 3, lam, key=jax.random.key(0))
        else:
            getattr(jaxsae, entry)(_dictionary(), X, lam)


@pytest.mark.parametrize(
    "atoms, message",
    [
        (np.zeros((0, 4)), "at least one atom"),
        (np.array([[np.nan, 1.0]]), "non-finite"),
        (np.array([[0.0, 0.0], [1.0, 0.0]]), "zero row"),
        (np.ones(3), "2-d"),
    ],
)
def test_bad_dictionary_is_a_clear_value_error(atoms, message):
    with pytest.raises(ValueError, match=message):
        jaxsae.Dictionary(atoms)


def test_bad_training_inputs_are_clear_value_errors():
    sae = jaxsae.SAE.init(4, 3, jaxsae.ReLU(), key=jax.random.key(0), dtype=jnp.float64)
    X = np.array([[np.nan, 0, 0, 0], [1, 2, 3, 4.0]])
    with pytest.raises(ValueError, match="non-finite"):
        jaxsae.train_sae(sae, X, key=jax.random.key(1), steps=2, batch_size=2, lam=LAM)
    with pytest.raises(ValueError, match="non-finite"):
        jaxsae.learn_dictionary(X, 2, LAM, key=jax.random.key(0))
    with pytest.raises(ValueError, match="features"):
        jaxsae.learn_dictionary(
            np.ones((3, 4)), 2, LAM, key=jax.random.key(0), init=_dictionary(K=2, d=5)
        )


def test_nan_inside_jit_is_a_result_code_not_a_certificate():
    X = jnp.asarray([[np.nan, 1.0], [1.0, 2.0]])
    sol = eqx.filter_jit(jaxsae.sparse_code)(jaxsae.Dictionary(jnp.eye(2)), X, LAM)
    assert sol.result != jaxsae.RESULTS.successful
    # the bad point is not certified; the good one is, with the closed form max(x − λ, 0)
    assert list(np.asarray(sol.converged)) == [False, True]
    np.testing.assert_allclose(sol.codes[1], [0.9, 1.9], atol=1e-12)


# ---------------------------------- degenerate-but-valid problems must work, not NaN


def test_d1_antipodal_atoms_closed_form():
    # the lead's bug: d = 1, atoms [[1], [-1]] gave NaN (then zero, unconverged) codes
    x = np.array([2.0, -3.0, 0.5, 0.05, -0.1])
    sol = jaxsae.sparse_code(jaxsae.Dictionary(jnp.asarray([[1.0], [-1.0]])), x[:, None], LAM)
    want = np.stack([np.maximum(x - LAM, 0), np.maximum(-x - LAM, 0)], axis=1)
    np.testing.assert_allclose(sol.codes, want, atol=1e-12)
    assert bool(np.all(sol.converged))
    for dtype in (jnp.float32, jnp.float64):  # also in float32
        D = jaxsae.Dictionary(jnp.asarray([[1.0], [-1.0]], dtype))
        s = jaxsae.sparse_code(D, jnp.asarray(x[:, None], dtype), LAM)
        np.testing.assert_allclose(np.asarray(s.codes, np.float64), want, atol=1e-5)


def test_duplicate_atoms_give_the_objective_of_the_deduplicated_dictionary():
    base = _rand(3, 3, 4)
    X = jnp.asarray(_rand(4, 7, 4))
    dup = jaxsae.Dictionary(jnp.asarray(np.concatenate([base, base[:1]])))
    one = jaxsae.Dictionary(jnp.asarray(base))
    s_dup, s_one = jaxsae.sparse_code(dup, X, LAM), jaxsae.sparse_code(one, X, LAM)
    assert bool(np.all(s_dup.converged)) and np.all(np.isfinite(s_dup.codes))
    L_dup = float(jaxsae.objective(dup, X, s_dup.codes, LAM))
    L_one = float(jaxsae.objective(one, X, s_one.codes, LAM))
    assert abs(L_dup - L_one) <= 1e-10
    # the merged code of the pair equals the unique code of the single atom
    np.testing.assert_allclose(s_dup.codes[:, 0] + s_dup.codes[:, 3], s_one.codes[:, 0], atol=1e-8)
    cert = jaxsae.certify(dup, X, LAM)
    summary = cert.summary()
    assert all(np.isfinite(v) for v in summary.values()), summary
    assert abs(summary["objective"] - L_one) <= 1e-10


@pytest.mark.slow  # K > N and d = 1 in sparse_code are default tests (above, and the property test)
def test_more_atoms_than_points_and_one_feature_learn_finite_dictionaries():
    X = jnp.asarray(_rand(5, 4, 3))
    D, hist = jaxsae.learn_dictionary(X, 6, LAM, key=jax.random.key(0), max_steps=20)
    assert np.all(np.isfinite(D.atoms)) and np.all(np.isfinite(hist.objective))
    # F never exceeds the objective at the zero codes, ½ mean ‖x‖²
    assert float(hist.objective[-1]) <= 0.5 * float(jnp.mean(jnp.sum(X * X, 1))) + 1e-12
    # d = 1: the sphere is {−1, +1}, so atoms cannot move; the result must be the
    # exact optimum for the returned atoms, and if a sign is missing, certify must
    # say that adding it lowers L (the (W) verdict) instead of claiming optimality.
    X1 = jnp.asarray(_rand(6, 9, 1))
    D1, h1 = jaxsae.learn_dictionary(X1, 2, LAM, key=jax.random.key(0), max_steps=20)
    x, signs = np.asarray(X1[:, 0]), set(np.sign(np.asarray(D1.atoms)[:, 0]).tolist())
    assert signs <= {-1.0, 1.0}
    covered = np.isin(np.sign(x), list(signs))
    shrunk = 0.5 * np.minimum(np.abs(x), LAM) ** 2 + LAM * np.maximum(np.abs(x) - LAM, 0)
    F = np.mean(np.where(covered, shrunk, 0.5 * x**2))
    assert abs(float(h1.objective[-1]) - F) <= 1e-10
    cert = jaxsae.certify(D1, X1, LAM)
    if np.any(~covered & (np.abs(x) > LAM)):
        assert float(cert.add_atom_gain) > 0 and "not globally optimal" in cert.verdict


# --------------------------------------------------------------- numerical edge cases


def test_degenerate_point_is_reported_by_every_certificate():
    # atom e1, point with x1 = λ exactly: z = 0 and g = λ (a degenerate pair)
    lam = 0.5
    D = jaxsae.Dictionary(jnp.eye(2))
    X = jnp.asarray([[0.5, 2.0], [1.0, 0.2]])
    sol = jaxsae.sparse_code(D, X, lam)
    np.testing.assert_allclose(sol.codes, [[0.0, 1.5], [0.5, 0.0]], atol=1e-12)
    assert np.all(np.isfinite(sol.gap)) and bool(np.all(sol.converged))
    cert = jaxsae.certify(D, X, lam)
    assert int(cert.n_degenerate) == 1 and "degenerate" in cert.verdict
    so = jaxsae.second_order(D, X, lam, key=jax.random.key(0))
    assert "not regular" in so.verdict


def test_all_zero_codes_have_zero_gap_and_finite_certificate():
    X = jnp.asarray(_rand(7, 5, 4))
    D = _dictionary()
    lam = 1.0 + float(jnp.max(jnp.abs(X @ D.atoms.T)))  # λ ≥ max g: z = 0 is optimal
    sol = jaxsae.sparse_code(D, X, lam)
    assert float(jnp.max(sol.codes)) == 0.0 and float(jnp.max(sol.gap)) == 0.0
    summary = jaxsae.certify(D, X, lam).summary()
    assert all(np.isfinite(v) for v in summary.values())
    assert summary["n_dead"] == 5 and summary["stationarity"] == 0.0


def test_tiny_lambda_reconstructs_exactly():
    D = jaxsae.Dictionary(jnp.eye(3))
    X = jnp.abs(jnp.asarray(_rand(8, 4, 3))) + 0.1
    lam = 1e-12
    sol = jaxsae.sparse_code(D, X, lam)
    np.testing.assert_allclose(sol.codes, X - lam, atol=1e-14)  # closed form max(x − λ, 0)
    assert bool(np.all(sol.converged)) and np.all(np.isfinite(sol.kkt))


def test_float32_near_tolerance_matches_float64_reference():
    atoms, X = _rand(9, 6, 5), _rand(10, 12, 5)
    s32 = jaxsae.sparse_code(
        jaxsae.Dictionary(jnp.asarray(atoms, jnp.float32)), jnp.asarray(X, jnp.float32), LAM
    )
    assert s32.codes.dtype == jnp.float32 and bool(np.all(s32.converged))
    assert np.all(np.isfinite(s32.gap))
    D64 = np.asarray(jaxsae.Dictionary(jnp.asarray(atoms)).atoms)
    for n in range(3):
        z = np.asarray(s32.codes[n], np.float64)
        P = 0.5 * np.sum((X[n] - z @ D64) ** 2) + LAM * z.sum()
        ref = _nnlasso_scipy(D64, X[n], LAM)
        assert ref - 1e-9 <= P <= ref + 1e-5 * (0.5 * X[n] @ X[n])  # float32 tolerance 1e-5


# ------------------------------------------------------------ property-based tests


@st.composite
def _problems(draw):
    N = 3
    K = draw(st.sampled_from([2, 5]))
    d = draw(st.sampled_from([1, 3]))
    seed = draw(st.integers(0, 2**16))
    atoms = _rand(seed, K, d)
    if draw(st.booleans()) and K > 1:
        atoms[-1] = atoms[0]  # duplicate atom
    lam = draw(st.sampled_from([1e-3, 0.1, 1.0]))
    return atoms, _rand(seed + 1, N, d), lam


@PROPS
@given(_problems())
def test_solver_invariants_over_random_shapes(problem):
    atoms, X, lam = problem
    sol = jaxsae.sparse_code(jaxsae.Dictionary(jnp.asarray(atoms)), jnp.asarray(X), lam)
    D = np.asarray(jaxsae.Dictionary(jnp.asarray(atoms)).atoms)
    Z = np.asarray(sol.codes)
    assert np.all(np.isfinite(Z)) and np.all(Z >= 0)
    assert bool(np.all(sol.converged))
    for n in range(X.shape[0]):
        scale = 0.5 * X[n] @ X[n] + 1
        gap = _gap_by_hand(D, X[n], Z[n], lam)
        assert gap >= -1e-14 * scale  # a duality gap is ≥ 0 up to rounding
        assert gap <= 1e-11 * scale
        g = D @ (X[n] - Z[n] @ D)  # KKT: g ≤ λ, with equality where z > 0
        assert np.all(g <= lam * (1 + 1e-6) + 1e-9)
        assert np.all(np.abs(np.where(Z[n] > 0, g - lam, 0)) <= 1e-6 * (1 + lam))
        P = 0.5 * np.sum((X[n] - Z[n] @ D) ** 2) + lam * Z[n].sum()
        assert P <= _nnlasso_scipy(D, X[n], lam) + 1e-9


def _valid_dictionary_bytes(tmp_path):
    path = tmp_path / "valid.safetensors"
    jaxsae.save_dictionary(_dictionary(K=3, d=2), path)
    return path.read_bytes()


@PROPS
@given(cut=st.floats(0.0, 0.999), junk=st.binary(min_size=0, max_size=64))
def test_truncated_or_garbled_files_are_value_errors(tmp_path_factory, cut, junk):
    tmp = tmp_path_factory.mktemp("files")
    good = _valid_dictionary_bytes(tmp)
    datas = [good[: int(cut * len(good))], junk] + ([junk + good] if junk else [])
    for i, data in enumerate(datas):
        path = tmp / f"bad{i}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ValueError):
            jaxsae.load_dictionary(path)
        npy = tmp / f"bad{i}.npy"
        npy.write_bytes(data)
        with pytest.raises(ValueError):
            jaxsae.load_array(npy)


# ---------------------------------------------------------------------------- files


def test_pickles_and_foreign_files_are_refused(tmp_path):
    import pickle

    (tmp_path / "X.pkl").write_bytes(pickle.dumps(np.ones((2, 2))))
    with pytest.raises(ValueError, match="pickle"):
        jaxsae.load_array(tmp_path / "X.pkl")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        jaxsae.load_array(tmp_path / "obj.npy")
    sae = jaxsae.SAE.init(4, 3, jaxsae.ReLU(), key=jax.random.key(0), dtype=jnp.float64)
    jaxsae.save_sae(sae, tmp_path / "sae")
    with pytest.raises(ValueError, match="SAELens"):  # an SAE file is not a dictionary
        jaxsae.load_dictionary(tmp_path / "sae" / "sae_weights.safetensors")
    (tmp_path / "d").mkdir()
    jaxsae.save_dictionary(_dictionary(), tmp_path / "d" / "D.safetensors")
    with pytest.raises(ValueError):  # a dictionary folder is not an SAE
        jaxsae.load_sae(tmp_path / "d")
    # a config with keys jaxsae does not know (SAELens adds many) loads unchanged
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    cfg["some_future_key"] = {"x": 1}
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg))
    back = jaxsae.load_sae(tmp_path / "sae")
    np.testing.assert_array_equal(back.W_dec, sae.W_dec)
    (tmp_path / "sae" / "cfg.json").write_text(json.dumps(cfg)[:-7])  # truncated JSON
    with pytest.raises(ValueError, match="JSON"):
        jaxsae.load_sae(tmp_path / "sae")


def test_unwritable_paths_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        jaxsae.save_dictionary(_dictionary(), tmp_path / "missing" / "D.safetensors")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="does not exist"):  # a file where a folder should be
        atomic_write_json(tmp_path / "file" / "c.json", {"a": 1})
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(ValueError, match="not writable"):
            jaxsae.save_dictionary(_dictionary(), ro / "D.safetensors")
        with pytest.raises(ValueError, match="not writable"):
            atomic_write_json(ro / "c.json", {"a": 1})
    finally:
        ro.chmod(0o700)


KILL_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    import jaxsae
    from jaxsae._atomic import atomic_write_json
    what, target = sys.argv[1], sys.argv[2]
    def hang(fd):  # the new bytes are written; die before the rename
        print("writing", flush=True)
        time.sleep(600)
    os.fsync = hang
    if what == "dictionary":
        jaxsae.save_dictionary(jaxsae.Dictionary(jnp.eye(3)), target)
    elif what == "sae":
        sae = jaxsae.SAE.init(3, 5, jaxsae.ReLU(), key=jax.random.key(9), dtype=jnp.float64)
        jaxsae.save_sae(sae, target, certificate={"verdict": "new"})
    else:
        atomic_write_json(target, {"verdict": "new"})
    """
)


def _kill_mid_write(tmp_path, what, target):
    script = tmp_path / "kill_child.py"
    script.write_text(KILL_CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), what, str(target)], stdout=subprocess.PIPE, env=ENV
    )
    try:
        assert proc.stdout.readline().strip() == b"writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_kill_during_saves_leaves_previous_files_intact(tmp_path):
    old = _dictionary(K=2, d=3)
    jaxsae.save_dictionary(old, tmp_path / "D.safetensors")
    _kill_mid_write(tmp_path, "dictionary", tmp_path / "D.safetensors")
    np.testing.assert_array_equal(
        jaxsae.load_dictionary(tmp_path / "D.safetensors").atoms, old.atoms
    )

    sae = jaxsae.SAE.init(3, 5, jaxsae.ReLU(), key=jax.random.key(1), dtype=jnp.float64)
    jaxsae.save_sae(sae, tmp_path / "sae", certificate={"verdict": "old"})
    _kill_mid_write(tmp_path, "sae", tmp_path / "sae")
    back = jaxsae.load_sae(tmp_path / "sae")  # the old weights and config, never a mix
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sae, name))
    # the old certificate no longer describes the weights being written: removed, not stale
    assert jaxsae.load_sae_certificate(tmp_path / "sae") in (None, {"verdict": "old"})

    atomic_write_json(tmp_path / "cert.json", {"verdict": "old"})
    _kill_mid_write(tmp_path, "json", tmp_path / "cert.json")
    assert json.loads((tmp_path / "cert.json").read_text()) == {"verdict": "old"}


# ---------------------------------------------- checkpoints: learn_dictionary and sweep

DL_CHILD = textwrap.dedent(
    """
    import sys, time
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np, jax.numpy as jnp
    import jaxsae
    from jaxsae.learning import _checkpoint_dl
    slow = _checkpoint_dl.DLCheckpointer.after_entry
    def after_entry(self, *a, **k):
        slow(self, *a, **k)
        time.sleep(0.3)
    _checkpoint_dl.DLCheckpointer.after_entry = after_entry
    X = jnp.asarray(np.random.default_rng(11).normal(size=(40, 4)))
    jaxsae.learn_dictionary(X, 3, 0.1, key=jax.random.key(0), warm_steps=5, max_steps=40,
                            checkpoint_dir=sys.argv[1], checkpoint_every=2)
    print("finished", flush=True)
    """
)


def test_learn_dictionary_resumes_from_its_newest_checkpoint(tmp_path):
    import shutil

    X = jnp.asarray(_rand(15, 30, 3))
    kw = dict(key=jax.random.key(0), warm_steps=3, max_steps=15, progress=False)
    D_ref, h_ref = jaxsae.learn_dictionary(X, 2, LAM, **kw)
    jaxsae.learn_dictionary(X, 2, LAM, checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    folders = sorted(p for p in tmp_path.iterdir() if p.name.startswith("step-"))
    assert len(folders) == 2  # keeps the newest two
    shutil.rmtree(folders[-1])  # as if killed before the last checkpoint
    D, h = jaxsae.learn_dictionary(X, 2, LAM, checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
    np.testing.assert_array_equal(D.atoms, D_ref.atoms)
    np.testing.assert_array_equal(h.codes, h_ref.codes)
    np.testing.assert_array_equal(h.objective, h_ref.objective)
    with pytest.raises(ValueError, match=r"made by another run \(lam"):
        jaxsae.learn_dictionary(X, 2, 2 * LAM, checkpoint_dir=tmp_path, **kw)


@pytest.mark.slow
def test_learn_dictionary_resumes_after_sigkill_bit_for_bit(tmp_path):
    ckpt = tmp_path / "ckpt"
    script = tmp_path / "dl_child.py"
    script.write_text(DL_CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(ckpt)], env=ENV)
    try:
        deadline = time.time() + 300
        while not (ckpt / "step-000000008").exists():  # inside L-BFGS (5 warm + 1 start)
            assert proc.poll() is None, "learn_dictionary finished before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    X = jnp.asarray(np.random.default_rng(11).normal(size=(40, 4)))
    kw = dict(key=jax.random.key(0), warm_steps=5, max_steps=40)
    D_res, h_res = jaxsae.learn_dictionary(X, 3, 0.1, checkpoint_dir=ckpt, checkpoint_every=2, **kw)
    D_ref, h_ref = jaxsae.learn_dictionary(X, 3, 0.1, **kw)
    np.testing.assert_array_equal(D_res.atoms, D_ref.atoms)
    np.testing.assert_array_equal(h_res.codes, h_ref.codes)
    for name in ("objective", "grad_norm", "alignment", "phase"):
        np.testing.assert_array_equal(getattr(h_res, name), getattr(h_ref, name))
    assert h_res.time.shape == h_ref.time.shape
    # a checkpoint of another run (other λ) is refused with a way out
    with pytest.raises(ValueError, match=r"made by another run \(lam"):
        jaxsae.learn_dictionary(X, 3, 0.2, checkpoint_dir=ckpt, **kw)


@pytest.mark.slow
def test_sweep_resumes_from_a_checkpoint(tmp_path):
    X = jnp.asarray(_rand(12, 30, 3))
    kw = dict(
        widths=[2, 3], lams=[0.1], learner=jaxsae.DictionaryLearner(warm_steps=3, max_steps=20)
    )
    ref = jaxsae.sweep(X, **kw)
    first = jaxsae.sweep(X, checkpoint_dir=tmp_path, checkpoint_every=3, **kw)
    folders = sorted(p for p in tmp_path.iterdir() if p.name.startswith("step-"))
    import shutil

    shutil.rmtree(folders[-1])  # as if killed after the previous checkpoint
    again = jaxsae.sweep(X, checkpoint_dir=tmp_path, checkpoint_every=3, **kw)
    for res in (first, again):
        np.testing.assert_array_equal(res.atoms, ref.atoms)
        np.testing.assert_array_equal(res.objective, ref.objective)


# ------------------------------------------------------------------------ determinism

DET_CHILD = textwrap.dedent(
    """
    import sys
    import jax
    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from test_reliability import _deterministic_outputs
    np.savez(sys.argv[1], **_deterministic_outputs())
    """
)


def _deterministic_outputs(full: bool = True) -> dict:
    # same shapes as the checkpoint test, so the default run reuses its compiled steps
    X = jnp.asarray(_rand(15, 30, 3))
    D = _dictionary(K=5, d=3)
    out = {"codes": jaxsae.sparse_code(D, X, LAM).codes}
    cert = jaxsae.certify(D, X, LAM)
    out.update({f"cert_{k}": v for k, v in cert.summary().items()})
    Dl, h = jaxsae.learn_dictionary(
        X, 2, LAM, key=jax.random.key(0), warm_steps=3, max_steps=15, progress=False
    )
    out.update(dl_atoms=Dl.atoms, dl_objective=h.objective)
    if full:
        sae = jaxsae.SAE.init(3, 6, jaxsae.ReLU(), key=jax.random.key(4), dtype=jnp.float64)
        res = jaxsae.train_sae(
            sae, X, key=jax.random.key(5), steps=6, batch_size=8, lam=LAM, progress=False
        )
        out.update(sae_W_dec=res.sae.W_dec, sae_b_enc=res.sae.b_enc)
    return {k: np.asarray(v) for k, v in out.items()}


def test_same_seed_same_bits_twice_in_process():
    # train_sae twice: the slow subprocess test below, and test_train_sae's bit-for-bit resume
    a, b = _deterministic_outputs(full=False), _deterministic_outputs(full=False)
    assert len(a) > 10
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
def test_same_seed_same_bits_in_process_and_in_a_subprocess(tmp_path):
    a, b = _deterministic_outputs(), _deterministic_outputs()
    script = tmp_path / "det_child.py"
    script.write_text(DET_CHILD)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "c.npz"), os.path.dirname(__file__)],
        env=ENV,
        check=True,
    )
    c = np.load(tmp_path / "c.npz")
    assert sorted(a) == sorted(c.files) and len(a) > 10
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        np.testing.assert_array_equal(a[k], c[k], err_msg=k)


# ------------------------------------------------------------- CLI: no tracebacks


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    X = _rand(14, 10, 4)
    np.save(tmp_path / "X.npy", X)
    jaxsae.save_dictionary(_dictionary(), tmp_path / "D.safetensors")
    base = ["certify", "--dictionary", str(tmp_path / "D.safetensors"), "--lam", "0.1", "--data"]
    Xn = X.copy()
    Xn[3, 1] = np.nan
    np.save(tmp_path / "Xnan.npy", Xn)
    assert main([*base, str(tmp_path / "Xnan.npy")]) == 2
    assert "non-finite" in _one_line_error(capsys)
    (tmp_path / "X.pkl").write_bytes(b"\x80\x04K\x01.")
    assert main([*base, str(tmp_path / "X.pkl")]) == 2
    assert "pickle" in _one_line_error(capsys)
    (tmp_path / "bad.safetensors").write_bytes((tmp_path / "D.safetensors").read_bytes()[:40])
    bad = ["certify", "--dictionary", str(tmp_path / "bad.safetensors"), "--lam", "0.1"]
    assert main([*bad, "--data", str(tmp_path / "X.npy")]) == 2
    _one_line_error(capsys)
    # a folder where a file is expected (IsADirectoryError / OSError)
    assert main([*base, str(tmp_path / "X.npy"), "--out", str(tmp_path)]) == 2
    _one_line_error(capsys)
