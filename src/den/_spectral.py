"""Cluster discovery on the embedding: sparse Gaussian affinity, Laplacian spectrum, eigengap.

METHOD.md §4, made sparse: the affinity lives on the kNN graph of the whole
embedding (never a dense n x n matrix, never a subsample).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import eigsh

from ._pairs import knn, near_pairs


@dataclass
class Spectrum:
    """Result of :func:`discover_clusters`."""

    eigenvalues: np.ndarray  #: smallest eigenvalues of the normalised Laplacian, ascending
    eigenvectors: np.ndarray  #: matching eigenvectors of the normalised affinity (n x m)
    n_clusters: int  #: the k chosen (or forced)
    bandwidth: float  #: Gaussian bandwidth used


def affinity(
    emb: np.ndarray, n_neighbors: int, gamma: float, *, random_state: int = 0
) -> tuple[sparse.csr_matrix, float]:
    """Symmetric Gaussian affinity on the kNN graph of ``emb``.

    The bandwidth is ``gamma`` times the mean distance of mutual-neighbour
    (near) pairs in the embedding: the typical near-pair distance.
    """
    n = emb.shape[0]
    idx, dist = knn(emb, n_neighbors, random_state=random_state)
    i, j = near_pairs(idx, min_neighbors=1)
    typical = float(np.linalg.norm(emb[i] - emb[j], axis=1).mean())
    sigma = gamma * typical if typical > 0 else 1.0
    rows = np.repeat(np.arange(n), n_neighbors)
    w = np.exp(-(dist.ravel().astype(np.float64) ** 2) / (2 * sigma**2))
    W = sparse.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    W = W.maximum(W.T).tocsr()
    W.eliminate_zeros()
    return W, sigma


def discover_clusters(
    emb: np.ndarray,
    *,
    n_neighbors: int = 15,
    gamma: float = 1.0,
    max_clusters: int = 40,
    n_clusters: int | None = None,
    random_state: int = 0,
) -> Spectrum:
    """Spectrum of the normalised Laplacian of the embedding's affinity, and the k chosen.

    The number of clusters is the position of the largest gap among the
    ``max_clusters + 1`` smallest eigenvalues, ``k = argmax_k (l_{k+1} - l_k)``
    for ``k >= 2``: the eigengap rule. ``n_clusters`` forces k.
    """
    n = emb.shape[0]
    W, sigma = affinity(emb, n_neighbors, gamma, random_state=random_state)
    deg = np.asarray(W.sum(1)).ravel()
    d = 1 / np.sqrt(np.maximum(deg, 1e-300))
    S = sparse.diags(d) @ W @ sparse.diags(d)
    m = int(min(max(max_clusters, n_clusters or 0) + 1, n - 2))
    v0 = np.random.default_rng(random_state).uniform(0.5, 1.0, n)
    if n <= 2000:
        evals, evecs = np.linalg.eigh(S.toarray())
        evals, evecs = evals[-m:], evecs[:, -m:]
    else:
        evals, evecs = eigsh(S, k=m, which="LA", v0=v0, tol=1e-6, maxiter=max(n, 5000))
    order = np.argsort(evals)[::-1]
    lap = np.clip(1 - evals[order], 0, 2)
    evecs = evecs[:, order]
    if n_clusters is None:
        gaps = np.diff(lap)  # gaps[k-1] = l_{k+1} - l_k (1-based k)
        ks = np.arange(2, len(lap))
        k = int(ks[np.argmax(gaps[1:])]) if len(ks) else 1
    else:
        k = int(n_clusters)
    return Spectrum(eigenvalues=lap, eigenvectors=evecs, n_clusters=k, bandwidth=sigma)


def spectral_labels(spectrum: Spectrum, *, random_state: int = 0) -> np.ndarray:
    """k-means on the row-normalised leading eigenvectors; labels ordered by cluster size."""
    from sklearn.cluster import KMeans

    k = spectrum.n_clusters
    U = spectrum.eigenvectors[:, :k]
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    labels = KMeans(k, n_init=10, random_state=random_state).fit_predict(U)
    sizes = np.bincount(labels, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
    return rank[labels]
