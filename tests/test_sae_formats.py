"""``load_sae`` on the SAEs people have: Gemma Scope ``params.npz``, EleutherAI sparsify
folders and Hugging Face cache snapshots; forward passes against NumPy written from each
format's own definition, and (``fixtures/sparsify``) against outputs of the real library."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxsae

D_IN, D_SAE, K = 6, 10, 3
FIXTURES = Path(__file__).parent / "fixtures" / "sparsify"


def _forward(sae, x):
    z = np.asarray(jax.vmap(sae.encode)(x))
    return z, np.asarray(jax.vmap(sae.decode)(z))


def _gemma(tmp_path, rng):
    p = {
        "W_enc": rng.standard_normal((D_IN, D_SAE)).astype(np.float32),
        "W_dec": rng.standard_normal((D_SAE, D_IN)).astype(np.float32),
        "b_enc": rng.standard_normal(D_SAE).astype(np.float32),
        "b_dec": rng.standard_normal(D_IN).astype(np.float32),
        "threshold": rng.uniform(0.1, 1.0, D_SAE).astype(np.float32),
    }
    folder = tmp_path / "layer_3" / "width_16k" / "average_l0_5"
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **p)
    return folder, p


def test_gemma_scope_params_npz_forward_pass(tmp_path):
    rng = np.random.default_rng(0)
    folder, p = _gemma(tmp_path, rng)
    x = rng.standard_normal((40, D_IN)).astype(np.float32)
    # Gemma Scope's JumpReLU: pre = x W_enc + b_enc (no b_dec subtracted), f = pre·1[pre > θ]
    pre = x @ p["W_enc"] + p["b_enc"]
    f = pre * (pre > p["threshold"])
    x_hat = f @ p["W_dec"] + p["b_dec"]
    for path in (folder, folder / "params.npz"):
        sae = jaxsae.load_sae(path)
        assert isinstance(sae.activation, jaxsae.JumpReLU) and sae.dtype == np.float32
        z, out = _forward(sae, x)
        np.testing.assert_allclose(z, f, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out, x_hat, rtol=1e-6, atol=1e-5)
    assert 0 < (f > 0).mean() < 1  # the thresholds bite: the test can tell JumpReLU from ReLU


def _sparsify_folder(tmp_path, rng, **cfg_update):
    folder = tmp_path / "layers.4"
    folder.mkdir(parents=True, exist_ok=True)
    t = {
        "encoder.weight": rng.standard_normal((D_SAE, D_IN)).astype(np.float32),
        "encoder.bias": rng.standard_normal(D_SAE).astype(np.float32),
        "W_dec": rng.standard_normal((D_SAE, D_IN)).astype(np.float32),
        "b_dec": rng.standard_normal(D_IN).astype(np.float32),
    }
    save_file(t, str(folder / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True,
           "num_latents": D_SAE, "k": K, "multi_topk": False, "skip_connection": False,
           "transcode": False, "d_in": D_IN, **cfg_update}  # fmt: skip
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder, t


def test_sparsify_folder_forward_pass(tmp_path):
    rng = np.random.default_rng(1)
    folder, t = _sparsify_folder(tmp_path, rng)
    x = rng.standard_normal((40, D_IN)).astype(np.float32)
    # sparsify: top-k of relu(W_e (x − b_dec) + b_e), decoded by W_dec plus b_dec
    pre = np.maximum((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"], 0)
    top = np.argsort(-pre, axis=1)[:, :K]
    f = np.zeros_like(pre)
    np.put_along_axis(f, top, np.take_along_axis(pre, top, axis=1), axis=1)
    x_hat = f @ t["W_dec"] + t["b_dec"]
    sae = jaxsae.load_sae(folder)
    assert isinstance(sae.activation, jaxsae.TopK) and sae.activation.k == K
    z, out = _forward(sae, x)
    np.testing.assert_allclose(z, f, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, x_hat, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    "cfg_update, message",
    [
        ({"transcode": True}, "transcode is true"),
        ({"skip_connection": True}, "skip_connection is true"),
        ({"activation": "groupmax"}, "activation 'groupmax' is not supported"),
        ({"k": 0}, "'k' must be an integer ≥ 1"),
        ({"num_latents": 7}, "num_latents = 7 but encoder.weight has 10 rows"),
        ({"k": "3"}, "'k' must be a JSON int"),
    ],
)
def test_sparsify_foreign_configs_get_one_line(tmp_path, cfg_update, message):
    folder, _ = _sparsify_folder(tmp_path, np.random.default_rng(2), **cfg_update)
    with pytest.raises(ValueError, match=message):
        jaxsae.load_sae(folder)


def test_truncated_and_foreign_files_get_one_line(tmp_path):
    rng = np.random.default_rng(3)
    folder, _ = _gemma(tmp_path, rng)
    data = (folder / "params.npz").read_bytes()
    (folder / "params.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a readable .npz file") as err:
        jaxsae.load_sae(folder)
    assert len(str(err.value).splitlines()) == 1
    np.savez(folder / "params.npz", W_enc=np.zeros((2, 3)), W_dec=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="a Gemma Scope JumpReLU SAE holds"):
        jaxsae.load_sae(folder)
    sp, _ = _sparsify_folder(tmp_path / "s", rng)
    raw = (sp / "sae.safetensors").read_bytes()
    (sp / "sae.safetensors").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        jaxsae.load_sae(sp)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds no SAE .*pass sae_id= \(e.g. 'a'\)"):
        jaxsae.load_sae(tmp_path / "empty")


def test_hugging_face_cache_snapshot_with_sae_id(tmp_path):
    rng = np.random.default_rng(4)
    src, p = _gemma(tmp_path / "src", rng)
    repo = tmp_path / "hub" / "models--google--gemma-scope-2b-pt-res"
    rev = "0123456789abcdef0123456789abcdef01234567"
    blob = repo / "blobs" / "f00d"
    blob.parent.mkdir(parents=True)
    shutil.copy(src / "params.npz", blob)
    target = repo / "snapshots" / rev / "layer_3" / "width_16k" / "average_l0_5" / "params.npz"
    target.parent.mkdir(parents=True)
    target.symlink_to(Path("../../../../../blobs/f00d"))  # how the cache stores files
    (repo / "snapshots" / "fedcba").mkdir()  # an older revision
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    sae = jaxsae.load_sae(repo, sae_id="layer_3/width_16k/average_l0_5")
    np.testing.assert_array_equal(np.asarray(sae.W_enc), p["W_enc"])
    np.testing.assert_array_equal(np.asarray(sae.activation.threshold), p["threshold"])
    with pytest.raises(ValueError, match="has no 'layer_9'"):
        jaxsae.load_sae(repo, sae_id="layer_9")
    with pytest.raises(ValueError, match="must be a relative folder"):
        jaxsae.load_sae(repo, sae_id="../x")
    (repo / "refs" / "main").unlink()
    with pytest.raises(ValueError, match="holds 2 revisions .* and no refs/main"):
        jaxsae.load_sae(repo, sae_id="layer_3/width_16k/average_l0_5")


@pytest.mark.skipif(not FIXTURES.exists(), reason="fixtures/sparsify not generated")
def test_sparsify_fixture_made_by_the_real_library():
    """``fixtures/make_sparsify_fixtures.py`` saved these with eai-sparsify's own
    ``save_to_disk`` and recorded its ``encode``/``decode`` outputs."""
    for folder in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        ref = np.load(folder / "expected.npz")
        sae = jaxsae.load_sae(folder)
        z, out = _forward(sae, ref["x"])
        np.testing.assert_allclose(z, ref["latents"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out, ref["sae_out"], rtol=1e-5, atol=1e-5)
