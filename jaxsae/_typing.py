"""Array types of the public signatures (jaxtyping; checked by beartype in the tests).

Public functions accept what users hold: JAX arrays, NumPy arrays and memmaps
(``np.ndarray`` subclasses), of any real dtype (converted on entry). Streamed
inputs (lists of chunks, iterators, callables) are spelled out where accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

ArrayLike = jax.Array | np.ndarray
"""An array a user may pass: a JAX array or a NumPy array (a memmap too)."""

Chunks = Sequence[np.ndarray] | Iterator | Callable
"""Data streamed in pieces: a list of ``(n_i, d)`` chunks, an iterator of chunks, or a
callable returning a fresh iterator (multi-pass functions)."""
