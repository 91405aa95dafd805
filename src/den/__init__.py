"""Differentiating Embedding Networks for single-cell data."""

import importlib
from importlib.metadata import PackageNotFoundError, version

from ._estimator import DEN
from ._model import DENModel

try:
    __version__ = version("scden")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "unknown"

#: imported on first use (``den.tl`` brings scanpy and shap): ``import den`` stays light, for the
#: estimator alone and for the processes that ``devices=N`` spawns
_SUBMODULES = ("datasets", "pl", "tl")

__all__ = ["DEN", "DENModel", "datasets", "pl", "tl"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    msg = f"module 'den' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
