"""Data sets: synthetic data with known groups and planted marker genes."""

from ._synthetic import synthetic

__all__ = ["synthetic"]
