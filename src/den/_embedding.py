"""Training the embedding: from a feature matrix and a configuration to a trained :class:`DENModel`.

Shared by :class:`den.DEN` and :func:`den.tl.embed`; knows nothing about AnnData.
Steps: build the encoder; load a PCA into its frozen front; the training inputs
(the front's outputs, or the features themselves); the kNN graph of the
representation; near pairs; the sampler, the plan and the runner.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ._config import EmbedConfig
from ._data import Features, input_stats, iter_rows
from ._loss import kernel_dof
from ._mapping import batch_balanced_knn
from ._model import DENModel
from ._pairs import LabelPairs, PairSampler, drop_label_conflicts, fuzzy_weights, knn, knn_pairs, mutual_pairs
from ._pca import pca
from ._utils import get_device, torch_seed
from .nn import ClusterHead, set_pca
from .train import EmbeddingPlan, MatrixSource, Runner, TensorSource, check_devices, rank_world, train

#: near pairs a cell takes part in over the whole training, by default (``n_epochs=None``)
PAIRS_PER_CELL = 250
#: ... but never more pair visits than this in all (the budget stops growing with n)
MAX_PAIR_VISITS = 60_000_000
#: ... and never fewer optimisation steps than this (tiny data sets)
MIN_STEPS = 300
#: without a PCA layer, inputs up to this many values are densified once and kept in memory (else per batch)
IN_MEMORY_MAX_VALUES = 50_000_000
#: same-label partners per labelled cell per epoch in semi-supervised training
LABEL_PAIRS_PER_CELL = 5


@dataclass
class EmbeddingFit:
    """What :func:`fit_embedding` returns."""

    model: DENModel
    history: list[float]
    rep: np.ndarray  #: the representation whose kNN graph gave the near pairs
    n_near_pairs: int
    n_epochs: int
    n_neighbors: int  #: as used (lowered for tiny data)
    seed: int
    notes: list[str] = field(default_factory=list)
    pca_given: bool = False  #: the PCA layer holds ``given_pca`` (not den's own PCA)
    epoch_seconds: list[float] = field(default_factory=list)  #: wall time of each epoch (rank 0's)
    learning_rate: float = 0.0  #: the initial rate as used (``devices`` x the configured one)
    graph: np.ndarray | None = None  #: ``rep``'s kNN graph (indices, cells x ``n_neighbors``); None if batch-balanced
    graph_distances: np.ndarray | None = None  #: the distances of ``graph``'s edges (same shape)


def default_epochs(n_cells: int, n_pairs: int, batch_size: int) -> int:
    """Epochs for :data:`PAIRS_PER_CELL` pair visits per cell (at most :data:`MAX_PAIR_VISITS`, at least :data:`MIN_STEPS` steps)."""
    visits = min(PAIRS_PER_CELL * n_cells, MAX_PAIR_VISITS)
    epochs = max(1, round(visits / max(n_pairs, 1)))
    steps_per_epoch = math.ceil(n_pairs / batch_size)
    return max(epochs, math.ceil(MIN_STEPS / max(steps_per_epoch, 1)))


def effective_neighbors(n_neighbors: int, n_cells: int) -> int:
    """``n_neighbors``, lowered for small data: at most ``max(3, n_cells // 5)`` (recorded in ``fit``).

    A population of 10 cells has 9 neighbours of its own; with 15 per cell, every cell's
    near pairs would reach into other populations. Above ``n_cells - 2`` a warning says so.
    """
    if n_cells < 3:
        msg = f"den needs at least 3 cells; got {n_cells}."
        raise ValueError(msg)
    used = max(1, min(n_neighbors, max(3, n_cells // 5), n_cells - 2))
    if n_neighbors > n_cells - 2:
        warnings.warn(
            f"n_neighbors={n_neighbors} is too large for {n_cells} cells; using {used}.", UserWarning, stacklevel=3
        )
    return used


def model_config(features: Features, config: EmbedConfig, *, layer: str | None, n_pcs: int | None) -> dict:
    """The architecture and feature contract a trained model records."""
    kind = config.encoder
    if kind == "auto":  # the MLP, images flattened: benchmarks/images.py measured it above the conv encoder on CPU
        kind = "mlp"
    if kind == "conv" and features.image_shape is None:
        msg = "encoder='conv' needs images: pass X shaped (n, H, W) or (n, C, H, W)."
        raise ValueError(msg)
    out = {
        "encoder": kind,
        "n_genes": int(features.X.shape[1]),
        "var_names": [str(v) for v in features.var_names],
        "n_components": config.n_components,
        "hidden": list(config.hidden),
        "n_pcs": n_pcs if kind == "mlp" else None,
        "layer": layer,
        "loss": config.loss,
        "dof": config.dof,
        "input_stats": input_stats(features.X),
    }
    if kind == "conv":
        out["input_shape"] = list(features.image_shape)
    return out


def training_inputs(model: DENModel, features: Features, seed: int, device: torch.device, batches=None, given_pca=None):
    """The source of training rows: the frozen PCA layer's outputs (loaded here), or the features.

    With ``batches`` (a batch-centring model) the PCA layer's outputs are centred per batch.
    ``given_pca`` (``mean, components, variance``, at least as many components as the layer
    has) is loaded instead of computing a PCA.
    """
    projection = model.encoder.projection
    if projection is None:
        if features.X.shape[0] * features.X.shape[1] <= IN_MEMORY_MAX_VALUES:
            return TensorSource(np.concatenate(list(iter_rows(features.X))), device), None
        return MatrixSource(features.X, device), None
    width = projection.out_features
    if given_pca is None:
        mean, components, variance = pca(features.X, width, random_state=seed)
    else:
        mean, components, variance = given_pca[0], given_pca[1][:, :width], given_pca[2][:width]
    scale = float(np.sqrt(variance[0])) if variance[0] > 0 else 1.0
    set_pca(projection, mean, components, scale)
    front = np.concatenate(list(model.front_blocks(features.X, features.var_names, batches=batches)))
    return TensorSource(front, device), front


def representation(features: Features, front: np.ndarray | None, seed: int) -> np.ndarray:
    """The kNN representation when none is given: the PCA layer's outputs, else a 50-PC PCA."""
    if front is not None:
        return front
    mean, components, _ = pca(features.X, 50, random_state=seed)
    return np.concatenate([(b - mean) @ components for b in iter_rows(features.X)]).astype(np.float32)


def warn_if_collapsed(coords: np.ndarray) -> None:
    """Warn when the map put (nearly) every cell on one point."""
    extent = float(np.ptp(coords, axis=0).max()) if len(coords) else 0.0
    typical = float(np.median(np.linalg.norm(coords - np.median(coords, 0), axis=1))) if len(coords) else 0.0
    if extent < 1e-3 or typical < 1e-6 * max(extent, 1e-12):
        warnings.warn(
            f"The map collapsed: the cells span only {extent:.3g} map units (most lie on one point). Check the "
            "input for near-constant features, or raise `n_epochs` / lower `learning_rate`.",
            UserWarning,
            stacklevel=3,
        )


def noise_scale(source, near, generator: torch.Generator, n_sample: int = 2048) -> float:
    """Median input distance of near pairs per input dimension (``median / sqrt(n_dims)``).

    Noise of this standard deviation in every dimension moves a row about as far as its
    typical near partner lies away, so ``input_noise`` is relative to the data's own
    neighbour spacing whatever its units.
    """
    pick = torch.randperm(len(near[0]), generator=generator, device=generator.device)[:n_sample].cpu().numpy()
    a = source.gather(torch.as_tensor(near[0][pick])).cpu()
    b = source.gather(torch.as_tensor(near[1][pick])).cpu()
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(torch.linalg.vector_norm(a - b, dim=1).median()) / math.sqrt(a.shape[1])


def check_in_memory(config: EmbedConfig, features: Features) -> None:
    """Several devices train on inputs held in memory: refuse a wide matrix without the PCA layer."""
    n, g = features.X.shape
    if config.devices > 1 and config.n_pcs is None and n * g > IN_MEMORY_MAX_VALUES:
        msg = (
            f"devices={config.devices} trains on inputs held in memory, but without the PCA layer these are "
            f"{n} x {g} values; pass n_pcs=50 (the default) or devices=1."
        )
        raise ValueError(msg)


def pca_width(n_pcs: int | None, shape: tuple[int, int]) -> int | None:
    """Components the PCA layer holds for a ``cells x features`` matrix: ``n_pcs``, at most features and cells - 1."""
    return None if n_pcs is None else int(min(n_pcs, shape[1], shape[0] - 1))


def usable_pca(given_pca, n_pcs: int | None):
    """``given_pca`` when the PCA layer exists and it has at least ``n_pcs`` components, else None."""
    if given_pca is None or n_pcs is None or given_pca[1].shape[1] < n_pcs:
        return None
    return given_pca


def fit_embedding(
    features: Features,
    config: EmbedConfig,
    *,
    seed: int,
    rep: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    label_categories: list[str] | None = None,
    batches: np.ndarray | None = None,
    batch_centering: bool = False,
    layer: str | None = None,
    given_pca: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    progress_bar: bool = True,
) -> EmbeddingFit:
    """Train a DEN encoder on ``features`` (see :class:`den.DEN` for the method).

    ``labels`` (integer codes, ``-1`` unknown) turn on the semi-supervised mode; ``batches``
    (one batch name per cell) mines near pairs batch-balanced (:func:`den._mapping.batch_balanced_knn`);
    with ``batch_centering`` the network reads each batch centred in the PCA space
    (:func:`den._mapping.center_by_batch`), and so does every later use of the model.
    ``given_pca`` (``mean, components, variance``) is the PCA layer's PCA when it has
    enough components (else den computes its own).
    """
    n = features.n
    k = effective_neighbors(config.n_neighbors, n)
    train_device = get_device(config.device)
    check_devices(config.devices, train_device)
    check_in_memory(config, features)
    device = train_device if config.devices == 1 else torch.device("cpu")  # spawned ranks move their copies
    n_pcs = pca_width(config.n_pcs, features.X.shape)
    model = build_model(features, config, seed=seed, layer=layer, n_pcs=n_pcs, centred=batch_centering, batches=batches)
    given_pca = usable_pca(given_pca, n_pcs)
    source, front = training_inputs(model, features, seed, device, batches if batch_centering else None, given_pca)
    given = rep is not None
    rep = representation(features, front, seed) if rep is None else np.asarray(rep, dtype=np.float32)
    if not np.ptp(rep, axis=0).any():
        msg = (
            "The representation given for the neighbours (use_rep) is the same for every cell: recompute it or pass "
            "another use_rep."
            if given
            else "Every cell has the same features (a constant matrix): there is nothing to embed. Check the input."
        )
        raise ValueError(msg)
    generator = torch.Generator(device=device).manual_seed(seed)  # batches are drawn on the training device
    sampler, near, (graph, distances) = pair_sampler(
        rep, config, k, seed=seed, generator=generator, labels=labels, batches=batches
    )
    head = None
    if labels is not None and config.label_head:
        with torch_seed(seed + 1):
            head = ClusterHead(config.n_components, len(label_categories)).to(device)
    plan = embedding_plan(model, config, source, sampler, near, generator, device=device, head=head, labels=labels)
    world = config.devices if config.devices > 1 else rank_world()[1]  # torchrun: the group's ranks
    n_epochs = config.n_epochs or default_epochs(n, sampler.n_pairs, config.batch_size * world)
    runner = Runner(
        n_epochs=n_epochs,
        learning_rate=config.learning_rate * world,  # 1 / world of the steps: the linear rule (docs: several devices)
        device=train_device,
        progress_bar=progress_bar,
        desc="DEN embedding",
    )
    history = train(runner, plan, devices=config.devices, seed=seed)
    model.encoder.cpu().eval()
    if head is not None:
        model.attach_labels({"categories": list(label_categories)}, head.cpu())
    fit = EmbeddingFit(model, history, rep, len(near[0]), n_epochs, k, seed, epoch_seconds=runner.seconds)
    fit.pca_given, fit.learning_rate = given_pca is not None, runner.learning_rate
    fit.graph, fit.graph_distances = graph, distances
    return fit


def build_model(features: Features, config: EmbedConfig, *, seed, layer, n_pcs, centred, batches) -> DENModel:
    """An untrained :class:`DENModel` for ``features`` (``centred``: it reads each batch centred)."""
    with torch_seed(seed):
        model = DENModel.build(model_config(features, config, layer=layer, n_pcs=n_pcs))
    if centred:
        if batches is None or model.encoder.projection is None:
            msg = "batch_centering needs a batch_key and a model with a PCA layer (n_pcs set)."
            raise ValueError(msg)
        model.config["batch_centering"] = True  # front_blocks centres each batch from here on
    return model


def pair_sampler(rep, config: EmbedConfig, k: int, *, seed, generator, labels, batches) -> tuple:
    """The near pairs of ``rep``'s kNN graph (batch-balanced with ``batches``), their sampler, and the graph.

    With ``labels``, near pairs across two known labels are dropped and same-label pairs join them.
    The graph (indices and distances, cells x ``k``) is returned for reuse (the clustering's data
    graph), ``(None, None)`` when batch-balanced.
    """
    if batches is None:
        knn_idx, knn_dist = knn(rep, k, random_state=seed, device=generator.device)
    else:
        knn_idx, knn_dist = batch_balanced_knn(rep, batches, k, random_state=seed)
    near = knn_pairs(knn_idx) if config.loss == "contrastive" else mutual_pairs(knn_idx, min_neighbors=1)
    extra = None
    if labels is not None:
        near = drop_label_conflicts(near, labels)
        if len(near[0]) == 0:
            msg = "Every near pair joins two samples with different labels: the labels look like one per sample."
            raise ValueError(msg)
        extra = LabelPairs(labels, LABEL_PAIRS_PER_CELL, np.random.default_rng(seed))
    n_blocks = 1 if batches is None else len(np.unique(np.asarray(batches).astype(str)))
    weights = fuzzy_weights(knn_idx, knn_dist, near, n_blocks=n_blocks) if config.loss == "contrastive" else None
    sampler = PairSampler(
        near,
        batch_size=config.batch_size,
        n_far=config.n_far,
        far_rule="shared" if config.loss == "contrastive" else "distance",
        generator=generator,
        rep=torch.as_tensor(rep, device=generator.device) if config.loss == "paper" else None,
        extra=extra,
        weights=weights,
    )
    return sampler, near, ((knn_idx, knn_dist) if batches is None else (None, None))


def embedding_plan(model, config: EmbedConfig, source, sampler, near, generator, *, device, head, labels):
    """The :class:`den.train.EmbeddingPlan` of ``model``'s encoder (input noise scaled on ``near``)."""
    sigma = config.input_noise * noise_scale(source, near, generator) if config.input_noise > 0 else 0.0
    return EmbeddingPlan(
        model.encoder.body.to(device),
        source,
        sampler,
        loss=config.loss,
        dof=kernel_dof(config.loss, config.n_components, config.dof)[1],
        min_dist=config.min_dist,
        ignore=config.ignore,
        noise=sigma,
        generator=generator,
        label_head=head,
        labels=labels,
        label_weight=config.label_weight,
    )
