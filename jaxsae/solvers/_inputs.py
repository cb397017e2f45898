"""Shared entry checks for functions that take a dictionary, data, λ and optional codes."""

from __future__ import annotations

from .._validate import as_float_array, check_data, check_lam
from ._lasso import sparse_code


def data_lam_codes(dictionary, X, lam, codes, chunk_size):
    """Validated ``(X, λ, Z)``; ``Z`` are certified lasso codes (THEORY §1) when ``codes`` is None."""
    X = check_data(X, dictionary.n_features, dictionary.dtype)
    lam = check_lam(lam, dictionary.dtype)
    N, K = X.shape[0], dictionary.n_atoms
    if codes is None:
        codes = sparse_code(dictionary, X, lam, chunk_size=chunk_size).codes
    codes = as_float_array(codes, "codes").astype(dictionary.dtype)
    if codes.shape != (N, K):
        raise ValueError(f"codes must have shape (N, K) = ({N}, {K}), got {tuple(codes.shape)}.")
    return X, lam, codes
