"""`den.tl.differentiating_features`: genes that move cells from one group (or cell) to another."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scanpy import logging as logg

from den._data import check_unique_cells
from den._explain import check_explainer, explain
from den._utils import check_copy, check_key_added, check_random_state, make_actual
from den.tl._groups import check_sizes, group_network, log2_fold_change, log_means, rows, sample_cells

if TYPE_CHECKING:
    from anndata import AnnData


def differentiating_features(
    adata: AnnData,
    group1: str,
    group2: str,
    *,
    groupby: str | None = "den_clusters",
    key: str = "den",
    cluster_key: str = "den_clusters",
    max_cells: int = 300,
    n_background: int = 200,
    explainer: Literal["auto", "deep", "gradient"] = "auto",
    random_state: int | None = 0,
    key_added: str = "den_differentiating_features",
    copy: bool = False,
) -> pd.DataFrame | AnnData:
    """Rank the genes that tell ``group1`` apart from ``group2``.

    Explains the logit difference ``z[group1] - z[group2]`` of the DEN
    classification network for up to ``max_cells`` cells of ``group1``, with up
    to ``n_background`` cells of ``group2`` as the SHAP background. The SHAP
    values then add up to how much more group-1-like each cell is than the
    average group-2 cell, gene by gene; a gene's score is its mean over the
    explained cells (positive: the gene's difference pushes towards ``group1``).

    With ``groupby=None``, ``group1`` and ``group2`` are two cell names
    (``obs_names``): the difference between the logits of their den clusters
    is explained for ``group1`` against ``group2`` alone.

    Parameters
    ----------
    adata
        AnnData with a DEN embedding (and clustering, for den clusters or two cells).
    group1, group2
        Groups of ``obs[groupby]``, or two cell names when ``groupby`` is ``None``.
    groupby
        Grouping; a column other than den's clustering gets a head trained on the
        DEN embedding (as in :func:`den.tl.marker_features`).
    key
        ``uns`` key of the embedding model.
    cluster_key
        den clustering used when comparing two cells.
    max_cells
        Cells of ``group1`` explained (seeded subset).
    n_background
        Cells of ``group2`` used as background (seeded subset).
    explainer
        See :func:`den.tl.marker_features`.
    random_state
        Seed for the subsets.
    key_added
        Results go to ``adata.uns[key_added][comparison_key(group1, group2)]`` (``"{group1}_vs_{group2}"``
        with characters h5ad and zarr keys refuse, such as ``/``, replaced; the names are in its ``params``).
    copy
        Return a copy of ``adata`` (with the result stored) instead of the table.

    Returns
    -------
    A :class:`~pandas.DataFrame` (genes sorted by ``score``) with columns
    ``names``, ``score`` (mean SHAP), ``mean_abs_shap`` and ``logfoldchange``
    (group1 vs group2, NaN when the data are not on a log1p scale), also stored
    as ``adata.uns[key_added][comparison]["table"]`` (see ``key_added``); or, with ``copy=True``, a copy of
    ``adata``.
    """
    start = logg.info(f"computing features differentiating {group1} from {group2}")
    check_copy(adata, copy)
    check_key_added(adata, key_added, "differentiating_features")
    if not isinstance(adata.uns.get(key_added, {}), dict):  # comparisons are added to a dict there
        msg = f"adata.uns[{key_added!r}] holds a {type(adata.uns[key_added]).__name__}, not comparisons; pass another key_added."
        raise ValueError(msg)
    check_explainer(explainer)
    check_sizes(max_cells=max_cells, n_background=n_background)
    seed = check_random_state(random_state)
    rng = np.random.default_rng(seed)
    if groupby is None:
        gn, (idx1, m1, c1), (idx2, m2, c2) = _two_cells(adata, group1, group2, cluster_key, key=key, seed=seed)
    else:
        gn = group_network(adata, groupby, key=key, random_state=seed)
        (m1, c1), (m2, c2) = _two_groups(gn, groupby, str(group1), str(group2))  # 0 finds group "0"
        idx1 = sample_cells(m1, max_cells, rng)
        idx2 = sample_cells(m2, n_background, rng)
    readout = _readout(gn.categories, c1, c2)
    att = explain(gn.net, readout, rows(gn, adata, idx1), rows(gn, adata, idx2), method=explainer, random_state=seed)
    genes = gn.model.var_names
    means, lfc_source = log_means(adata, gn, {"a": m1, "b": m2})
    df = pd.DataFrame(
        {
            "names": genes.to_numpy(),
            "score": att.values.mean(0),
            "mean_abs_shap": np.abs(att.values).mean(0),
            "logfoldchange": log2_fold_change(means["a"], means["b"]) if means else np.nan,
        }
    )
    df = df.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    params = {
        "groupby": groupby,
        "group1": group1,
        "group2": group2,
        "outputs": f"{c1} - {c2}",
        "output": "logit",
        "explainer": att.explainer,
        "max_additivity_error": att.max_additivity_error,
        "n_cells": len(idx1),
        "n_background": len(idx2),
        "random_state": seed,
        "logfoldchanges_from": lfc_source,
    }
    target = adata.copy() if copy else adata
    make_actual(target)
    store = dict(target.uns.get(key_added, {}))
    store[comparison_key(group1, group2)] = {"params": params, "table": df}
    target.uns[key_added] = store
    logg.info("    finished", time=start, deep=f"added\n    {key_added!r}, differentiating features (adata.uns)")
    return target if copy else df


def _two_cells(adata: AnnData, cell1: str, cell2: str, cluster_key: str, *, key: str, seed: int):
    """The clusters' network, and each cell's ``(index, mask over cells, cluster)``."""
    for cell in (cell1, cell2):
        if cell not in adata.obs_names:
            msg = f"Cell {cell!r} is not in adata.obs_names (with groupby=None, group1/group2 are cell names)."
            raise KeyError(msg)
    check_unique_cells(adata)
    if cell1 == cell2:
        msg = "group1 and group2 are the same cell; pick two different ones."
        raise ValueError(msg)
    gn = group_network(adata, cluster_key, key=key, random_state=seed)
    out = []
    for i in adata.obs_names.get_indexer([cell1, cell2]):
        out.append((np.array([i]), np.arange(adata.n_obs) == i, str(adata.obs[cluster_key].iloc[i])))
    return gn, out[0], out[1]


def _two_groups(gn, groupby: str, group1: str, group2: str):
    """Each group's ``(mask over cells, group)``; fold changes use every cell of the groups."""
    labels = np.asarray(gn.labels.astype(str))
    for g in (group1, group2):
        if g not in gn.categories:
            msg = f"{g!r} is not a group of adata.obs[{groupby!r}] (groups: {gn.categories})."
            raise KeyError(msg)
        if not (labels == g).any():
            msg = f"Group {g!r} of adata.obs[{groupby!r}] has no cells."
            raise ValueError(msg)
    if group1 == group2:
        msg = "group1 and group2 are the same group; pick two different ones."
        raise ValueError(msg)
    return (labels == group1, group1), (labels == group2, group2)


def _readout(categories: list, c1: str, c2: str) -> np.ndarray:
    """Weights of the logits explained: ``z[c1] - z[c2]``, or ``z[c1]`` when both are one cluster."""
    readout = np.zeros(len(categories), dtype=np.float32)
    readout[categories.index(c1)] += 1
    readout[categories.index(c2)] -= 1
    if c1 == c2:  # two cells of one cluster: explain that cluster's logit
        readout[categories.index(c1)] = 1
    return readout


def comparison_key(group1: str, group2: str) -> str:
    """The ``uns`` key of a comparison: ``"{group1}_vs_{group2}"`` with ``/`` (a path separator in h5ad and zarr) as ``|``."""
    return f"{group1}_vs_{group2}".replace("/", "|")
