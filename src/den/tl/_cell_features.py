"""`den.tl.cell_features`: SHAP values of single cells' den-cluster logits (for waterfall plots)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scanpy import logging as logg

from den._data import check_unique_cells
from den._explain import check_explainer, explain
from den._utils import check_copy, check_key_added, check_random_state, make_actual

from ._groups import check_sizes, group_network, rows, stratified_background

if TYPE_CHECKING:
    from anndata import AnnData


def cell_features(
    adata: AnnData,
    cells: str | Sequence[str] | np.ndarray,
    *,
    key: str = "den",
    cluster_key: str = "den_clusters",
    n_background: int = 200,
    explainer: Literal["auto", "deep", "gradient"] = "auto",
    random_state: int | None = 0,
    key_added: str = "den_cell_features",
    copy: bool = False,
) -> AnnData | None:
    """Explain single cells: SHAP values of each cell's own den-cluster logit, gene by gene.

    Each cell is explained against a seeded, cluster-stratified background of
    ``n_background`` cells; :func:`den.pl.cell_features` draws the result as a waterfall.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.cluster` ran.
    cells
        Cell names (``obs_names``) to explain, or a boolean mask over the cells.
    key, cluster_key
        ``uns`` keys of the embedding and the clustering.
    n_background
        Background cells.
    explainer
        See :func:`den.tl.marker_features`.
    random_state
        Seed of the background draw.
    key_added
        ``uns`` key of the result.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None`` or, with ``copy=True``, a copy of ``adata``, with
    `adata.uns['den_cell_features' | key_added]`: ``values`` (cells x genes SHAP values),
    ``cells``, ``groups`` (each cell's cluster), ``base_values``, ``outputs`` (the explained
    logits), ``genes`` and ``params``.
    """
    start = logg.info("computing SHAP values of single cells")
    check_copy(adata, copy)
    check_key_added(adata, key_added, "cell_features")
    if not isinstance(cells, str) and np.asarray(cells).dtype == bool:  # a mask over cells, as scanpy subsets take
        mask = np.asarray(cells)
        if mask.shape != (adata.n_obs,):
            msg = f"A boolean mask of cells needs one value per cell ({adata.n_obs}), not {mask.shape}."
            raise ValueError(msg)
        cells = adata.obs_names[mask]
    positions = isinstance(cells, numbers.Integral) or (
        not isinstance(cells, str) and any(isinstance(c, numbers.Integral) for c in cells)
    )
    cells = [str(cells)] if isinstance(cells, str | numbers.Integral) else [str(c) for c in cells]
    if not cells:
        msg = "Pass at least one cell name to explain."
        raise ValueError(msg)
    check_sizes(n_background=n_background)
    missing = [c for c in cells if c not in adata.obs_names]
    if missing:
        msg = f"Cells {missing[:5]} are not in adata.obs_names." + (
            " `cells` takes cell names or a boolean mask; for positions pass e.g. adata.obs_names[[0, 1]]."
            if positions
            else ""
        )
        raise KeyError(msg)
    check_unique_cells(adata)
    no_group = adata.obs.loc[cells, cluster_key].isna() if cluster_key in adata.obs else pd.Series(dtype=bool)
    if no_group.any():
        msg = f"Cells {list(no_group.index[no_group])[:5]} have no group in adata.obs[{cluster_key!r}]; explain cells that have one."
        raise ValueError(msg)
    check_explainer(explainer)
    seed = check_random_state(random_state)
    gn = group_network(adata, cluster_key, key=key, random_state=seed)
    idx = adata.obs_names.get_indexer(cells)
    groups = np.asarray(adata.obs[cluster_key].astype(str))[idx]
    bg = rows(gn, adata, stratified_background(gn.labels, n_background, np.random.default_rng(seed)))
    values = np.zeros((len(cells), len(gn.model.var_names)), dtype=np.float32)
    base, outputs = np.zeros(len(cells)), np.zeros(len(cells))
    for g in np.unique(groups):
        sel = np.flatnonzero(groups == g)
        readout = np.eye(len(gn.categories), dtype=np.float32)[gn.categories.index(g)]
        att = explain(gn.net, readout, rows(gn, adata, idx[sel]), bg, method=explainer, random_state=seed)
        values[sel], base[sel], outputs[sel] = att.values, att.base_value, att.outputs
    entry = {
        "params": {
            "key": key,
            "cluster_key": cluster_key,
            "n_background": n_background,
            "explainer": explainer,
            "random_state": seed,
            "output": "logit",
        },
        "values": values,
        "cells": np.asarray(cells, dtype=str),
        "groups": groups.astype(str),
        "base_values": base,
        "outputs": outputs,
        "genes": np.asarray(gn.model.var_names, dtype=str),
    }
    adata = adata.copy() if copy else adata
    make_actual(adata)
    adata.uns[key_added] = entry
    logg.info("    finished", time=start, deep=f"added\n    {key_added!r}, SHAP values of single cells (adata.uns)")
    return adata if copy else None
