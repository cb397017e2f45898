"""``load_sae``: the SAEs people have, recognised from the files themselves.

- SAELens folders: ``cfg.json`` + ``sae_weights.safetensors`` (``_saelens``).
- Gemma Scope: ``params.npz`` with ``W_enc (d_in, d_sae)``, ``W_dec (d_sae, d_in)``,
  ``b_enc``, ``b_dec``, ``threshold``: a JumpReLU SAE whose encoder reads the raw input
  (``pre = x W_enc + b_enc``, no ``b_dec`` subtracted; Gemma Scope's own tutorial).
- EleutherAI sparsify folders: ``cfg.json`` (``SparseCoderConfig`` + ``d_in``) +
  ``sae.safetensors`` with ``encoder.weight (d_sae, d_in)``, ``encoder.bias``,
  ``W_dec (d_sae, d_in)``, ``b_dec``: ``topk(relu(W_e (x − b_dec) + b_e), k)``, decoded
  by ``W_dec`` plus ``b_dec`` — a jaxsae ``TopK`` SAE with ``W_enc = encoder.weightᵀ``.
  Transcoders, skip connections and ``groupmax`` are refused (not an autoencoder of
  one linear decoder).
- A Hugging Face cache folder (``models--org--name``, or one of its
  ``snapshots/<revision>``): the revision ``refs/main`` names (or the only one), then
  ``sae_id``, the SAE's folder inside the release (e.g. ``layer_20/width_16k/average_l0_71``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..models._sae import SAE
from ._checks import field, finite_tensor, positive_int, read_text, regular_file
from ._saelens import CFG, WEIGHTS, build_sae, load_saelens, read_cfg, read_weights

GEMMA_SCOPE = "params.npz"
SPARSIFY = "sae.safetensors"
_GEMMA_NAMES = {"W_enc", "W_dec", "b_enc", "b_dec", "threshold"}
_SPARSIFY_NAMES = {"encoder.weight", "encoder.bias", "W_dec", "b_dec"}


def load_sae(path, sae_id: str | None = None) -> SAE:
    """Load an SAE from a SAELens folder, a Gemma Scope ``params.npz`` (or its folder), an
    EleutherAI sparsify folder, or a Hugging Face cache folder with ``sae_id``; dtype preserved.

    The format is recognised from the files, and everything read is checked (regular
    files, exact JSON types, tensor names and shapes, finite weights); every failure is
    one ``ValueError`` line saying what is wrong. Pickles are never loaded.

    Args:
        path: the SAE's folder or file, or a Hugging Face cache folder
            (``~/.cache/huggingface/hub/models--google--gemma-scope-2b-pt-res``).
        sae_id: the SAE's folder inside a release (a cache folder, or any folder holding
            several SAEs), e.g. ``"layer_20/width_16k/average_l0_71"`` or ``"layers.10"``.

    Example:
        >>> sae = jaxsae.load_sae("models--google--gemma-scope-2b-pt-res",
        ...                       sae_id="layer_20/width_16k/average_l0_71")
    """
    path = _resolve(Path(path), sae_id)
    if path.is_file() or path.name == GEMMA_SCOPE:
        return _gemma_scope(path)
    if not path.is_dir():
        raise ValueError(
            f"{path} is not a folder (nothing is there); pass an SAE folder or a params.npz file."
        )
    if (path / GEMMA_SCOPE).exists():
        return _gemma_scope(path / GEMMA_SCOPE)
    if (path / SPARSIFY).exists() and not (path / WEIGHTS).exists():
        return _sparsify(path)
    if (path / WEIGHTS).exists() or (path / CFG).exists():
        return load_saelens(path)
    inside = sorted(p.name for p in path.iterdir() if p.is_dir())[:3]
    raise ValueError(
        f"{path} holds no SAE jaxsae recognises (SAELens {CFG} + {WEIGHTS}, sparsify {CFG} + "
        f"{SPARSIFY}, Gemma Scope {GEMMA_SCOPE})"
        + (f"; it has folders {inside}: pass sae_id= (e.g. {inside[0]!r})." if inside else ".")
    )


def _resolve(path: Path, sae_id: str | None) -> Path:
    """The SAE's own folder or file: a cache repo → its snapshot, then ``sae_id``."""
    if path.name.startswith("models--") and (path / "snapshots").is_dir():
        path = _snapshot(path)
    if sae_id is None:
        return path
    if Path(sae_id).is_absolute() or ".." in Path(sae_id).parts:
        raise ValueError(f"sae_id must be a relative folder inside {path}, got {sae_id!r}.")
    target = path / sae_id
    if not target.exists():
        raise ValueError(f"{path} has no {sae_id!r}; list the folder to see the SAE ids it holds.")
    return target


def _snapshot(repo: Path) -> Path:
    """The revision of a Hugging Face cache repo that ``refs/main`` names, or the only one."""
    revisions = sorted(p.name for p in (repo / "snapshots").iterdir() if p.is_dir())
    main = repo / "refs" / "main"
    if main.exists():
        revision = read_text(main, "cache ref").strip()
        if revision not in revisions:
            raise ValueError(
                f"{main} names revision {revision!r}, which is not in {repo / 'snapshots'}."
            )
        return repo / "snapshots" / revision
    if len(revisions) != 1:
        raise ValueError(
            f"{repo / 'snapshots'} holds {len(revisions)} revisions {revisions[:3]} and no "
            "refs/main; pass the snapshot folder itself."
        )
    return repo / "snapshots" / revisions[0]


def _gemma_scope(file: Path) -> SAE:
    file = regular_file(file, "Gemma Scope params")
    try:  # our own handle: np.load leaves its file open when the archive is damaged
        with open(file, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            tensors = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"{file} is not a readable .npz file ({first}). Is it truncated?"
        ) from None
    if set(tensors) != _GEMMA_NAMES:
        raise ValueError(
            f"{file} holds arrays {sorted(tensors)}; a Gemma Scope JumpReLU SAE holds "
            f"{sorted(_GEMMA_NAMES)}."
        )
    tensors = {n: finite_tensor(n, a, file) for n, a in tensors.items()}
    if tensors["W_enc"].ndim != 2:
        raise ValueError(
            f"{file}: W_enc must be (d_in, d_sae), got shape {tensors['W_enc'].shape}."
        )
    d_in, d_sae = tensors["W_enc"].shape
    return build_sae(d_in, d_sae, "jumprelu", None, False, False, tensors, file)


def _sparsify(folder: Path) -> SAE:
    cfg, file = read_cfg(folder), folder / CFG
    for flag in ("transcode", "skip_connection"):
        if field(cfg, flag, bool, file, default=False):
            raise ValueError(
                f"{file}: {flag} is true; jaxsae reads sparse autoencoders with one linear decoder "
                "(no transcoders or skip connections)."
            )
    activation = field(cfg, "activation", str, file, default="topk")
    if activation != "topk":
        raise ValueError(f"{file}: activation {activation!r} is not supported (jaxsae reads topk).")
    d_in = positive_int(cfg, "d_in", file)
    tensors = read_weights(folder / SPARSIFY)
    if set(tensors) != _SPARSIFY_NAMES:
        raise ValueError(
            f"{folder / SPARSIFY} holds tensors {sorted(tensors)}; a sparsify SAE holds "
            f"{sorted(_SPARSIFY_NAMES)}."
        )
    W = tensors.pop("encoder.weight")
    d_sae = W.shape[0] if W.ndim == 2 else -1
    latents = field(cfg, "num_latents", int, file, default=0)
    if latents and latents != d_sae:
        raise ValueError(f"{file}: num_latents = {latents} but encoder.weight has {d_sae} rows.")
    k = positive_int(cfg, "k", file, at_most=max(d_sae, 1), name_max="the number of latents")
    named = {"W_enc": W.T, "b_enc": tensors.pop("encoder.bias"), **tensors}
    return build_sae(d_in, d_sae, "topk", k, True, False, named, folder / SPARSIFY)
