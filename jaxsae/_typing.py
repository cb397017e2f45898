"""Array types of the public signatures (jaxtyping; checked by beartype in the tests).

Public functions accept what users hold: JAX arrays, NumPy arrays and memmaps
(``np.ndarray`` subclasses), of any real dtype (converted on entry). Streamed
inputs (lists of chunks, iterators, callables) are spelled out where accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import jax
import numpy as np

ArrayLike = jax.Array | np.ndarray
"""An array a user may pass: a JAX array or a NumPy array (a memmap too)."""


@runtime_checkable
class RowView(Protocol):
    """Rows computed on demand: ``view[i:j]`` is a ``(j − i, ·)`` array (e.g. an SAE's codes
    beside a memmap, ``models._sae_dictionary.StreamedSAECodes``)."""

    shape: tuple

    def __getitem__(self, rows): ...


Chunks = Sequence[np.ndarray] | Iterator | Callable | RowView
"""Data streamed in pieces: a list of ``(n_i, d)`` chunks, an iterator of chunks, a
callable returning a fresh iterator (multi-pass functions), or a view of rows."""
