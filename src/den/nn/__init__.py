"""PyTorch modules of den. They know nothing about AnnData.

Encoders live in a registry (:data:`ENCODERS`) keyed by the ``encoder`` entry of a
model's config; every network is built from ``nn`` modules that shap's PyTorch
DeepExplainer handles, each used once and never in place.
"""

from ._encoders import ENCODERS, ConvEncoder, MLPEncoder, build_encoder, input_projection, mlp, set_pca
from ._heads import ClusterHead, select_output

#: den 0.1's name of the vector encoder
Encoder = MLPEncoder

__all__ = [
    "ENCODERS",
    "ClusterHead",
    "ConvEncoder",
    "Encoder",
    "MLPEncoder",
    "build_encoder",
    "input_projection",
    "mlp",
    "select_output",
    "set_pca",
]
