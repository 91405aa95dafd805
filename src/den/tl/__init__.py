"""Tools: train, embed, cluster and explain."""

from ._embed import embed
from ._transform import transform

__all__ = ["embed", "transform"]
