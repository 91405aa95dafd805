"""Tools: train, embed, cluster and explain."""

from ._cluster import cluster
from ._differentiating import differentiating_features
from ._embed import embed
from ._marker_features import marker_features
from ._transform import transform

__all__ = ["cluster", "differentiating_features", "embed", "marker_features", "transform"]
