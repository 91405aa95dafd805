from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.decomposition import PCA

from den._data import as_features, dense_rows, iter_rows, warn_if_counts
from den._pca import EXACT_MAX_FEATURES, pca


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_pca_matches_sklearn(rng, fmt):
    x = rng.gamma(0.5, size=(300, 40)) * (rng.random((300, 40)) < 0.3)
    X = sparse.csr_matrix(x) if fmt == "csr" else x
    mean, comps, var = pca(X, 5)
    ref = PCA(5, svd_solver="full").fit(x)
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-10)
    np.testing.assert_allclose(var, ref.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(comps.T @ ref.components_.T), np.eye(5), atol=1e-6)


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_pca_randomized_path_for_many_genes(rng, fmt):
    """Above EXACT_MAX_FEATURES genes: a streamed randomized SVD, as exact as the full one on real structure."""
    n, g = 300, EXACT_MAX_FEATURES + 100
    signal = rng.normal(size=(n, 6)) * np.array([20, 15, 10, 8, 6, 5]) @ rng.normal(size=(6, g))
    x = np.abs(signal + rng.normal(size=(n, g)))
    X = sparse.csr_matrix(x) if fmt == "csr" else x
    mean, comps, var = pca(X, 5)
    ref = PCA(5, svd_solver="full").fit(x)
    np.testing.assert_allclose(var, ref.explained_variance_, rtol=1e-3)
    np.testing.assert_allclose(np.abs(comps.T @ ref.components_.T), np.eye(5), atol=1e-3)
    again = pca(X, 5)[1]
    np.testing.assert_array_equal(comps, again)  # seeded: reproducible


def test_iter_rows_blocks(rng):
    X = sparse.random(50, 7, density=0.5, random_state=1, format="csr")
    blocks = list(iter_rows(X, chunk=16))
    assert [b.shape[0] for b in blocks] == [16, 16, 16, 2]
    assert all(isinstance(b, np.ndarray) and b.dtype == np.float32 for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), X.toarray(), rtol=1e-6)


@pytest.mark.parametrize(
    "rows", [slice(0, 16), slice(40, 50), slice(45, 99), slice(7, 7), slice(-5, None), slice(30, 10)]
)
@pytest.mark.parametrize("kind", [sparse.csr_matrix, sparse.csr_array])
def test_dense_rows_of_csr_slices(rows, kind):
    x = sparse.random(50, 9, density=0.4, random_state=2, format="csr", dtype=np.float64).toarray()
    X = kind(x)
    X.indices = X.indices.copy()
    # an unsorted-index row must densify the same way
    X.indices[X.indptr[3] : X.indptr[4]] = X.indices[X.indptr[3] : X.indptr[4]][::-1].copy()
    X.data[X.indptr[3] : X.indptr[4]] = X.data[X.indptr[3] : X.indptr[4]][::-1].copy()
    got = dense_rows(X, rows)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x[rows].astype(np.float32))
    X32 = kind(X.astype(np.float32))
    buffer = np.full((50, 9), 7.0, np.float32)  # stale values from an earlier block
    got = dense_rows(X32, rows, out=buffer)
    np.testing.assert_array_equal(got, x[rows].astype(np.float32))
    assert got.size == 0 or np.shares_memory(got, buffer)


def test_counts_warning():
    with pytest.warns(UserWarning, match="normalize_total"):
        warn_if_counts(np.array([[0, 3, 500], [2, 0, 90]], dtype=np.float32))


@pytest.mark.parametrize(
    ("x", "shape", "image"),
    [
        pytest.param(np.ones((5, 3)), (5, 3), None, id="array"),
        pytest.param(sparse.coo_matrix(np.eye(4)), (4, 4), None, id="coo"),
        pytest.param([[1, 2], [3, 4], [5, 6]], (3, 2), None, id="list"),
        pytest.param(np.zeros((6, 4, 5)), (6, 20), (1, 4, 5), id="images HW"),
        pytest.param(np.zeros((6, 3, 4, 5)), (6, 60), (3, 4, 5), id="images CHW"),
    ],
)
def test_as_features(x, shape, image):
    f = as_features(x)
    assert f.X.shape == shape and f.image_shape == image and len(f.var_names) == shape[1]
    if sparse.issparse(f.X):
        assert f.X.format == "csr"


def test_as_features_torch():
    import torch

    f = as_features(torch.ones(4, 3))
    assert isinstance(f.X, np.ndarray) and f.X.shape == (4, 3)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        pytest.param(np.ones((2, 3)), ValueError, "minimum of 3", id="two rows"),
        pytest.param(np.array([[1.0, np.nan]] * 4), ValueError, "NaN", id="nan"),
        pytest.param(np.ones(5), ValueError, "2D", id="1-D"),
        pytest.param("abc", TypeError, "numpy array", id="string"),
    ],
)
def test_as_features_rejects(x, error, match):
    with pytest.raises(error, match=match):
        as_features(x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_check_finite_finds_a_bad_value_in_any_block(monkeypatch, rng, bad, fmt):
    import den._data as data

    monkeypatch.setattr(data, "FLAT_CHUNK", 7)
    monkeypatch.setattr(data, "CHUNK_ROWS", 3)
    x = rng.random((20, 5)) + 0.5
    data.check_finite(sparse.csr_matrix(x) if fmt == "csr" else x)  # clean: no error
    x[17, 3] = bad  # in the last blocks of both layouts
    match = "beyond the float32" if bad == 1e39 else "NaN or infinite"
    with pytest.raises(ValueError, match=match):
        data.check_finite(sparse.csr_matrix(x) if fmt == "csr" else x)
