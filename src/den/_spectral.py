"""Cluster discovery: the map's own near-belief on the data's kNN graph, log-spectrum gap, modularity merge.

The paper's rule (docs/method.md), made sparse and robust. Everything is sparse (kNN graphs,
``eigsh``); no n x n matrix and no subsample.

Why not the plain rule (a Gaussian affinity on the map's kNN graph, counting
near-zero eigenvalues). DEN's loss pulls near pairs together with a force that
does not fade as they meet, so a population collapses onto a small island, at
scale onto *identical* coordinates: on 100,000 synthetic cells the median
distance to the 7th map neighbour is exactly 0, the map's kNN graph falls
into 835 pieces, and every rule built on it counts pieces, not populations.
Cells stranded between islands add more tiny pieces (37 "clusters" on
``pbmc68k_reduced``). The rule below therefore

1. takes its edges from the *data*: the kNN graph of the representation DEN
   was trained on (``X_pca`` or den's PCA), which links every cell to real
   neighbours whatever the map did;
2. weights each edge by the network's own belief that the pair is a near pair,
   ``w_ij = 1 - F_cdf(d_ij^2 / gamma^2; 1, n_components)`` with ``d_ij`` the
   distance on the map: the same F-distribution the loss trained it with, so
   the bandwidth is set by the method, not tuned per data set. Edges the map
   treats as far (``w <= 0.5``) are dropped;
3. takes the spectrum on the well-placed cells only: those whose mean belief
   over their data neighbours is at least 0.5 (a cell torn away from most of
   its neighbours sits between islands), without pieces smaller than
   ``min_cluster_size``;
4. counts clusters with the largest gap of the normalised Laplacian's
   spectrum on a log scale, ``k = argmax_k log((l_{k+1} + eps) / (l_k + eps))``
   (``eps`` the eigensolver's resolution), i.e. the largest *relative* gap:
   the block of near-zero eigenvalues is found whatever its absolute scale.
   When the map brings two populations into contact through a few cells, the
   pair is one connected piece with a small but nonzero eigenvalue, far below
   those of the structure inside a population (digits maps on which some ones
   touch the eights: 0.0005-0.004, where the median nonzero eigenvalue is
   0.16-0.20), which the log gap, dominated by the step up from the exact zeros,
   counts as one cluster. So k is raised to the number of eigenvalues more than
   :data:`BRIDGE_RATIO` times below the median nonzero one among the
   ``max_clusters + 1`` smallest (the typical scale inside populations). The
   test is relative because eigenvalues inside a population shrink as it grows.
   Cutting there is cheap: step 6 joins pieces that are one population;
5. labels those cells by k-means on the row-normalised eigenvectors (Ng,
   Jordan & Weiss 2002), dissolves clusters smaller than
   ``min_cluster_size``, and gives every other cell the majority label of its
   nearest labelled cells on the map;
6. merges clusters on the data graph (:func:`merge_clusters`): the map can tear
   one population into several islands (its loss barely pulls on near pairs
   that are already far apart), so two clusters merge while their cells are
   data neighbours more often than a random graph with the same degrees
   predicts (observed / expected > ``resolution``), greedy modularity
   agglomeration (Clauset, Newman & Moore 2004).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse, stats
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import eigsh

#: relative resolution of the eigensolver: eigenvalues below this count as 0 in the log-gap rule
EIG_FLOOR = 1e-6
#: an eigenvalue this many times below the median nonzero one marks a bridge between populations (step 4)
BRIDGE_RATIO = 10.0


@dataclass
class Spectrum:
    """Result of :func:`discover_clusters`."""

    eigenvalues: np.ndarray  #: smallest eigenvalues of the core graph's normalised Laplacian, ascending
    eigenvectors: np.ndarray  #: matching eigenvectors of the normalised affinity (n_core x m)
    n_clusters: int  #: the k chosen (or forced)
    core: np.ndarray = field(default=None)  #: boolean mask of the well-placed cells (the rows of ``eigenvectors``)
    embedding: np.ndarray = field(default=None, repr=False)  #: the embedding itself (a reference)
    n_neighbors: int = 15  #: neighbours per cell of the graph; also used to spread labels
    min_cluster_size: int = 1  #: clusters smaller than this are dissolved by :func:`spectral_labels`


def edge_lengths(emb: np.ndarray, graph: np.ndarray) -> np.ndarray:
    """Map distance of every data-kNN edge ``(i, graph[i, j])``, shape of ``graph``."""
    n, m = graph.shape
    diff = emb[np.repeat(np.arange(n), m)] - emb[graph.ravel()]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff)).reshape(n, m)


def map_scale(emb: np.ndarray, graph: np.ndarray, kernel: tuple[int, float] | None) -> float:
    """The unit of map distance the belief is read in: 1 for the paper's loss, else the median edge length.

    The paper's loss fixes the map's scale through its F(1, n_components) terms; the
    contrastive loss fixes only relative distances (its normaliser adapts to the batch),
    and the median map length of data-kNN edges varied 2-fold across the benchmark panel.
    """
    if kernel is None or kernel[0] == 1:
        return 1.0
    return float(np.median(edge_lengths(emb, graph))) or 1.0


def near_belief(
    emb: np.ndarray, graph: np.ndarray, *, gamma: float = 1.0, kernel: tuple[int, float] | None = None
) -> np.ndarray:
    """``1 - F_cdf((d / (gamma s))^2; d1, d2)`` for each edge ``(i, graph[i, j])``, shape of ``graph``.

    The network's belief that the pair is a near pair: DEN's loss reads squared map
    distances through this F distribution; ``kernel`` is its ``(d1, d2)``, by default
    the paper's ``(1, n_components)``; ``s`` is :func:`map_scale`.
    """
    d1, d2_dof = kernel if kernel is not None else (1, emb.shape[1])
    unit = gamma * map_scale(emb, graph, kernel)
    return stats.f.sf((edge_lengths(emb, graph) / unit) ** 2, d1, d2_dof)


def affinity(
    emb: np.ndarray, graph: np.ndarray, *, gamma: float = 1.0, kernel: tuple[int, float] | None = None
) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Symmetric affinity on the data kNN ``graph`` (n x m indices) weighted by the map's near-belief.

    Edges with belief <= 0.5 are dropped. Returns the affinity and each cell's
    mean belief over its ``m`` neighbours.
    """
    n, m = graph.shape
    belief = near_belief(emb, graph, gamma=gamma, kernel=kernel)
    w = np.where(belief > 0.5, belief, 0.0)
    W = sparse.csr_matrix((w.ravel(), (np.repeat(np.arange(n), m), graph.ravel())), shape=(n, n))
    W = W.maximum(W.T).tocsr()
    W.eliminate_zeros()
    return W, belief.mean(1)


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


def count_clusters(
    eigenvalues: np.ndarray, *, floor: float = EIG_FLOOR, bridge_ratio: float = BRIDGE_RATIO, k_min: int = 2
) -> int:
    """The number of clusters from ascending Laplacian ``eigenvalues``: log-gap k, or more where bridged.

    k is the largest log gap (:func:`log_gap_k`), raised to the number of
    eigenvalues below ``median(nonzero eigenvalues) / bridge_ratio`` (nonzero:
    ``>= floor``), at most ``len(eigenvalues) - 1``.
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0, None)
    k = log_gap_k(lam, floor=floor, k_min=k_min)
    n_bridged = int((lam < bridge_threshold(lam, floor=floor, bridge_ratio=bridge_ratio)).sum())
    return max(k, min(n_bridged, len(lam) - 1))


def bridge_threshold(eigenvalues: np.ndarray, *, floor: float = EIG_FLOOR, bridge_ratio: float = BRIDGE_RATIO) -> float:
    """``median(nonzero eigenvalues) / bridge_ratio`` (0 when none is ``>= floor``): the bridge test's cut-off."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    nonzero = lam[lam >= floor]
    return float(np.median(nonzero) / bridge_ratio) if len(nonzero) else 0.0


def default_min_cluster_size(n_cells: int, n_neighbors: int) -> int:
    """Smallest cluster kept: ``n_neighbors``, lowered to ``max(3, n_cells // 20)`` for small data, at least ``n_cells // 1000``."""
    return max(min(n_neighbors, max(3, n_cells // 20)), n_cells // 1000)


def discover_clusters(
    emb: np.ndarray,
    graph: np.ndarray,
    *,
    gamma: float = 1.0,
    max_clusters: int = 40,
    n_clusters: int | None = None,
    min_cluster_size: int | None = None,
    kernel: tuple[int, float] | None = None,
    random_state: int = 0,
) -> Spectrum:
    """Spectrum of the well-placed cells' affinity, and the k chosen (steps 1-4 of the module docs).

    ``graph`` holds each cell's neighbours in the data (n x m indices). The
    number of clusters is the position of the largest gap between
    consecutive log eigenvalues of the normalised Laplacian among the
    ``max_clusters + 1`` smallest, ``k >= 2``, raised to the number more than
    :data:`BRIDGE_RATIO` times below the median nonzero one (:func:`count_clusters`);
    ``n_clusters`` forces k.
    ``gamma`` scales map distances before the F-distribution: larger values
    keep more edges and join islands, smaller ones split.
    ``min_cluster_size`` (default :func:`default_min_cluster_size`) is the smallest
    cluster kept by :func:`spectral_labels`; smaller connected pieces of the
    affinity do not enter the spectrum.
    """
    emb = np.asarray(emb, dtype=np.float64)
    n, m = graph.shape
    if min_cluster_size is None:
        min_cluster_size = default_min_cluster_size(n, m)
    W, belief = affinity(emb, graph, gamma=gamma, kernel=kernel)
    core = belief >= 0.5
    if core.sum() < max(3 * m, n // 4):  # degenerate maps: keep everyone
        core[:] = True
    ci = np.flatnonzero(core)
    W = W[ci][:, ci].tocsr()
    # pieces smaller than min_cluster_size are not clusters: move them out of the core
    _, comp = connected_components(W, directed=False)
    small = np.bincount(comp)[comp] < min_cluster_size
    if small.any() and (~small).sum() > 3 * m:
        core[ci[small]] = False
        keep = np.flatnonzero(~small)
        ci, W = ci[keep], W[keep][:, keep].tocsr()
    if n_clusters is not None and n_clusters > len(ci):
        msg = (
            f"n_clusters={n_clusters} is more than this map can hold: {len(ci)} of its cells are well placed "
            f"(the clusters are drawn on them). Pass n_clusters={len(ci)} or fewer."
        )
        raise ValueError(msg)
    deg = np.asarray(W.sum(1)).ravel()
    d = 1 / np.sqrt(np.maximum(deg, 1e-300))
    S = (sparse.diags(d) @ W @ sparse.diags(d)).tocsr()
    n_eig = int(min(max(max_clusters, n_clusters or 0) + 1, len(ci) - 2))
    evals, evecs = _leading_eigvecs(S, n_eig, random_state)
    order = np.argsort(evals)[::-1]
    lap = np.clip(1 - evals[order], 0, 2)
    k = count_clusters(lap[: max_clusters + 1]) if n_clusters is None else int(n_clusters)
    return Spectrum(
        eigenvalues=lap,
        eigenvectors=evecs[:, order],
        n_clusters=k,
        core=core,
        embedding=emb,
        n_neighbors=m,
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
    take the majority label of their nearest labelled core cells on the map.
    """
    from sklearn.cluster import KMeans

    k = spectrum.n_clusters
    U = spectrum.eigenvectors[:, :k]
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    core_labels = KMeans(k, n_init=10, random_state=random_state).fit_predict(U)
    core = spectrum.core
    labels = np.full(len(core), -1, dtype=np.int64)
    labels[core] = core_labels
    sizes = np.bincount(core_labels, minlength=k)
    big = sizes >= spectrum.min_cluster_size
    if not big.any():
        big[np.argmax(sizes)] = True
    known = core & big[np.maximum(labels, 0)]
    labels = _spread(spectrum.embedding, labels, known, spectrum.n_neighbors)
    _, labels = np.unique(labels, return_inverse=True)
    return _by_size(labels)
