"""The Siamese encoder, its frozen gene -> PC input layer and the cluster head."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def input_projection(n_genes: int, n_pcs: int) -> nn.Linear:
    """A frozen :class:`~torch.nn.Linear` from genes to principal components.

    Load a PCA into it with :func:`set_pca`. It is a plain ``nn.Linear`` (not a
    subclass) so that shap's explainers recognise it; its parameters do not
    train, so attributions of the whole network still land on genes.
    """
    layer = nn.Linear(n_genes, n_pcs)
    layer.requires_grad_(False)
    return layer


@torch.no_grad()
def set_pca(layer: nn.Linear, mean: np.ndarray, components: np.ndarray, scale: float) -> None:
    """Make ``layer`` compute ``(x - mean) @ components / scale``; ``components`` is ``(n_genes, n_pcs)``."""
    layer.weight.copy_(torch.as_tensor(components.T / scale, dtype=layer.weight.dtype))
    layer.bias.copy_(torch.as_tensor(-(mean @ components) / scale, dtype=layer.bias.dtype))


def _mlp(n_in: int, hidden: Sequence[int], n_out: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return layers


class Encoder(nn.Module):
    """DEN's Siamese encoder: genes -> (frozen PCA) -> MLP -> embedding.

    Parameters
    ----------
    n_genes
        Number of input features.
    n_components
        Embedding dimension.
    hidden
        Widths of the hidden layers; they do not grow with ``n_genes``.
    n_pcs
        Width of the frozen PCA input layer, or ``None`` to feed genes straight
        into a trainable first layer.
    """

    def __init__(self, n_genes: int, n_components: int, hidden: Sequence[int], n_pcs: int | None):
        super().__init__()
        self.projection = input_projection(n_genes, n_pcs) if n_pcs is not None else None
        self.mlp = nn.Sequential(*_mlp(n_genes if n_pcs is None else n_pcs, hidden, n_components))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x if self.projection is None else self.projection(x))


class ClusterHead(nn.Sequential):
    """MLP from the embedding to cluster logits (ReLU, width ``4 x n_clusters``)."""

    def __init__(self, n_components: int, n_clusters: int, width: int | None = None):
        width = width or max(16, 4 * n_clusters)
        super().__init__(*_mlp(n_components, [width, width], n_clusters))


def select_output(weights: np.ndarray) -> nn.Linear:
    """A fixed :class:`~torch.nn.Linear` read-out of logits, one output per row of ``weights``.

    Used to explain one cluster's logit (a one-hot row) or the difference of two.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float32))
    layer = nn.Linear(weights.shape[1], weights.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights))
    layer.requires_grad_(False)
    return layer
