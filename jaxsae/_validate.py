"""Input checks shared by every public entry point.

They run at trace time on shapes and dtypes, and on values only when the values
are concrete (outside ``jit``); inside ``jit`` numerical problems surface as
result codes instead. Every message says what was wrong and how to fix it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values we may inspect (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def as_float_array(x, name: str, *, dtype=None) -> jax.Array:
    """Convert ``x`` to a floating JAX array, refusing non-numeric input."""
    if isinstance(x, jax.Array | np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as err:  # pragma: no cover - exotic inputs
            raise ValueError(
                f"{name} must be an array of numbers, got {type(x).__name__}."
            ) from err
    kind = np.dtype(arr.dtype).kind
    if kind not in "fiub":
        raise ValueError(
            f"{name} must hold real numbers, got dtype {arr.dtype}. "
            "Convert it with np.asarray(..., dtype=np.float32) (or float64)."
        )
    if dtype is not None:
        arr = jnp.asarray(arr, dtype=dtype)
    elif kind != "f":
        arr = jnp.asarray(arr, dtype=jnp.result_type(float))
    else:
        arr = jnp.asarray(arr)
    return arr


def check_finite(x: jax.Array, name: str, fix: str = "") -> None:
    """Raise ``ValueError`` if a concrete ``x`` holds NaN or Inf."""
    if not is_concrete(x):
        return
    finite = np.isfinite(np.asarray(x))
    if not finite.all():
        bad = int((~finite).sum())
        where = np.argwhere(~finite)[0].tolist()
        hint = fix or "Remove or impute those entries (e.g. X = X[np.isfinite(X).all(axis=1)])."
        raise ValueError(
            f"{name} has {bad} non-finite value(s) (NaN/Inf), first at index {where}. {hint}"
        )


def check_rank(x: jax.Array, rank: int, name: str, shape_doc: str) -> None:
    if x.ndim != rank:
        raise ValueError(
            f"{name} must be a {rank}-d array of shape {shape_doc}, got shape {tuple(x.shape)}."
            + (" Use x[None, :] for a single point." if rank == 2 and x.ndim == 1 else "")
        )


def check_data(X, n_features: int, dtype, name: str = "X", model: str = "dictionary") -> jax.Array:
    """Validate a data matrix ``(N, d)`` against a ``model`` with ``d`` features."""
    X = as_float_array(X, name)
    check_rank(X, 2, name, "(N, d): one data point per row")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 points). Pass at least one data point.")
    if X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features but the {model} has {n_features}. Rows of "
            f"{name} are data points; pass {name} with shape (N, {n_features})."
        )
    if X.dtype != dtype:
        X = X.astype(dtype)
    check_finite(X, name)
    return X


def check_weight(w, name: str, dtype, *, strict: bool, several: str, hint: str = "") -> jax.Array:
    """A finite scalar weight (``> 0`` if ``strict``, else ``≥ 0``; an array is fine and may
    be traced, so ``vmap`` over it works). ``several``: how to pass several values."""
    arr = as_float_array(w, name)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(arr.shape)}. {several}")
    if is_concrete(arr):
        value = float(arr)
        if not np.isfinite(value) or value < 0 or (strict and value == 0):
            raise ValueError(
                f"{name} must be a finite number {'>' if strict else '≥'} 0, got {value}.{hint}"
            )
    return arr.astype(dtype)


def check_lam(lam, dtype) -> jax.Array:
    """Validate the sparsity weight λ: a positive finite scalar (array allowed)."""
    return check_weight(
        lam, "lam", dtype, strict=True, several="To use several values of λ, jax.vmap over lam.",
        hint=" λ weighs the L1 penalty (THEORY §0); an SAE loss ‖x−x̂‖² + α·Σz has λ = α/2.",
    )  # fmt: skip


def float_dtype(dtype):
    """The working dtype for data of ``dtype`` (integers become the default float)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return jnp.dtype(dtype)
    if dtype.kind in "iub":
        return jnp.dtype(jnp.result_type(float))
    raise ValueError(
        f"X must hold real numbers, got dtype {dtype}. "
        "Convert it with np.asarray(..., dtype=np.float32) (or float64)."
    )
