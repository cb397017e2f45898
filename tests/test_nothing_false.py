"""Bad files, concurrent runs and overflow never yield a wrong answer (issue 21).

Each case below was, before the fix, an exit-0 run with a wrong number or a mix of two
saved objects; each must now be exactly right or one clear ``ValueError`` line.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from safetensors.numpy import load_file, save_file

import jaxsae
from jaxsae._atomic import atomic_path
from jaxsae._lock import RunLock
from jaxsae.cli import main

D_IN, D_SAE = 4, 6


def _sae(seed=0, activation=None):
    rng = np.random.default_rng(seed)
    return jaxsae.SAE(
        W_enc=jnp.asarray(rng.normal(size=(D_IN, D_SAE)), jnp.float32),
        b_enc=jnp.asarray(0.1 * rng.normal(size=D_SAE), jnp.float32),
        W_dec=jnp.asarray(rng.normal(size=(D_SAE, D_IN)), jnp.float32),
        b_dec=jnp.asarray(0.1 * rng.normal(size=D_IN), jnp.float32),
        activation=jaxsae.ReLU() if activation is None else activation,
    )


def _same(a, b) -> bool:
    return type(a.activation) is type(b.activation) and all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _weights(folder):
    return folder / "sae_weights.safetensors"


def _edit_cfg(folder, **changes):
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(changes)
    (folder / "cfg.json").write_text(json.dumps(cfg))


def _edit_weights(folder, name, fn):
    """Rewrite one tensor (and drop the save-time checksum, as a foreign writer would)."""
    t = load_file(str(_weights(folder)))
    t[name] = fn(t[name].copy())
    save_file(t, str(_weights(folder)))
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"].pop("jaxsae_weights_sha256", None)
    (folder / "cfg.json").write_text(json.dumps(cfg))


# ---------------------------------------------------------------- NaN weights


@pytest.mark.parametrize(
    "name,fn,where",
    [
        ("W_enc", lambda a: a.__setitem__((1, 2), np.nan) or a, "(1, 2)"),
        ("b_enc", lambda a: a.__setitem__(3, np.inf) or a, "(3,)"),
        ("W_dec", lambda a: np.full_like(a, np.nan), "(0, 0)"),
    ],
)
def test_nan_weights_are_refused_with_the_tensor_and_index(tmp_path, capsys, name, fn, where):
    jaxsae.save_sae(_sae(), tmp_path / "sae")
    _edit_weights(tmp_path / "sae", name, fn)
    with pytest.raises(
        ValueError, match=rf"'{name}' has \d+ non-finite value\(s\).*index {re.escape(where)}"
    ):
        jaxsae.load_sae(tmp_path / "sae")
    X = np.random.default_rng(0).normal(size=(20, D_IN)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    rc = main(
        [
            "certify",
            "--sae",
            str(tmp_path / "sae"),
            "--data",
            str(tmp_path / "x.npy"),
            "--lam",
            "0.1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "non-finite" in err


def test_bad_scaling_factor_is_refused(tmp_path):
    jaxsae.save_sae(_sae(), tmp_path / "sae")
    for bad, match in ((np.full(D_SAE, np.nan, np.float32), "non-finite"),
                       (np.ones(D_SAE + 1, np.float32), r"scaling_factor has shape \(7,\)")):  # fmt: skip
        t = load_file(str(_weights(tmp_path / "sae")))
        t["scaling_factor"] = bad
        save_file(t, str(_weights(tmp_path / "sae")))
        _edit_cfg(tmp_path / "sae", metadata={})
        with pytest.raises(ValueError, match=match):
            jaxsae.load_sae(tmp_path / "sae")


# ---------------------------------------------------------------- metadata types


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"apply_b_dec_to_input": "false"}, "'apply_b_dec_to_input' must be a JSON boolean"),
        ({"d_in": 16.5}, "'d_in' must be a JSON int"),
        ({"d_sae": True}, "'d_sae' must be a JSON int"),
        ({"architecture": "topk", "k": True}, "'k' must be a JSON int"),
        (
            {"architecture": "topk", "k": D_SAE + 1},
            rf"'k' must be an integer ≥ 1 ≤ d_sae = {D_SAE}",
        ),
        ({"architecture": "topk", "k": 0}, "'k' must be an integer ≥ 1"),
        ({"rescale_acts_by_decoder_norm": "yes"}, "must be a JSON boolean"),
        ({"normalize_activations": 3}, "'normalize_activations' must be a JSON str or boolean"),
        ({"dtype": "float33"}, "dtype 'float33' is not one of"),
        ({"metadata": "none"}, "'metadata' must be a JSON dict"),
    ],
)
def test_config_fields_are_read_with_their_exact_types(tmp_path, changes, match):
    jaxsae.save_sae(_sae(), tmp_path / "sae")
    _edit_cfg(tmp_path / "sae", **changes)
    with pytest.raises(ValueError, match=match):
        jaxsae.load_sae(tmp_path / "sae")


def _dictionary_file(tmp_path, dtype=np.float64, **meta_changes):
    D = jaxsae.Dictionary(np.random.default_rng(1).normal(size=(5, 3)).astype(dtype))
    path = tmp_path / "d.safetensors"
    jaxsae.save_dictionary(D, path)
    if meta_changes:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta, t = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
        meta.update(meta_changes)
        save_file(t, str(path), metadata=meta)
    return D, path


@pytest.mark.parametrize(
    "changes,match",
    [({"version": "99"}, "version '99'"), ({"free_bias": "yes"}, "free_bias must be '0' or '1'"),
     ({"sha256": "0" * 64}, "do not match the checksum")],
)  # fmt: skip
def test_dictionary_metadata_is_exact(tmp_path, changes, match):
    _, path = _dictionary_file(tmp_path, **changes)
    with pytest.raises(ValueError, match=match):
        jaxsae.load_dictionary(path)


def test_complex_and_structured_arrays_are_refused(tmp_path):
    np.save(tmp_path / "c.npy", np.ones((3, 2), np.complex64))
    with pytest.raises(ValueError, match="complex numbers"):
        jaxsae.load_array(tmp_path / "c.npy")
    np.save(tmp_path / "s.npy", np.zeros(3, dtype=[("a", "f4"), ("b", "f4")]))
    with pytest.raises(ValueError, match="structured"):
        jaxsae.load_array(tmp_path / "s.npy")


# ---------------------------------------------------------------- hangs and tracebacks


def test_fifos_devices_and_folders_are_refused_without_blocking(tmp_path):
    jaxsae.save_sae(_sae(), tmp_path / "sae")
    _, dpath = _dictionary_file(tmp_path)
    for target in (_weights(tmp_path / "sae"), tmp_path / "sae" / "cfg.json", dpath):
        target.unlink()
        os.mkfifo(target)
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="FIFO"):
            jaxsae.load_sae(tmp_path / "sae") if target != dpath else jaxsae.load_dictionary(dpath)
        assert time.perf_counter() - t0 < 5
        target.unlink()
        target.mkdir()
        with pytest.raises(ValueError, match="is a folder, not a regular file"):
            jaxsae.load_sae(tmp_path / "sae") if target != dpath else jaxsae.load_dictionary(dpath)
        target.rmdir()
        jaxsae.save_sae(_sae(), tmp_path / "sae")
        _dictionary_file(tmp_path)
    with pytest.raises(ValueError, match="character device"):
        jaxsae.load_array("/dev/null")


def test_half_precision_and_zero_rows(tmp_path):
    D, path = _dictionary_file(tmp_path, dtype=np.float32)
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as fh:  # the same file written in float16
        meta, t = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    t16 = {k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in t.items()}
    meta.pop("sha256")
    save_file(t16, str(path), metadata=meta)
    loaded = jaxsae.load_dictionary(path)  # promoted: jaxsae computes in float32 or float64
    assert loaded.dtype == jnp.float32
    a32 = t16["atoms"].astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(loaded.atoms), a32 / np.linalg.norm(a32, axis=1, keepdims=True), rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"float16.*astype\(np.float32\)"):
        jaxsae.Dictionary(np.ones((2, 3), np.float16))
    A = np.random.default_rng(0).normal(size=(4, 3))
    A[1] = 0
    with pytest.raises(ValueError, match=r"mask=np.linalg.norm\(atoms, axis=1\) > 0") as err:
        jaxsae.Dictionary(A)
    D = jaxsae.Dictionary(A, mask=np.linalg.norm(A, axis=1) > 0)  # the fix the message gives works
    Z = np.asarray(jaxsae.sparse_code(D, np.abs(A[[0, 2, 3]]), 0.05).codes)
    assert np.all(Z[:, 1] == 0) and "zero row" in str(err.value)


# ---------------------------------------------------------------- overflow and underflow


def test_overflowing_scales_are_refused_and_tiny_scales_are_solved_exactly():
    rng = np.random.default_rng(0)
    A, X = rng.normal(size=(6, 4)), rng.normal(size=(30, 4))
    D = jaxsae.Dictionary(A)
    with pytest.raises(ValueError, match="squares beyond float32's range"):
        jaxsae.sparse_code(D.astype(np.float32), (X * 1e20).astype(np.float32), 0.1)
    with pytest.raises(ValueError, match="squares beyond float64's range"):
        jaxsae.sparse_code(D, X * 1e200, 0.1)
    ref = jaxsae.sparse_code(D, X, 0.1)
    tiny = jaxsae.sparse_code(D, X * 1e-300, 1e-301, throw=True)  # z(cy, cλ) = c z(y, λ)
    assert bool(tiny.converged.all()) and float(tiny.kkt.max()) < 1e-10
    np.testing.assert_allclose(np.asarray(tiny.codes) / 1e-300, np.asarray(ref.codes), atol=1e-12)
    assert np.asarray(tiny.codes).max() > 0  # not the all-zero non-answer


def test_unconverged_or_nonfinite_points_raise_with_throw():
    rng = np.random.default_rng(1)
    D = jaxsae.Dictionary(rng.normal(size=(96, 24)))
    X = rng.normal(size=(8, 24))
    sol = jaxsae.sparse_code(D, X, 0.01, max_steps=1, tol=1e-15)
    if bool(sol.converged.all()):
        pytest.skip("one round already certified every point")  # not expected at this size
    with pytest.raises(Exception, match="max_steps|converge|steps"):
        jaxsae.sparse_code(D, X, 0.01, max_steps=1, tol=1e-15, throw=True).codes.block_until_ready()


# ---------------------------------------------------------------- concurrent runs and resume checks

LOCK_CHILD = textwrap.dedent(
    """
    import sys, time
    from jaxsae._lock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_process_on_one_run_folder_gets_one_line(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", LOCK_CHILD, str(ckpt)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        X = np.random.default_rng(0).normal(size=(64, D_IN))
        kw = dict(key=jax.random.key(0), steps=4, batch_size=16, lam=0.1, progress=False,
                  checkpoint_dir=ckpt, checkpoint_every=2)  # fmt: skip
        with pytest.raises(ValueError, match=rf"in use by process {child.pid}; wait for it"):
            jaxsae.train_sae(_sae().astype(jnp.float64), X, **kw)
        with pytest.raises(ValueError, match=rf"in use by process {child.pid}"):
            jaxsae.learn_dictionary(X, 3, 0.1, key=jax.random.key(0), checkpoint_dir=ckpt,
                                    checkpoint_every=5, progress=False)  # fmt: skip
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    # the lock died with its owner: the folder is free again
    with RunLock(ckpt):
        pass


def test_resume_refuses_other_data_key_or_settings(tmp_path):
    X = np.random.default_rng(0).normal(size=(64, D_IN))
    sae = _sae().astype(jnp.float64)
    kw = dict(steps=4, batch_size=16, lam=0.1, progress=False, checkpoint_every=2)
    jaxsae.train_sae(sae, X, key=jax.random.key(0), checkpoint_dir=tmp_path / "c", **kw)
    for change, word in (
        (dict(data=X[::-1].copy()), "data"),
        (dict(key=jax.random.key(1)), "key"),
        (dict(lr=1e-2), "schedule"),
    ):
        args = {"data": X, "key": jax.random.key(0), **change}
        with pytest.raises(ValueError, match=rf"made by another run \(.*{word}"):
            jaxsae.train_sae(sae, args.pop("data"), checkpoint_dir=tmp_path / "c", **kw, **args)
    out = jaxsae.train_sae(sae, X, key=jax.random.key(0), checkpoint_dir=tmp_path / "c", **kw)
    assert out.resumed_from == 4  # the same run resumes


def test_cli_dictionary_learner_honours_checkpoint_dir(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(40, 3))
    np.save(tmp_path / "x.npy", X)
    args = ["train", "--data", str(tmp_path / "x.npy"), "--dictionary", "--width", "2",
            "--lam", "0.1", "--steps", "20", "--quiet", "--checkpoint-dir", str(tmp_path / "ck"),
            "--out", str(tmp_path / "d.safetensors")]  # fmt: skip
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "ck").iterdir() if p.name.startswith("step-"))


# ---------------------------------------------------------------- atomic folders, leftovers, modes

SAVE_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import jax.numpy as jnp
    import jaxsae
    path = sys.argv[1]
    rng = np.random.default_rng(0)
    def sae(seed, act):
        r = np.random.default_rng(seed)
        return jaxsae.SAE(W_enc=jnp.asarray(r.normal(size=(4, 6)), jnp.float32),
                          b_enc=jnp.asarray(r.normal(size=6), jnp.float32),
                          W_dec=jnp.asarray(r.normal(size=(6, 4)), jnp.float32),
                          b_dec=jnp.asarray(r.normal(size=4), jnp.float32), activation=act)
    a, b = sae(1, jaxsae.ReLU()), sae(2, jaxsae.TopK(3))
    print("ready", flush=True)
    i = 0
    while True:
        which = "A" if i % 2 == 0 else "B"
        jaxsae.save_sae(a if which == "A" else b, path, certificate={"which": which})
        i += 1
    """
)


def _child_sae(seed, act):
    """The SAEs SAVE_CHILD writes (same draws)."""
    r = np.random.default_rng(seed)
    return jaxsae.SAE(W_enc=jnp.asarray(r.normal(size=(4, 6)), jnp.float32),
                      b_enc=jnp.asarray(r.normal(size=6), jnp.float32),
                      W_dec=jnp.asarray(r.normal(size=(6, 4)), jnp.float32),
                      b_dec=jnp.asarray(r.normal(size=4), jnp.float32), activation=act)  # fmt: skip


@pytest.mark.slow  # second witness: test_reliability kills a save_sae mid-write deterministically
def test_save_sae_killed_at_random_moments_leaves_the_old_or_the_new_sae(tmp_path):
    """A child saves SAE A (ReLU) and B (TopK(3)) over one folder in a loop and is SIGKILLed at
    random moments: the folder is always exactly A with A's certificate, or B with B's."""
    path = tmp_path / "sae"
    rng = np.random.default_rng(0)
    a, b = _child_sae(1, jaxsae.ReLU()), _child_sae(2, jaxsae.TopK(3))
    seen = set()
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", SAVE_CHILD, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        if not path.exists():  # killed before the first save finished
            continue
        loaded = jaxsae.load_sae(path)
        which = jaxsae.load_sae_certificate(path)["which"]
        assert _same(loaded, a if which == "A" else b), which  # weights, config and sidecar agree
        seen.add(which)
    jaxsae.save_sae(a, path)  # the next write cleans what killed writes left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]
    assert seen  # at least one trial got past the first save


def test_leftovers_are_cleaned_and_files_follow_the_umask(tmp_path):
    target = tmp_path / "w.bin"
    (tmp_path / ".w.bin.abc123.tmp").write_bytes(b"debris of a killed write")
    (tmp_path / ".sae.tmp-xyz").mkdir()
    old = os.umask(0o027)
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
        jaxsae.save_sae(_sae(), tmp_path / "sae")
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae", "w.bin"]
    assert oct(os.stat(target).st_mode & 0o777) == oct(0o640)
    assert oct(os.stat(tmp_path / "sae").st_mode & 0o777) == oct(0o750)
    assert oct(os.stat(_weights(tmp_path / "sae")).st_mode & 0o777) == oct(0o640)


def test_killed_checkpoint_writes_are_cleaned_by_the_next_save(tmp_path):
    X = np.random.default_rng(0).normal(size=(64, D_IN))
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / ".step-000000002.tmp-dead").mkdir()
    (ck / ".tmp-step-old").mkdir()
    jaxsae.train_sae(_sae().astype(jnp.float64), X, key=jax.random.key(0), steps=4, batch_size=16,
                     lam=0.1, progress=False, checkpoint_dir=ck, checkpoint_every=2)  # fmt: skip
    assert sorted(p.name for p in ck.iterdir() if p.name != ".jaxsae.lock") == [
        "step-000000002", "step-000000004"
    ]  # fmt: skip


# ---------------------------------------------------------------- property test: corrupted files


def _corruptions():
    byte_edit = st.tuples(st.sampled_from(["sae_weights.safetensors", "cfg.json", "dict"]),
                          st.sampled_from(["truncate", "flip", "garbage_header"]),
                          st.floats(0, 1), st.integers(0, 255))  # fmt: skip
    json_edit = st.tuples(
        st.just("cfg.json"), st.just("json"),
        st.sampled_from(["d_in", "d_sae", "apply_b_dec_to_input", "architecture", "k",
                         "normalize_activations", "dtype", "metadata"]),
        st.sampled_from([None, True, False, "x", "false", 3, 3.5, -1, 0, 10**6, [], {}]),
    )  # fmt: skip
    special = st.tuples(st.sampled_from(["sae_weights.safetensors", "cfg.json", "dict"]),
                        st.sampled_from(["fifo", "folder", "nan"]), st.just(0), st.just(0))  # fmt: skip
    return st.one_of(byte_edit, json_edit, special)


@settings(max_examples=240, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_corruptions())
def test_every_corruption_loads_what_was_saved_or_is_one_value_error(tmp_path_factory, case):
    root = tmp_path_factory.mktemp("corrupt")
    sae = _sae(3)
    jaxsae.save_sae(sae, root / "sae")
    D, dpath = _dictionary_file(root)
    name, how, x, y = case
    target = dpath if name == "dict" else root / "sae" / name
    data = target.read_bytes()
    if how == "truncate":
        target.write_bytes(data[: int(x * (len(data) - 1))])
    elif how == "flip":
        i = int(x * (len(data) - 1))
        target.write_bytes(data[:i] + bytes([data[i] ^ (y or 1)]) + data[i + 1 :])
    elif how == "garbage_header":
        target.write_bytes(bytes([y]) * 8 + data[8:])
    elif how == "json":
        cfg = json.loads(data)
        cfg[x] = y
        target.write_text(json.dumps(cfg))
    elif how == "fifo":
        target.unlink()
        os.mkfifo(target)
    elif how == "folder":
        target.unlink()
        target.mkdir()
    elif how == "nan":
        if name == "cfg.json":
            target.write_text(data.decode().replace('"d_in": 4', '"d_in": NaN'))
        else:
            key = "W_dec" if name != "dict" else "atoms"
            t = load_file(str(target))
            t[key] = np.full_like(t[key], np.nan)
            save_file(t, str(target))
    try:
        if name == "dict":
            got = jaxsae.load_dictionary(dpath)
            assert np.array_equal(np.asarray(got.atoms), np.asarray(D.atoms))
            assert np.array_equal(np.asarray(got.bias), np.asarray(D.bias))
            assert np.array_equal(np.asarray(got.mask), np.asarray(D.mask))
            assert got.free_bias == D.free_bias
        else:
            assert _same(jaxsae.load_sae(root / "sae"), sae)
    except ValueError as err:
        assert len(str(err).splitlines()) == 1 and str(err)


# ---------------------------------------------------------------- a stale harvest


def test_a_harvest_killed_between_its_renames_is_finished_not_reported(tmp_path, monkeypatch):
    from jaxsae.data import _harvest

    out = tmp_path / "X.npy"
    kw = dict(layer=1, seq_len=16, batch_size=4, progress=False)
    jaxsae.data.harvest_activations(out, n_tokens=30, **kw)
    assert np.load(out).shape == (30, 384)
    real_replace = os.replace

    def killed(src, dst):
        if str(src).endswith(".partial"):
            raise KeyboardInterrupt("killed after the sidecar, before the final rename")
        return real_replace(src, dst)

    monkeypatch.setattr(_harvest.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        jaxsae.data.harvest_activations(out, n_tokens=60, **kw)
    monkeypatch.setattr(_harvest.os, "replace", real_replace)
    # old array under the new sidecar: readers refuse the pair ...
    with pytest.raises(ValueError, match="does not match its sidecar"):
        jaxsae.data.load_representations(out)
    # ... and the rerun finishes the last step instead of claiming the stale file
    assert jaxsae.data.harvest_activations(out, n_tokens=60, **kw) == out
    X = jaxsae.data.load_representations(out)
    assert X.shape == (60, 384)
    with RunLock(out):  # a concurrent harvest of the same output is refused
        with pytest.raises(ValueError, match="in use by process"):
            jaxsae.data.harvest_activations(out, n_tokens=90, **kw)
