"""`den.tl.marker_features`: SHAP-ranked genes per group, in scanpy's rank_genes_groups layout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scanpy import logging as logg

from den._data import check_unique_cells
from den._explain import check_explainer, explain
from den._utils import check_copy, check_flags, check_key_added, check_random_state, make_actual, progress

from ._groups import check_sizes, group_network, log2_fold_change, log_means, rows, sample_cells, stratified_background

if TYPE_CHECKING:
    from anndata import AnnData

_DTYPES = {"names": "O", "scores": "float32", "logfoldchanges": "float32", "pvals": "float64", "pvals_adj": "float64"}


def marker_features(
    adata: AnnData,
    *,
    groupby: str = "den_clusters",
    key: str = "den",
    n_genes: int | None = None,
    n_background: int = 200,
    max_cells_per_group: int = 200,
    direction: Literal["up", "any"] = "up",
    explainer: Literal["auto", "deep", "gradient"] = "auto",
    random_state: int | None = 0,
    progress_bar: bool = True,
    key_added: str = "den_marker_features",
    copy: bool = False,
) -> AnnData | None:
    """Rank the genes that put cells in their group, by SHAP values of the DEN network.

    For each group, up to ``max_cells_per_group`` of its cells are explained:
    SHAP values of the full network (genes -> encoder -> cluster head) for the
    *logit* of the cell's own group, against a seeded, group-stratified
    background of ``n_background`` cells. A gene's score in a group is its mean
    SHAP value over the group's explained cells (sign kept: positive pushes
    cells into the group); the mean absolute SHAP value is kept too.

    By default the values come from den's batched DeepLIFT: the rule of shap's
    DeepExplainer for den's Linear/ReLU networks, vectorised over cells and
    background (it agrees with DeepExplainer to float precision and is much
    faster). Additivity (SHAP values sum to output minus base value) is checked
    for every cell; if it fails, the group falls back to shap's DeepExplainer
    (its own check on) and then GradientExplainer, with a warning and a note in
    ``uns[key_added]["explainers"]``.

    Parameters
    ----------
    adata
        AnnData with a DEN embedding (and, for ``groupby="den_clusters"``, :func:`den.tl.cluster`).
    groupby
        Grouping to explain: den's clustering, or any categorical ``obs`` column
        (then a head is trained on the DEN embedding to predict it, and explained).
        Clusters renamed since :func:`den.tl.cluster` (annotated) count as such a column.
    key
        ``uns`` key of the embedding model.
    n_genes
        Genes stored per group in the ranked arrays; default all.
    n_background
        Background (reference) cells, drawn in proportion to group sizes.
    max_cells_per_group
        Cells explained per group (a seeded random subset of larger groups).
    direction
        ``"up"``: rank first the genes that are higher in the group's explained
        cells than in the background, by mean SHAP (markers in the usual
        sense); genes whose *low* level pushes cells into the group follow.
        ``"any"``: rank all genes by mean SHAP alone. Scores are mean SHAP
        values either way, and ``mean_shap`` keeps every gene.
    explainer
        ``"auto"`` (den's batched DeepLIFT with fall-backs), ``"deep"`` (shap's
        DeepExplainer) or ``"gradient"`` (shap's GradientExplainer).
    random_state
        Seed for the background, the explained cells and any head trained here.
    progress_bar
        Show a progress bar over groups.
    key_added
        ``uns`` key of the result.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None`` or, with ``copy=True``, a copy of ``adata``, with

    `adata.uns['den_marker_features' | key_added]` : :class:`dict`
        In the layout of :func:`scanpy.tl.rank_genes_groups`, so that
        :func:`scanpy.get.rank_genes_groups_df` and
        :func:`scanpy.pl.rank_genes_groups_dotplot` read it (``key=key_added``):
        ``names``, ``scores`` (mean SHAP of the group's logit),
        ``logfoldchanges`` (group vs rest, from ``adata.raw`` or the input when
        on a log1p scale, else NaN), ``pvals``/``pvals_adj`` (NaN: no test is
        made), ``params``; plus ``mean_shap`` and ``mean_abs_shap`` (genes x
        groups arrays, rows ``genes``, columns ``groups``: ``pd.DataFrame(e["mean_shap"],
        index=e["genes"], columns=e["groups"])``), the per-cell ``shap_values`` with ``shap_cells``,
        ``shap_groups``, ``base_values`` (one per group), and an ``explainers`` table with
        each group's explainer and largest additivity error. When ``groupby`` is not a den
        clustering, also ``model``: the head trained on the map to tell its groups apart, whose
        logits are explained.
    """
    start = logg.info("computing SHAP marker features")
    check_copy(adata, copy)
    check_flags(progress_bar=progress_bar)
    check_key_added(adata, key_added, "marker_features")
    check_unique_cells(adata)  # the explained cells are stored by name
    seed = check_random_state(random_state)
    check_sizes(n_background=n_background, max_cells_per_group=max_cells_per_group)
    if n_genes is not None:
        check_sizes(n_genes=n_genes)
    if direction not in ("up", "any"):
        msg = f"Invalid direction={direction!r}: it must be 'up' or 'any'."
        raise ValueError(msg)
    check_explainer(explainer)
    gn = group_network(adata, groupby, key=key, random_state=seed)
    opts = {"max_cells": max_cells_per_group, "explainer": explainer, "progress_bar": progress_bar}
    rng = np.random.default_rng(seed)
    genes = gn.model.var_names
    codes_by_name = {c: i for i, c in enumerate(gn.labels.categories.astype(str))}
    bg_idx = stratified_background(gn.labels, n_background, rng)
    background = rows(gn, adata, bg_idx)

    groups = [g for g in gn.categories if g in codes_by_name and (gn.labels.codes == codes_by_name[g]).any()]
    if not groups:
        msg = (
            f"No cell of adata.obs[{groupby!r}] belongs to a group the network knows. Run `den.tl.cluster(adata)` "
            "again, or pass a groupby column holding these cells' groups."
        )
        raise ValueError(msg)
    per_group = _explain_groups(gn, adata, groups, codes_by_name, background, rng, seed, **opts)
    values, cells, cell_groups, base, table, higher = per_group

    mean_shap = pd.DataFrame({g: v.mean(0) for g, v in zip(groups, values, strict=True)}, index=genes)
    mean_abs = pd.DataFrame({g: np.abs(v).mean(0) for g, v in zip(groups, values, strict=True)}, index=genes)
    result, lfc_source = _rank(adata, gn, groups, codes_by_name, mean_shap, higher, n_genes, direction)
    params = {
        "groupby": groupby,
        "reference": "rest",
        "method": "den_shap",
        "use_raw": False,
        "layer": gn.model.config.get("layer"),
        "corr_method": "none",
        "explainer": explainer,
        "output": "logit",
        "n_background": n_background,
        "max_cells_per_group": max_cells_per_group,
        "direction": direction,
        "n_genes": n_genes,
        "random_state": seed,
        "embedding_key": key,
        "logfoldchanges_from": lfc_source,
    }
    # group names are data, never keys: names with "/" (pbmc68k_reduced's own) survive h5ad and zarr
    entry = {
        "params": params,
        **result,
        "groups": np.asarray(groups, dtype=str),
        "genes": np.asarray(genes, dtype=str),
        "mean_shap": mean_shap.to_numpy(np.float32),
        "mean_abs_shap": mean_abs.to_numpy(np.float32),
        "shap_values": np.concatenate(values).astype(np.float32),
        "shap_cells": np.concatenate(cells).astype(str),
        "shap_groups": np.asarray(cell_groups, dtype=str),
        "base_values": np.asarray([base[g] for g in groups], dtype=np.float64),
        "explainers": pd.DataFrame(table),
    }
    if gn.head is not None:
        entry["model"] = gn.head
    adata = adata.copy() if copy else adata
    make_actual(adata)
    adata.uns[key_added] = entry
    logg.info("    finished", time=start, deep=f"added\n    {key_added!r}, SHAP-ranked genes per group (adata.uns)")
    return adata if copy else None


def _explain_groups(gn, adata, groups, codes_by_name, background, rng, seed, *, max_cells, explainer, progress_bar):
    """SHAP values of each group's logit for a capped sample of its cells."""
    values, cells, cell_groups, base, table, higher = [], [], [], {}, [], {}
    picks = [sample_cells(gn.labels.codes == codes_by_name[g], max_cells, rng) for g in groups]
    every = rows(gn, adata, np.concatenate(picks))  # one read for all groups (on disk: one pass, not one per group)
    ends = np.cumsum([len(idx) for idx in picks])
    for g, idx, cells_x in zip(
        progress(groups, desc="SHAP per group", enabled=progress_bar), picks, np.split(every, ends[:-1]), strict=True
    ):
        readout = np.eye(len(gn.categories), dtype=np.float32)[gn.categories.index(g)]
        att = explain(gn.net, readout, cells_x, background, method=explainer, random_state=seed)
        values.append(att.values)
        higher[g] = cells_x.mean(0) > background.mean(0)
        cells.append(adata.obs_names[idx].to_numpy())
        cell_groups += [g] * len(idx)
        base[g] = att.base_value
        table.append(
            {
                "group": g,
                "n_cells": len(idx),
                "explainer": att.explainer,
                "max_additivity_error": att.max_additivity_error,
                "note": "; ".join(att.notes),
            }
        )
    return values, cells, cell_groups, base, table, higher


def _rank(adata, gn, groups, codes_by_name, mean_shap, higher, n_genes, direction):
    """Record arrays as scanpy's ``rank_genes_groups``, genes ordered by mean SHAP (ties: higher in the group first)."""
    genes = gn.model.var_names
    codes = np.asarray(gn.labels.codes)
    masks = {g: codes == codes_by_name[g] for g in groups}
    means, lfc_source = log_means(adata, gn, {**masks, **{f"rest:{g}": ~m for g, m in masks.items()}})
    n_keep = len(genes) if n_genes is None else int(min(n_genes, len(genes)))
    ranked = {col: {} for col in _DTYPES}
    for g in groups:
        score = mean_shap[g].to_numpy()
        sort_keys = (-score,) if direction == "any" else (-score, ~higher[g])  # lexsort: last key first
        order = np.lexsort(sort_keys)[:n_keep]
        lfc = log2_fold_change(means[g], means[f"rest:{g}"])[order] if means else np.full(n_keep, np.nan)
        ranked["names"][g] = genes[order].to_numpy().astype(object)
        ranked["scores"][g] = mean_shap[g].to_numpy()[order]
        ranked["logfoldchanges"][g] = lfc
        ranked["pvals"][g] = np.full(n_keep, np.nan)
        ranked["pvals_adj"][g] = np.full(n_keep, np.nan)
    result = {col: pd.DataFrame(ranked[col]).to_records(index=False, column_dtypes=_DTYPES[col]) for col in _DTYPES}
    return result, lfc_source


def shap_table(entry: dict, which: str = "mean_shap") -> pd.DataFrame:
    """``mean_shap`` or ``mean_abs_shap`` of a :func:`marker_features` result as a genes x groups DataFrame."""
    values = np.asarray(entry[which])
    return pd.DataFrame(
        values,
        index=pd.Index(np.asarray(entry["genes"]).astype(str)),
        columns=list(np.asarray(entry["groups"]).astype(str)),
    )
