"""A synthetic single-cell data set with planted marker genes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from ._counts import sample_counts


def synthetic(
    n_cells: int = 2000,
    n_genes: int = 500,
    n_groups: int = 6,
    *,
    n_markers: int = 10,
    marker_fold: float = 4.0,
    group_noise: float = 0.1,
    library_size: float = 5000.0,
    dispersion: float = 0.3,
    random_state: int = 0,
):
    """Counts from a negative binomial model with planted markers, log-normalised.

    Every group up-regulates its own ``n_markers`` genes ``marker_fold``-fold
    (no gene marks two groups); all genes also vary a little between groups
    (log-normal noise, sd ``group_noise``) and cells differ in library size
    (log-normal, sd 0.3). ``X`` is ``log1p`` of counts normalised to 10,000 per
    cell (CSR, float32), as after ``sc.pp.normalize_total`` + ``sc.pp.log1p``.

    Parameters
    ----------
    n_cells, n_genes, n_groups
        Shape of the data set and number of groups (sizes vary up to 3-fold).
    n_markers
        Planted marker genes per group.
    marker_fold
        Fold change of a marker in its group.
    group_noise
        sd of the log fold changes every gene has between groups.
    library_size
        Median counts per cell.
    dispersion
        Negative binomial dispersion (0 gives Poisson counts).
    random_state
        Seed.

    Returns
    -------
    :class:`~anndata.AnnData` with ``obs["group"]`` (the truth), ``var["marker_of"]``
    (the group a gene marks, ``""`` if none) and ``layers["counts"]``.
    """
    import anndata as ad

    if n_groups * n_markers > n_genes:
        msg = f"n_groups * n_markers = {n_groups * n_markers} exceeds n_genes = {n_genes}."
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    weights = rng.uniform(1, 3, n_groups)
    group = rng.choice(n_groups, size=n_cells, p=weights / weights.sum())
    base = rng.lognormal(mean=0.0, sigma=1.2, size=n_genes)
    log_fc = rng.normal(0, group_noise, size=(n_groups, n_genes))
    marker_genes = rng.permutation(n_genes)[: n_groups * n_markers].reshape(n_groups, n_markers)
    for g in range(n_groups):
        log_fc[g, marker_genes[g]] += np.log(marker_fold)
    profile = base * np.exp(log_fc)
    profile /= profile.sum(1, keepdims=True)
    lib = library_size * rng.lognormal(0, 0.3, size=n_cells)
    blocks, norm_blocks = [], []
    for start in range(0, n_cells, 8192):  # blocks of cells keep memory flat for large n_cells
        sl = slice(start, min(start + 8192, n_cells))
        mu = profile[group[sl]] * lib[sl, None]
        block, norm = sample_counts(mu, dispersion, rng)
        blocks.append(block)
        norm_blocks.append(norm)
    counts = sparse.vstack(blocks, format="csr")
    X = sparse.vstack(norm_blocks, format="csr")
    names = [f"g{i}" for i in range(n_groups)]
    marker_of = np.full(n_genes, "", dtype=object)
    for g in range(n_groups):
        marker_of[marker_genes[g]] = names[g]
    obs = pd.DataFrame(
        {"group": pd.Categorical(np.asarray(names)[group], categories=names)},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"marker_of": marker_of.astype(str)}, index=[f"gene{i}" for i in range(n_genes)])
    adata = ad.AnnData(X, obs=obs, var=var)
    adata.layers["counts"] = counts
    return adata
