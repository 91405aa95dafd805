"""SHAP attributions of a den network with respect to the genes.

Normalises whatever shap returns into plain ``(cells, genes)`` arrays, checks
additivity itself and falls back to another explainer, recorded, when the
check fails. The explained output is always a *logit* (pre-softmax score),
selected or combined by a fixed linear read-out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ._utils import progress
from .nn import select_output

#: largest |sum(SHAP) + base - output| accepted, as shap's own check
ADDITIVITY_TOLERANCE = 1e-2


@dataclass
class Attribution:
    """SHAP values of one explained output for a set of cells."""

    values: np.ndarray  #: (cells, genes) float32
    base_value: float  #: mean output over the background
    outputs: np.ndarray  #: the explained output of each cell
    explainer: str  #: "deep" or "gradient"
    max_additivity_error: float
    notes: list[str] = field(default_factory=list)


def explain(
    net: nn.Module,
    readout: np.ndarray,
    cells: np.ndarray,
    background: np.ndarray,
    *,
    method: str = "deep",
    batch_size: int = 256,
    progress_bar: bool = False,
    desc: str = "SHAP",
    random_state: int = 0,
) -> Attribution:
    """SHAP values of ``readout @ net(x)`` for each row of ``cells``.

    Parameters
    ----------
    net
        Network from genes to logits (eval mode, CPU).
    readout
        Weights over the logits: a one-hot row explains one cluster's logit,
        ``e_a - e_b`` the difference of two.
    cells
        Dense float32 (cells x genes) to explain.
    background
        Dense float32 (cells x genes) reference sample.
    method
        ``"deep"`` (DeepExplainer; exact for den's ReLU networks) or
        ``"gradient"`` (GradientExplainer, expected gradients).
    """
    import shap

    model = nn.Sequential(net, select_output(readout)).eval()
    bg = torch.from_numpy(np.ascontiguousarray(background, dtype=np.float32))
    x_all = np.ascontiguousarray(cells, dtype=np.float32)
    with torch.no_grad():
        outputs = model(torch.from_numpy(x_all)).numpy()[:, 0]
        base = float(model(bg).mean())
    notes: list[str] = []
    if method == "deep":
        try:
            values = _run(shap.DeepExplainer(model, bg), x_all, batch_size, progress_bar, desc, check=True)
        except AssertionError as e:  # shap's additivity check
            notes.append(f"DeepExplainer failed its additivity check ({e!s:.200}); used GradientExplainer instead.")
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=3)
            method = "gradient"
    if method == "gradient":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_state)
            explainer = shap.GradientExplainer(model, bg)
            values = _run(explainer, x_all, batch_size, progress_bar, desc, check=False)
    elif method != "deep":
        msg = f"Unknown explainer {method!r}; use 'deep' or 'gradient'."
        raise ValueError(msg)
    err = float(np.abs(values.sum(1) + base - outputs).max()) if len(outputs) else 0.0
    return Attribution(values, base, outputs, method, err, notes)


def _run(explainer, x: np.ndarray, batch_size: int, progress_bar: bool, desc: str, *, check: bool) -> np.ndarray:
    out = []
    starts = range(0, x.shape[0], batch_size)
    for s in progress(starts, total=len(starts), desc=desc, enabled=progress_bar):
        xb = torch.from_numpy(x[s : s + batch_size])
        if check:
            sv = explainer.shap_values(xb, check_additivity=True)
        else:
            sv = explainer.shap_values(xb)
        out.append(_as_2d(sv, xb.shape))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, x.shape[1]), np.float32)


def _as_2d(sv, shape) -> np.ndarray:
    """Shap returns a list of arrays, or an array with a trailing output axis: make it (cells, genes)."""
    if isinstance(sv, list):
        sv = sv[0]
    sv = np.asarray(sv)
    if sv.ndim == 3:
        sv = sv[..., 0]
    return sv.reshape(shape)
