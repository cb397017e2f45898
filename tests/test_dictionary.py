"""Dictionary construction: normalisation and the checks that name what is wrong."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae


def test_rows_are_normalised_and_keep_their_direction():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((7, 4)) * rng.uniform(0.1, 10, (7, 1))
    D = jaxsae.Dictionary(raw)
    atoms = np.asarray(D.atoms)
    np.testing.assert_allclose(np.linalg.norm(atoms, axis=1), 1, atol=1e-15)
    np.testing.assert_allclose(atoms * np.linalg.norm(raw, axis=1, keepdims=True), raw, rtol=1e-14)
    assert D.n_atoms == 7 and D.n_features == 4
    np.testing.assert_array_equal(np.asarray(D.bias), np.zeros(4))
    np.testing.assert_array_equal(np.asarray(D.mask), np.ones(7, bool))


def test_unit_rows_accepted_without_normalize():
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((5, 3))
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    D = jaxsae.Dictionary(raw, normalize=False)
    np.testing.assert_allclose(np.asarray(D.atoms), raw, atol=1e-15)


def test_non_unit_rows_rejected_and_named():
    raw = np.eye(4)
    raw[1] *= 2.0
    raw[3] *= 0.5
    with pytest.raises(ValueError, match=r"rows \[1, 3\] are not unit norm") as err:
        jaxsae.Dictionary(raw, normalize=False)
    assert "normalize=True" in str(err.value)


def test_zero_rows_rejected():
    raw = np.eye(3)
    raw[2] = 0
    with pytest.raises(ValueError, match=r"1 zero row\(s\) \(e.g. row 2\)"):
        jaxsae.Dictionary(raw)


def test_nan_atoms_rejected():
    raw = np.eye(3)
    raw[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"atoms has 1 non-finite value\(s\).*\[1, 2\]"):
        jaxsae.Dictionary(raw)


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.ones(4, bool), r"mask must have shape \(3,\)"),
        (np.ones((3, 1), bool), r"mask must have shape \(3,\)"),
        (np.ones(3, np.int32), r"mask must be boolean, got dtype int32"),
    ],
)
def test_bad_mask_rejected(mask, message):
    with pytest.raises(ValueError, match=message):
        jaxsae.Dictionary(np.eye(3), mask=mask)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match=r"atoms must be a 2-d array of shape \(K, d\)"):
        jaxsae.Dictionary(np.ones(3))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        jaxsae.Dictionary(np.eye(3), bias=np.zeros(2))
    with pytest.raises(ValueError, match="at least one atom"):
        jaxsae.Dictionary(np.zeros((0, 3)))


def test_decode_gram_and_mask_against_numpy():
    rng = np.random.default_rng(2)
    D = jaxsae.Dictionary(rng.standard_normal((5, 3)), bias=rng.standard_normal(3))
    atoms, bias = np.asarray(D.atoms), np.asarray(D.bias)
    z = rng.uniform(0, 1, 5)
    np.testing.assert_allclose(np.asarray(D.decode(jnp.asarray(z))), bias + z @ atoms, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(D.gram()), atoms @ atoms.T, rtol=1e-14)
    mask = np.array([True, False, True, True, False])
    Dm = D.with_mask(jnp.asarray(mask))
    np.testing.assert_allclose(
        np.asarray(Dm.decode(jnp.asarray(z))), bias + (z * mask) @ atoms, rtol=1e-14
    )
    assert D.astype(jnp.float32).atoms.dtype == jnp.float32
    with pytest.raises(ValueError, match="boolean array of shape"):
        D.with_mask(jnp.ones(4, bool))
