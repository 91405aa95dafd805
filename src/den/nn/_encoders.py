"""den's encoders, in a registry keyed by the ``encoder`` entry of a saved config.

Every encoder splits into a *frozen* front (applied block-wise to the data before
training, e.g. the gene -> PC projection) and a trainable *body*; ``forward`` is
the whole network from raw features to the map, which is what SHAP explains.
Only ``nn`` modules that shap's DeepExplainer handles are used, each once, never
in place: Linear, ReLU, Conv2d, AvgPool2d, BatchNorm2d (eval), AdaptiveAvgPool2d,
Flatten.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def input_projection(n_features: int, n_pcs: int) -> nn.Linear:
    """A frozen :class:`~torch.nn.Linear` from features to principal components (load a PCA with :func:`set_pca`).

    A plain ``nn.Linear`` (not a subclass), so shap's explainers recognise it; it does
    not train, so attributions of the whole network still land on the features.
    """
    layer = nn.Linear(n_features, n_pcs)
    layer.requires_grad_(False)
    return layer


@torch.no_grad()
def set_pca(layer: nn.Linear, mean: np.ndarray, components: np.ndarray, scale: float) -> None:
    """Make ``layer`` compute ``(x - mean) @ components / scale``; ``components`` is ``(n_features, n_pcs)``."""
    layer.weight.copy_(torch.as_tensor(components.T / scale, dtype=layer.weight.dtype))
    layer.bias.copy_(torch.as_tensor(-(mean @ components) / scale, dtype=layer.bias.dtype))


def mlp(n_in: int, hidden: Sequence[int], n_out: int) -> nn.Sequential:
    """Linear/ReLU layers ``n_in -> hidden... -> n_out`` (no activation after the last)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.ReLU()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Features -> (frozen PCA layer) -> MLP -> map: den's encoder for vectors (genes).

    Parameters
    ----------
    n_features
        Number of input features (genes).
    n_components
        Dimension of the map.
    hidden
        Widths of the hidden layers (they do not grow with ``n_features``).
    n_pcs
        Width of the frozen PCA input layer, or ``None`` to feed the features straight
        into a trainable first layer.
    """

    kind = "mlp"

    def __init__(self, n_features: int, n_components: int, hidden: Sequence[int], n_pcs: int | None):
        super().__init__()
        self.projection = input_projection(n_features, n_pcs) if n_pcs is not None else None
        self.mlp = mlp(n_features if n_pcs is None else n_pcs, hidden, n_components)

    @property
    def body(self) -> nn.Module:
        """The trainable part, from :meth:`front` outputs to the map."""
        return self.mlp

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen front (the PCA layer, if any)."""
        return x if self.projection is None else self.projection(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.front(x))

    def hidden_body(self) -> nn.Module:
        """The body without its output layer: front outputs -> last hidden layer."""
        return self.mlp[:-1]

    @property
    def hidden_width(self) -> int:
        return self.mlp[-1].in_features

    def strip_output(self) -> None:
        """Drop the output layer in place (the clustering network reads the last hidden layer)."""
        self.mlp = self.mlp[:-1]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MLPEncoder:
        return cls(int(config["n_genes"]), int(config["n_components"]), config["hidden"], config.get("n_pcs"))


def conv_blocks(in_channels: int, size: int, base_channels: int) -> tuple[list[nn.Module], int]:
    """``floor(log2(size))`` blocks of 3x3 conv -> 2x2 average pooling -> ReLU -> batch norm, channels doubling."""
    layers: list[nn.Module] = []
    c_in, c_out = in_channels, base_channels
    for _ in range(max(1, int(math.log2(size)))):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.AvgPool2d(2, ceil_mode=True),
            nn.ReLU(),
            nn.BatchNorm2d(c_out),
        ]
        c_in, c_out = c_out, 2 * c_out
    return layers, c_in


class ConvEncoder(nn.Module):
    """Images ``(C, H, W)`` -> conv blocks -> global average pooling -> dense -> map (the paper's image encoder).

    Average pooling (a linear layer) instead of max pooling keeps the DeepLIFT rule
    exact, so SHAP values over pixels pass the additivity check.

    Parameters
    ----------
    input_shape
        ``(channels, height, width)`` of one image.
    n_components
        Dimension of the map.
    hidden
        Widths of the dense layers after pooling.
    base_channels
        Channels of the first block (doubling in each following block).
    """

    kind = "conv"
    projection = None

    def __init__(self, input_shape: Sequence[int], n_components: int, hidden: Sequence[int], base_channels: int = 16):
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        self.input_shape = (c, h, w)
        blocks, width = conv_blocks(c, min(h, w), base_channels)
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mlp = mlp(width, hidden, n_components)

    @property
    def body(self) -> nn.Module:
        return self

    def front(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(x.reshape(-1, *self.input_shape)))

    def hidden_body(self) -> nn.Module:
        return nn.Sequential(_Reshape(self.input_shape), self.features, self.mlp[:-1])

    @property
    def hidden_width(self) -> int:
        return self.mlp[-1].in_features

    def strip_output(self) -> None:
        self.mlp = self.mlp[:-1]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ConvEncoder:
        return cls(
            config["input_shape"], int(config["n_components"]), config["hidden"], int(config.get("base_channels", 16))
        )


class _Reshape(nn.Module):
    """Flat rows -> images (shap's DeepExplainer passes unknown shape-only modules through)."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.shape)


#: encoder classes by the ``encoder`` entry of a config (configs saved by den 0.1 have none: "mlp")
ENCODERS: dict[str, type[nn.Module]] = {"mlp": MLPEncoder, "conv": ConvEncoder}


def build_encoder(config: dict[str, Any]) -> nn.Module:
    """The (untrained) encoder a config describes."""
    kind = config.get("encoder", "mlp")
    if kind not in ENCODERS:
        msg = f"Unknown encoder {kind!r} in the model config; this den knows {sorted(ENCODERS)}. Upgrade scden?"
        raise ValueError(msg)
    return ENCODERS[kind].from_config(config)
