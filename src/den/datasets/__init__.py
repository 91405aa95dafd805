"""Data sets: synthetic data with known groups and planted marker genes, and a branching trajectory."""

from ._synthetic import synthetic
from ._trajectory import lineages, trajectory, tree_distance

__all__ = ["lineages", "synthetic", "trajectory", "tree_distance"]
