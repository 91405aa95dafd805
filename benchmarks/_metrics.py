"""Map quality metrics of the panel benchmark (docs/benchmarks.md defines each).

All neighbourhoods of the data are taken in its 50-PC space (the representation
every method's kNN graph is built on).
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from sklearn.neighbors import NearestNeighbors


def pcs(adata, n_comps: int = 50) -> np.ndarray:
    """The data's 50-PC representation (scanpy's PCA, seed 0)."""
    import scanpy as sc

    a = adata.copy()
    sc.pp.pca(a, n_comps=min(n_comps, a.n_vars - 1, a.n_obs - 1), random_state=0)
    return np.asarray(a.obsm["X_pca"], dtype=np.float32)


def knn_accuracy(emb: np.ndarray, labels, k: int = 15, seed: int = 0) -> float:
    """5-fold cross-validated accuracy of a k-NN vote on the map."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(k), emb, np.asarray(labels), cv=cv).mean())


def trustworthiness(rep: np.ndarray, emb: np.ndarray, k: int = 10) -> float:
    """Trustworthiness (Venna & Kaski) of the map with respect to ``rep``, scikit-learn's definition."""
    from sklearn.manifold import trustworthiness as trust

    return float(trust(rep, emb, n_neighbors=k))


def _neighbours(x: np.ndarray, k: int) -> np.ndarray:
    idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)
    return idx[:, 1:]


def recall(rep: np.ndarray, emb: np.ndarray, k: int = 15) -> float:
    """Mean share of each cell's ``k`` nearest neighbours in ``rep`` that are among its ``k`` nearest on the map."""
    a, b = _neighbours(rep, k), _neighbours(emb, k)
    hits = [len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(a, b, strict=True)]
    return float(np.mean(hits) / k)


def spread(emb: np.ndarray, labels, *, max_pairs: int = 20_000, seed: int = 0) -> float:
    """Median map distance between cells of one population / median distance between population centres.

    Within-population distances are pooled over random pairs of cells drawn from the same
    population (``max_pairs`` in all, in proportion to population size); centres are the
    populations' mean positions. Scale-free: 0 when every population collapses onto a point.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    groups = [g for g in groups if len(g) >= 2]
    within = []
    for g in groups:
        m = max(1, round(max_pairs * len(g) / len(labels)))
        i, j = rng.choice(g, m), rng.choice(g, m)
        keep = i != j
        within.append(np.linalg.norm(emb[i[keep]] - emb[j[keep]], axis=1))
    centres = np.stack([emb[g].mean(0) for g in groups])
    between = np.linalg.norm(centres[:, None] - centres[None], axis=2)[np.triu_indices(len(groups), 1)]
    return float(np.median(np.concatenate(within)) / np.median(between))


def trajectory_spearman(adata, emb: np.ndarray, *, n_pairs: int = 20_000, seed: int = 0) -> float:
    """Spearman of map distance vs true pseudotime distance for cell pairs on one lineage, averaged over lineages.

    A lineage is a root-to-tip path of the tree of :func:`den.datasets.trajectory`; along
    it the true distance between two cells is the difference of their pseudotimes.
    """
    import den

    rng = np.random.default_rng(seed)
    seg = np.asarray(adata.obs["segment"].astype(str))
    pt = np.asarray(adata.obs["pseudotime"], dtype=np.float64)
    out = []
    for path in den.datasets.lineages(dict(adata.uns["trajectory"]["parents"])):
        cells = np.flatnonzero(np.isin(seg, path))
        i, j = rng.choice(cells, n_pairs), rng.choice(cells, n_pairs)
        keep = i != j
        d_map = np.linalg.norm(emb[i[keep]] - emb[j[keep]], axis=1)
        out.append(stats.spearmanr(d_map, np.abs(pt[i[keep]] - pt[j[keep]])).statistic)
    return float(np.mean(out))


def map_scores(adata, rep: np.ndarray, emb: np.ndarray, labels, *, seed: int) -> dict:
    """Every map metric of the panel for one embedding."""
    out = {
        "knn_acc": knn_accuracy(emb, labels, seed=seed),
        "trust": trustworthiness(rep, emb),
        "recall15": recall(rep, emb),
        "spread": spread(emb, labels, seed=seed),
    }
    if "trajectory" in adata.uns:
        out["spearman"] = trajectory_spearman(adata, emb, seed=seed)
    return out
