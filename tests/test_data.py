from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.decomposition import PCA

from den._data import dense_rows, iter_rows, pca, warn_if_counts


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_pca_matches_sklearn(rng, fmt):
    x = rng.gamma(0.5, size=(300, 40)) * (rng.random((300, 40)) < 0.3)
    X = sparse.csr_matrix(x) if fmt == "csr" else x
    mean, comps, var = pca(X, 5)
    ref = PCA(5, svd_solver="full").fit(x)
    np.testing.assert_allclose(mean, x.mean(0), atol=1e-10)
    np.testing.assert_allclose(var, ref.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(np.abs(comps.T @ ref.components_.T), np.eye(5), atol=1e-6)


def test_pca_truncated_path_for_many_genes(rng):
    x = sparse.random(120, 4100, density=0.02, random_state=0, format="csr")
    mean, comps, var = pca(x, 3)
    ref = PCA(3, svd_solver="full").fit(x.toarray())
    np.testing.assert_allclose(var, ref.explained_variance_, rtol=1e-5)


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


def test_counts_warning():
    with pytest.warns(UserWarning, match="normalize_total"):
        warn_if_counts(np.array([[0, 3, 500], [2, 0, 90]], dtype=np.float32))
