"""SAELens files: round trips with dtypes, certificates, legacy configs, refusals, atomicity,
and (``-m full``) jaxsae-written files loaded by SAELens itself."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxsae
from jaxsae.io import _saelens

FIXTURES = Path(__file__).parent / "fixtures" / "saelens"


def make_sae(key, activation, dtype, apply_b_dec_to_input=True, d_in=5, d_sae=9):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    sae = jaxsae.SAE.init(d_in, d_sae, activation, key=k1, dtype=jnp.float32, decoder_norm=0.7)
    sae = jaxsae.SAE(
        W_enc=jax.random.normal(k2, (d_in, d_sae), jnp.float32),
        b_enc=0.1 * jax.random.normal(k3, (d_sae,), jnp.float32),
        W_dec=sae.W_dec,
        b_dec=0.1 * jax.random.normal(k4, (d_in,), jnp.float32),
        activation=sae.activation,
        apply_b_dec_to_input=apply_b_dec_to_input,
    )
    return sae.astype(dtype)


ACTIVATIONS = {
    "standard": lambda: jaxsae.ReLU(),
    "topk": lambda: jaxsae.TopK(2),
    "jumprelu": lambda: jaxsae.JumpReLU(jnp.linspace(0.05, 0.4, 9), 1e-3),
}


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))


@pytest.mark.parametrize("arch", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.bfloat16])
def test_round_trip_preserves_values_and_dtype(tmp_path, getkey, arch, dtype):
    sae = make_sae(getkey(), ACTIVATIONS[arch](), dtype, apply_b_dec_to_input=arch != "topk")
    jaxsae.save_sae(sae, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == arch and cfg["dtype"] == jnp.dtype(dtype).name
    assert cfg["normalize_activations"] == "none"
    assert cfg["apply_b_dec_to_input"] == (arch != "topk")
    tensors = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert {t.dtype for t in tensors.values()} == {np.dtype(dtype)}
    back = jaxsae.load_sae(tmp_path / "sae")
    assert type(back.activation) is type(sae.activation)
    assert back.apply_b_dec_to_input == sae.apply_b_dec_to_input
    params = lambda s: (s.W_enc, s.b_enc, s.W_dec, s.b_dec)  # noqa: E731
    leaves_equal(params(back), params(sae))
    if arch == "jumprelu":
        leaves_equal(back.activation.threshold, sae.activation.threshold)
    if arch == "topk":
        assert back.activation.k == 2 and cfg["k"] == 2
    X = jax.random.normal(getkey(), (4, 5), jnp.float32).astype(dtype)
    np.testing.assert_array_equal(jax.vmap(back)(X), jax.vmap(sae)(X))


def test_certificate_sidecar_and_metadata(tmp_path, getkey):
    sae = make_sae(getkey(), jaxsae.ReLU(), jnp.float64)
    cert = {"kkt_max": 3e-10, "verified": "first-order stationary to 1e-9", "per_atom": [0.1, 0.2]}
    jaxsae.save_sae(sae, tmp_path / "s", certificate=cert)
    assert jaxsae.load_sae_certificate(tmp_path / "s") == cert
    meta = json.loads((tmp_path / "s" / "cfg.json").read_text())["metadata"]
    assert meta["jaxsae_certificate"] == {
        "kkt_max": 3e-10,
        "verified": "first-order stationary to 1e-9",
    }
    # weights file holds exactly SAELens's tensors (it loads strictly)
    assert set(load_file(str(tmp_path / "s" / "sae_weights.safetensors"))) == {
        "W_enc",
        "b_enc",
        "W_dec",
        "b_dec",
    }
    # overwriting without a certificate removes the stale one
    other = make_sae(getkey(), jaxsae.ReLU(), jnp.float64)
    jaxsae.save_sae(other, tmp_path / "s")
    assert jaxsae.load_sae_certificate(tmp_path / "s") is None
    leaves_equal(jaxsae.load_sae(tmp_path / "s").W_enc, other.W_enc)


def test_failed_save_leaves_nothing(tmp_path, getkey, monkeypatch):
    sae = make_sae(getkey(), jaxsae.ReLU(), jnp.float32)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_saelens, "atomic_write_json", boom)
    with pytest.raises(OSError, match="disk full"):
        jaxsae.save_sae(sae, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind


def legacy_folder(tmp_path, cfg, tensors):
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def random_tensors(rng, d_in=4, d_sae=6, dtype=np.float32, threshold=False):
    t = {
        "W_enc": rng.normal(size=(d_in, d_sae)).astype(dtype),
        "b_enc": rng.normal(size=d_sae).astype(dtype),
        "W_dec": rng.normal(size=(d_sae, d_in)).astype(dtype),
        "b_dec": rng.normal(size=d_in).astype(dtype),
    }
    if threshold:
        t["threshold"] = rng.uniform(0, 0.5, size=d_sae).astype(dtype)
    return t


def test_legacy_config_with_scaling_factor(tmp_path):
    rng = np.random.default_rng(0)
    t = random_tensors(rng)
    t["scaling_factor"] = rng.uniform(0.5, 2, size=6).astype(np.float32)
    cfg = {
        "hook_point": "blocks.3.hook_resid_pre", "d_in": 4, "d_sae": 6, "dtype": "float32",
        "activation_fn_str": "relu", "apply_b_dec_to_input": False, "normalize_activations": False,
        "finetuning_scaling_factor": True,
    }  # fmt: skip
    sae = jaxsae.load_sae(legacy_folder(tmp_path, cfg, t))
    x = rng.normal(size=4).astype(np.float32)
    f = np.maximum(x @ t["W_enc"] + t["b_enc"], 0)  # apply_b_dec_to_input False
    expected = (f * t["scaling_factor"]) @ t["W_dec"] + t["b_dec"]
    np.testing.assert_allclose(sae(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "cfg_update,tensor_update,message",
    [
        ({"architecture": "gated"}, {}, "gated SAEs are not supported"),
        ({"architecture": "matryoshka"}, {}, "not supported"),
        ({"normalize_activations": "layer_norm"}, {}, "layer_norm.*not supported"),
        ({"d_sae": 7}, {}, "W_enc has shape"),
        ({}, {"extra": np.zeros(3, np.float32)}, "holds tensors"),
        ({"architecture": "jumprelu"}, {}, "holds tensors"),
        ({"architecture": "topk"}, {}, "has no 'k'"),
    ],
)
def test_refuses_bad_configs(tmp_path, cfg_update, tensor_update, message):
    cfg = {"d_in": 4, "d_sae": 6, "dtype": "float32", "architecture": "standard",
           "metadata": {"sae_lens_version": "6.1.0"}, **cfg_update}  # fmt: skip
    tensors = {**random_tensors(np.random.default_rng(1)), **tensor_update}
    with pytest.raises(ValueError, match=message):
        jaxsae.load_sae(legacy_folder(tmp_path, cfg, tensors))


def test_refuses_pickles_truncation_and_missing_files(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "sae_weights.pt").write_bytes(b"\x80\x04not really")
    (tmp_path / "p" / "cfg.json").write_text("{}")
    with pytest.raises(ValueError, match="never loads pickles"):
        jaxsae.load_sae(tmp_path / "p")
    with pytest.raises(ValueError, match="is not a folder"):
        jaxsae.load_sae(tmp_path / "nope")
    folder = tmp_path / "t"
    shutil.copytree(FIXTURES / "standard", folder)
    weights = folder / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated"):
        jaxsae.load_sae(folder)
    shutil.copy(FIXTURES / "standard" / "sae_weights.safetensors", weights)
    (folder / "cfg.json").write_text('{"d_in": 8, "d_sae"')
    with pytest.raises(ValueError, match="not valid JSON"):
        jaxsae.load_sae(folder)
    (folder / "cfg.json").unlink()
    with pytest.raises(ValueError, match="has no cfg.json"):
        jaxsae.load_sae(folder)


def test_expected_average_only_in_is_read_as_folded(tmp_path):
    rng = np.random.default_rng(2)
    t = random_tensors(rng)
    cfg = {"d_in": 4, "d_sae": 6, "dtype": "float32", "architecture": "standard",
           "normalize_activations": "expected_average_only_in", "metadata": {"sae_lens_version": "6.2.0"}}  # fmt: skip
    sae = jaxsae.load_sae(legacy_folder(tmp_path, cfg, t))
    x = rng.normal(size=4).astype(np.float32)
    expected = np.maximum((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"], 0) @ t["W_dec"] + t["b_dec"]
    np.testing.assert_allclose(sae(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_file_is_bfloat16(tmp_path, getkey):
    sae = make_sae(getkey(), jaxsae.JumpReLU(0.1), jnp.bfloat16)
    jaxsae.save_sae(sae, tmp_path / "b")
    t = load_file(str(tmp_path / "b" / "sae_weights.safetensors"))
    assert t["threshold"].dtype == ml_dtypes.bfloat16
    assert jaxsae.load_sae(tmp_path / "b").activation.threshold.dtype == jnp.bfloat16


@pytest.mark.full
@pytest.mark.parametrize("arch", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_saelens_loads_jaxsae_files(tmp_path, getkey, arch, dtype):
    torch = pytest.importorskip("torch")
    sae_lens = pytest.importorskip("sae_lens")
    sae = make_sae(getkey(), ACTIVATIONS[arch](), dtype, apply_b_dec_to_input=arch != "standard")
    jaxsae.save_sae(sae, tmp_path / "s", certificate={"gap": 1e-9})
    theirs = sae_lens.SAE.load_from_disk(tmp_path / "s")
    assert theirs.cfg.architecture() == arch
    X = np.asarray(jax.random.normal(getkey(), (7, 5), jnp.float64)).astype(np.dtype(dtype))
    with torch.no_grad():
        feats = theirs.encode(torch.from_numpy(X)).double().numpy()
        out = theirs(torch.from_numpy(X)).double().numpy()
    tol = 1e-12 if dtype == jnp.float64 else 1e-5
    np.testing.assert_allclose(jax.vmap(sae.encode)(jnp.asarray(X)), feats, rtol=tol, atol=tol)
    np.testing.assert_allclose(jax.vmap(sae)(jnp.asarray(X)), out, rtol=tol, atol=tol)
    assert theirs.cfg.metadata.jaxsae_certificate == {"gap": 1e-9}
