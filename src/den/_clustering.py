"""Parametric clustering: clusters found on the map without k (``_spectral``), then learnt by a network.

Shared by :class:`den.DEN` and :func:`den.tl.cluster`; knows nothing about AnnData.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ._classifier import train_classifier
from ._config import ClusterConfig
from ._data import Features
from ._embedding import representation
from ._model import DENModel
from ._pairs import knn
from ._spectral import Spectrum, discover_clusters, merge_clusters, spectral_labels
from ._utils import get_device


@dataclass
class ClusterFit:
    """What :func:`fit_clusters` returns; the clustering network is attached to the model."""

    labels: np.ndarray  #: the labels the network learnt (after dissolving and merging)
    proba: np.ndarray  #: the network's probabilities for the training cells
    categories: list[str]
    spectrum: Spectrum
    n_spectral: int  #: clusters left after dissolving small ones
    history: dict[str, list[float]] = field(default_factory=dict)


def find_clusters(
    emb: np.ndarray, graph: np.ndarray, config: ClusterConfig, kernel, seed: int
) -> tuple[np.ndarray, Spectrum, int]:
    """Labels from the spectrum of the data graph weighted by the map's near-belief, merged on the data graph."""
    kw = {"gamma": config.gamma, "max_clusters": config.max_clusters, "kernel": kernel, "random_state": seed}
    spectrum = discover_clusters(emb, graph, min_cluster_size=config.min_cluster_size, **kw)
    labels = spectral_labels(spectrum, random_state=seed)
    if config.n_clusters is not None and labels.max() + 1 < config.n_clusters:  # fewer than asked: split into k
        spectrum = discover_clusters(emb, graph, n_clusters=config.n_clusters, **kw)
        labels = spectral_labels(spectrum, random_state=seed)
    n_spectral = int(labels.max()) + 1
    return (
        merge_clusters(labels, graph, resolution=config.resolution, n_clusters=config.n_clusters),
        spectrum,
        n_spectral,
    )


def check_cluster_count(n_clusters: int | None, n: int | None, cells: str) -> None:
    """Refuse, before any work, ``n_clusters`` at or above the number of ``cells`` clustered."""
    if n_clusters is not None and n is not None and n_clusters >= n:
        msg = f"Invalid n_clusters={n_clusters}: it must be below the number of {cells} ({n})."
        raise ValueError(msg)


def cluster_neighbors(n_neighbors: int, n_cells: int) -> int:
    """Neighbours of the data graph: ``n_neighbors``, at most ``max(3, n_cells // 5)`` (small data sets)."""
    return max(1, min(n_neighbors, max(3, n_cells // 5), n_cells - 2))


def train_cluster_net(
    model: DENModel, front: np.ndarray, labels: np.ndarray, config: ClusterConfig, seed: int, progress_bar: bool
) -> dict:
    """Train the clustering network on ``labels`` (:func:`train_classifier`) and attach it to ``model``."""
    trained = train_classifier(
        model,
        front,
        labels,
        head_epochs=config.head_epochs,
        finetune_epochs=config.finetune_epochs,
        batch_size=config.batch_size,
        device=config.device,
        seed=seed,
        progress_bar=progress_bar,
    )
    k = int(labels.max()) + 1
    model.cluster_config = {
        "n_clusters": k,
        "categories": [str(c) for c in range(k)],
        "head_input": "hidden",
        "calibration": trained.calibration,
    }
    model.cluster_net = trained.net
    return trained.history


def fit_clusters(
    model: DENModel,
    features: Features,
    embedding: np.ndarray,
    config: ClusterConfig,
    *,
    seed: int,
    rep: np.ndarray | None = None,
    batches: np.ndarray | None = None,
    progress_bar: bool = True,
    graph: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> ClusterFit:
    """Find clusters on ``embedding`` without k and attach a network that assigns new cells to them.

    ``rep`` is the representation the embedding's kNN graph was built on; ``None``: the
    model's PCA layer outputs (or, without that layer, a PCA of the features); ``batches``: each
    cell's batch, for a batch-centring model; ``graph``: ``rep``'s kNN graph as the embedding
    built it, reused when it has as many neighbours as the clustering's (the same search); ``rows``:
    find the clusters and train on these cells only (``graph`` then ignored), assign every cell. See
    :func:`den.tl.cluster` for the method.
    """
    front = np.concatenate(list(model.front_blocks(features.X, features.var_names, batches=batches)))
    take = (lambda a: a) if rows is None else (lambda a: a[rows])
    train_front, emb = take(front), np.asarray(take(embedding), dtype=np.float64)
    if rep is not None:
        rep = take(rep)
    elif model.encoder.projection is not None:
        rep = train_front
    else:  # no PCA layer: a PCA of the cells clustered, as den.tl.embed made of the cells it trained on
        rep = representation(features if rows is None else Features(features.X[rows], features.var_names), None, seed)
    k = cluster_neighbors(config.n_neighbors, len(emb))
    if graph is None or graph.shape[1] != k or rows is not None:
        graph, _ = knn(rep, k, random_state=seed, device=get_device(config.device))
    labels, spectrum, n_spectral = find_clusters(emb, graph, config, model.kernel, seed)
    if labels.max() == 0 and config.n_clusters is None:
        warnings.warn(
            f"den found a single cluster ({spectrum.n_clusters} by the eigengap rule, {n_spectral} left after "
            "dissolving small ones, merged into one). For more, raise `resolution`, lower `min_cluster_size`, "
            "or pass `n_clusters`.",
            UserWarning,
            stacklevel=3,
        )
    history = train_cluster_net(model, train_front, labels, config, seed, progress_bar)
    proba = model.proba_of_front([front], device=config.device)  # the front computed above: no second pass over X
    return ClusterFit(labels, proba, list(model.cluster_config["categories"]), spectrum, n_spectral, history)
