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

from ._utils import import_shap, progress
from .nn import select_output

#: largest |sum(SHAP) + base - output| accepted, as shap's own check
ADDITIVITY_TOLERANCE = 1e-2


@dataclass
class Attribution:
    """SHAP values of one explained output for a set of cells."""

    values: np.ndarray  #: (cells, genes) float32
    base_value: float  #: mean output over the background
    outputs: np.ndarray  #: the explained output of each cell
    explainer: str  #: which explainer produced the values
    max_additivity_error: float
    notes: list[str] = field(default_factory=list)


def check_explainer(method) -> None:
    """Refuse an unknown explainer (the tools call this before any work)."""
    if method not in ("auto", "deep", "gradient"):
        msg = f"Unknown explainer={method!r}; use 'auto', 'deep' or 'gradient'."
        raise ValueError(msg)


def explain(
    net: nn.Module,
    readout: np.ndarray,
    cells: np.ndarray,
    background: np.ndarray,
    *,
    method: str = "auto",
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
        ``"auto"``: den's batched DeepLIFT (the DeepExplainer rule, vectorised
        over cells and background), falling back to shap's DeepExplainer and then
        GradientExplainer if additivity fails; ``"deep"``: shap's DeepExplainer;
        ``"gradient"``: shap's GradientExplainer (expected gradients).
    """
    check_explainer(method)
    model = nn.Sequential(net, select_output(readout)).eval()
    bg = np.ascontiguousarray(background, dtype=np.float32)
    x_all = np.ascontiguousarray(cells, dtype=np.float32)
    with torch.no_grad():
        outputs = model(torch.from_numpy(x_all)).numpy()[:, 0]
        base = float(model(torch.from_numpy(bg)).mean())
    notes: list[str] = []
    chain = ["auto", "deep", "gradient"][["auto", "deep", "gradient"].index(method) :]
    if chain[0] == "auto" and not all(type(m) in (nn.Linear, nn.ReLU) for m in _layers(model)):
        chain = chain[1:]  # convolutional networks: shap's DeepExplainer directly
    for name in chain:
        try:
            values = _EXPLAINERS[name](
                model, x_all, bg, progress_bar=progress_bar, desc=desc, random_state=random_state
            )
        except (AssertionError, TypeError) as e:  # shap's own additivity check, or a layer we cannot handle
            notes.append(f"{_NAMES[name]} failed ({e!s:.200}); fell back.")
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=3)
            continue
        err = float(np.abs(values.sum(1) + base - outputs).max()) if len(outputs) else 0.0
        if name == "gradient" or err < ADDITIVITY_TOLERANCE:
            break
        notes.append(f"{_NAMES[name]} missed additivity by {err:.3g} (tolerance {ADDITIVITY_TOLERANCE}); fell back.")
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=3)
    return Attribution(values, base, outputs, _NAMES[name], err, notes)


def _layers(module: nn.Module) -> list[nn.Module]:
    """The leaf modules of a den network in forward order (Sequential and Encoder only)."""
    from .nn import Encoder

    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _layers(child)]
    if isinstance(module, Encoder):
        return ([module.projection] if module.projection is not None else []) + _layers(module.mlp)
    return [module]


def _deeplift(model, x, bg, *, progress_bar, desc, random_state) -> np.ndarray:
    """DeepLIFT rescale SHAP values, averaged over the background, for Linear/ReLU chains.

    For each (cell, reference) pair the multiplier of a ReLU is
    ``(relu(z_x) - relu(z_r)) / (z_x - z_r)`` (the gradient where the two
    inputs coincide), of a Linear layer its weight; the attribution is
    ``mean_r (x - r) * multiplier``. This is the rule shap's DeepExplainer
    applies to these modules, computed for many cells at once.
    """
    layers = _layers(model)
    if not all(type(m) in (nn.Linear, nn.ReLU) for m in layers):
        msg = "den's batched DeepLIFT handles nn.Linear and nn.ReLU only."
        raise TypeError(msg)
    first, rest = layers[0], layers[1:]
    if not isinstance(first, nn.Linear):
        rest = layers
        first = None
    xt, rt = torch.from_numpy(x), torch.from_numpy(bg)
    m_ref = rt.shape[0]
    width = first.out_features if first is not None else rt.shape[1]
    chunk = max(1, int(2e7 // (max(m_ref, width) * max(rt.shape[1], 1))))
    out = []
    with torch.no_grad():
        r_in = []
        a = first(rt) if first is not None else rt
        for layer in rest:
            r_in.append(a)
            a = layer(a)
        starts = range(0, xt.shape[0], chunk)
        for s in progress(starts, total=len(starts), desc=desc, enabled=progress_bar):
            xb = xt[s : s + chunk]
            x_in = []
            a = first(xb) if first is not None else xb
            for layer in rest:
                x_in.append(a)
                a = layer(a)
            # multipliers of the output w.r.t. each layer's input, per (cell, reference)
            mult = torch.ones(xb.shape[0], m_ref, 1)
            for layer, ax, ar in zip(reversed(rest), reversed(x_in), reversed(r_in), strict=True):
                if isinstance(layer, nn.Linear):
                    mult = mult @ layer.weight
                else:
                    dz = ax[:, None, :] - ar[None, :, :]
                    dout = torch.relu(ax)[:, None, :] - torch.relu(ar)[None, :, :]
                    grad = (ax > 0).to(ax.dtype)[:, None, :].expand_as(dz)
                    small = dz.abs() < 1e-6
                    mult = mult * torch.where(small, grad, dout / torch.where(small, torch.ones_like(dz), dz))
            if first is None:
                phi = ((xb[:, None, :] - rt[None, :, :]) * mult).mean(1)
            else:
                # mean_r (x - r) * (m W) without forming the (cells, refs, genes) tensor
                w = first.weight  # (hidden, genes)
                term_x = xb * (mult.mean(1) @ w)
                term_r = (torch.einsum("bjp,jg->bpg", mult, rt) * w[None]).sum(1) / m_ref
                phi = term_x - term_r
            out.append(phi.numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros_like(x)


def _shap_deep(model, x, bg, *, progress_bar, desc, random_state) -> np.ndarray:
    shap = import_shap()

    explainer = shap.DeepExplainer(model, torch.from_numpy(bg))
    return _run_shap(explainer, x, progress_bar, desc, check=True)


def _shap_gradient(model, x, bg, *, progress_bar, desc, random_state) -> np.ndarray:
    shap = import_shap()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        explainer = shap.GradientExplainer(model, torch.from_numpy(bg))
        return _run_shap(explainer, x, progress_bar, desc, check=None)


_EXPLAINERS = {"auto": _deeplift, "deep": _shap_deep, "gradient": _shap_gradient}
_NAMES = {"auto": "den DeepLIFT", "deep": "shap DeepExplainer", "gradient": "shap GradientExplainer"}


def _run_shap(explainer, x: np.ndarray, progress_bar: bool, desc: str, *, check: bool | None) -> np.ndarray:
    """Run a shap explainer in batches; additivity is checked by :func:`explain` for every explainer."""
    out = []
    starts = range(0, x.shape[0], 256)
    for s in progress(starts, total=len(starts), desc=desc, enabled=progress_bar):
        xb = torch.from_numpy(x[s : s + 256])
        sv = explainer.shap_values(xb) if check is None else explainer.shap_values(xb, check_additivity=check)
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
