"""Files: atomic writes survive kills; loaders refuse damaged, foreign and pickled files."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jaxsae
from jaxsae._atomic import atomic_write_bytes, atomic_write_json


def test_dictionary_roundtrip_preserves_values_and_dtype(tmp_path):
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        D = jaxsae.Dictionary(
            rng.standard_normal((5, 3)).astype(dtype),
            rng.standard_normal(3).astype(dtype),
            np.array([True, False, True, True, False]),
            free_bias=True,
        )
        path = tmp_path / f"d_{np.dtype(dtype).name}.safetensors"
        jaxsae.save_dictionary(D, path)
        E = jaxsae.load_dictionary(path)
        assert E.atoms.dtype == dtype and E.bias.dtype == dtype
        np.testing.assert_array_equal(np.asarray(E.atoms), np.asarray(D.atoms))
        np.testing.assert_array_equal(np.asarray(E.bias), np.asarray(D.bias))
        np.testing.assert_array_equal(np.asarray(E.mask), np.asarray(D.mask))
        assert E.free_bias


def test_truncated_and_foreign_dictionary_files_are_refused(tmp_path):
    D = jaxsae.Dictionary(np.eye(4))
    path = tmp_path / "d.safetensors"
    jaxsae.save_dictionary(D, path)
    data = path.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        jaxsae.load_dictionary(tmp_path / "t.safetensors")
    from safetensors.numpy import save_file

    save_file({"W_dec": np.eye(4, dtype=np.float32)}, str(tmp_path / "sae.safetensors"))
    with pytest.raises(ValueError, match="SAELens"):
        jaxsae.load_dictionary(tmp_path / "sae.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        jaxsae.load_dictionary(tmp_path / "missing.safetensors")


def test_load_array_refuses_pickles_and_garbage(tmp_path):
    obj = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(ValueError, match="never loads pickles"):
        jaxsae.load_array(tmp_path / "obj.npy")
    (tmp_path / "x.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="never loads pickles"):
        jaxsae.load_array(tmp_path / "x.pkl")
    (tmp_path / "bad.npy").write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match="not a valid .npy"):
        jaxsae.load_array(tmp_path / "bad.npy")
    X = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "ok.npy", X)
    loaded = jaxsae.load_array(tmp_path / "ok.npy")
    assert isinstance(loaded, np.memmap)
    np.testing.assert_array_equal(loaded, X)


def test_unwritable_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        atomic_write_json(tmp_path / "nope" / "x.json", {"a": 1})


def test_kill_during_atomic_write_leaves_previous_file_intact(tmp_path):
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"old contents")
    script = textwrap.dedent(
        f"""
        import sys, time
        from jaxsae._atomic import atomic_write
        def slow(fh):
            for _ in range(1000):
                fh.write(b"x" * 1024)
                fh.flush()
                time.sleep(0.01)
        print("writing", flush=True)
        atomic_write({str(target)!r}, slow)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    first_line = proc.stdout.readline().strip()
    proc.stdout.close()
    assert first_line == b"writing"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old contents"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "file.bin"]
    assert all(name.endswith(".tmp") for name in leftovers)
