"""Plots of SHAP explanations: marker heatmap, beeswarm, waterfall and differentiating genes."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from den._data import check_unique_cells
from den._utils import import_shap
from den.pl._utils import doc_plot_params, finish, new_axes, uns_entry
from den.tl._groups import check_sizes
from den.tl._marker_features import shap_table

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


@doc_plot_params
def marker_features(
    adata: AnnData,
    *,
    key: str = "den_marker_features",
    n_genes: int = 5,
    groups: str | list[str] | None = None,
    kind: Literal["heatmap", "dotplot"] = "heatmap",
    standard_scale: Literal["group"] | None = "group",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    **kwargs,
):
    """Top SHAP marker genes of each group.

    ``kind="heatmap"`` draws groups x top genes coloured by mean SHAP value of
    each group's own logit (red: pushes cells into the row's group), each row
    scaled by its largest absolute value so that a group whose logit moves
    less still shows its markers (``standard_scale=None``: raw values).
    ``kind="dotplot"`` hands the result to
    :func:`scanpy.pl.rank_genes_groups_dotplot` (expression dots, ``**kwargs``
    passed on; it computes a dendrogram unless ``dendrogram=False``).

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.marker_features` ran.
    key
        ``uns`` key of the result.
    n_genes
        Top genes per group.
    groups
        A group, or a subset of groups, to show.
    kind
        ``"heatmap"`` or ``"dotplot"``.
    standard_scale
        Heatmap only: ``"group"`` divides each group's row by its largest
        absolute mean SHAP (signs kept, -1 to 1); ``None`` draws mean SHAP as is,
        comparable across groups.
    {ax_show_return_fig}
    **kwargs
        Passed to :func:`scanpy.pl.rank_genes_groups_dotplot` (``kind="dotplot"`` only).
    """
    if kind not in ("heatmap", "dotplot"):
        msg = f"kind={kind!r}: use 'heatmap' or 'dotplot'."
        raise ValueError(msg)
    check_sizes(n_genes=n_genes)
    if standard_scale not in ("group", None):
        msg = f"standard_scale={standard_scale!r}: use 'group' (each row scaled to its largest value) or None."
        raise ValueError(msg)
    if kwargs and kind != "dotplot":
        msg = f"Keyword arguments {sorted(kwargs)} go to scanpy's dotplot only; pass kind='dotplot' or drop them."
        raise TypeError(msg)
    entry = uns_entry(adata, key, "marker_features")
    all_groups = list(entry["names"].dtype.names)
    one = isinstance(groups, str) or np.ndim(groups) == 0  # a single group, named by text or a number
    groups = all_groups if groups is None else [str(groups)] if one else [str(g) for g in groups]
    if missing := [g for g in groups if g not in all_groups]:
        msg = f"Groups {missing} are not in adata.uns[{key!r}] (groups: {all_groups})."
        raise KeyError(msg)
    if kind == "dotplot":
        import scanpy as sc

        _check_no_empty_groups(adata, entry["params"]["groupby"])
        kwargs.setdefault("title", f"top {n_genes} genes of each group by mean SHAP")
        return sc.pl.rank_genes_groups_dotplot(
            adata, key=key, n_genes=n_genes, groups=groups, ax=ax, show=show, return_fig=return_fig, **kwargs
        )
    owner = {}  # each gene under the first group that ranks it (a gene can top two groups)
    for grp in groups:
        for g in list(entry["names"][grp][:n_genes]):
            owner.setdefault(g, grp)
    genes = list(owner)
    mat = shap_table(entry, "mean_shap").loc[genes, groups].to_numpy().T
    if standard_scale == "group":
        mat = mat / np.where((top := np.abs(mat).max(1, keepdims=True)) > 0, top, 1.0)
    width = min(0.32 * len(genes) + 2, 16.0)  # many groups: narrower columns, smaller names, not a 30-inch figure
    fontsize = min(10.0, max(5.0, 10.0 * (width - 2) / (0.32 * len(genes))))
    fig, ax = new_axes(ax, (max(4, width), max(2.5, 0.35 * len(groups) + 1.2)))
    lim = float(np.abs(mat).max()) or 1.0
    im = ax.imshow(mat, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(groups)), groups)
    ax.set_ylabel(entry["params"]["groupby"])
    ax.set_title("mean SHAP of each group's logit; columns: each group's top genes")
    _label_gene_blocks(ax, [owner[g] for g in genes])
    label = "mean SHAP / row's largest |mean SHAP|" if standard_scale else "mean SHAP"
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label=label)
    return finish(fig, ax, show=show, return_fig=return_fig)


def _label_gene_blocks(ax, owners: list[str]) -> None:
    """Name, above the heatmap, the group whose top genes each block of columns holds; thin lines between blocks."""
    starts = [i for i in range(len(owners)) if i == 0 or owners[i] != owners[i - 1]]
    ends = [*starts[1:], len(owners)]
    for s in starts[1:]:
        ax.axvline(s - 0.5, color="white", lw=1.5)
    top = ax.secondary_xaxis("top")
    top.set_xticks(
        [(s + e - 1) / 2 for s, e in zip(starts, ends, strict=True)], [owners[s] for s in starts], fontsize=8
    )
    top.tick_params(length=0)


def _check_no_empty_groups(adata: AnnData, groupby: str) -> None:
    """An error before drawing when ``groupby`` has categories without cells (scanpy's dotplot fails on them)."""
    col = adata.obs.get(groupby)
    if col is None or not isinstance(col.dtype, pd.CategoricalDtype):
        return
    if empty := [str(c) for c, n in col.value_counts(sort=False).items() if n == 0]:
        msg = (
            f"adata.obs[{groupby!r}] has categories without cells ({empty}), which scanpy's dotplot cannot draw. "
            f"Drop them with `adata.obs[{groupby!r}] = adata.obs[{groupby!r}].cat.remove_unused_categories()`, "
            "or use kind='heatmap'."
        )
        raise ValueError(msg)


def _explanation(values, base, data, genes):
    shap = import_shap()

    return shap.Explanation(values=values, base_values=base, data=data, feature_names=list(map(str, genes)))


def _rows(adata: AnnData, cells, key: str, tool: str) -> np.ndarray:
    """Row positions of the explained ``cells``; an error when some are no longer in ``adata`` (subset since)."""
    check_unique_cells(adata)
    rows = adata.obs_names.get_indexer(cells)
    if (rows < 0).any():
        msg = (
            f"{int((rows < 0).sum())} of the cells explained in adata.uns[{key!r}] are not in this AnnData "
            f"(was it subset after den.tl.{tool}?); run den.tl.{tool} again on it."
        )
        raise KeyError(msg)
    return rows


@doc_plot_params
def shap_summary(
    adata: AnnData,
    group: str,
    *,
    key: str = "den_marker_features",
    n_genes: int = 10,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Beeswarm of one group's SHAP values: each dot a cell, coloured by the gene's expression.

    The ``n_genes`` genes with the largest mean absolute SHAP value are drawn; the x-axis label
    says what the other genes add together, on average over the group's explained cells.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.marker_features` ran.
    group
        Group to show.
    key
        ``uns`` key of the result.
    n_genes
        Genes shown (largest mean absolute SHAP value first).
    {ax_show_return_fig}
    """
    shap = import_shap()

    from den._data import get_matrix
    from den._model import DENModel

    check_sizes(n_genes=n_genes)
    entry = uns_entry(adata, key, "marker_features")
    group = str(group)
    sel = np.asarray(entry["shap_groups"]) == group
    if not sel.any():
        msg = f"No explained cells of group {group!r} in adata.uns[{key!r}] (groups: {sorted(set(entry['shap_groups']))})."
        raise KeyError(msg)
    values = np.asarray(entry["shap_values"])[sel]
    cells = _rows(adata, np.asarray(entry["shap_cells"])[sel], key, "marker_features")
    model = DENModel.from_adata(adata, key=entry["params"]["embedding_key"], cluster_key=None)
    data = model.inputs(get_matrix(adata, model.config.get("layer")), adata.var_names, cells)
    base = float(np.asarray(entry["base_values"])[list(np.asarray(entry["groups"]).astype(str)).index(group)])
    top = np.argsort(-np.abs(values).mean(0), kind="stable")[:n_genes]
    rest = np.delete(values, top, axis=1).sum(1).mean() if values.shape[1] > len(top) else 0.0
    fig, ax = new_axes(ax, (5, 0.35 * n_genes + 1.5))
    shap.plots.beeswarm(  # the top genes alone: shap's "sum of the other genes" row would set the axis' scale
        _explanation(values[:, top], np.full(len(values), base), data[:, top], np.asarray(model.var_names)[top]),
        max_display=n_genes,
        ax=ax,
        show=False,
        plot_size=None,
    )
    title = f"{entry['params']['groupby']} {group} ({len(values)} cells explained): SHAP of its logit"
    ax.set_title(textwrap.fill(title, 48), fontsize=10)
    ax.set_xlabel(f"SHAP value\n(the other {values.shape[1] - len(top)} genes add {rest:+.2f} on average)")
    for other in fig.axes:  # shap's colour bar: the values are the expression the network read
        if other.get_ylabel() == "Feature value":
            other.set_ylabel("expression (as den read it)")
    return finish(fig, ax, show=show, return_fig=return_fig)


def cell_features(
    adata: AnnData,
    cell: str,
    *,
    key: str = "den_cell_features",
    n_genes: int = 10,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Waterfall of the genes behind one cell's den-cluster logit, from :func:`den.tl.cell_features`.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.cell_features` ran for ``cell``.
    cell
        Cell name (``obs_names``).
    key
        ``uns`` key of the result.
    n_genes
        Genes shown.
    show, return_fig
        Show the plot (default: scanpy's ``autoshow``); return the
        :class:`~matplotlib.figure.Figure` instead of the axes.
    """
    shap = import_shap()

    from den._data import get_matrix
    from den._model import DENModel

    check_sizes(n_genes=n_genes)
    entry = uns_entry(adata, key, "cell_features")
    cells = list(np.asarray(entry["cells"]))
    if cell not in cells:
        msg = f"Cell {cell!r} was not explained in adata.uns[{key!r}]. Run `den.tl.cell_features(adata, [{cell!r}])` first."
        raise KeyError(msg)
    i = cells.index(cell)
    model = DENModel.from_adata(adata, key=entry["params"]["key"], cluster_key=None)
    x = model.inputs(
        get_matrix(adata, model.config.get("layer")), adata.var_names, _rows(adata, [cell], key, "cell_features")
    )
    plt.figure()  # shap's waterfall draws here and sizes it; resized below
    values = np.asarray(entry["values"])[i]
    explanation = _explanation(values, float(np.asarray(entry["base_values"])[i]), x[0], entry["genes"])
    shap.plots.waterfall(explanation, max_display=n_genes + 1, show=False)  # + 1: shap counts the "other" row
    fig = plt.gcf()
    ax = fig.axes[0]
    group = np.asarray(entry["groups"])[i]
    ax.set_title(
        f"cell {cell}: logit of {entry['params']['cluster_key']} {group}\n"
        "(beside each gene: its expression as den read it)",
        fontsize=10,
    )
    fig.set_size_inches(7.5, 0.4 * n_genes + 2)  # shap sets its own size; the gene names need the room
    fig.tight_layout()
    return finish(fig, ax, show=show, return_fig=return_fig)


@doc_plot_params
def differentiating_features(
    adata: AnnData,
    group1: str,
    group2: str,
    *,
    key: str = "den_differentiating_features",
    n_genes: int = 15,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Bar chart of the genes that most move cells from ``group2`` towards ``group1`` (and back).

    Red bars push towards ``group1``, blue towards ``group2``. SHAP speaks of the gene's value
    either way: a gene *lower* in ``group1`` (log2 fold change < 0, hatched, its value written at
    the bar) can push towards it by its absence. Fold changes need the data on a log1p scale
    (see :func:`den.tl.differentiating_features`); without them the bars are plain.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.differentiating_features` ran for these groups.
    group1, group2
        The compared groups (or cells).
    key
        ``uns`` key of the results.
    n_genes
        Genes shown at each end of the ranking.
    {ax_show_return_fig}
    """
    check_sizes(n_genes=n_genes)
    store = uns_entry(adata, key, "differentiating_features")
    from den.tl._differentiating import comparison_key

    name = comparison_key(group1, group2)
    if name not in store:
        msg = f"No comparison {name!r} in adata.uns[{key!r}]. Run `den.tl.differentiating_features(adata, {group1!r}, {group2!r})` first."
        raise KeyError(msg)
    df = store[name]["table"]
    top = pd.concat([df.head(n_genes), df.tail(n_genes)]).drop_duplicates("names")
    top = top[top["score"] != 0].iloc[::-1]
    fig, ax = new_axes(ax, (5.5, 0.25 * len(top) + 1.5))
    colors = np.where(top["score"] > 0, "C3", "C0")
    bars = ax.barh(top["names"].astype(str), top["score"], color=colors)
    lfc = pd.to_numeric(top.get("logfoldchange", pd.Series(np.nan, index=top.index)), errors="coerce").to_numpy()
    if np.isfinite(lfc).any():
        _mark_fold_changes(ax, bars, lfc, str(group1))
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel(f"mean SHAP of logit({group1}) - logit({group2})")
    groupby = store[name].get("params", {}).get("groupby")
    ax.set_title(f"{groupby}: {group1} vs {group2}" if groupby else f"{group1} vs {group2}")
    return finish(fig, ax, show=show, return_fig=return_fig)


def _mark_fold_changes(ax, bars, lfc: np.ndarray, group: str) -> None:
    """Hatch the bars of genes lower in ``group``, write each log2 fold change at its bar, and say so in a legend."""
    from matplotlib.patches import Patch

    for bar, value in zip(bars, lfc, strict=True):
        if value < 0:
            bar.set_hatch("///")
            bar.set_edgecolor("white")
    ax.bar_label(bars, labels=["" if not np.isfinite(v) else f"{v:+.1f}" for v in lfc], padding=2, fontsize=7)
    ax.margins(x=0.15)
    handles = [
        Patch(facecolor="0.6", label=f"higher in {group}"),
        Patch(facecolor="0.6", hatch="///", label=f"lower in {group}"),
    ]
    ax.legend(handles=handles, title="log2 fold change", fontsize=7, title_fontsize=7, loc="best")
