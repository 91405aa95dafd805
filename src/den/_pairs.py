"""Near and far pairs (METHOD.md §1), as index arrays.

Near pairs come from a k-nearest-neighbour graph on a compact representation
(never an n x n matrix); far pairs are redrawn every epoch with probability
proportional to distance, from a candidate pool that costs O(n k) memory.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

#: above this many cells the kNN search is approximate (pynndescent), below it exact
EXACT_KNN_MAX_CELLS = 50_000


def knn(rep: np.ndarray, n_neighbors: int, *, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of each row's ``n_neighbors`` nearest other rows.

    Exact (scikit-learn, blocked) up to :data:`EXACT_KNN_MAX_CELLS` cells,
    pynndescent above.
    """
    n = rep.shape[0]
    if n <= EXACT_KNN_MAX_CELLS:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(rep)
        dist, idx = nn.kneighbors(rep)
    else:
        from pynndescent import NNDescent

        index = NNDescent(rep, n_neighbors=n_neighbors + 1, random_state=random_state, low_memory=True)
        idx, dist = index.neighbor_graph
    return _drop_self(idx, dist, n_neighbors)


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (it is usually, not always, first among duplicates)."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    # rows where self was not returned: drop the last (farthest) neighbour instead
    no_self = ~is_self.any(1)
    is_self[no_self, -1] = True
    keep = ~is_self
    # keep exactly one removal per row
    extra = keep.sum(1) - k
    for r in np.flatnonzero(extra > 0):
        keep[r, np.flatnonzero(keep[r])[k:]] = False
    return idx[keep].reshape(n, k).astype(np.int64), dist[keep].reshape(n, k).astype(np.float32)


def near_pairs(knn_idx: np.ndarray, *, min_neighbors: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mutual-neighbour pairs, plus each cell's ``min_neighbors`` closest partners.

    Returns unordered, deduplicated pairs ``(i, j)`` with ``i < j``.
    """
    n, k = knn_idx.shape
    rows = np.repeat(np.arange(n), k)
    adj = sparse.csr_matrix((np.ones(n * k, dtype=np.int8), (rows, knn_idx.ravel())), shape=(n, n))
    mutual = adj.multiply(adj.T).tocoo()
    m = max(0, min(min_neighbors, k))
    i = np.concatenate([mutual.row, np.repeat(np.arange(n), m)])
    j = np.concatenate([mutual.col, knn_idx[:, :m].ravel()])
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    keys = np.unique(lo.astype(np.int64) * n + hi)
    return keys // n, keys % n


def far_pairs(
    rep: np.ndarray, n_far: int, rng: np.random.Generator, *, n_candidates: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_far`` partners per cell with probability proportional to distance.

    Each cell gets ``n_candidates`` (default ``3 * n_far``) uniform candidates;
    ``n_far`` of them are drawn with probability proportional to their
    Euclidean distance in ``rep``. Memory is O(n x n_candidates).
    """
    n = rep.shape[0]
    c = n_candidates or 3 * n_far
    i_all, j_all = [], []
    for start in range(0, n, 16384):
        rows = np.arange(start, min(start + 16384, n))
        cand = rng.integers(0, n - 1, size=(len(rows), c))
        cand += cand >= rows[:, None]  # never the cell itself
        d = np.linalg.norm(rep[cand] - rep[rows, None, :], axis=2).astype(np.float64) + 1e-12
        cum = np.cumsum(d, axis=1)
        u = rng.random((len(rows), n_far)) * cum[:, -1:]
        pick = np.minimum((cum[:, None, :] < u[:, :, None]).sum(2), c - 1)
        i_all.append(np.repeat(rows, n_far))
        j_all.append(np.take_along_axis(cand, pick, axis=1).ravel())
    return np.concatenate(i_all), np.concatenate(j_all)
