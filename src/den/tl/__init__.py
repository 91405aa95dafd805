"""Tools: train, embed, cluster and explain."""

from ._cluster import cluster
from ._embed import embed
from ._marker_features import marker_features
from ._transform import transform

__all__ = ["cluster", "embed", "marker_features", "transform"]
