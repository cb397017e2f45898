# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Real representations, offline
#
# Two sources of real data for certified sparse coding, both without network:
#
# 1. **Image patches** — 8×8 grayscale patches of the two photographs that ship
#    with scikit-learn, mean-removed and scaled to unit mean norm.
# 2. **MiniLM activations** — hidden states of all-MiniLM-L6-v2 (run in JAX) on
#    Shakespeare's plays, harvested to a memory-mapped `.npy`.
#
# For each we code the data with a dictionary of K randomly chosen (normalised)
# data points and print the optimality certificate of the codes (THEORY §1):
# the duality gap and the KKT residual. Sizes are small by default; set
# `JAXSAE_NB_SCALE=10` for ten times more data.

# %%
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxsae
import jaxsae.data

jax.config.update("jax_enable_x64", True)
SCALE = int(os.environ.get("JAXSAE_NB_SCALE", "1"))
OUT = Path(os.environ.get("JAXSAE_NB_OUT", "notebook-output"))
OUT.mkdir(parents=True, exist_ok=True)
LAM = 0.1

# %% [markdown]
# ## Image patches

# %%
patches = jaxsae.data.image_patches(1000 * SCALE, patch_size=8, key=jax.random.key(0))
print("patches", patches.shape, "mean norm", np.linalg.norm(patches, axis=1).mean())
fig, axes = plt.subplots(4, 8, figsize=(8, 4))
for ax, patch in zip(axes.ravel(), patches):
    ax.imshow(patch.reshape(8, 8), cmap="gray")
    ax.axis("off")
fig.savefig(OUT / "patches.png", dpi=80)

# %% [markdown]
# ## MiniLM activations (layer 3), centred and scaled to unit mean norm

# %%
acts_path = jaxsae.data.harvest_activations(
    OUT / "minilm_layer3.npy", layer=3, n_tokens=1000 * SCALE, seq_len=128, progress=False
)
print(jaxsae.data.representation_info(acts_path)["corpus"])
acts = np.asarray(jaxsae.data.load_representations(acts_path), dtype=np.float64)
acts -= acts.mean(axis=0)
acts /= np.linalg.norm(acts, axis=1).mean()
print("activations", acts.shape)

# %%
fig, ax = plt.subplots(figsize=(5, 3))
for name, X in [("patches", patches), ("MiniLM layer 3", acts)]:
    s = np.linalg.svd(np.asarray(X, np.float64), compute_uv=False)
    ax.semilogy(np.arange(1, len(s) + 1) / len(s), s**2 / (s**2).sum(), label=name)
ax.set_ylim(1e-6, 1)  # patches have zero mean, so their last component is exactly 0
ax.set_xlabel("component / d")
ax.set_ylabel("variance fraction")
ax.legend()
fig.savefig(OUT / "spectra.png", dpi=80, bbox_inches="tight")

# %% [markdown]
# ## Certified codes with a dictionary of data points

# %%
rows = []
for name, X, K in [("patches", patches, 128), ("MiniLM layer 3", acts, 256)]:
    X = jnp.asarray(X, jnp.float64)
    pick = jax.random.choice(jax.random.key(1), X.shape[0], (K,), replace=False)
    atoms = X[pick] / jnp.linalg.norm(X[pick], axis=1, keepdims=True)
    D = jaxsae.Dictionary(atoms)
    sol = jaxsae.sparse_code(D, X, LAM)
    kkt = float(jaxsae.kkt_residual(D, X, sol.codes, LAM).max())
    l0 = float((sol.codes > 0).sum(1).mean())
    rows.append((name, X.shape[0], K, float(sol.gap.max()), kkt, l0))
print(f"{'data':<16}{'N':>7}{'K':>6}{'max gap':>11}{'max KKT':>11}{'mean L0':>9}")
for name, n, k, gap, kkt, l0 in rows:
    print(f"{name:<16}{n:>7}{k:>6}{gap:>11.2e}{kkt:>11.2e}{l0:>9.2f}")
CERTIFICATES = rows
