"""Plots of the DEN map and its training."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from den.pl._utils import check_colors, doc_plot_params, finish, map_key, new_axes, uns_entry

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


def embedding(adata: AnnData, *, basis: str = "den", **kwargs):
    """Scatter plot of the DEN map, through :func:`scanpy.pl.embedding`.

    Colour by anything scanpy accepts, e.g. ``color=["den_clusters",
    "den_clusters_confidence", "CD79A"]``.

    Parameters
    ----------
    adata
        AnnData with ``obsm["X_den"]`` (or ``obsm[basis]``).
    basis
        Embedding key: ``"den"`` reads ``obsm["X_den"]``.
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (``color``, ``ax``, ``show``, ``return_fig``, ...).
    """
    import scanpy as sc

    map_key(adata, basis)
    check_colors(adata, kwargs.get("color"), gene_symbols=kwargs.get("gene_symbols"), use_raw=kwargs.get("use_raw"))
    return sc.pl.embedding(adata, basis=basis, **kwargs)


@doc_plot_params
def history(
    adata: AnnData,
    *,
    key: str = "den",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Training loss per epoch of :func:`den.tl.embed`.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.embed` ran.
    key
        ``uns`` key of the embedding.
    {ax_show_return_fig}
    """
    entry = uns_entry(adata, key, "embed")
    loss = np.asarray(entry["history"]["loss"])
    fig, ax = new_axes(ax, (4, 3))
    ax.plot(np.arange(1, len(loss) + 1), loss, marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"mean {entry['params'].get('loss', 'paper')} loss")
    ax.set_title("DEN training")
    return finish(fig, ax, show=show, return_fig=return_fig)
