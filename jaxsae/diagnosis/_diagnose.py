"""``diagnose``: how far a trained SAE (or a dictionary) is from an optimum of the joint
problem, which constraints it breaks, and what the nearest optimum looks like.

Every pass over the data is one of the package's own (``certify``, ``evaluate``, the
latent pass of ``_latents``, ``learn_dictionary``), so an array and a ``numpy.memmap``
are read the same way; the per-point analyses that need whole columns
(quantiles of the effective λ, the split scores, the antipodal predictions) run on a
random sample of at most ``sample_size`` rows and say so.
"""

from __future__ import annotations

import numpy as np

from .._streaming import DEFAULT_CHUNK, pass_for
from .._validate import check_data, check_lam
from ..certificates._certify import certify
from ..certificates._evaluate import evaluate
from ..certificates._second_order import second_order as run_second_order
from ..certificates._splitting import split_scores
from ..learning._dictionary_learning import learn_dictionary
from ..models._dictionary import Dictionary
from ..models._sae import SAE
from ..models._sae_dictionary import StreamedSAECodes, sae_codes, sae_dictionary
from ..phenomena._predictions import antipodal_codes
from ..solvers._lasso import sparse_code
from ._latents import effective_lam, kkt_fit_lam, latent_pass
from ._result import Diagnosis, verdicts


def diagnose(
    model: SAE | Dictionary,
    X,
    lam=None,
    *,
    lam_source: str | None = None,
    free_bias: bool = True,
    nearest: bool = True,
    second_order: bool = False,
    max_steps: int = 500,
    sample_size: int = 20000,
    top: int = 8,
    tokens=None,
    antipodal_cos: float = 0.9,
    dense_threshold: float = 0.1,
    moved_cos: float = 0.99,
    key=None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> Diagnosis:
    """Diagnose an SAE (or a dictionary) against the joint problem of THEORY §0.

    Sections (see :class:`Diagnosis`): the codes (amortisation gap against certified
    optimal codes of the SAE's folded decoder, §1; per latent, firing where the
    optimal code is zero and silence where it is not; shrinkage), the effective λ
    (per latent, ``g_kn = d_kᵀ r_n`` over its active points, which an optimum holds
    at exactly λ), the constraints as they stand ((A) per atom, nested pairs under
    (P) as absorption candidates, dense latents and antipodal pairs with the
    symmetric-direction prediction of §7, the co-firing bound, (R), dark-matter R²,
    the gap to (W)), and the nearest optimum: ``learn_dictionary`` from the folded
    decoder at the same K and λ, certified, compared atom by atom.

    Args:
        model: a ``jaxsae.SAE`` or a ``jaxsae.Dictionary`` (whose codes are optimal).
        X: data ``(N, d)``: an array, or a ``numpy.memmap`` (streamed chunk by chunk).
        lam: λ > 0 of THEORY §0. ``None`` (an SAE only): the λ that minimises the
            KKT residual ``Σ ρ_kn²`` of the SAE's codes (§1) on the sample — the λ
            the SAE behaves as if trained with (TopK and JumpReLU SAEs were not
            trained for the L1 objective); the report says it is an estimate.
        lam_source: how λ was chosen, for the report (default: "given").
        free_bias: whether the decoder bias is a free parameter of the problem (it is
            for an SAE's ``b_dec``); otherwise it is held at its value.
        nearest: learn and certify the nearest optimum (the costliest part).
        second_order: also run the second-order certificate at the nearest optimum.
        max_steps: L-BFGS steps for the nearest optimum.
        sample_size: rows of the random sample for the per-point analyses.
        top: top-activating examples kept per latent (over all rows).
        tokens: optional per-row labels (e.g. token strings, a sequence indexable by
            row) shown with the examples.
        antipodal_cos, dense_threshold: antipodal pairs have ``cos < −antipodal_cos``;
            dense latents fire on more than ``dense_threshold`` of the points (§7b).
        moved_cos: an atom whose cosine to its nearest-optimum atom is below this has
            moved (it is not what the objective wants).
        key: PRNG key of the sample (default ``jax.random.key(0)``).
        chunk_size: points per chunk (streamed data default 8192).
        progress: progress bars.

    Example:
        >>> dg = jaxsae.diagnose(jaxsae.load_sae("sae/"), np.load("acts.npy", mmap_mode="r"))
        >>> print("\\n".join(dg.verdicts)); dg.write_report("report/")
    """
    from tqdm.auto import tqdm

    is_sae, D, X, how = _inputs(model, X, free_bias, chunk_size, progress)
    N = int(X.shape[0])
    stages = tqdm(total=6 if nearest else 4, desc="diagnose", unit="stage", disable=not progress)
    rows, Xs, Zs, Gs = _sample(model, D, X, lam, sample_size, key)
    lam, lam_source = _choose_lam(lam, lam_source, model, Zs, Gs, is_sae, len(rows), N)
    codes, opt = _codes_view(model, D, X, lam, how)
    if not is_sae:  # a dictionary's codes are its optimal codes (the sample may be all rows)
        Zs = opt if opt is not None and len(rows) == N else sparse_code(D, Xs, lam).codes
        Gs = (Xs - D.bias - Zs @ D.atoms) @ D.atoms.T
    stages.update(1)
    chunk = dict(chunk_size=chunk_size, progress=progress)
    cert_sae, cert_F = _certificates(D, X, lam, codes, opt, is_sae, antipodal_cos, chunk)
    stages.update(1)
    lat = latent_pass(D, X, codes, lam, how, top, optimal=opt)
    ev = evaluate(model, X, lam=lam, chunk_size=chunk_size or DEFAULT_CHUNK, progress=progress,
                  dense_threshold=dense_threshold, codes=None if is_sae else opt)  # fmt: skip
    stages.update(1)
    eff = effective_lam(Zs, Gs, D.mask)
    eff["lam_kkt"] = fitted_lam(Zs, Gs)
    pairs = _antipodal(D, Xs, lam, cert_sae, antipodal_cos, N)
    stages.update(1)
    near = None
    if nearest:
        near = _nearest(D, X, Xs, lam, cert_sae, cert_F, max_steps, second_order, moved_cos,
                        chunk, stages)  # fmt: skip
    stages.close()
    dg = Diagnosis(
        lam=float(lam), lam_source=lam_source, kind=_kind(model), n_points=N,
        sample_rows=len(rows), cert_sae=cert_sae, cert_F=cert_F, latents=lat,
        evaluation=ev, effective=eff, antipodal=pairs, nearest=near,
        dense_threshold=float(dense_threshold), tokens=tokens, moved_cos=float(moved_cos),
    )  # fmt: skip
    return dg.with_verdicts(verdicts(dg))


def _inputs(model, X, free_bias: bool, chunk_size, progress: bool):
    """``(is_sae, folded dictionary, X, pass)``, validated."""
    is_sae = isinstance(model, SAE)
    if not is_sae and not isinstance(model, Dictionary):
        raise ValueError(
            f"diagnose takes a jaxsae.SAE or a jaxsae.Dictionary, got {type(model).__name__}."
        )
    D = sae_dictionary(model, free_bias=free_bias) if is_sae else model
    if not hasattr(X, "shape"):
        raise ValueError(
            "diagnose reads rows at random (its sample) and beside the SAE's codes, so it takes an "
            "array or a numpy.memmap, not a list or iterator of chunks: np.save them into one .npy "
            "and pass np.load(path, mmap_mode='r')."
        )
    how = pass_for(X, chunk_size, progress=progress, desc="diagnose")
    if how.resident:
        X = check_data(X, D.n_features, D.dtype, model="SAE" if is_sae else "dictionary")
    return is_sae, D, X, how


def _kind(model) -> str:
    if isinstance(model, Dictionary):
        return "dictionary"
    return f"{model.activation.describe()} SAE"


def _sample(model, D, X, lam, size: int, key):
    """``(rows, X_s, Z_s, G_s)``: a sorted random sample of rows (all of them when
    ``N ≤ size``), the model's codes there (an SAE's folded codes; none yet for a
    dictionary, whose codes need λ) and the correlations ``g = D r``."""
    import jax

    N = int(X.shape[0])
    if N > size:
        key = jax.random.key(0) if key is None else key
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        rows = np.sort(rng.choice(N, int(size), replace=False))
    else:
        rows = np.arange(N)
    Xs = check_data(np.asarray(X[rows]) if N > size else np.asarray(X), D.n_features, D.dtype)
    if not isinstance(model, SAE):
        return rows, Xs, None, None
    Zs = sae_codes(model, Xs).astype(D.dtype)
    return rows, Xs, Zs, (Xs - D.bias - Zs @ D.atoms) @ D.atoms.T


def fitted_lam(Zs, Gs) -> float | None:
    """The λ minimising the KKT residual ``Σρ²`` of codes ``Zs`` (correlations ``Gs``) over
    the 201 quantiles of the positive active correlations and a 200-point geometric grid
    between their extremes (None when no active entry has ``g > 0``)."""
    g = np.asarray(Gs)[np.asarray(Zs) > 0]
    g = g[g > 0]
    if g.size == 0:
        return None
    grid = np.geomspace(g.min(), g.max(), 200) if g.max() > g.min() else np.array([g.max()])
    candidates = np.unique(np.concatenate([np.quantile(g, np.linspace(0, 1, 201)), grid]))
    return kkt_fit_lam(Zs, Gs, candidates)[0]


def _choose_lam(lam, source, model, Zs, Gs, is_sae, n_rows, N):
    if lam is not None:
        return float(check_lam(lam, np.float64)), source or "given"
    if not is_sae:
        raise ValueError("diagnose(dictionary, X) needs lam=... (the λ it was learned for).")
    lam = fitted_lam(Zs, Gs)
    if lam is None:
        raise ValueError(
            "the SAE's codes are all zero on the sample (or their correlations with the "
            "residual are all ≤ 0), so no λ can be estimated; pass lam=..."
        )
    rows = f"{n_rows} rows" if n_rows == N else f"a sample of {n_rows} of {N} rows"
    return lam, (
        f"estimated: the λ minimising the KKT residual Σρ² of the SAE's codes on {rows} "
        f"(no λ was given; a {model.activation.describe()} SAE's training objective is "
        "not THEORY's L1 problem)"
    )


class _OptimalCodes:
    """An ``(N, K)`` view of a dictionary's certified codes, solved for rows on demand
    (streamed data: never held whole)."""

    def __init__(self, D, X, lam):
        self.D, self.X, self.lam = D, X, lam
        self.shape, self.dtype = (int(X.shape[0]), D.n_atoms), D.dtype

    def __getitem__(self, rows):
        return np.asarray(sparse_code(self.D, np.asarray(self.X[rows]), self.lam).codes)


def _certificates(D, X, lam, codes, opt, is_sae: bool, antipodal_cos, chunk):
    """``(certificate of the model's codes, certificate of D with optimal codes)``; ``opt``:
    the optimal codes solved already (resident data), else solved in each pass."""
    kw = dict(antipodal_cos=antipodal_cos, **chunk)
    if opt is None:
        cert = certify(D, X, lam, codes=codes, **kw)
        return cert, certify(D, X, lam, **kw) if is_sae else cert
    cert = certify(D, X, lam, codes=codes, optimal_codes=opt, **kw)
    return cert, certify(D, X, lam, codes=opt, amortise=False, **kw) if is_sae else cert


def _codes_view(model, D, X, lam, how):
    """``(the model's codes, the optimal codes)``: resident data solves the optimal codes once
    for every pass (a dictionary's codes are they); streamed data reads row views of the
    model's codes, and each pass solves the optimal ones per chunk (``None``)."""
    if not how.resident:
        return (
            StreamedSAECodes(model, X) if isinstance(model, SAE) else _OptimalCodes(D, X, lam)
        ), None
    opt = sparse_code(D, X, lam, chunk_size=how.chunk_size).codes
    return (sae_codes(model, X).astype(D.dtype) if isinstance(model, SAE) else opt), opt


def _antipodal(D, Xs, lam, cert, antipodal_cos: float, N: int) -> dict:
    """Pairs with ``cos(d_i, d_j) < −antipodal_cos``: their firing and co-firing rates (all
    rows) and the rates THEORY §7 predicts for the symmetric direction
    ``v = (d_i − d_j)/‖d_i − d_j‖`` (``P(vᵀ(x − b) > λ)`` and ``P(vᵀ(x − b) < −λ)``, on the sample)."""
    A, mask = np.asarray(D.atoms), np.asarray(D.mask)
    C = A @ A.T
    i, j = np.nonzero(np.triu(C < -antipodal_cos, 1) & mask[:, None] & mask[None, :])
    rate = np.asarray(cert.firing_rate)
    cofire = np.asarray(cert.cofire)
    Y = np.asarray(Xs - D.bias)
    predicted = []
    for a, b in zip(i, j, strict=True):
        v = (A[a] - A[b]) / np.linalg.norm(A[a] - A[b])
        on = np.asarray(antipodal_codes(Y @ v, lam)) > 0
        predicted.append(on.mean(axis=0).tolist())
    return {
        "pairs": [[int(a), int(b)] for a, b in zip(i, j, strict=True)],
        "cos": C[i, j].tolist(),
        "rates": [[float(rate[a]), float(rate[b])] for a, b in zip(i, j, strict=True)],
        "cofiring": [float(cofire[a, b]) for a, b in zip(i, j, strict=True)],
        "predicted_rates": predicted,
    }


def _nearest(D, X, Xs, lam, cert_sae, cert_F, max_steps, second_order, moved_cos, chunk, stages):
    """Learn from the folded decoder at the same K and λ; certify; compare atom by atom."""
    import jax

    data, shift = X, None
    if not bool(D.free_bias) and bool(np.any(np.asarray(D.bias) != 0)):
        data, shift = _centred(X, D.bias), D.bias  # a held bias: learn on x − b
    init = Dictionary(D.atoms, None if shift is not None else D.bias, D.mask, free_bias=D.free_bias,
                      normalize=False)  # fmt: skip
    D_opt, hist = learn_dictionary(
        data, D.n_atoms, lam, init=init, bias=bool(D.free_bias), max_steps=max_steps,
        progress=chunk["progress"], chunk_size=chunk["chunk_size"], key=jax.random.key(0),
        dtype=D.dtype,
    )  # fmt: skip
    if shift is not None:
        D_opt = Dictionary(D_opt.atoms, shift, D_opt.mask, free_bias=False, normalize=False)
    stages.update(1)
    cert = certify(D_opt, X, lam, **chunk)
    scores, directions = split_scores(D_opt, Xs, lam)
    so = run_second_order(D_opt, X, lam, chunk_size=chunk["chunk_size"]) if second_order else None
    stages.update(1)
    cos = np.sum(np.asarray(D.atoms) * np.asarray(D_opt.atoms), axis=1)
    before, after = np.asarray(cert_sae.firing_rate), np.asarray(cert.firing_rate)
    return {
        "dictionary": D_opt,
        "certificate": cert,
        "history": hist,
        "second_order": so,
        "atom_cosine": cos,
        "moved": np.flatnonzero(np.asarray(D.mask) & (cos < moved_cos)).tolist(),
        "died": np.flatnonzero((before > 0) & (after == 0)).tolist(),
        "firing_before": before,
        "firing_after": after,
        "split_scores": np.asarray(scores),
        "split_directions": np.asarray(directions),
        "objective_before": float(cert_F.objective),
        "objective_after": float(cert.objective),
    }


def _centred(X, b):
    """``X − b`` for a held bias: an array, or a re-readable chunk source for streamed data."""
    b = np.asarray(b)
    if not hasattr(X, "shape") or isinstance(X, np.memmap):

        def chunks():
            for start in range(0, X.shape[0], DEFAULT_CHUNK):
                yield np.asarray(X[start : start + DEFAULT_CHUNK]) - b

        return chunks
    return X - b
