"""What every den plot shares: axes creation, scanpy's show / return_fig convention and its docs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from den._utils import uns_owner

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


#: docstring entry of the ``ax``, ``show`` and ``return_fig`` parameters, filled in by :func:`doc_plot_params`
AX_SHOW_RETURN_FIG = """ax, show, return_fig
        Draw into ``ax``; show the plot (default: scanpy's ``autoshow``);
        return the :class:`~matplotlib.figure.Figure` instead of the axes."""


def doc_plot_params(func):
    """Replace ``{ax_show_return_fig}`` in ``func``'s docstring by :data:`AX_SHOW_RETURN_FIG`."""
    func.__doc__ = func.__doc__.replace("{ax_show_return_fig}", AX_SHOW_RETURN_FIG)
    return func


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """Use ``ax``, or make a figure with one axes (constrained layout: labels are not cut when it is saved)."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def finish(fig: Figure, ax: Axes, *, show: bool | None, return_fig: bool) -> Figure | Axes | None:
    """Show (``show=None`` follows ``scanpy.settings.autoshow``) or return the figure or axes."""
    import scanpy as sc

    if return_fig:
        return fig
    if show is None:
        show = sc.settings.autoshow
    if show:
        plt.show()
        return None
    return ax


def uns_entry(adata, key: str, tool: str) -> dict:
    """``adata.uns[key]``, or an error naming the tool that writes it."""
    entry = adata.uns.get(key)
    if not isinstance(entry, dict):
        msg = f"adata.uns[{key!r}] not found. Run `den.tl.{tool}` first (or pass its `key`)."
        raise KeyError(msg)
    if tool != "differentiating_features" and uns_owner(entry) != tool:  # its entry holds comparisons by name
        msg = f"adata.uns[{key!r}] is not a result of den.tl.{tool}; pass the `key` of one."
        raise KeyError(msg)
    return entry


def color_error(adata, key: str) -> KeyError:
    """The error for a ``color`` that is neither an ``obs`` column nor a gene, with the closest names."""
    import difflib

    names = [*map(str, adata.obs.columns), *map(str, adata.var_names)]
    by_case = [n for n in names if n.lower() == str(key).lower()]
    close = by_case or difflib.get_close_matches(str(key), names, n=3, cutoff=0.75)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return KeyError(f"color={key!r} is neither a column of adata.obs nor a gene of adata.var_names.{hint}")


def check_colors(adata, color, *, gene_symbols: str | None = None, use_raw: bool | None = None) -> None:
    """Raise :func:`color_error` before drawing for a ``color`` scanpy would not find (its bare ``KeyError``)."""
    known = set(adata.obs.columns) | set(adata.var_names)
    if adata.raw is not None and use_raw is not False:
        known |= set(adata.raw.var_names)
    if gene_symbols is not None and gene_symbols in adata.var:
        known |= set(adata.var[gene_symbols].astype(str))
    for key in [color] if isinstance(color, str) else list(color or []):
        if key is not None and key not in known:
            raise color_error(adata, key)


def map_key(adata, basis: str, name: str = "adata", fix: str = "Run `den.tl.embed(adata)` first.") -> str:
    """The ``obsm`` key of a map given as ``basis``: ``"X_den"`` as given, ``"den"`` as scanpy reads it."""
    key = basis if basis in adata.obsm else f"X_{basis}"
    if key not in adata.obsm:
        msg = f"{name}.obsm has no {basis!r} or 'X_{basis}'. {fix}"
        raise KeyError(msg)
    check_map_plottable(adata, key, name)
    return key


def check_map_plottable(adata, key: str, name: str = "adata") -> None:
    """An error before drawing when ``obsm[key]`` has fewer than two columns (``n_components=1``)."""
    n_dims = adata.obsm[key].shape[1]
    if n_dims < 2:
        msg = (
            f"{name}.obsm[{key!r}] has {n_dims} column (a map embedded with n_components={n_dims}); den's map "
            "plots draw two. Embed with n_components=2 to plot it, or plot the coordinate against a covariate "
            "yourself (e.g. with scanpy.pl.scatter after copying it to .obs)."
        )
        raise ValueError(msg)
