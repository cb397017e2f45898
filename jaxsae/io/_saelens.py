"""SAE files in SAELens's format (ANCHORS.md): a folder with ``cfg.json`` and
``sae_weights.safetensors``; jaxsae certificates in a sidecar ``jaxsae_certificate.json``.

Reads ``standard``, ``topk`` (also ``rescale_acts_by_decoder_norm``, folded on
load) and ``jumprelu``, SAELens ≥ 6 and legacy (pre-6) configs, with
``normalize_activations`` ``none`` / ``expected_average_only_in`` (already
folded into the weights; SAELens also applies nothing at load time). Writes
``normalize_activations: none``. Never loads pickles.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ..models._activations import JumpReLU, ReLU, TopK
from ..models._sae import SAE
from ._atomic import _fsync_dir, atomic_path, atomic_write_json

CFG = "cfg.json"
WEIGHTS = "sae_weights.safetensors"
CERTIFICATE = "jaxsae_certificate.json"
# SAELens ≥ 6 reads configs without this version as legacy (pre-6) ones.
SAELENS_FORMAT_VERSION = "6.0.0"
_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "bfloat16": "bfloat16",
    "float16": np.float16,
}


def _dtype_name(dtype) -> str:
    name = jnp.dtype(dtype).name
    if name not in _DTYPES:
        raise ValueError(
            f"cannot save an SAE in dtype {name}; use float32, float64, bfloat16 or float16."
        )
    return name


def _architecture(sae: SAE) -> tuple[str, dict]:
    act = sae.activation
    if isinstance(act, ReLU):
        return "standard", {}
    if isinstance(act, TopK):
        return "topk", {"k": act.k, "rescale_acts_by_decoder_norm": False}
    if isinstance(act, JumpReLU):
        return "jumprelu", {}
    raise ValueError(f"cannot save an SAE with activation {type(act).__name__} in SAELens format.")


def _tensors(sae: SAE) -> dict[str, np.ndarray]:
    out = {
        n: np.ascontiguousarray(np.asarray(getattr(sae, n)))
        for n in ("W_enc", "b_enc", "W_dec", "b_dec")
    }
    if isinstance(sae.activation, JumpReLU):
        out["threshold"] = np.ascontiguousarray(
            np.asarray(sae.activation.threshold.astype(sae.dtype))
        )
    return out


def _summary(certificate: dict) -> dict:
    """Scalars of a certificate (numbers, strings, bools), for cfg metadata."""
    keep = {}
    for k, v in certificate.items():
        if isinstance(v, bool | int | float | str):
            keep[k] = v
        elif hasattr(v, "dtype") and np.ndim(v) == 0:
            keep[k] = np.asarray(v).item()
    return keep


def save_sae(
    sae: SAE, path, *, certificate: dict | None = None, metadata: dict | None = None
) -> Path:
    """Save an SAE as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``); dtype preserved.

    A new folder is written under a temporary name and renamed into place. An
    existing folder is updated file by file, each atomically: the stale
    certificate is removed first, then the weights, the config and the new
    certificate are written, so no file ever describes weights it does not match.

    Args:
        sae: the SAE (``ReLU`` → ``standard``, ``TopK`` → ``topk``, ``JumpReLU`` → ``jumprelu``).
        path: the folder.
        certificate: a JSON-able dict saved as ``jaxsae_certificate.json`` next to the
            weights; its scalar entries are also copied to ``cfg.json``'s metadata
            under ``"jaxsae_certificate"`` (SAELens keeps unknown metadata keys).
        metadata: extra entries for ``cfg.json``'s ``metadata``.

    Example:
        >>> jaxsae.save_sae(sae, "my_sae", certificate={"kkt_max": 1e-9})
        >>> sae2 = jaxsae.load_sae("my_sae")
    """
    from safetensors.numpy import save_file

    if not isinstance(sae, SAE):
        raise ValueError(f"save_sae needs a jaxsae.SAE, got {type(sae).__name__}.")
    path = Path(path)
    architecture, extra = _architecture(sae)
    meta = {"sae_lens_version": SAELENS_FORMAT_VERSION, "written_by": "jaxsae", **(metadata or {})}
    if certificate is not None:
        meta["jaxsae_certificate"] = _summary(certificate)
    cfg = {
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": _dtype_name(sae.dtype),
        "device": "cpu",
        "apply_b_dec_to_input": bool(sae.apply_b_dec_to_input),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": meta,
        **extra,
        "architecture": architecture,
    }
    tensors = _tensors(sae)

    def write_into(folder: Path) -> None:
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(folder / CFG, cfg)
        if certificate is not None:
            atomic_write_json(folder / CERTIFICATE, certificate)

    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder; an SAE is saved as a folder.")
        (path / CERTIFICATE).unlink(missing_ok=True)
        write_into(path)
        return path
    if not path.parent.exists():
        raise ValueError(
            f"cannot write {path}: folder {path.parent} does not exist. Create it first."
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write_into(tmp)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def load_sae_certificate(path) -> dict | None:
    """The sidecar certificate of a saved SAE folder, or ``None`` if it has none."""
    file = Path(path) / CERTIFICATE
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file} is not valid JSON ({err}).") from err


def _read_cfg(folder: Path) -> dict:
    file = folder / CFG
    try:
        cfg = json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); is it truncated?") from err
    if not isinstance(cfg, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(cfg).__name__}.")
    return cfg


def _architecture_of(cfg: dict) -> tuple[str, int | None]:
    """``(architecture, k)`` for ≥ 6 and legacy configs."""
    arch = cfg.get("architecture", "standard")
    act = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    k = cfg.get("k")
    if act == "topk":
        arch, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k", k)
    elif act not in ("relu", None):
        raise ValueError(f"activation_fn {act!r} is not supported (jaxsae reads relu and topk).")
    if arch == "gated":
        raise ValueError(
            "gated SAEs are not supported by jaxsae (their encoder has no single pre-activation). "
            "Supported architectures: standard, topk, jumprelu."
        )
    if arch not in ("standard", "topk", "jumprelu"):
        raise ValueError(
            f"architecture {arch!r} is not supported; jaxsae reads standard, topk and jumprelu."
        )
    if arch == "topk" and not (isinstance(k, int) and k >= 1):
        raise ValueError(f"topk config needs an integer k ≥ 1, got {k!r}.")
    return arch, k


def _normalisation(cfg: dict) -> None:
    norm = cfg.get("normalize_activations", "none")
    if norm is None or norm is False:
        norm = "none"
    if norm is True:
        norm = "expected_average_only_in"
    if norm not in ("none", "expected_average_only_in"):
        raise ValueError(
            f"normalize_activations={norm!r} is not supported: it rescales inputs at run time, so the SAE "
            "is not a fixed linear decoder. jaxsae reads 'none' and 'expected_average_only_in' "
            "(already folded into the weights)."
        )


def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    file = folder / WEIGHTS
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{file} is not a readable safetensors file ({err}). Is it truncated?"
        ) from err


def load_sae(path) -> SAE:
    """Load an SAE saved by SAELens (≥ 6 or legacy) or by ``save_sae``; dtype preserved.

    Raises ``ValueError`` (with what to do) for a missing folder or files,
    pickled weights, truncated files, unsupported architectures (gated) or
    run-time normalisations, and tensors of the wrong names or shapes.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(
            f"{folder} is not a folder; a SAELens SAE is a folder with {CFG} and {WEIGHTS}."
        )
    pickles = [
        p.name for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin")
    ]
    if not (folder / WEIGHTS).exists():
        if pickles:
            raise ValueError(
                f"{folder} holds {pickles[0]} but no {WEIGHTS}; jaxsae never loads pickles (they can "
                "run arbitrary code). Convert the weights to safetensors first."
            )
        raise ValueError(f"{folder} has no {WEIGHTS}.")
    if not (folder / CFG).exists():
        raise ValueError(f"{folder} has no {CFG}.")
    cfg = _read_cfg(folder)
    arch, k = _architecture_of(cfg)
    _normalisation(cfg)
    tensors = _read_weights(folder)
    return _build(cfg, arch, k, tensors, folder)


def _build(cfg, arch, k, tensors, folder) -> SAE:
    try:
        d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{folder / CFG} needs integer d_in and d_sae ({err}).") from err
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch == "jumprelu":
        shapes["threshold"] = (d_sae,)
    scale = tensors.pop("scaling_factor", tensors.pop("finetuning_scaling_factor", None))
    if set(tensors) != set(shapes):
        raise ValueError(
            f"{folder / WEIGHTS} holds tensors {sorted(tensors)} but a {arch} SAE needs {sorted(shapes)}."
        )
    for name, shape in shapes.items():
        if tensors[name].shape != shape:
            raise ValueError(
                f"{folder / WEIGHTS}: {name} has shape {tensors[name].shape}, expected {shape} "
                f"(d_in={d_in}, d_sae={d_sae} in {CFG})."
            )
    t = {n: jnp.asarray(a) for n, a in tensors.items()}
    dtype = t["W_enc"].dtype
    if len({a.dtype for a in t.values()}) != 1:
        raise ValueError(
            f"{folder / WEIGHTS}: tensors have mixed dtypes {sorted({str(a.dtype) for a in t.values()})}."
        )
    W_enc, b_enc, W_dec = t["W_enc"], t["b_enc"], t["W_dec"]
    if scale is not None:
        # Legacy finetuning scaling: decode(f · s) = f · (s W_dec).
        W_dec = W_dec * jnp.asarray(scale, dtype)[:, None]
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        # topk(pre · n) decoded through W_dec / n is a plain topk SAE with folded weights.
        n = jnp.linalg.norm(W_dec, axis=1)
        n = jnp.where(n > 0, n, 1)
        W_enc, b_enc, W_dec = W_enc * n, b_enc * n, W_dec / n[:, None]
    if arch == "standard":
        act = ReLU()
    elif arch == "topk":
        act = TopK(int(k))
    else:
        act = JumpReLU(t["threshold"], jnp.asarray(1e-3, dtype))
    return SAE(
        W_enc=W_enc,
        b_enc=b_enc,
        W_dec=W_dec,
        b_dec=t["b_dec"],
        activation=act,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
    )
