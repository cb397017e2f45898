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
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path, atomic_write_json, replace_folder
from ..models._activations import JumpReLU, ReLU, TopK
from ..models._sae import SAE
from ._checks import (
    check_digest,
    field,
    finite_tensor,
    positive_int,
    read_text,
    regular_file,
    tensors_digest,
)
from ._provenance import KEY, objective_record

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
    sae: SAE,
    path,
    *,
    certificate: dict | None = None,
    metadata: dict | None = None,
    lam=None,
    penalty: str | None = None,
    data_transform: dict | None = None,
) -> Path:
    """Save an SAE as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``); dtype preserved.

    The whole folder (weights, config and certificate) is written beside ``path``
    and swapped in atomically (``_atomic.replace_folder``): a reader, or a process
    killed at any moment, sees the old SAE with its certificate or the new one, never
    one SAE's weights with another's config.

    Args:
        sae: the SAE (``ReLU`` → ``standard``, ``TopK`` → ``topk``, ``JumpReLU`` → ``jumprelu``).
        path: the folder.
        certificate: a JSON-able dict saved as ``jaxsae_certificate.json`` next to the
            weights; its scalar entries are also copied to ``cfg.json``'s metadata
            under ``"jaxsae_certificate"`` (SAELens keeps unknown metadata keys).
        metadata: extra entries for ``cfg.json``'s ``metadata``.
        lam, penalty, data_transform: what the SAE was trained for, recorded in the
            metadata as ``jaxsae_objective`` (``_provenance``): λ of THEORY §0 (for
            ``L1`` / ``DecoderNormL1`` training; ``None`` for TopK), the penalty's
            name and the data's transform. ``TrainResult.objective`` holds all three
            for a ``train_sae`` run: ``save_sae(out.sae, path, **out.objective)``.
            ``certify`` and ``diagnose`` use the recorded λ when none is given.

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
    if lam is not None or penalty is not None or data_transform is not None:
        weight = lam
        lam = lam if penalty in (None, "L1", "DecoderNormL1") else None
        meta[KEY] = objective_record(lam, penalty=penalty or "L1", penalty_weight=weight,
                                     data_transform=data_transform)  # fmt: skip
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
    meta["jaxsae_weights_sha256"] = tensors_digest(tensors)  # any later change is detected

    def build(folder: Path) -> None:
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(tensors, str(tmp))
        atomic_write_json(folder / CFG, cfg)
        if certificate is not None:
            atomic_write_json(folder / CERTIFICATE, certificate)

    if not path.parent.exists():
        raise ValueError(
            f"cannot write {path}: folder {path.parent} does not exist. Create it first."
        )
    return replace_folder(path, build)


def load_sae_certificate(path) -> dict | None:
    """The sidecar certificate of a saved SAE folder, or ``None`` if it has none."""
    file = Path(path) / CERTIFICATE
    if not file.exists() and not file.is_symlink():
        return None
    text = read_text(file, "certificate")
    try:
        out = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{file} is not valid JSON ({err}).") from None
    if not isinstance(out, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(out).__name__}.")
    return out


def read_cfg(folder: Path) -> dict:
    """``folder/cfg.json`` as a JSON object, or one ``ValueError`` line."""
    file = folder / CFG
    text = read_text(file, "SAE config")
    try:
        cfg = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); is it truncated?") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(cfg).__name__}.")
    return cfg


def sae_metadata(path) -> dict:
    """``cfg.json``'s ``metadata`` object of an SAE folder (empty when it has none)."""
    folder = Path(path)
    return field(read_cfg(folder), "metadata", dict, folder / CFG, default={})


def _architecture_of(cfg: dict, file: Path, d_sae: int) -> tuple[str, int | None]:
    """``(architecture, k)`` for ≥ 6 and legacy configs, every field type-checked."""
    arch = field(cfg, "architecture", str, file, default="standard")
    act = field(cfg, "activation_fn", str, file, default=None)
    act = field(cfg, "activation_fn_str", str, file, default=act) if act is None else act
    act = "relu" if act is None else act
    k = None
    if act == "topk":
        kwargs = field(cfg, "activation_fn_kwargs", dict, file, default={})
        arch = "topk"
        if "k" in kwargs:
            k = positive_int(
                kwargs, "k", f"{file} (activation_fn_kwargs)", at_most=d_sae, name_max="d_sae"
            )
    elif act != "relu":
        raise ValueError(
            f"{file}: activation_fn {act!r} is not supported (jaxsae reads relu and topk)."
        )
    if arch == "gated":
        raise ValueError(
            "gated SAEs are not supported by jaxsae (their encoder has no single pre-activation). "
            "Supported architectures: standard, topk, jumprelu."
        )
    if arch not in ("standard", "topk", "jumprelu"):
        raise ValueError(
            f"architecture {arch!r} is not supported; jaxsae reads standard, topk and jumprelu."
        )
    if arch == "topk" and k is None:
        k = positive_int(cfg, "k", file, at_most=d_sae, name_max="d_sae")
    return arch, k


def _normalisation(cfg: dict, file: Path) -> None:
    norm = field(cfg, "normalize_activations", (str, bool), file, default="none")
    if norm is False:
        norm = "none"
    if norm is True:
        norm = "expected_average_only_in"
    if norm not in ("none", "expected_average_only_in"):
        raise ValueError(
            f"normalize_activations={norm!r} is not supported: it rescales inputs at run time, so the SAE "
            "is not a fixed linear decoder. jaxsae reads 'none' and 'expected_average_only_in' "
            "(already folded into the weights)."
        )


def read_weights(file: Path) -> dict[str, np.ndarray]:
    """The finite tensors of a safetensors file, or one ``ValueError`` line."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    file = regular_file(file, "SAE weights")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ValueError(
            f"{file} is not a readable safetensors file ({err}). Is it truncated?"
        ) from None
    return {n: finite_tensor(n, a, file) for n, a in tensors.items()}


def load_saelens(path) -> SAE:
    """Load an SAE saved by SAELens (≥ 6 or legacy) or by ``save_sae``; dtype preserved.

    Everything read is checked: regular files only (no folders, FIFOs or devices),
    JSON fields of exactly the right types (a boolean is not the string ``"false"``,
    a width is an integer), ``1 ≤ k ≤ d_sae``, tensor names and shapes, finite
    weights. Every failure is one ``ValueError`` line saying what is wrong: missing
    files, pickled weights, truncated files, unsupported architectures (gated) or
    run-time normalisations.
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
    cfg = read_cfg(folder)
    file = folder / CFG
    d_in = positive_int(cfg, "d_in", file)
    d_sae = positive_int(cfg, "d_sae", file)
    arch, k = _architecture_of(cfg, file, d_sae)
    _normalisation(cfg, file)
    apply_b_dec = field(cfg, "apply_b_dec_to_input", bool, file, default=True)
    rescale = field(cfg, "rescale_acts_by_decoder_norm", bool, file, default=False)
    dtype_name = field(cfg, "dtype", str, file, default=None)
    if dtype_name is not None and dtype_name.removeprefix("torch.") not in _DTYPES:
        raise ValueError(f"{file}: dtype {dtype_name!r} is not one of {sorted(_DTYPES)}.")
    meta = field(cfg, "metadata", dict, file, default={})
    tensors = read_weights(folder / WEIGHTS)
    check_digest(tensors, meta.get("jaxsae_weights_sha256"), folder / WEIGHTS)
    return build_sae(d_in, d_sae, arch, k, apply_b_dec, rescale, tensors, folder / WEIGHTS)


def build_sae(d_in, d_sae, arch, k, apply_b_dec, rescale, tensors, file) -> SAE:
    """An SAE from SAELens-named tensors (``W_enc (d_in, d_sae)``, ``b_enc``, ``W_dec
    (d_sae, d_in)``, ``b_dec``, JumpReLU's ``threshold``), every name and shape checked."""
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if arch == "jumprelu":
        shapes["threshold"] = (d_sae,)
    scale = None
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in tensors:
            scale = tensors.pop(name)
            if scale.shape != (d_sae,):
                raise ValueError(
                    f"{file}: {name} has shape {scale.shape}, expected ({d_sae},) "
                    f"(one factor per latent, d_sae={d_sae})."
                )
    if set(tensors) != set(shapes):
        raise ValueError(
            f"{file} holds tensors {sorted(tensors)} but a {arch} SAE needs {sorted(shapes)}."
        )
    for name, shape in shapes.items():
        if tensors[name].shape != shape:
            raise ValueError(
                f"{file}: {name} has shape {tensors[name].shape}, expected {shape} "
                f"(d_in={d_in}, d_sae={d_sae})."
            )
    t = {n: jnp.asarray(a) for n, a in tensors.items()}
    dtype = t["W_enc"].dtype
    if len({a.dtype for a in t.values()}) != 1:
        raise ValueError(
            f"{file}: tensors have mixed dtypes {sorted({str(a.dtype) for a in t.values()})}."
        )
    W_enc, b_enc, W_dec = t["W_enc"], t["b_enc"], t["W_dec"]
    if scale is not None:
        # Legacy finetuning scaling: decode(f · s) = f · (s W_dec).
        W_dec = W_dec * jnp.asarray(scale, dtype)[:, None]
    if arch == "topk" and rescale:
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
        apply_b_dec_to_input=apply_b_dec,
    )
