"""The nonnegative LARS kernel (``_lars.cc``) on CPU, through ``jax.ffi``.

The kernel is compiled from the package's own source with the machine's C++
compiler (no downloaded binaries): by ``make`` after installing
(``python -m jaxsae._build``), or on first use when the shared library
is missing or older than its source. It is registered as the XLA FFI target
``jaxsae_lars_f64`` / ``jaxsae_lars_f32`` for the CPU platform. Where it cannot be
built or loaded (no compiler, another backend), ``available()`` is False and the
coder runs its pure-JAX path.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = Path(__file__).with_name("_lars.cc")


def _library_path() -> Path:
    here = SOURCE.with_name("_lars.so")
    if os.access(here.parent, os.W_OK):
        return here
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxsae"
    return cache / "_lars.so"


def build(force: bool = False) -> Path:
    """Compile ``_lars.cc`` into a shared library (atomically) unless it is up to date."""
    out = _library_path()
    if not force and out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    include = jax.ffi.include_dir()
    fd, tmp = tempfile.mkstemp(prefix=".lars.", suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-isystem", include,
           str(SOURCE), "-o", tmp]  # fmt: skip
    try:  # built where it runs, so tuned for this CPU; plain -O3 if that is refused
        proc = subprocess.run([*cmd[:1], "-march=native", *cmd[1:]], capture_output=True, text=True)
        if proc.returncode != 0:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{proc.stderr[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def available() -> bool:
    """Whether the kernel is built, loaded and registered for the CPU platform."""
    if jax.default_backend() != "cpu" or os.environ.get("JAXSAE_NO_FFI"):
        return False
    try:
        lib = ctypes.cdll.LoadLibrary(str(build()))
    except (OSError, RuntimeError):
        return False
    for name, symbol in (
        ("jaxsae_lars_f64", "JaxsaeLarsF64"),
        ("jaxsae_lars_f32", "JaxsaeLarsF32"),
        ("jaxsae_resolve_f64", "JaxsaeResolveF64"),
        ("jaxsae_resolve_f32", "JaxsaeResolveF32"),
    ):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return True


def lars(B, G, mask, todo, lam, *, cap: int, max_steps: int):
    """Per point the nonnegative-lasso path from ``t = max_k b_k`` to ``λ`` (``_lars.cc``).

    Args:
        B: ``(N, K)`` correlations ``Y Dᵀ``; G: ``(K, K)`` Gram ``D Dᵀ``; mask: ``(K,)``;
        todo: ``(N,)`` points to solve (the others get zeros); lam: λ (a scalar array);
        cap: largest active set; max_steps: path steps per point.

    Returns:
        ``(Z, status, steps)``: codes ``(N, K)``, per point 0 (solved), 1 (step budget),
        2 (singular active Gram), and the number of path steps.
    """
    if not available():
        raise RuntimeError("the LARS kernel is not available (see jaxsae.solvers._lars_ffi).")
    target = "jaxsae_lars_f64" if B.dtype == jnp.float64 else "jaxsae_lars_f32"
    N, K = B.shape
    out = (
        jax.ShapeDtypeStruct((N, K), B.dtype),
        jax.ShapeDtypeStruct((N,), jnp.int32),
        jax.ShapeDtypeStruct((N,), jnp.int32),
    )
    call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
    return call(
        B, G.astype(B.dtype), mask, todo, jnp.asarray(lam, B.dtype), cap=np.int64(cap),
        max_steps=np.int64(max_steps), threads=np.int64(os.cpu_count() or 1),
    )  # fmt: skip


def resolve(B, G, Z, lam, *, cap: int):
    """Exact codes on each point's current support, ``z_S = G_SS⁻¹(b_S − λ1)`` (``_lars.cc``).

    Returns ``(Z_exact, ok)``; where ``ok`` is False (singular ``G_SS``, support over
    ``cap``, a code that would turn nonpositive) the given codes are returned."""
    if not available():
        raise RuntimeError("the LARS kernel is not available (see jaxsae.solvers._lars_ffi).")
    target = "jaxsae_resolve_f64" if B.dtype == jnp.float64 else "jaxsae_resolve_f32"
    out = (jax.ShapeDtypeStruct(B.shape, B.dtype), jax.ShapeDtypeStruct(B.shape[:1], jnp.bool_))
    call = jax.ffi.ffi_call(target, out, vmap_method="sequential")
    return call(
        B, G.astype(B.dtype), Z.astype(B.dtype), jnp.asarray(lam, B.dtype), cap=np.int64(cap),
        threads=np.int64(os.cpu_count() or 1),
    )  # fmt: skip
