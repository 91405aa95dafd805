"""Heads on top of an encoder: cluster / label classifiers and fixed read-outs for SHAP."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._encoders import mlp


class ClusterHead(nn.Sequential):
    """MLP from the map to class logits (ReLU, width ``max(16, 4 x n_classes)``; the paper's clustering MLP)."""

    def __init__(self, n_components: int, n_classes: int, width: int | None = None):
        width = width or max(16, 4 * n_classes)
        super().__init__(*mlp(n_components, [width, width], n_classes))


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
