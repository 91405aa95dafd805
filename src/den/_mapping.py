"""Mapping queries onto a reference: per-cell mapping scores, and batch-balanced neighbours.

Knows nothing about AnnData; :mod:`den.tl._mapping` and :func:`den.tl.embed` use it.
"""

from __future__ import annotations

import numpy as np

from ._pairs import knn

#: reference neighbours a query cell's distance is measured to
MAPPING_NEIGHBORS = 15


def mapping_scores(
    ref: np.ndarray,
    query: np.ndarray,
    n_neighbors: int = MAPPING_NEIGHBORS,
    *,
    ref_residual: np.ndarray | None = None,
    query_residual: np.ndarray | None = None,
) -> np.ndarray:
    """How typical each query cell's distance to the reference is, in ``[0, 1]``.

    A cell's distance is ``sqrt(d_knn^2 + r^2)``: ``d_knn`` its mean distance to its
    ``n_neighbors`` nearest reference cells in ``ref``'s space (the model's PCA layer; for a
    reference cell, its nearest *other* reference cells) and ``r`` its distance to that space
    (what the PCA layer cannot see: a new type's own marker genes; 0 when not given). A query
    cell's score is the share of reference cells at least as far. A query drawn like the
    reference scores uniformly in [0, 1]; cells unlike anything in the reference score near 0.
    """
    from sklearn.neighbors import NearestNeighbors

    k = int(min(n_neighbors, len(ref) - 1))
    _, ref_dist = knn(ref, k)
    q_dist, _ = NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(query)
    ref_d, q_d = ref_dist.mean(1), q_dist.mean(1)
    if ref_residual is not None and query_residual is not None:
        ref_d, q_d = np.hypot(ref_d, ref_residual), np.hypot(q_d, query_residual)
    ref_typical = np.sort(ref_d)
    at_least = len(ref_typical) - np.searchsorted(ref_typical, q_d, side="left")
    return (at_least / len(ref_typical)).astype(np.float32)


def relative_scores(ref: np.ndarray, query: np.ndarray, n_neighbors: int = MAPPING_NEIGHBORS) -> np.ndarray:
    """How well the reference covers each query cell, compared with the rest of the query, in ``[0, 1]``.

    A cell's statistic is ``log(d_ref / d_query)``: its mean distance to its ``n_neighbors``
    nearest reference cells over its mean distance to its ``n_neighbors`` nearest other query
    cells. A population the reference lacks has close company in the query and none in the
    reference, so a high statistic; a batch effect that moves every query cell away from the
    reference raises everyone's ``d_ref`` alike. The statistic is standardised robustly over the
    query (median, 1.4826 x MAD) and the score is the normal upper-tail probability: roughly
    uniform for cells like most of the query, near 0 for a population the reference lacks.
    The yardstick is the query itself, so most query cells must be of types the reference has.
    """
    from scipy.stats import norm
    from sklearn.neighbors import NearestNeighbors

    k = int(min(n_neighbors, len(ref), len(query) - 1))
    d_ref = NearestNeighbors(n_neighbors=k).fit(ref).kneighbors(query)[0].mean(1)
    d_query = knn(query, k)[1].mean(1)
    floor = 1e-6 * max(float(np.median(d_ref)), 1e-12)  # duplicated cells have d_query = 0
    stat = np.log(d_ref + floor) - np.log(d_query + floor)
    centre = np.median(stat)
    spread = 1.4826 * np.median(np.abs(stat - centre))
    if spread <= 0:
        spread = float(stat.std()) or 1.0
    return norm.sf((stat - centre) / spread).astype(np.float32)


def batch_balanced_knn(
    rep: np.ndarray, batches: np.ndarray, n_neighbors: int, *, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's neighbours, ``ceil(n_neighbors / n_batches)`` from every batch (as BBKNN).

    Returns indices and distances, ``(n, n_batches * k_b)`` each: one block of ``k_b`` columns per
    batch (sorted by distance within the block), for :func:`den._pairs.fuzzy_weights` with
    ``n_blocks=n_batches``. Near pairs mined this way link each cell to its closest cells of every
    batch, so the network learns to place one cell type from different batches together. Each
    batch is searched exactly while small, else through a pynndescent index
    (:func:`den._pairs.nearest_in`).
    """
    from ._pairs import nearest_in

    codes = batch_codes(batches)
    n_batches = codes.max() + 1
    smallest = int(np.bincount(codes).min())
    k_b = int(min(np.ceil(n_neighbors / n_batches), smallest - 1))
    if k_b < 1:
        msg = f"A batch has {smallest} cell(s); batch-balanced neighbours need at least 2 per batch."
        raise ValueError(msg)
    idx_blocks, dist_blocks = [], []
    for b in range(n_batches):
        members = np.flatnonzero(codes == b)
        idx, dist = nearest_in(rep[members], rep, k_b + 1, random_state=random_state)
        idx = members[idx]
        # own batch: the k_b nearest others (the cell itself is usually, not always, first among
        # duplicates; not found, the farthest goes); other batches: their k_b nearest cells
        drop = np.zeros(idx.shape, dtype=bool)
        drop[:, -1] = True
        own = np.flatnonzero(codes == b)
        is_self = idx[own] == own[:, None]
        is_self[~is_self.any(1), -1] = True
        drop[own] = is_self
        idx_blocks.append(idx[~drop].reshape(len(idx), k_b))
        dist_blocks.append(dist[~drop].reshape(len(idx), k_b))
    return np.concatenate(idx_blocks, axis=1), np.concatenate(dist_blocks, axis=1)


def batch_codes(batches) -> np.ndarray:
    """Integer code of each row's batch (names in sorted order)."""
    return np.unique(np.asarray(batches).astype(str), return_inverse=True)[1]


def center_by_batch(front: np.ndarray, batches) -> np.ndarray:
    """Subtract from every row the mean of its batch: each batch centred on the origin of the PCA space.

    As the PCA layer is linear, this is the same as replacing each cell's genes ``x`` by
    ``x - mean of its batch + mean of the training data``: gene-wise batch shifts on the
    log scale cancel. It also removes what differs in a batch's mean by composition (a
    batch of mostly one type), so each batch should hold a mix of the types.
    """
    codes = batch_codes(batches)
    front = np.asarray(front, dtype=np.float32)
    means = np.stack([front[codes == b].mean(0) for b in range(codes.max() + 1)])
    return front - means[codes]
