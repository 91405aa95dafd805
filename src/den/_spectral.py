"""Cluster discovery on the embedding: self-tuning affinity on the dense core, log-spectrum gap.

METHOD.md §4, made sparse and robust: the affinity lives on the kNN graph of
the embedding (never a dense n x n matrix, never a subsample).

Why not the plain rule. On a 2-D map, cells that sit alone between islands
(misplaced or transitional cells) hang off the graph in tiny, weakly attached
sets. Each such "dangling" set has a near-zero Laplacian eigenvalue, so
counting near-zero eigenvalues (or taking the largest absolute eigengap) counts
stray cells, not clusters (37 "clusters" on ``pbmc68k_reduced``). The rule
below therefore

1. scales the Gaussian per cell (self-tuning, Zelnik-Manor & Perona 2004):
   ``w_ij = exp(-d_ij^2 / (gamma^2 s_i s_j))`` with ``s_i`` the distance to the
   cell's ``n_neighbors // 2``-th neighbour, so dense and loose islands get
   comparable weights;
2. takes the spectrum on the *dense core* only: the cells whose local scale
   ``s_i`` is at most ``core_scale`` x the median local scale of their island
   (connected piece of the affinity graph; HDBSCAN's "core distance" idea).
   Islands differ in tightness by orders of magnitude, so a global median
   would drop loose islands whole. Islands of the map then separate into (nearly)
   disconnected pieces of the core graph, and the spectrum shows them as a
   clean block of (near-)zero eigenvalues followed by a jump;
3. counts clusters with the largest gap of the spectrum on a log scale,
   ``k = argmax_k log((l_{k+1} + eps) / (l_k + eps))`` (``eps`` the
   eigensolver's resolution), i.e. the largest *relative* gap: the block of
   near-zero eigenvalues is found whatever its absolute scale;
4. k-means on the row-normalised eigenvectors labels the core (Ng, Jordan &
   Weiss 2002); clusters with fewer than ``min_cluster_size`` cells are
   dissolved, and every non-core or dissolved cell takes the majority label
   of its nearest labelled core cells.

Why a merge step. A DEN map can tear one population into several islands
(its loss barely pulls on near pairs that are already far apart), and islands
are what the spectrum counts. :func:`merge_clusters` therefore joins clusters
on the *data's* kNN graph (the graph DEN was trained on) by greedy modularity
agglomeration (Clauset, Newman & Moore 2004): two clusters merge while their
cells are data neighbours more often than a random graph with the same
degrees predicts (observed / expected > ``resolution``), which is exactly when
the merge raises modularity at that resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh

from ._pairs import knn

#: relative resolution of the eigensolver: eigenvalues below this count as 0 in the log-gap rule
EIG_FLOOR = 1e-6


@dataclass
class Spectrum:
    """Result of :func:`discover_clusters`."""

    eigenvalues: np.ndarray  #: smallest eigenvalues of the core graph's normalised Laplacian, ascending
    eigenvectors: np.ndarray  #: matching eigenvectors of the normalised affinity (n_core x m)
    n_clusters: int  #: the k chosen (or forced)
    bandwidth: float  #: median local bandwidth ``gamma * s_i``
    core: np.ndarray = field(default=None)  #: boolean mask of the core cells (the rows of ``eigenvectors``)
    knn_idx: np.ndarray = field(default=None)  #: kNN indices of every cell (n x n_neighbors)
    embedding: np.ndarray = field(default=None, repr=False)  #: the embedding itself (a reference)
    min_cluster_size: int = 1  #: clusters smaller than this are dissolved by :func:`spectral_labels`


def affinity(
    emb: np.ndarray,
    n_neighbors: int,
    gamma: float,
    *,
    random_state: int = 0,
    idx: np.ndarray | None = None,
    dist: np.ndarray | None = None,
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Symmetric self-tuning Gaussian affinity on the kNN graph of ``emb``.

    ``w_ij = exp(-d_ij^2 / (gamma^2 s_i s_j))``, ``s_i`` the distance from cell
    ``i`` to its ``max(1, n_neighbors // 2)``-th neighbour. Returns the affinity
    and the local scales ``s``.
    """
    n = emb.shape[0]
    if idx is None or dist is None:
        idx, dist = knn(emb, n_neighbors, random_state=random_state)
    dist = dist.astype(np.float64)
    s = dist[:, max(1, n_neighbors // 2) - 1].copy()
    pos = s[s > 0]
    s = np.maximum(s, pos.min() if len(pos) else 1.0)
    w = np.exp(-(dist**2) / (gamma**2 * s[:, None] * s[idx]))
    rows = np.repeat(np.arange(n), idx.shape[1])
    W = sparse.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(n, n))
    W = W.maximum(W.T).tocsr()
    W.eliminate_zeros()
    return W, s


def _knn(emb: np.ndarray, n_neighbors: int, *, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN with a k-d tree for low-dimensional maps (fast at any n), else :func:`den._pairs.knn`."""
    if emb.shape[1] > 10:
        return knn(emb, n_neighbors, random_state=random_state)
    from sklearn.neighbors import NearestNeighbors

    from ._pairs import _drop_self

    dist, idx = NearestNeighbors(n_neighbors=n_neighbors + 1, algorithm="kd_tree").fit(emb).kneighbors(emb)
    return _drop_self(idx, dist, n_neighbors)


def _leading_eigvecs(S: sparse.csr_matrix, m: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest eigenpairs of the symmetric sparse ``S`` (eigenvalues in [-1, 1]).

    Solved per connected component and merged: a single-vector Lanczos run
    finds only one vector of a repeated eigenvalue, and every component adds
    an eigenvalue exactly 1 (Laplacian 0). Components up to 1500 cells are
    solved densely, larger ones with ``eigsh`` on ``S + I`` (positive
    semi-definite, wanted end largest in magnitude), from a seeded start.
    """
    n = S.shape[0]
    n_comp, comp = connected_components(S, directed=False)
    order = np.argsort(-np.bincount(comp), kind="stable")
    members = np.argsort(comp, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(comp))])
    rng = np.random.default_rng(random_state)
    vals, vecs = [], []  # vecs: (component members, eigenvectors) pairs
    for c in order[: max(m, 1)]:  # more than m components: the m largest suffice (all have eigenvalue 1)
        ids = members[bounds[c] : bounds[c + 1]]
        sub = S[ids][:, ids]
        mc = min(m, len(ids))
        if len(ids) <= 1500 or mc >= len(ids) - 1:
            ev, U = np.linalg.eigh(sub.toarray())
            ev, U = ev[-mc:], U[:, -mc:]
        else:
            A = (sub + sparse.identity(len(ids), format="csr")).tocsr()
            v0 = rng.uniform(0.5, 1.0, len(ids))
            ev, U = eigsh(A, k=mc, which="LM", v0=v0, tol=1e-8, ncv=min(len(ids), max(2 * mc + 1, 64)))
            ev = ev - 1
        vals.append(ev)
        vecs.extend((ids, U[:, j]) for j in range(mc))
    vals = np.concatenate(vals)
    top = np.argsort(-vals, kind="stable")[:m]
    evecs = np.zeros((n, len(top)))
    for col, j in enumerate(top):
        ids, u = vecs[j]
        evecs[ids, col] = u
    return vals[top], evecs


def log_gap_k(eigenvalues: np.ndarray, *, floor: float = EIG_FLOOR, k_min: int = 2) -> int:
    """``argmax_k log((l_{k+1} + floor) / (l_k + floor))`` over ``k >= k_min``: the largest relative gap."""
    lam = np.log(np.clip(eigenvalues, 0, None) + floor)
    gaps = np.diff(lam)  # gaps[k-1] = log l_{k+1} - log l_k  (1-based k)
    if len(gaps) < k_min:
        return 1
    return int(np.argmax(gaps[k_min - 1 :]) + k_min)


def discover_clusters(
    emb: np.ndarray,
    *,
    n_neighbors: int = 15,
    gamma: float = 1.0,
    max_clusters: int = 40,
    n_clusters: int | None = None,
    core_scale: float = 2.0,
    min_cluster_size: int | None = None,
    random_state: int = 0,
) -> Spectrum:
    """Spectrum of the dense core's self-tuning affinity, and the k chosen.

    The core is the cells whose local scale (distance to the
    ``n_neighbors // 2``-th neighbour) is at most ``core_scale`` x its median
    over the cell's island (connected piece of the kNN affinity graph).
    On the core's kNN graph, with weights ``exp(-d^2 / (gamma^2 s_i s_j))``,
    the number of clusters is the position of the largest gap between
    consecutive log eigenvalues of the normalised Laplacian among the
    ``max_clusters + 1`` smallest, ``k >= 2``. ``n_clusters`` forces k.
    ``gamma`` scales the bandwidth: smaller values weaken the links within
    islands and split more. ``min_cluster_size`` (default
    ``max(n_neighbors, n // 1000)``) is the smallest cluster kept by
    :func:`spectral_labels`; tiny core pieces below it are not counted.
    """
    emb = np.asarray(emb, dtype=np.float64)
    n = emb.shape[0]
    if min_cluster_size is None:
        min_cluster_size = max(n_neighbors, n // 1000)
    idx, dist = _knn(emb, n_neighbors, random_state=random_state)
    scale = dist[:, max(1, n_neighbors // 2) - 1].astype(np.float64)
    # islands of the map differ in tightness by orders of magnitude: the core is judged per island
    W, s = affinity(emb, n_neighbors, gamma, idx=idx, dist=dist)
    _, island = connected_components(W, directed=False)
    order = np.argsort(island, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(island))])
    ref = np.empty(n)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        ref[order[a:b]] = np.median(scale[order[a:b]])
    core = scale <= core_scale * ref
    if core.sum() < max(3 * n_neighbors, n // 4):  # degenerate maps: keep everyone
        core[:] = True
    ci = np.flatnonzero(core)
    # the affinity of the whole kNN graph, restricted to core-core edges
    W, s = W[ci][:, ci].tocsr(), s[ci]
    # core pieces smaller than min_cluster_size are not clusters: move them out of the core
    _, comp = connected_components(W, directed=False)
    small = np.bincount(comp)[comp] < min_cluster_size
    if small.any() and (~small).sum() > 3 * n_neighbors:
        core[ci[small]] = False
        ci = ci[~small]
        keep = np.flatnonzero(~small)
        W = W[keep][:, keep].tocsr()
        s = s[keep]
    nc = len(ci)
    deg = np.asarray(W.sum(1)).ravel()
    d = 1 / np.sqrt(np.maximum(deg, 1e-300))
    S = (sparse.diags(d) @ W @ sparse.diags(d)).tocsr()
    m = int(min(max(max_clusters, n_clusters or 0) + 1, nc - 2))
    evals, evecs = _leading_eigvecs(S, m, random_state)
    order = np.argsort(evals)[::-1]
    lap = np.clip(1 - evals[order], 0, 2)
    evecs = evecs[:, order]
    k = log_gap_k(lap[: max_clusters + 1]) if n_clusters is None else int(n_clusters)
    return Spectrum(
        eigenvalues=lap,
        eigenvectors=evecs,
        n_clusters=k,
        bandwidth=float(gamma * np.median(s)),
        core=core,
        knn_idx=idx,
        embedding=emb,
        min_cluster_size=int(min_cluster_size) if n_clusters is None else 1,
    )


def merge_clusters(
    labels: np.ndarray,
    knn_idx: np.ndarray,
    *,
    resolution: float = 1.0,
    n_clusters: int | None = None,
) -> np.ndarray:
    """Greedy modularity agglomeration of ``labels`` on a kNN graph.

    ``A[a, b]`` counts the kNN edges (both directions) between clusters ``a``
    and ``b``, ``vol`` the edge ends of each cluster and ``2m`` all of them.
    Merging ``a`` and ``b`` changes modularity by
    ``(A[a, b] - resolution * vol[a] * vol[b] / 2m) / m``; the best merge is
    made while that is positive, i.e. while some pair's observed/expected edge
    ratio ``2m A[a, b] / (vol[a] vol[b])`` exceeds ``resolution``. With
    ``n_clusters``, merges continue (or stop) at exactly that many clusters.
    Returns labels ``0..k-1``, ordered by cluster size.
    """
    labels = np.unique(labels, return_inverse=True)[1]
    k = int(labels.max()) + 1
    n, m = knn_idx.shape
    ends = labels[knn_idx.ravel()]
    A = np.zeros((k, k))
    np.add.at(A, (np.repeat(labels, m), ends), 1.0)
    A = A + A.T
    vol = A.sum(1)  # out- plus in-edges of each cluster, its own included
    np.fill_diagonal(A, 0)
    total = vol.sum()
    alive = np.ones(k, bool)
    target = 1 if n_clusters is None else max(1, int(n_clusters))
    parent = np.arange(k)
    while alive.sum() > target:
        gain = A / total - resolution * np.outer(vol, vol) / total**2
        gain[~alive] = -np.inf
        gain[:, ~alive] = -np.inf
        np.fill_diagonal(gain, -np.inf)
        a, b = np.unravel_index(np.argmax(gain), gain.shape)
        if n_clusters is None and gain[a, b] <= 0:
            break
        A[a] += A[b]
        A[:, a] += A[:, b]
        A[a, a] = 0
        A[b] = A[:, b] = 0
        vol[a] += vol[b]
        vol[b] = 0
        alive[b] = False
        parent[parent == b] = a
    labels = np.unique(parent[labels], return_inverse=True)[1]
    return _by_size(labels)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel ``0..k-1`` so that ``0`` is the largest cluster."""
    k = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=k)
    rank = np.empty(k, dtype=np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k)
    return rank[labels]


def _spread(emb: np.ndarray, labels: np.ndarray, known: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Give every cell not ``known`` the majority label of its ``n_neighbors`` nearest known cells."""
    from sklearn.neighbors import KNeighborsClassifier

    out = labels.copy()
    if known.all() or not known.any():
        return out
    clf = KNeighborsClassifier(min(n_neighbors, int(known.sum()))).fit(emb[known], labels[known])
    out[~known] = clf.predict(emb[~known])
    return out


def spectral_labels(spectrum: Spectrum, *, random_state: int = 0) -> np.ndarray:
    """k-means on the row-normalised leading eigenvectors of the core; labels ordered by cluster size.

    Non-core cells, and cells of clusters smaller than ``spectrum.min_cluster_size``
    (which are dissolved, so the final k can be smaller than ``spectrum.n_clusters``),
    take the majority label of their nearest labelled core cells.
    """
    from sklearn.cluster import KMeans

    k = spectrum.n_clusters
    U = spectrum.eigenvectors[:, :k]
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    core_labels = KMeans(k, n_init=10, random_state=random_state).fit_predict(U)
    core = spectrum.core if spectrum.core is not None else np.ones(len(core_labels), bool)
    n = len(core)
    labels = np.full(n, -1, dtype=np.int64)
    labels[core] = core_labels
    n_nb = spectrum.knn_idx.shape[1] if spectrum.knn_idx is not None else 15
    if spectrum.embedding is not None:
        sizes = np.bincount(core_labels, minlength=k)
        big = sizes >= spectrum.min_cluster_size
        if not big.any():
            big[np.argmax(sizes)] = True
        known = core & big[np.maximum(labels, 0)]
        labels = _spread(spectrum.embedding, labels, known, n_nb)
    _, labels = np.unique(labels, return_inverse=True)
    return _by_size(labels)
