"""Loading user arrays (``.npy`` memory-mapped, ``.safetensors``) safely.

Pickles are never loaded (``allow_pickle=False``): a file that needs them is
refused with a message.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._checks import regular_file


def load_array(path: str | os.PathLike, *, key: str | None = None, mmap: bool = True) -> np.ndarray:
    """Load a 2-d data array from ``.npy`` (memory-mapped by default) or ``.safetensors``.

    Args:
        path: the file.
        key: tensor name inside a ``.safetensors`` file (default: its only tensor).
        mmap: memory-map ``.npy`` files instead of reading them into memory.

    Raises:
        ValueError: missing, damaged, pickled or foreign files, with what to do.
    """
    path = regular_file(path, "data file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        dtype = _npy_dtype(path)
        if dtype.hasobject:
            raise ValueError(
                f"{path} holds a pickled object array; jaxsae never loads pickles. "
                "Save a numeric array with np.save(path, X.astype(np.float32))."
            )
        _real(dtype, path)
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except Exception as err:
            raise ValueError(f"{path} is not a valid .npy file ({err}). Is it truncated?") from None
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"{path} is not a readable safetensors file ({err}). Is it truncated?"
            ) from err
        if key is None:
            if len(tensors) != 1:
                raise ValueError(
                    f"{path} holds tensors {sorted(tensors)}; say which one with key=... (CLI: --key)."
                )
            key = next(iter(tensors))
        if key not in tensors:
            raise ValueError(f"{path} has no tensor {key!r}; it holds {sorted(tensors)}.")
        _real(tensors[key].dtype, path)
        return tensors[key]
    if suffix in (".pkl", ".pickle", ".pt", ".pth"):
        raise ValueError(
            f"{path}: jaxsae never loads pickles (they can run arbitrary code). "
            "Convert the array to .npy or .safetensors first."
        )
    raise ValueError(f"{path}: unsupported data format {suffix!r}; use .npy or .safetensors.")


def _real(dtype: np.dtype, path: Path) -> None:
    """Refuse dtypes that are not real numbers (complex, structured, strings, dates)."""
    if dtype.kind in "fiub" or dtype.name == "bfloat16":
        return
    what = {"c": "complex numbers", "V": "a structured (record) dtype"}.get(
        dtype.kind, f"dtype {dtype}"
    )
    raise ValueError(
        f"{path} holds {what} ({dtype}); jaxsae needs real numbers. Save e.g. "
        "np.real(X).astype(np.float32), or one field of a record array."
    )


def _npy_dtype(path: Path) -> np.dtype:
    """Read only the header of an ``.npy`` file (never its payload)."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            _, _, dtype = reader(fh)
        except Exception as err:
            raise ValueError(f"{path} is not a valid .npy file ({err}).") from err
    return dtype
