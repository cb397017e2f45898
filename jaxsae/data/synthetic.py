"""Synthetic worlds with known ground truth, for the phenomena of THEORY §7.

Every generator takes an explicit keyword-only PRNG ``key=`` and returns a
:class:`World`: the data ``X`` (N, d), the ground-truth feature directions
(F, d) (unit rows), the true codes (N, F) with ``X = codes @ features`` (plus
``noise`` when asked), and metadata (which features are parents, children,
dense). Sizes are Python ints (they fix shapes); probabilities, magnitudes and
ratios are numbers or arrays.

Example:
    >>> import jax, jaxsae.data.synthetic as syn
    >>> w = syn.parent_child(key=jax.random.key(0), n_points=200, dim=4, alpha=1.0, beta=0.8)
    >>> w.X.shape, w.features.shape, w.parent.tolist()
    ((200, 4), (3, 4), [-1, 0, 0])
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

__all__ = [
    "World",
    "dense_signed",
    "free_composition",
    "gaussian_mixture",
    "hierarchy",
    "parent_child",
    "sparse_features",
]


class World(eqx.Module):
    """A synthetic data set with its ground truth.

    Attributes:
        X: ``(N, d)`` data, ``X = codes @ features + noise``.
        features: ``(F, d)`` unit-norm ground-truth directions (rows).
        codes: ``(N, F)`` true codes (nonnegative, except the signed
            coefficient ``t`` of a dense signed direction).
        parent: ``(F,)`` index of each feature's parent, ``-1`` for roots.
        dense: ``(F,)`` whether the feature is a dense signed direction.
        labels: ``(N,)`` cluster / child label per point (``-1`` if none).
        name: which generator made the world.
        composes: ``(F, F)`` with ``composes[p, c]`` when ``c`` is a child of
            ``p``, for worlds where a child composes with several parents
            (:func:`free_composition`); ``None`` means the tree ``parent``.
    """

    X: Float[Array, "N d"]
    features: Float[Array, "F d"]
    codes: Float[Array, "N F"]
    parent: Int[Array, " F"]
    dense: Bool[Array, " F"]
    labels: Int[Array, " N"]
    name: str = eqx.field(static=True, default="world")
    composes: Bool[Array, "F F"] | None = None

    @property
    def child_of(self) -> Bool[Array, "F F"]:
        """``child_of[p, c]``: feature ``c`` is a child of feature ``p``."""
        if self.composes is not None:
            return self.composes
        F = self.features.shape[0]
        return self.parent[None, :] == jnp.arange(F, dtype=self.parent.dtype)[:, None]

    @property
    def children(self) -> Bool[Array, " F"]:
        """Whether each feature has a parent."""
        return jnp.any(self.child_of, axis=0)

    @property
    def is_parent(self) -> Bool[Array, " F"]:
        """Whether each feature is the parent of some other feature."""
        return jnp.any(self.child_of, axis=1)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name} must be a positive Python int (it fixes a shape), got {value!r}."
            )


def _dtype(dtype):
    """The requested float dtype, or JAX's default (float64 only when x64 is on)."""
    return jnp.dtype(jnp.result_type(float) if dtype is None else dtype)


def _directions(key, n: int, dim: int, dtype) -> Float[Array, "n d"]:
    """``n`` unit directions; orthonormal when ``n ≤ dim`` (QR of a Gaussian)."""
    G = jax.random.normal(key, (max(n, dim), dim), dtype)
    if n <= dim:
        Q, _ = jnp.linalg.qr(G.T)
        return Q.T[:n]
    G = G[:n]
    return G / jnp.linalg.norm(G, axis=1, keepdims=True)


def _finish(key, codes, features, noise, parent, dense, labels, name) -> World:
    X = codes @ features
    X = X + noise * jax.random.normal(key, X.shape, X.dtype)
    return World(X, features, codes, parent, dense, labels, name)


@eqx.filter_jit
def sparse_features(
    *,
    key: PRNGKeyArray,
    n_points: int,
    n_features: int,
    dim: int,
    p=0.05,
    magnitude_low=0.5,
    magnitude_high=1.5,
    correlation=0.0,
    noise=0.0,
    dtype=None,
) -> World:
    """Independent sparse features (Toy-Models style).

    Feature ``i`` fires with probability ``p`` (scalar or ``(F,)``) with a
    magnitude uniform on ``[magnitude_low, magnitude_high]``. ``correlation``
    ρ ∈ [0, 1) couples the firing events through a Gaussian copula (a shared
    latent with weight √ρ). Directions are orthonormal when ``F ≤ d``.
    """
    _check_sizes(n_points=n_points, n_features=n_features, dim=dim)
    dtype = _dtype(dtype)
    kd, kf, ks, km, kn = jax.random.split(key, 5)
    features = _directions(kd, n_features, dim, dtype)
    p = jnp.broadcast_to(jnp.asarray(p, dtype), (n_features,))
    rho = jnp.asarray(correlation, dtype)
    u = jnp.sqrt(rho) * jax.random.normal(ks, (n_points, 1), dtype) + jnp.sqrt(
        1 - rho
    ) * jax.random.normal(kf, (n_points, n_features), dtype)
    fires = jax.scipy.stats.norm.cdf(u) < p
    mags = jax.random.uniform(
        km, (n_points, n_features), dtype, minval=magnitude_low, maxval=magnitude_high
    )
    codes = jnp.where(fires, mags, 0)
    parent = -jnp.ones(n_features, jnp.int32)
    return _finish(
        kn,
        codes,
        features,
        noise,
        parent,
        jnp.zeros(n_features, bool),
        -jnp.ones(n_points, jnp.int32),
        "sparse_features",
    )


@eqx.filter_jit
def hierarchy(
    *,
    key: PRNGKeyArray,
    n_points: int,
    dim: int,
    n_parents: int = 1,
    n_children: int = 2,
    p_parent=1.0,
    p_alone=0.0,
    alpha=1.0,
    beta=0.8,
    jitter=0.0,
    noise=0.0,
    dtype=None,
) -> World:
    """Hierarchical trees: parents with mutually exclusive children.

    Features are ordered parent 0, its ``n_children`` children, parent 1, ...
    (all orthonormal, so ``(1 + n_children) · n_parents ≤ dim``). Each parent
    fires independently with probability ``p_parent``; when it fires it is alone
    with probability ``p_alone``, otherwise exactly one child (uniform) fires
    with it. Parent magnitude ``α``, child magnitude ``β`` (scalars or one per
    parent, ``(n_parents,)``; ``β/α`` is the magnitude ratio), each multiplied by ``1 + jitter·U(−1, 1)``. A point of a
    parent with child c is ``αp + βc`` (THEORY §7, absorption).
    ``labels`` holds the child index (feature index) of the first parent's
    child, or ``-1``.
    """
    _check_sizes(n_points=n_points, dim=dim, n_parents=n_parents, n_children=n_children)
    dtype = _dtype(dtype)
    per = 1 + n_children
    F = per * n_parents
    if F > dim:
        raise ValueError(
            f"hierarchy needs (1 + n_children) · n_parents = {F} orthonormal features but dim = {dim}. "
            "Raise dim or use fewer parents/children."
        )
    return _hierarchy(key, n_points, dim, n_parents, n_children, p_parent, p_alone, alpha, beta,
                      jitter, noise, dtype)  # fmt: skip


@eqx.filter_jit  # one program, not thirty eagerly compiled operations
def _hierarchy(key, n_points, dim, n_parents, n_children, p_parent, p_alone, alpha, beta, jitter,
               noise, dtype) -> World:  # fmt: skip
    per = 1 + n_children
    F = per * n_parents
    kd, kp, ka, kc, kj, kn = jax.random.split(key, 6)
    features = _directions(kd, F, dim, dtype)
    on = jax.random.uniform(kp, (n_points, n_parents), dtype) < p_parent
    alone = jax.random.uniform(ka, (n_points, n_parents), dtype) < p_alone
    child = jax.random.randint(kc, (n_points, n_parents), 0, n_children)
    scale = 1 + jitter * jax.random.uniform(kj, (n_points, F), dtype, minval=-1, maxval=1)
    child_on = on[..., None] & ~alone[..., None] & (child[..., None] == jnp.arange(n_children))
    a = jnp.broadcast_to(jnp.asarray(alpha, dtype), (n_parents,))
    b = jnp.broadcast_to(jnp.asarray(beta, dtype), (n_parents,))
    block = jnp.concatenate(
        [jnp.where(on, a, 0)[..., None], jnp.where(child_on, b[:, None], 0)],
        axis=-1,
    )
    codes = block.reshape(n_points, F) * scale
    parent = jnp.where(jnp.arange(F) % per == 0, -1, (jnp.arange(F) // per) * per).astype(jnp.int32)
    labels = jnp.where(on[:, 0] & ~alone[:, 0], 1 + child[:, 0], -1).astype(jnp.int32)
    return _finish(kn, codes, features, noise, parent, jnp.zeros(F, bool), labels, "hierarchy")


@eqx.filter_jit
def parent_child(
    *,
    key: PRNGKeyArray,
    n_points: int,
    dim: int,
    alpha=1.0,
    beta=0.8,
    n_children: int = 2,
    p_alone=0.0,
    dtype=None,
) -> World:
    """The absorption world of THEORY §7: every point is ``αp`` (probability
    ``p_alone``) or ``αp + βc_j`` with one child ``j`` (uniform), exact magnitudes,
    orthonormal ``p, c_1, …``. A one-parent :func:`hierarchy` with ``p_parent = 1``.
    """
    w = hierarchy(
        key=key,
        n_points=n_points,
        dim=dim,
        n_parents=1,
        n_children=n_children,
        p_parent=1.0,
        p_alone=p_alone,
        alpha=alpha,
        beta=beta,
        dtype=dtype,
    )
    return World(w.X, w.features, w.codes, w.parent, w.dense, w.labels, "parent_child")


def free_composition(
    *,
    key: PRNGKeyArray,
    n_parents: int,
    n_children: int,
    n_points: int = 60,
    dim: int | None = None,
    profile="uniform",
    alpha=1.0,
    beta=0.8,
    dtype=None,
) -> World:
    """THEORY §7's open question: ``P`` parents and ``C`` children that compose
    freely. Every point is ``αp_j + βc_i`` for one of the ``M = P·C``
    combinations; combination ``m`` (parent-major order) appears
    ``max(1, round(n_points · w_m / Σw))`` times, with weights ``w`` from
    ``profile``: ``"uniform"``, ``"zipf"`` (``w_m = 1/m``) or an ``(M,)`` array.
    Directions are orthonormal (``dim ≥ P + C``, default ``P + C``); features are
    ordered parents then children, and every child is a child of every parent
    (``composes``). ``labels`` holds the combination index.
    """
    _check_sizes(n_parents=n_parents, n_children=n_children, n_points=n_points)
    P, C = n_parents, n_children
    dim = P + C if dim is None else dim
    _check_sizes(dim=dim)
    if P + C > dim:
        raise ValueError(
            f"free_composition needs P + C = {P + C} orthonormal features but dim = {dim}."
        )
    M = P * C
    if isinstance(profile, str):
        if profile not in ("uniform", "zipf"):
            raise ValueError(f"profile must be 'uniform', 'zipf' or {M} weights, got {profile!r}.")
        w = np.ones(M) if profile == "uniform" else 1.0 / np.arange(1, M + 1)
    else:
        w = np.asarray(profile, float)
        if w.shape != (M,) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"profile weights must be {M} nonnegative numbers, not all 0.")
    counts = np.maximum(1, np.round(n_points * w / w.sum())).astype(int)
    combo = np.repeat(np.arange(M), counts)
    dtype = _dtype(dtype)
    codes = np.zeros((len(combo), P + C))
    codes[np.arange(len(combo)), combo // C] = alpha
    codes[np.arange(len(combo)), P + combo % C] = beta
    codes = jnp.asarray(codes, dtype)
    features = _directions(key, P + C, dim, dtype)
    composes = np.zeros((P + C, P + C), bool)
    composes[:P, P:] = True
    parent = jnp.full(P + C, -1, jnp.int32)
    return World(codes @ features, features, codes, parent, jnp.zeros(P + C, bool),
                 jnp.asarray(combo, jnp.int32), "free_composition", jnp.asarray(composes))  # fmt: skip


@eqx.filter_jit
def dense_signed(
    *,
    key: PRNGKeyArray,
    n_points: int,
    dim: int,
    amplitude=1.0,
    gaussian: bool = False,
    n_sparse: int = 0,
    p_sparse=0.1,
    sparse_magnitude=1.0,
    noise=0.0,
    dtype=None,
) -> World:
    """A dense signed direction ``t v`` mixed with sparse features (THEORY §7).

    ``t = ±amplitude`` with equal probability, or ``t ~ N(0, amplitude²)`` when
    ``gaussian=True``. Feature 0 is ``v`` (``dense[0] = True``, its code is the
    signed ``t``); features ``1..n_sparse`` are orthogonal to ``v`` and to each
    other, each firing with probability ``p_sparse`` at ``sparse_magnitude``.
    """
    _check_sizes(n_points=n_points, dim=dim)
    dtype = _dtype(dtype)
    if n_sparse < 0 or 1 + n_sparse > dim:
        raise ValueError(
            f"dense_signed needs 1 + n_sparse ≤ dim orthonormal features, got {n_sparse=}, {dim=}."
        )
    kd, kt, ks, kn = jax.random.split(key, 4)
    features = _directions(kd, 1 + n_sparse, dim, dtype)
    a = jnp.asarray(amplitude, dtype)
    if gaussian:
        t = a * jax.random.normal(kt, (n_points,), dtype)
    else:
        t = jnp.where(jax.random.bernoulli(kt, 0.5, (n_points,)), a, -a)
    fires = jax.random.uniform(ks, (n_points, n_sparse), dtype) < p_sparse
    sparse = jnp.where(fires, jnp.asarray(sparse_magnitude, dtype), 0)
    codes = jnp.concatenate([t[:, None], sparse], axis=1)
    parent = -jnp.ones(1 + n_sparse, jnp.int32)
    dense = jnp.arange(1 + n_sparse) == 0
    return _finish(
        kn, codes, features, noise, parent, dense, -jnp.ones(n_points, jnp.int32), "dense_signed"
    )


@eqx.filter_jit
def gaussian_mixture(
    *,
    key: PRNGKeyArray,
    n_points: int,
    dim: int,
    n_clusters: int,
    radius=1.0,
    spread=0.1,
    dtype=None,
) -> World:
    """Gaussian-mixture clusters: centres ``radius·f_c`` on unit directions
    ``f_c``, points ``radius·f_c + spread·ε`` with a uniform cluster label.
    The true code of a point is ``radius`` on its cluster's feature; the
    isotropic spread is the ``noise``.
    """
    _check_sizes(n_points=n_points, dim=dim, n_clusters=n_clusters)
    dtype = _dtype(dtype)
    kd, kl, kn = jax.random.split(key, 3)
    features = _directions(kd, n_clusters, dim, dtype)
    labels = jax.random.randint(kl, (n_points,), 0, n_clusters)
    codes = jnp.asarray(radius, dtype) * jax.nn.one_hot(labels, n_clusters, dtype=dtype)
    parent = -jnp.ones(n_clusters, jnp.int32)
    return _finish(
        kn,
        codes,
        features,
        jnp.asarray(spread, dtype),
        parent,
        jnp.zeros(n_clusters, bool),
        labels.astype(jnp.int32),
        "gaussian_mixture",
    )
