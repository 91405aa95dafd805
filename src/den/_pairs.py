"""Near and far pairs (docs/method.md), as index arrays, and the sampler that batches them.

Near pairs come from a k-nearest-neighbour graph on a compact representation
(never an n x n matrix). Far partners are drawn among the rows of the same
batch, so they cost no extra pass through the network: the batch's rows are
the two ends of randomly chosen near pairs, i.e. a random sample of cells.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from den._utils import PicklableGenerators

#: above this many cells the kNN search is approximate (pynndescent), below it exact
EXACT_KNN_MAX_CELLS = 50_000
#: ... except on a CUDA device, exact up to this many (its cost grows with the square of the cells)
EXACT_GPU_KNN_MAX_CELLS = 2_000_000


def knn(
    rep: np.ndarray, n_neighbors: int, *, random_state: int = 0, device: torch.device | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances of each row's ``n_neighbors`` nearest other rows.

    Exact (scikit-learn, blocked) up to :data:`EXACT_KNN_MAX_CELLS` cells; above, exact on a CUDA
    ``device`` (:func:`exact_knn`) up to :data:`EXACT_GPU_KNN_MAX_CELLS`, else pynndescent.
    """
    n = rep.shape[0]
    if n <= EXACT_KNN_MAX_CELLS:
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(rep).kneighbors(rep)
    elif device is not None and device.type == "cuda" and n <= EXACT_GPU_KNN_MAX_CELLS and _fits(rep, device):
        idx, dist = exact_knn(rep, n_neighbors + 1, device)
    else:
        from pynndescent import NNDescent

        index = NNDescent(rep, n_neighbors=n_neighbors + 1, random_state=random_state, low_memory=True)
        idx, dist = _fill_missing(rep, *index.neighbor_graph)
    return _drop_self(idx, dist, n_neighbors)


def nearest_in(reference: np.ndarray, queries: np.ndarray, k: int, *, random_state: int = 0):
    """Indices (into ``reference``) and distances of each query row's ``k`` nearest reference rows.

    Exact (scikit-learn) while ``len(reference) * len(queries)`` stays within what :func:`knn`
    searches exactly (``EXACT_KNN_MAX_CELLS ** 2`` distances); above, a pynndescent index of
    ``reference`` queried (exact for any row it leaves short).
    """
    from sklearn.neighbors import NearestNeighbors

    if len(reference) * len(queries) <= EXACT_KNN_MAX_CELLS**2:
        dist, idx = NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(queries)
        return idx, dist
    from pynndescent import NNDescent

    index = NNDescent(reference, n_neighbors=max(k, 15), random_state=random_state, low_memory=True)
    index.prepare()
    return _fill_missing(reference, *index.query(queries, k=k), queries)


def _fill_missing(
    rep: np.ndarray, idx: np.ndarray, dist: np.ndarray, queries: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours for the rows where pynndescent left ``-1`` (too few found, e.g. among many identical rows).

    A ``-1`` read as an index would pair the cell with the last one, silently. ``queries``: the
    rows that were searched in ``rep`` (default: ``rep`` itself, its own graph).
    """
    bad = np.flatnonzero((idx < 0).any(1))
    if len(bad):
        from sklearn.neighbors import NearestNeighbors

        search = NearestNeighbors(n_neighbors=idx.shape[1], algorithm="brute").fit(rep)
        dist_bad, idx_bad = search.kneighbors((rep if queries is None else queries)[bad])
        idx, dist = idx.copy(), dist.copy()
        idx[bad], dist[bad] = idx_bad, dist_bad
    return idx, dist


def _fits(rep: np.ndarray, device: torch.device) -> bool:
    """Whether :func:`exact_knn`'s working set (the data twice, one block of distances) fits in free GPU memory."""
    free, _ = torch.cuda.mem_get_info(device)
    return 2 * rep.shape[0] * rep.shape[1] * 4 + 4 * KNN_BLOCK_VALUES < 0.8 * free


#: query rows per block of :func:`exact_knn`, at most; and at most this many distances per block (1 GiB)
KNN_BLOCK_ROWS = 2048
KNN_BLOCK_VALUES = 2**28
#: candidates beyond k that :func:`exact_knn` re-ranks by directly computed distances
KNN_RERANK_EXTRA = 8


def exact_knn(rep: np.ndarray, k: int, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of every row (itself included) by blocks of matrix products on ``device``.

    On a GPU a million cells' graph on 50 PCs takes seconds; pynndescent on the host about a
    minute (docs: benchmarks, "The kNN library"). The products (``|a|^2 - 2 a.b + |b|^2``, full
    float32: TF32 is turned off here) pick ``k +`` :data:`KNN_RERANK_EXTRA` candidates; their
    distances are then computed directly, which orders near ties and duplicates exactly.
    """
    data = torch.as_tensor(np.asarray(rep, dtype=np.float32), device=device)
    data = data - data.mean(0)  # smaller norms: less cancellation in the products
    sq = (data * data).sum(1)
    k = min(k, len(data))
    n_cand = min(k + KNN_RERANK_EXTRA, len(data))
    rows = max(1, min(KNN_BLOCK_ROWS, KNN_BLOCK_VALUES // len(data)))
    idx, dist = [], []
    with _full_float32_matmul():
        for start in range(0, len(data), rows):
            block = data[start : start + rows]
            d2 = torch.addmm(sq[None, :], block, data.T, alpha=-2).add_(sq[start : start + len(block), None])
            cand = torch.topk(d2, n_cand, dim=1, largest=False).indices
            exact = torch.linalg.vector_norm(data[cand] - block[:, None, :], dim=2)
            best, order = torch.sort(exact, dim=1, stable=True)
            idx.append(torch.gather(cand, 1, order[:, :k]).cpu())
            dist.append(best[:, :k].cpu())
    return torch.cat(idx).numpy(), torch.cat(dist).numpy()


@contextlib.contextmanager
def _full_float32_matmul():
    """CUDA matrix products in full float32 (no TF32, which a session may have turned on), then as before."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (it is usually, not always, first among duplicates)."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    no_self = ~is_self.any(1)  # self not returned: drop the farthest neighbour instead
    is_self[no_self, -1] = True
    keep = ~is_self
    extra = keep.sum(1) - k  # keep exactly one removal per row
    for r in np.flatnonzero(extra > 0):
        keep[r, np.flatnonzero(keep[r])[k:]] = False
    return idx[keep].reshape(n, k).astype(np.int64), dist[keep].reshape(n, k).astype(np.float32)


def _unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    keys = sorted_unique(lo[lo != hi] * n + hi[lo != hi])
    return keys // n, keys % n


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of a 1-D array, by one sort.

    numpy 2.4's ``np.unique`` took 18 s for the 15 million pair keys of 1,000,000 cells on this
    project's 2-core machine; one sort takes 1 s.
    """
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def graph_matrix(knn_idx: np.ndarray, knn_dist: np.ndarray) -> sparse.csr_matrix:
    """The kNN graph as scanpy stores ``obsp["distances"]``: cells x cells, each row its k neighbours' distances.

    Each row keeps the search's order (nearest first), which :func:`graph_from_matrix` reads back.
    """
    n, k = knn_idx.shape
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    return sparse.csr_matrix((knn_dist.astype(np.float32).ravel(), knn_idx.ravel(), indptr), shape=(n, n))


def graph_from_matrix(matrix, k: int) -> np.ndarray | None:
    """Neighbour indices (cells x ``k``, nearest first) of a :func:`graph_matrix`; ``None`` unless every row has ``k``.

    Rows lose neighbours when the AnnData is subset after the graph was stored: then ``None``
    (the caller searches again).
    """
    if not sparse.issparse(matrix) or matrix.shape[0] != matrix.shape[1]:
        return None
    matrix = sparse.csr_matrix(matrix)
    if not (np.diff(matrix.indptr) == k).all():
        return None
    n = matrix.shape[0]
    idx, dist = matrix.indices.reshape(n, k), matrix.data.reshape(n, k)
    return np.take_along_axis(idx, np.argsort(dist, axis=1, kind="stable"), axis=1).astype(np.int64)


def knn_pairs(knn_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every kNN edge as an unordered pair ``(i, j)``, ``i < j``, deduplicated (the contrastive loss's near pairs)."""
    n, k = knn_idx.shape
    return _unique_pairs(np.repeat(np.arange(n), k), knn_idx.ravel(), n)


def mutual_pairs(knn_idx: np.ndarray, *, min_neighbors: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Mutual-neighbour pairs plus each cell's ``min_neighbors`` closest partners (the paper's near pairs)."""
    n, k = knn_idx.shape
    rows = np.repeat(np.arange(n), k)
    adj = sparse.csr_matrix((np.ones(n * k, dtype=np.int8), (rows, knn_idx.ravel())), shape=(n, n))
    mutual = adj.multiply(adj.T).tocoo()
    m = max(0, min(min_neighbors, k))
    i = np.concatenate([mutual.row, np.repeat(np.arange(n), m)])
    j = np.concatenate([mutual.col, knn_idx[:, :m].ravel()])
    return _unique_pairs(i, j, n)


def drop_label_conflicts(pairs: tuple[np.ndarray, np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove near pairs whose two cells carry different known labels (``-1``: unknown)."""
    i, j = pairs
    li, lj = labels[i], labels[j]
    keep = (li < 0) | (lj < 0) | (li == lj)
    return i[keep], j[keep]


def label_pairs(labels: np.ndarray, per_cell: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``per_cell`` random same-label partners for every labelled cell (``labels >= 0``)."""
    i_all, j_all = [], []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        i = np.repeat(members, per_cell)
        j = members[rng.integers(0, len(members) - 1, len(i))]
        j = np.where(j == i, members[-1], j)  # never the cell itself
        i_all.append(i)
        j_all.append(j)
    if not i_all:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(i_all), np.concatenate(j_all)


@dataclass
class PairBatch:
    """One step's pairs. ``rows[:b]`` and ``rows[b:]`` are the two ends of ``b`` near pairs.

    ``far`` holds positions in ``rows``: ``(m,)`` far partners shared by every row
    (contrastive loss), or ``(b, m)`` partners per anchor ``rows[:b]`` (paper's loss).
    """

    rows: torch.Tensor
    far: torch.Tensor


class PairSampler(PicklableGenerators):
    """Batches of near pairs with far partners drawn among each batch's rows.

    Parameters
    ----------
    near
        Near pairs ``(i, j)``.
    batch_size
        Near pairs per batch (rows per batch: twice that).
    n_far
        Far partners per batch (shared, ``far_rule="shared"``) or per anchor (``"distance"``).
    far_rule
        ``"shared"``: uniform rows of the batch, used by every row; ``"distance"``: per anchor,
        drawn among 3 x ``n_far`` uniform candidates with probability proportional to their
        distance in ``rep`` (the paper's rule).
    generator
        Seeded torch generator; every draw comes from it, on its device (the pairs are kept there).
    rep
        Representation for ``far_rule="distance"`` (a tensor on the training device).
    extra
        Callable returning extra near pairs drawn afresh every epoch (:class:`LabelPairs`), or ``None``.

    Several processes (:mod:`den.train._distributed`) share the order of the pairs: every
    rank holds a generator in the same state and draws the same epoch in batches of
    ``world_size x batch_size`` pairs, then takes its ``batch_size`` of each (:func:`rank_slice`);
    far partners come from :attr:`draw_generator`, which each rank seeds on its own (:meth:`reseed`).
    """

    def __init__(
        self,
        near,
        *,
        batch_size: int,
        n_far: int,
        far_rule: str,
        generator: torch.Generator,
        rep=None,
        extra=None,
        weights: np.ndarray | None = None,
    ):
        device = generator.device  # pairs live, and are drawn, where the generator is: no host copy per step
        self.near_i = torch.as_tensor(np.asarray(near[0], dtype=np.int64), device=device)
        self.near_j = torch.as_tensor(np.asarray(near[1], dtype=np.int64), device=device)
        self.weights = (
            None if weights is None else torch.as_tensor(weights / weights.max(), dtype=torch.float32, device=device)
        )
        self.batch_size, self.n_far, self.far_rule = batch_size, n_far, far_rule
        self.generator, self.rep, self.extra = generator, rep, extra
        self.draw_generator = generator
        self.n_extra = 0 if extra is None else len(extra()[0])

    @property
    def n_pairs(self) -> int:
        """Near pairs per epoch (expected, with weights)."""
        n_near = len(self.near_i) if self.weights is None else int(round(float(self.weights.sum())))
        return n_near + self.n_extra

    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Steps per epoch when each of ``world_size`` ranks takes ``batch_size`` near pairs a step."""
        return math.ceil(self.n_pairs / (self.batch_size * world_size))

    def reseed(self, generator: torch.Generator) -> None:
        """Draw far partners from ``generator`` (one per rank); the pair order stays shared."""
        self.draw_generator = generator

    def _epoch_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        ni, nj = self.near_i, self.near_j
        if self.weights is not None:  # each pair takes part with probability proportional to its weight
            keep = torch.rand(len(ni), generator=self.generator, device=ni.device) < self.weights
            ni, nj = ni[keep], nj[keep]
        if self.extra is None:
            return ni, nj
        ei, ej = self.extra()
        return torch.cat([ni, torch.as_tensor(ei, device=ni.device)]), torch.cat(
            [nj, torch.as_tensor(ej, device=nj.device)]
        )

    def epoch(self, rank: int = 0, world_size: int = 1) -> Iterator[PairBatch]:
        """One pass over all near pairs in random order (with several ranks: rank ``rank``'s share of every step)."""
        pi, pj = self._epoch_pairs()
        perm = torch.randperm(len(pi), generator=self.generator, device=pi.device)
        pi, pj = pi[perm], pj[perm]
        step = self.batch_size * world_size
        for start in range(0, len(pi), step):
            stop = min(start + step, len(pi))
            if stop - start < world_size:  # a last batch too small to give every rank a pair
                continue
            part = rank_slice(stop - start, rank, world_size)
            rows = torch.cat([pi[start:stop][part], pj[start:stop][part]])
            yield PairBatch(rows, self._far(rows))

    def _far(self, rows: torch.Tensor) -> torch.Tensor:
        n_rows, gen = len(rows), self.draw_generator
        if self.far_rule == "shared":
            return torch.randint(0, n_rows, (self.n_far,), generator=gen, device=gen.device)
        b = n_rows // 2
        cand = torch.randint(0, n_rows, (b, 3 * self.n_far), generator=gen, device=gen.device)
        rep = self.rep[rows.to(self.rep.device)].to(gen.device)
        dist = torch.linalg.vector_norm(rep[cand] - rep[:b, None, :], dim=2) + 1e-12
        pick = torch.multinomial(dist, self.n_far, replacement=True, generator=gen)
        return torch.gather(cand, 1, pick)


def rank_slice(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s part of a step's ``n`` items: ``world_size`` contiguous, near-equal parts.

    The ranks' parts of a step together are the batch one process would take with
    ``world_size`` times the batch size (data-parallel training averages their gradients).
    """
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


class LabelPairs:
    """Same-label near pairs drawn afresh every epoch (:func:`label_pairs`, the semi-supervised mode)."""

    def __init__(self, labels: np.ndarray, per_cell: int, rng: np.random.Generator):
        self.labels, self.per_cell, self.rng = labels, per_cell, rng

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        return label_pairs(self.labels, self.per_cell, self.rng)


def fuzzy_weights(
    knn_idx: np.ndarray, knn_dist: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], *, n_blocks: int = 1
) -> np.ndarray:
    """Membership strength of each pair in the fuzzy kNN graph (UMAP's smooth kNN, fuzzy union).

    ``exp(-(d - rho_i) / sigma_i)`` with ``rho_i`` the distance to ``i``'s nearest neighbour and
    ``sigma_i`` such that the strengths of ``i``'s ``k`` neighbours sum to ``log2(k)``; a pair's
    weight is ``a + b - a b`` of its two directions (0 for a direction that is not a kNN edge).
    With ``n_blocks > 1`` the columns are that many equal blocks (batch-balanced neighbours, one
    block per batch), each with its own ``rho`` and ``sigma``: a cell's nearest cells of another
    batch count as much as its nearest cells of its own.
    """
    n, k = knn_idx.shape
    width = k // n_blocks
    strength = np.concatenate([_membership(knn_dist[:, b * width : (b + 1) * width]) for b in range(n_blocks)], axis=1)
    rows = np.repeat(np.arange(n), k)
    W = sparse.csr_matrix((strength.ravel(), (rows, knn_idx.ravel())), shape=(n, n))
    i, j = pairs
    a = np.asarray(W[i, j]).ravel()
    b = np.asarray(W[j, i]).ravel()
    return a + b - a * b


def _membership(dist: np.ndarray) -> np.ndarray:
    """Smooth-kNN strengths of one row block of neighbour distances (bisection on every row at once)."""
    n, k = dist.shape
    rho = dist.min(1, keepdims=True)
    target = np.log2(max(k, 2))
    lo, hi = np.zeros((n, 1)), np.full((n, 1), np.inf)
    sigma = np.ones((n, 1))
    gap = np.maximum(dist - rho, 0)
    for _ in range(64):
        total = np.exp(-gap / sigma).sum(1, keepdims=True)
        big = total > target
        hi = np.where(big, sigma, hi)
        lo = np.where(big, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    return np.exp(-gap / sigma)
