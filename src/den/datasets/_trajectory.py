"""A synthetic branching differentiation trajectory with a known pseudotime."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from ._counts import sample_counts

#: the default tree: segment -> parent segment ("" for the root); every segment is one pseudotime unit long
DEFAULT_TREE = {"root": "", "A": "root", "B": "root", "A1": "A", "A2": "A"}


def trajectory(
    n_cells: int = 3000,
    n_genes: int = 1000,
    *,
    tree: dict[str, str] | None = None,
    dynamic_share: float = 0.4,
    dynamic_sd: float = 1.0,
    library_size: float = 5000.0,
    dispersion: float = 0.3,
    random_state: int = 0,
):
    """Counts along a branching differentiation tree, log-normalised, with each cell's pseudotime.

    The tree is a set of segments, each one pseudotime unit long and starting
    where its parent ends. Every node of the tree (the root's start, branch
    points and tips) gets a log-expression profile; a share ``dynamic_share``
    of the genes change between nodes (normal, sd ``dynamic_sd``), the others
    stay at their base level. Along a segment each gene moves smoothly
    (smoothstep) from its start node's level to its end node's, so expression
    is continuous at branch points and the order of cells inside a branch is
    the signal. Cells are spread uniformly over the tree; counts are negative
    binomial and ``X`` is ``log1p`` of counts normalised to 10,000 per cell, as
    :func:`den.datasets.synthetic` makes them.

    Parameters
    ----------
    n_cells, n_genes
        Shape of the data set.
    tree
        Segment name -> parent segment name (``""`` for the single root). Default:
        a root that splits into ``A`` and ``B``, and ``A`` into ``A1`` and ``A2``.
    dynamic_share
        Share of genes whose level changes along the tree.
    dynamic_sd
        sd of the natural-log change of a dynamic gene between nodes.
    library_size
        Median counts per cell.
    dispersion
        Negative binomial dispersion (0 gives Poisson counts).
    random_state
        Seed.

    Returns
    -------
    :class:`~anndata.AnnData` with ``obs["segment"]`` (categorical), ``obs["pseudotime"]``
    (distance from the root along the tree), ``uns["trajectory"]`` (``parents``: each
    segment's parent, ``start``: the pseudotime where it begins), ``var["dynamic"]`` (whether a
    gene changes along the tree) and ``layers["counts"]``.
    Use :func:`tree_distance` for the true distance between cells.
    """
    import anndata as ad

    tree = dict(DEFAULT_TREE if tree is None else tree)
    start = _segment_starts(tree)
    names = list(tree)
    rng = np.random.default_rng(random_state)
    seg = rng.integers(0, len(names), n_cells)
    pos = rng.random(n_cells)  # position inside the segment, 0..1
    # node log-levels: each segment's start is its parent's end; the root starts at node "start"
    base = np.log(rng.lognormal(0.0, 1.2, n_genes))
    dynamic = rng.random(n_genes) < dynamic_share
    end_level = {}
    root_start = base.copy()
    for name in sorted(names, key=lambda s: start[s]):
        origin = root_start if not tree[name] else end_level[tree[name]]
        end_level[name] = origin + dynamic * rng.normal(0, dynamic_sd, n_genes)
    start_level = np.stack([root_start if not tree[s] else end_level[tree[s]] for s in names])
    stop_level = np.stack([end_level[s] for s in names])
    ease = pos * pos * (3 - 2 * pos)  # smoothstep
    lib = library_size * rng.lognormal(0, 0.3, size=n_cells)
    blocks, norm_blocks = [], []
    for b in range(0, n_cells, 8192):
        sl = slice(b, min(b + 8192, n_cells))
        log_mu = start_level[seg[sl]] + ease[sl, None] * (stop_level[seg[sl]] - start_level[seg[sl]])
        profile = np.exp(log_mu)
        mu = profile / profile.sum(1, keepdims=True) * lib[sl, None]
        block, norm = sample_counts(mu, dispersion, rng)
        blocks.append(block)
        norm_blocks.append(norm)
    obs = pd.DataFrame(
        {
            "segment": pd.Categorical(np.asarray(names)[seg], categories=names),
            "pseudotime": np.array([start[names[s]] for s in seg]) + pos,
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"dynamic": dynamic}, index=[f"gene{i}" for i in range(n_genes)])
    adata = ad.AnnData(sparse.vstack(norm_blocks, format="csr"), obs=obs, var=var)
    adata.layers["counts"] = sparse.vstack(blocks, format="csr")
    adata.uns["trajectory"] = {"parents": tree, "start": {s: float(start[s]) for s in names}}
    return adata


def _segment_starts(tree: dict[str, str]) -> dict[str, float]:
    """Pseudotime at which each segment begins (its depth below the root); validates the tree."""
    roots = [s for s, p in tree.items() if not p]
    if len(roots) != 1:
        msg = f"The tree needs exactly one root segment (parent ''); got {roots}."
        raise ValueError(msg)
    start: dict[str, float] = {}

    def depth(s: str, seen: tuple[str, ...] = ()) -> float:
        if s in start:
            return start[s]
        if s in seen or (tree[s] and tree[s] not in tree):
            msg = f"The tree is not a tree at segment {s!r} (a cycle or an unknown parent)."
            raise ValueError(msg)
        start[s] = 0.0 if not tree[s] else depth(tree[s], (*seen, s)) + 1.0
        return start[s]

    for s in tree:
        depth(s)
    return start


def lineages(tree: dict[str, str]) -> list[list[str]]:
    """Root-to-tip paths of segments, one per tip of the tree."""
    parents = set(tree.values())
    tips = [s for s in tree if s not in parents]
    paths = []
    for tip in tips:
        path = [tip]
        while tree[path[-1]]:
            path.append(tree[path[-1]])
        paths.append(path[::-1])
    return paths


def tree_distance(adata, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """True distance along the tree between cells ``i`` and ``j`` (index arrays) of :func:`trajectory` data.

    ``pseudotime[i] + pseudotime[j] - 2 * pseudotime(l)``, with ``l`` the point where the
    paths from the root to the two cells part.
    """
    tree = dict(adata.uns["trajectory"]["parents"])
    start = {s: float(v) for s, v in adata.uns["trajectory"]["start"].items()}
    seg = np.asarray(adata.obs["segment"].astype(str))
    pt = np.asarray(adata.obs["pseudotime"], dtype=np.float64)
    ancestors = {s: _ancestors(tree, s) for s in tree}
    out = np.empty(len(i))
    for n, (a, b) in enumerate(zip(i, j, strict=True)):
        sa, sb = seg[a], seg[b]
        deepest = max(ancestors[sa] & ancestors[sb], key=start.get)
        end = start[deepest] + 1.0
        parting = min(pt[a] if sa == deepest else end, pt[b] if sb == deepest else end)
        out[n] = pt[a] + pt[b] - 2 * parting
    return out


def _ancestors(tree: dict[str, str], s: str) -> set[str]:
    """``s`` and every segment above it."""
    out = {s}
    while tree[s]:
        s = tree[s]
        out.add(s)
    return out
