"""Classifiers on the encoder (clusters, transferred labels), with calibrated probabilities.

A linear head on a copy of the encoder's last hidden layer, trained first alone, then end to
end. Its temperature is fitted on cells it never saw (:mod:`den._calibration`): a held-out
20 %, or, for small label sets (:func:`train_classifier` with ``cross_fit=True``), the
out-of-fold logits of :data:`CROSS_FIT_FOLDS` fold networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._calibration import calibrate, held_out_split
from ._model import DENModel
from ._utils import get_device, predict, torch_seed
from .train import fit_classifier

#: optimisation steps the cluster head takes at least (small data sets get more epochs)
HEAD_MIN_STEPS = 1000
#: ... and the end-to-end fine-tuning (when ``finetune_epochs > 0``)
FINETUNE_MIN_STEPS = 200
#: ``cross_fit=True``: below this many cells the calibration is cross-fitted over folds
CROSS_FIT_MAX_CELLS = 5000
CROSS_FIT_FOLDS = 5


@dataclass
class TrainedClassifier:
    """A network from the encoder's front outputs to class logits, with its calibration."""

    net: nn.Sequential  #: (encoder copy without its output layer, linear head)
    calibration: dict  #: ``temperature``, ``ece`` on unseen cells, ``method`` (see :mod:`den._calibration`)
    history: dict[str, list[float]]


@dataclass(frozen=True)
class _Training:
    """How every network of one :func:`train_classifier` call is trained."""

    head_epochs: int
    finetune_epochs: int
    batch_size: int
    device: torch.device
    progress_bar: bool
    name: str


def train_classifier(
    model: DENModel,
    front: np.ndarray,
    labels: np.ndarray,
    *,
    head_epochs: int,
    finetune_epochs: int,
    batch_size: int,
    device,
    seed: int,
    progress_bar: bool,
    name: str = "cluster",
    cross_fit: bool = False,
) -> TrainedClassifier:
    """Learn ``labels``: a linear head on the encoder's frozen last hidden layer, then head + encoder copy end to end.

    ``front`` holds the encoder's frozen-front outputs of the cells (what its body reads). A
    stratified 20 % of the cells is held out of training: they fit the temperature of the
    probabilities and, cross-fitted in two halves, measure their calibration error. With
    ``cross_fit=True`` and fewer than :data:`CROSS_FIT_MAX_CELLS` cells, where 20 % are too few
    to measure a 15-bin error, :data:`CROSS_FIT_FOLDS` fold networks give every cell an
    out-of-fold logit instead; those fit the temperature and measure the error, and the
    network returned trains on all cells.
    """
    how = _Training(head_epochs, finetune_epochs, batch_size, get_device(device), progress_bar, name)
    k = int(labels.max()) + 1
    split = held_out_split(labels, seed)
    if cross_fit and len(labels) < CROSS_FIT_MAX_CELLS and len(split.calibrate) > 0:
        return _cross_fitted(model, front, labels, k, how, seed)
    net, history = _fit_network(model, front[split.train], labels[split.train], k, how, seed)
    logits = predict(nn.Sequential(net[0].body, net[1]), [front], device=torch.device("cpu"))
    return TrainedClassifier(net, calibrate(logits, labels, split) | {"method": "held-out 20 %"}, history)


def _cross_fitted(
    model: DENModel, front: np.ndarray, labels: np.ndarray, k: int, how: _Training, seed: int
) -> TrainedClassifier:
    """Out-of-fold logits of :data:`CROSS_FIT_FOLDS` stratified fold networks calibrate one trained on all cells."""
    folds = stratified_folds(labels, CROSS_FIT_FOLDS, seed)
    out_of_fold = np.zeros((len(labels), k), dtype=np.float32)
    for f in range(CROSS_FIT_FOLDS):
        test = folds == f
        net, _ = _fit_network(model, front[~test], labels[~test], k, how, seed + 1 + f, f" (fold {f + 1})")
        out_of_fold[test] = predict(nn.Sequential(net[0].body, net[1]), [front[test]], device=torch.device("cpu"))
    halves = held_out_split(labels, seed, share=1.0)  # every cell of a class with >= 10 cells, in two halves
    calibration = calibrate(out_of_fold, labels, halves) | {"method": f"{CROSS_FIT_FOLDS}-fold cross-fitting"}
    net, history = _fit_network(model, front, labels, k, how, seed)
    return TrainedClassifier(net, calibration, history)


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Each cell's fold, ``0 .. n_folds - 1``: every class dealt round the folds in a seeded order."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % n_folds
        offset += len(idx)  # small classes do not all start in fold 0
    return folds


def _fit_network(
    model: DENModel, front: np.ndarray, labels: np.ndarray, k: int, how: _Training, seed: int, tag: str = ""
) -> tuple[nn.Sequential, dict[str, list[float]]]:
    """A fresh classifier (encoder copy + linear head) trained on ``front`` -> ``labels``: head, then end to end."""
    with torch_seed(seed):
        net = model.make_cluster_net(k)
    encoder, head = net[0], net[1]
    hidden = predict(encoder.body.to(how.device), [front], device=how.device)
    stages = {  # (network, its inputs, epochs, minimum steps, progress label)
        "head": (head, hidden, how.head_epochs, HEAD_MIN_STEPS, f"DEN {how.name} head{tag}"),
        "finetune": (
            nn.Sequential(encoder.body, head),
            front,
            how.finetune_epochs,
            FINETUNE_MIN_STEPS,
            f"DEN fine-tuning{tag}",
        ),
    }
    history = {}
    for stage, (trainee, x, n_epochs, min_steps, desc) in stages.items():
        epochs = _epochs(n_epochs, len(labels), how.batch_size, min_steps=min_steps)
        if epochs == 0:
            continue
        history[stage] = fit_classifier(
            trainee,
            x,
            labels,
            n_epochs=epochs,
            batch_size=how.batch_size,
            learning_rate=1e-3,
            seed=seed + len(history),
            device=how.device,
            progress_bar=how.progress_bar,
            desc=desc,
        )
    return net.cpu().eval(), history


def _epochs(n_epochs: int, n_cells: int, batch_size: int, *, min_steps: int) -> int:
    """``n_epochs``, raised so that small data sets still get ``min_steps`` optimisation steps."""
    steps_per_epoch = math.ceil(n_cells / batch_size)
    return max(n_epochs, math.ceil(min_steps / steps_per_epoch)) if n_epochs > 0 else 0
