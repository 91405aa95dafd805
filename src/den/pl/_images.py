"""SHAP attributions over pixels, drawn as images."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from den._data import label_order
from den.pl._utils import doc_plot_params, finish

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@doc_plot_params
def image_attributions(
    images,
    shap_values: np.ndarray,
    groups,
    *,
    image_shape: tuple[int, ...] | None = None,
    max_groups: int = 12,
    show: bool | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Per group, the mean image and the mean SHAP value of every pixel (red: pushes into the group).

    Draws what :meth:`den.DEN.explain` computed; the plot itself runs nothing.

    Parameters
    ----------
    images
        The explained images, ``(n, H, W)``, ``(n, C, H, W)`` or flattened ``(n, pixels)``.
    shap_values
        SHAP values from :meth:`den.DEN.explain`, ``(n, pixels)``.
    groups
        Group (cluster) of each image.
    image_shape
        ``(H, W)`` or ``(C, H, W)`` when ``images`` are flattened.
    max_groups
        Largest number of groups drawn (the largest groups).
    show, return_fig
        Show the plot (default: scanpy's ``autoshow``); return the
        :class:`~matplotlib.figure.Figure` instead of the axes.
    """
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    shape = tuple(image_shape) if image_shape is not None else images.shape[1:]
    if len(shape) == 3:  # (C, H, W): channels averaged for display
        shape_hw = shape[1:]
    elif len(shape) == 2:
        shape_hw = shape
    else:
        msg = f"Cannot draw images of shape {shape}; pass image_shape=(H, W) or (C, H, W)."
        raise ValueError(msg)
    n = len(images)
    flat, values = images.reshape(n, -1), np.asarray(shap_values).reshape(n, -1)
    if values.shape != flat.shape:
        msg = (
            f"shap_values {values.shape} do not match the images {flat.shape}; pass the SHAP values computed for "
            "these images (one per pixel, e.g. from den.DEN.explain)."
        )
        raise ValueError(msg)
    if int(np.prod(shape)) != flat.shape[1]:
        msg = f"Images of {flat.shape[1]} pixels do not have the shape {shape}; pass the image_shape they were fitted with."
        raise ValueError(msg)
    labels = groups.reset_index(drop=True) if isinstance(groups, pd.Series) else pd.Series(list(np.asarray(groups)))
    if np.shape(groups) != (n,) or labels.isna().any():
        msg = f"groups must hold one group per image ({n}), none missing; got shape {np.shape(groups)}."
        raise ValueError(msg)
    groups = labels.astype(str).to_numpy()
    sizes = pd.Series(groups).value_counts()
    everyone = sorted(label_order(labels), key=lambda g: -sizes[g])  # largest first, ties in the labels' order
    order = everyone[:max_groups]
    fig, axes = plt.subplots(2, len(order), figsize=(1.6 * len(order), 3.4), squeeze=False, layout="constrained")
    # per group, over the channels as drawn: the colour scale is set on what is shown
    shap_maps = {g: values[groups == g].mean(0).reshape(shape).reshape(-1, *shape_hw).sum(0) for g in order}
    lim = max(float(np.abs(m).max()) for m in shap_maps.values()) or 1.0
    for col, g in enumerate(order):
        sel = groups == g
        mean_img = flat[sel].mean(0).reshape(shape).reshape(-1, *shape_hw).mean(0)
        axes[0, col].imshow(mean_img, cmap="gray_r")
        axes[0, col].set_title(textwrap.fill(f"{g} (n={sel.sum()})", 12), fontsize=8)
        im = axes[1, col].imshow(shap_maps[g], cmap="RdBu_r", vmin=-lim, vmax=lim)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("mean image")
    axes[1, 0].set_ylabel("mean SHAP")
    fig.colorbar(im, ax=axes[1, :].tolist(), fraction=0.02, pad=0.01, label="SHAP of own cluster's logit")
    if len(order) < len(everyone):
        fig.suptitle(f"the {len(order)} largest of {len(everyone)} groups (max_groups={max_groups})", fontsize=9)
    return finish(fig, axes[1, 0], show=show, return_fig=return_fig)
