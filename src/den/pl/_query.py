"""The query drawn over its reference map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from den._data import label_order
from den.pl._utils import color_error, finish, map_key

if TYPE_CHECKING:
    from anndata import AnnData


def query(
    adata: AnnData,
    reference: AnnData,
    *,
    color: str | Sequence[str] | None = None,
    basis: str = "den",
    use_raw: bool | None = None,
    size: float | None = None,
    ax=None,
    show: bool | None = None,
    return_fig: bool = False,
):
    """Query cells coloured over the reference map, drawn in grey beneath them.

    One panel per entry of ``color``: a column of ``adata.obs`` (categorical: a legend, in the
    reference's colours or scanpy's; numeric: a colour bar, high values on top, except a
    ``*mapping_score`` or ``*_confidence``, whose low, unfamiliar cells are drawn on top) or a gene.

    Parameters
    ----------
    adata
        Query placed by :func:`den.tl.transform` (``obsm[basis]``).
    reference
        The reference, with its map in ``obsm[basis]``.
    color
        What to colour the query by; ``None``: one uniform colour.
    basis
        The map in both, as for :func:`den.pl.embedding`: ``"den"`` (``obsm["X_den"]``) or an ``obsm`` key.
    use_raw
        Colour by a gene's values in ``adata.raw`` (``None``: when ``adata.raw`` has the gene,
        as :func:`scanpy.pl.embedding`) rather than in ``adata.X``.
    size
        Point size of the query (the reference's is a third of it); default from the cell count.
    ax
        A :class:`~matplotlib.axes.Axes` to draw into (one ``color`` only), e.g. a panel of
        your own figure.
    show, return_fig
        Show the plot (default: scanpy's ``autoshow``); return the
        :class:`~matplotlib.figure.Figure` instead of the axes.
    """
    import matplotlib.pyplot as plt

    fix = "Run den.tl.embed on the reference and den.tl.transform on the query."
    query_key, ref_key = (map_key(a, basis, name, fix) for name, a in (("adata", adata), ("reference", reference)))
    colors = [None] if color is None else [color] if isinstance(color, str) else list(color)
    values = [None if c is None else _values(adata, c, use_raw) for c in colors]  # every key checked before drawing
    if ax is not None and len(colors) > 1:
        msg = f"ax= draws one panel; got {len(colors)} colors. Pass one color per call, or leave ax out."
        raise ValueError(msg)
    size = size or float(np.clip(12000 / max(adata.n_obs, 1), 2, 40))
    if ax is None:
        fig, axes = plt.subplots(1, len(colors), figsize=(4.8 * len(colors), 4.2), squeeze=False, layout="constrained")
    else:
        fig, axes = ax.figure, np.array([[ax]])
    ref_xy, xy = np.asarray(reference.obsm[ref_key]), np.asarray(adata.obsm[query_key])
    for panel, c, v in zip(axes[0], colors, values, strict=True):
        panel.scatter(
            ref_xy[:, 0], ref_xy[:, 1], s=size / 3, c="#d9d9d9", linewidths=0, rasterized=True, label="reference"
        )
        _draw(panel, xy, v, size, None if c is None else _reference_colours(reference, c))
        panel.set_title("query" if c is None else f"query: {c}")
        panel.set_xticks([])
        panel.set_yticks([])
        panel.set_xlabel(f"{ref_key.removeprefix('X_')}1")
        panel.set_ylabel(f"{ref_key.removeprefix('X_')}2")
    return finish(fig, axes[0][0] if len(colors) == 1 else axes[0], show=show, return_fig=return_fig)


def _values(adata: AnnData, key: str, use_raw: bool | None) -> pd.Series:
    """An ``obs`` column, or a gene's values: from ``adata.raw`` when it has the gene (``use_raw=None``), as scanpy."""
    if key in adata.obs:
        return adata.obs[key]
    raw = adata.raw is not None and use_raw is not False and key in adata.raw.var_names
    if raw or key in adata.var_names:
        col = (adata.raw if raw else adata)[:, key].X
        values = np.asarray(col.todense() if hasattr(col, "todense") else col).ravel()
        return pd.Series(values, index=adata.obs_names, name=key)
    raise color_error(adata, key)


def _reference_colours(reference: AnnData, key: str) -> dict[str, object] | None:
    """The reference's categories of ``key`` in its order, with its colours (``uns[key + '_colors']``) if set."""
    col = reference.obs.get(key)
    if col is None or not isinstance(col.dtype, pd.CategoricalDtype):
        return None
    names = [str(c) for c in col.cat.categories]
    colours = reference.uns.get(f"{key}_colors")
    if colours is None or len(colours) != len(names):
        return dict.fromkeys(names)
    return dict(zip(names, colours, strict=True))


def _draw(ax, xy: np.ndarray, values: pd.Series | None, size: float, reference: dict | None = None) -> None:
    """The query's points; categories in the reference's order and colours (``reference``), new ones after."""
    if values is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c="#d62728", linewidths=0, rasterized=True)
        return
    categorical = isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values)
    if categorical or values.dtype == bool or reference is not None:
        text = values.astype(str).to_numpy()
        known = list(reference or {})
        order = known + [c for c in label_order(values) if c not in known]
        present = [c for c in order if (text == c).any()]
        palette = _scanpy_palette(len(order))
        for cat in present:
            m = text == cat
            colour = (reference or {}).get(cat) or palette[order.index(cat) % len(palette)]
            ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colour, linewidths=0, label=cat, rasterized=True)
        ax.legend(
            frameon=False, fontsize=7, markerscale=max(1.0, 6 / size**0.5), loc="center left", bbox_to_anchor=(1, 0.5)
        )
        return
    v = values.to_numpy(dtype=float)
    name = str(values.name or "")
    low_first = name.endswith(("mapping_score", "_confidence"))  # the cells worth seeing are the low ones
    order = np.argsort(-v if low_first else v)  # drawn last, on top
    points = ax.scatter(xy[order, 0], xy[order, 1], s=size, c=v[order], cmap="viridis", linewidths=0, rasterized=True)
    ax.figure.colorbar(points, ax=ax, fraction=0.046, pad=0.02, label=name or None)


def _scanpy_palette(n: int) -> list[str]:
    """The default colours scanpy gives ``n`` categories (as ``sc.pl.embedding``), so both plots agree."""
    from scanpy.plotting import palettes

    return list(palettes.default_20 if n <= 20 else palettes.default_28 if n <= 28 else palettes.default_102)
