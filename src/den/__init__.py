"""Differentiating Embedding Networks for single-cell data."""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, pl, tl
from ._estimator import DEN
from ._model import DENModel

try:
    __version__ = version("scden")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "unknown"

__all__ = ["DEN", "DENModel", "datasets", "pl", "tl"]
