"""Grayscale image patches from the two photographs that ship with scikit-learn.

``sklearn.datasets.load_sample_images()`` reads ``china.jpg`` and ``flower.jpg``
(427 × 640 RGB) from scikit-learn's package data. We read the same files
directly with Pillow (a matplotlib dependency), locating scikit-learn without
importing it, so the patches need no network and no scikit-learn import.

Preprocessing, the classic one for sparse coding of natural images: grayscale
(ITU-R 601 luma, values in [0, 1]), each patch's mean removed (so patches lie
in the (p²−1)-dimensional zero-mean subspace), then one global scale so the
mean patch norm is 1 (λ then means the same across patch sizes).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])


def sample_image_paths() -> list[Path]:
    """The JPEGs behind ``sklearn.datasets.load_sample_images()``, sorted as sklearn sorts them."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the sample images ship with scikit-learn, which is not installed. "
            "Install it with `pip install scikit-learn` or `pip install jaxsae[data]`."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images"
    paths = sorted(folder.glob("*.jpg"))
    if not paths:
        raise ModuleNotFoundError(f"no sample images under {folder}; reinstall scikit-learn.")
    return paths


def sample_images_gray() -> list[np.ndarray]:
    """The sample images as float64 grayscale arrays in [0, 1], shape (H, W)."""
    from PIL import Image

    images = []
    for path in sample_image_paths():
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
        images.append(rgb @ LUMA / 255.0)
    return images


def patch_positions(
    n_patches: int, *, patch_size: int = 8, key: jax.Array
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct random patch positions ``(image, row, col)`` (top-left corners), as used by
    :func:`image_patches` with the same arguments.

    Drawn without replacement, uniformly over every ``patch_size × patch_size``
    position of both images (in the order of ``sample_images_gray()``).
    """
    p = int(patch_size)
    shapes = [im.shape for im in sample_images_gray()]
    if not 2 <= p <= min(min(shape) for shape in shapes):
        raise ValueError(f"patch_size must be between 2 and the image size, got {patch_size}.")
    grids = [(h - p + 1, w - p + 1) for h, w in shapes]
    total = sum(h * w for h, w in grids)
    if not 1 <= n_patches <= total:
        raise ValueError(f"n_patches must be in 1..{total} for {p}×{p} patches, got {n_patches}.")
    # A NumPy generator seeded by the key's bits: the same patches with or without x64.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    flat = rng.choice(total, int(n_patches), replace=False)
    offsets = np.cumsum([0] + [h * w for h, w in grids])
    image = np.searchsorted(offsets, flat, side="right") - 1
    widths = np.array([w for _, w in grids])
    row, col = np.divmod(flat - offsets[image], widths[image])
    return image, row, col


def image_patches(
    n_patches: int = 10_000, *, patch_size: int = 8, key: jax.Array, dtype=np.float32
) -> np.ndarray:
    """``n_patches`` distinct random ``patch_size × patch_size`` patches, flattened row-major.

    Positions come from :func:`patch_positions`. Each patch has zero mean; the
    set is scaled so that ``mean_n ‖x_n‖ = 1``. Rows are data points ``x_n``
    (THEORY §0).

    Args:
        n_patches: how many patches (at most the number of positions, ~5.4e5 for 8×8).
        patch_size: side length p; rows have p² features.
        key: a JAX PRNG key; the same key gives the same patches.
        dtype: output dtype (computation is in float64).

    Returns:
        ``(n_patches, patch_size**2)`` array.

    Example:
        >>> X = jaxsae.data.image_patches(20_000, key=jax.random.key(0))   # (20000, 64)
    """
    p = int(patch_size)
    image, row, col = patch_positions(n_patches, patch_size=p, key=key)
    di, dj = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    out = np.empty((len(image), p * p))
    for k, gray in enumerate(sample_images_gray()):
        sel = image == k
        out[sel] = gray[row[sel, None, None] + di, col[sel, None, None] + dj].reshape(-1, p * p)
    out -= out.mean(axis=1, keepdims=True)
    out /= np.linalg.norm(out, axis=1).mean()
    return out.astype(dtype)
