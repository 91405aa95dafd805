"""Tools: train, embed, cluster and explain."""

from ._cell_features import cell_features
from ._cluster import cluster
from ._differentiating import differentiating_features
from ._embed import embed
from ._mapping import transfer_labels
from ._mapping_score import mapping_score
from ._marker_features import marker_features
from ._transform import transform

__all__ = [
    "cell_features",
    "cluster",
    "differentiating_features",
    "embed",
    "mapping_score",
    "marker_features",
    "transfer_labels",
    "transform",
]
