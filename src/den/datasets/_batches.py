"""Synthetic cells from several batches, with batch effects and a cell type only the query has."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from ._counts import sample_counts


def batches(
    n_cells: int = 4000,
    n_genes: int = 500,
    n_types: int = 6,
    *,
    n_batches: int = 3,
    novel_share: float = 0.1,
    n_markers: int = 10,
    marker_fold: float = 4.0,
    batch_shift: float = 0.5,
    batch_library: float = 0.5,
    library_size: float = 5000.0,
    dispersion: float = 0.3,
    random_state: int = 0,
):
    """Cell types with planted markers, measured in batches that distort them; the last batch is the query.

    Every cell type has a profile as in :func:`den.datasets.synthetic`. Each batch multiplies
    every gene's expected count by its own factor ``exp(N(0, batch_shift))`` (a gene-wise
    shift on the log scale, as a different chemistry or lab gives) and every cell's library
    size by ``exp(N(0, batch_library))``, so batches differ in both genes and depth. The last
    batch (``"query"``) also holds a share ``novel_share`` of cells of a type no other batch
    has (``"novel"``): the reference is every other batch.

    Parameters
    ----------
    n_cells, n_genes, n_types
        Shape, and cell types shared by all batches.
    n_batches
        Batches, the last one the query (at least 2).
    novel_share
        Share of the query's cells that are of the novel type (0: none).
    n_markers, marker_fold
        Planted markers per type and their fold change.
    batch_shift
        sd of each batch's natural-log gene factors.
    batch_library
        sd of each batch's natural-log library-size factor.
    library_size, dispersion
        Median counts per cell and negative binomial dispersion.
    random_state
        Seed.

    Returns
    -------
    :class:`~anndata.AnnData` with ``obs["cell_type"]``, ``obs["batch"]`` (``"batch0"``, ...,
    ``"query"``), ``obs["is_query"]``, ``var["marker_of"]`` and ``layers["counts"]``; ``X`` is
    ``log1p`` of counts per 10,000.
    """
    import anndata as ad

    if n_batches < 2:
        msg = f"n_batches={n_batches}: there must be at least 2 (a reference and a query batch)."
        raise ValueError(msg)
    n_profiles = n_types + (novel_share > 0)
    if n_profiles * n_markers > n_genes:
        msg = f"{n_profiles} types x n_markers={n_markers} exceed n_genes={n_genes}."
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    batch = rng.integers(0, n_batches, n_cells)
    is_query = batch == n_batches - 1
    weights = rng.uniform(1, 3, n_types)
    kind = rng.choice(n_types, size=n_cells, p=weights / weights.sum())
    if novel_share > 0:
        kind[is_query & (rng.random(n_cells) < novel_share)] = n_types
    profile, marker_genes = _profiles(n_profiles, n_genes, n_markers, marker_fold, rng)
    gene_factor = np.exp(rng.normal(0, batch_shift, (n_batches, n_genes)))
    depth = library_size * np.exp(rng.normal(0, batch_library, n_batches))
    lib = depth[batch] * rng.lognormal(0, 0.3, size=n_cells)
    blocks, norm_blocks = [], []
    for start in range(0, n_cells, 8192):
        sl = slice(start, min(start + 8192, n_cells))
        mu = profile[kind[sl]] * gene_factor[batch[sl]]
        mu = mu / mu.sum(1, keepdims=True) * lib[sl, None]
        block, norm = sample_counts(mu, dispersion, rng)
        blocks.append(block)
        norm_blocks.append(norm)
    names = [f"type{i}" for i in range(n_types)] + (["novel"] if novel_share > 0 else [])
    batch_names = [f"batch{i}" for i in range(n_batches - 1)] + ["query"]
    marker_of = np.full(n_genes, "", dtype=object)
    for t in range(n_profiles):
        marker_of[marker_genes[t]] = names[t]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.asarray(names)[kind], categories=names),
            "batch": pd.Categorical(np.asarray(batch_names)[batch], categories=batch_names),
            "is_query": is_query,
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"marker_of": marker_of.astype(str)}, index=[f"gene{i}" for i in range(n_genes)])
    adata = ad.AnnData(sparse.vstack(norm_blocks, format="csr"), obs=obs, var=var)
    adata.layers["counts"] = sparse.vstack(blocks, format="csr")
    return adata


def _profiles(n_types: int, n_genes: int, n_markers: int, marker_fold: float, rng: np.random.Generator):
    """Expression profiles (rows sum to 1) with ``n_markers`` planted markers per type, and the markers."""
    base = rng.lognormal(mean=0.0, sigma=1.2, size=n_genes)
    log_fc = rng.normal(0, 0.1, size=(n_types, n_genes))
    marker_genes = rng.permutation(n_genes)[: n_types * n_markers].reshape(n_types, n_markers)
    for t in range(n_types):
        log_fc[t, marker_genes[t]] += np.log(marker_fold)
    profile = base * np.exp(log_fc)
    return profile / profile.sum(1, keepdims=True), marker_genes
