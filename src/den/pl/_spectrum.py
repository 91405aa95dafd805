"""The Laplacian spectrum behind the number of clusters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from den._spectral import BRIDGE_RATIO, EIG_FLOOR, bridge_threshold
from den.pl._utils import doc_plot_params, finish, new_axes, uns_entry

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


@doc_plot_params
def spectrum(
    adata: AnnData,
    *,
    key: str = "den_clusters",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Smallest eigenvalues of the graph Laplacian, on a log scale, with the k of the eigengap rule marked.

    The graph is the data's kNN graph weighted by the map's near-belief. k sits
    at the largest log-gap, or later where eigenvalues lie more than 10 times
    below the median nonzero one (bridges between populations; dotted line).
    The title also gives the number of clusters left after dissolving small ones
    and merging on the data graph (see :func:`den.tl.cluster`). Eigenvalues below the eigensolver's
    resolution (1e-6) are drawn on the linear part of the axis around 0.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.cluster` ran.
    key
        ``uns`` key of the clustering.
    {ax_show_return_fig}
    """
    entry = uns_entry(adata, key, "cluster")
    evals = np.asarray(entry["eigenvalues"])
    k_final = int(entry["n_clusters"])
    k = int(entry.get("n_eigengap", k_final))
    fig, ax = new_axes(ax, (4.5, 3))
    pos = np.arange(1, len(evals) + 1)
    ax.plot(pos, evals, "o-", ms=3, color="0.4")
    forced = entry.get("params", {}).get("n_clusters")
    rule = f"forced: n_clusters = {forced}" if forced is not None else f"eigengap rule: k = {k}"
    ax.plot(pos[:k], evals[:k], "o", ms=5, color="C3", label=rule)
    ax.axvline(k + 0.5, color="C3", ls="--", lw=1)
    n_rule = int(entry.get("params", {}).get("max_clusters", len(evals) - 1)) + 1
    cut = bridge_threshold(evals[:n_rule])
    if cut > 0:
        ax.axhline(cut, color="C0", ls=":", lw=1, label=f"bridge test: median / {BRIDGE_RATIO:g}")
    ax.set_yscale("symlog", linthresh=EIG_FLOOR)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("eigenvalue rank")
    ax.set_ylabel("eigenvalue of the normalised Laplacian")
    ax.set_title(f"DEN cluster spectrum ({k_final} clusters in the end)")
    ax.legend(frameon=False, loc="lower right")
    return finish(fig, ax, show=show, return_fig=return_fig)
