"""Honest confidence: temperature scaling on held-out cells, and the expected calibration error.

A classifier trained to zero loss is sure of itself everywhere. Temperature scaling (Guo et
al. 2017) divides the logits by one number ``T``, fitted by maximum likelihood on cells the
network never saw; it changes no predicted label, only how sure the probabilities are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._utils import softmax

#: share of the training cells held out of a classifier's training (they fit ``T`` and measure the error)
HELD_OUT_SHARE = 0.2
#: bins of the expected calibration error
ECE_BINS = 15


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The ``T`` that minimises the negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    Golden-section search on ``log T`` in ``[-4, 6]`` (the likelihood is unimodal in ``T``).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return -float(log_softmax(logits / np.exp(log_t))[np.arange(len(labels)), labels].mean())

    lo, hi = -4.0, 6.0
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: the gap between confidence and accuracy, averaged over ``n_bins`` equal-width confidence bins."""
    proba = np.asarray(proba, dtype=np.float64)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    conf = proba.max(1)
    correct = proba.argmax(1) == labels
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return float(total / len(labels))


@dataclass(frozen=True)
class Split:
    """Cells a classifier trains on, cells that fit its temperature, and cells that measure it."""

    train: np.ndarray
    calibrate: np.ndarray
    evaluate: np.ndarray


def held_out_split(labels: np.ndarray, seed: int, share: float = HELD_OUT_SHARE) -> Split:
    """Stratified split: ``share`` of every class held out (half to calibrate, half to evaluate).

    Classes with fewer than 10 cells stay whole in training; so does everything when fewer
    than 50 cells would be held out (then ``T = 1`` and no error is measured).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, cal, ev = [], [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_out = int(len(idx) * share) if len(idx) >= 10 else 0
        cal.append(idx[: n_out // 2])
        ev.append(idx[n_out // 2 : n_out])
        train.append(idx[n_out:])
    cal, ev = np.concatenate(cal), np.concatenate(ev)
    if len(cal) + len(ev) < 50:
        return Split(np.arange(len(labels)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Split(np.sort(np.concatenate(train)), np.sort(cal), np.sort(ev))


def calibrate(logits: np.ndarray, labels: np.ndarray, split: Split) -> dict[str, float]:
    """Fit ``T`` on all held-out cells; measure the ECE by cross-fitting.

    Each half of the held-out cells (``split.calibrate``, ``split.evaluate``) is scored with the
    temperature fitted on the other half, so every held-out cell counts in the error and none is
    scored with a temperature fitted on itself.
    """
    labels = np.asarray(labels)
    if len(split.calibrate) == 0:
        return {"temperature": 1.0, "ece": float("nan"), "ece_uncalibrated": float("nan"), "n_evaluated": 0}
    a, b = split.calibrate, split.evaluate
    held = np.concatenate([a, b])
    t_a, t_b = fit_temperature(logits[a], labels[a]), fit_temperature(logits[b], labels[b])
    crossed = np.concatenate([softmax(logits[b], t_a), softmax(logits[a], t_b)])
    return {
        "temperature": fit_temperature(logits[held], labels[held]),
        "ece": expected_calibration_error(crossed, np.concatenate([labels[b], labels[a]])),
        "ece_uncalibrated": expected_calibration_error(softmax(logits[held]), labels[held]),
        "n_evaluated": len(held),
    }
