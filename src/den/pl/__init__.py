"""Plots: the map, its training, queries over a reference, the cluster spectrum and SHAP explanations."""

from ._embedding import embedding, history
from ._images import image_attributions
from ._markers import cell_features, differentiating_features, marker_features, shap_summary
from ._query import query
from ._spectrum import spectrum

__all__ = [
    "cell_features",
    "differentiating_features",
    "embedding",
    "history",
    "image_attributions",
    "marker_features",
    "query",
    "shap_summary",
    "spectrum",
]
