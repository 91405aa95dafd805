"""Data sets: synthetic groups with planted marker genes, batches with batch effects, a branching trajectory."""

from ._batches import batches
from ._synthetic import synthetic
from ._trajectory import lineages, trajectory, tree_distance

__all__ = ["batches", "lineages", "synthetic", "trajectory", "tree_distance"]
