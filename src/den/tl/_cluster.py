"""`den.tl.cluster`: clusters found without k, learnt by a network that assigns new cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scanpy import logging as logg

from den._clustering import check_cluster_count, fit_clusters
from den._config import ClusterConfig
from den._data import Features, get_matrix
from den._model import DENModel, fingerprint
from den._pairs import graph_from_matrix
from den._utils import (
    check_copy,
    check_fit_cells,
    check_flags,
    check_key_added,
    check_random_state,
    make_actual,
    training_rows,
)

from ._batches import sample_strata, training_batches
from ._cluster_results import cluster_columns, write_clusters

if TYPE_CHECKING:
    from anndata import AnnData


def cluster(
    adata: AnnData,
    *,
    n_clusters: int | None = None,
    key: str = "den",
    n_neighbors: int = 15,
    resolution: float = 1.0,
    gamma: float = 1.5,
    max_clusters: int = 40,
    min_cluster_size: int | None = None,
    fit_cells: int | None = None,
    head_epochs: int = 30,
    finetune_epochs: int = 10,
    batch_size: int = 512,
    device: str = "auto",
    random_state: int | None = 0,
    key_added: str = "den_clusters",
    progress_bar: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Find clusters on the DEN map without being told how many, and learn them parametrically.

    1. The affinity lives on the *data's* kNN graph (the representation
       :func:`den.tl.embed` trained on; the graph it stored in ``obsp`` when that has
       ``n_neighbors`` per cell, else searched again), each edge weighted by the network's own belief
       that the pair is near, ``1 - F_cdf((d_map / (gamma s))^2)`` (the F distribution of
       DEN's loss; ``s``: the median map length of the graph's edges, for the contrastive
       loss); edges it treats as far are dropped.
    2. The number of spectral clusters is the largest gap between consecutive *log*
       eigenvalues among the ``max_clusters + 1`` smallest of the normalised Laplacian of
       the well-placed cells (mean belief over their neighbours >= 0.5), raised to the
       number of eigenvalues more than 10 times below the median nonzero one (bridges:
       two populations the map brought into contact through a few cells). k-means on the
       row-normalised eigenvectors labels them; clusters smaller than
       ``min_cluster_size`` are dissolved into their neighbours on the map.
    3. Clusters are merged on the same data graph by greedy modularity agglomeration
       while some pair shares more kNN edges than a random graph with the same degrees
       predicts (observed / expected > ``resolution``).
    4. A linear head learns these labels from the encoder's last hidden layer with
       class-balanced cross-entropy, then a copy of the encoder and the head are
       fine-tuned end to end. The map in ``obsm`` stays as :func:`den.tl.embed` made
       it; the clustering network assigns new cells in :func:`den.tl.transform`.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.embed` ran.
    n_clusters
        Force this many clusters instead of discovering k.
    key
        ``uns``/``obsm`` key of the embedding (``"den"`` -> ``obsm["X_den"]``).
    n_neighbors
        Neighbours per cell in the data kNN graph (at most ``n_cells // 5`` for small data).
    resolution
        As Leiden's resolution: two clusters merge when their observed / expected share
        of data kNN edges exceeds it. Higher values keep more clusters.
    gamma
        Scale of map distances in the affinity: larger joins nearby islands, smaller splits.
    max_clusters
        Largest k considered by the eigengap rule and the bridge test.
    min_cluster_size
        Smallest cluster kept; ``None``: ``n_neighbors`` (at most ``n_cells // 20`` but at least 3 for
        small data, at least ``n_cells // 1000`` for large).
    fit_cells
        Find the clusters and train the network on a seeded sample of this many cells
        (drawn with ``random_state``: the sample ``den.tl.embed(fit_cells=...)`` trained on
        with the same seed and number), then assign every cell with the network, as
        :func:`den.tl.transform` assigns new cells; stratified by batch when the embedding
        had a ``batch_key``, as there. ``None`` (default), or at least the number of cells:
        every cell.
    head_epochs
        Epochs training the cluster head on the frozen encoder (at least 1,000 steps).
    finetune_epochs
        Epochs fine-tuning encoder + head end to end (at least 200 steps when > 0).
    batch_size
        Cells per optimisation step.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    random_state
        Seed for the eigensolver start, k-means and the networks.
    key_added
        Key of the results in ``obs``, ``obsm`` and ``uns``.
    progress_bar
        Show progress bars.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None`` or, with ``copy=True``, a copy of ``adata``, with

    `adata.obs['den_clusters' | key_added]` : :class:`pandas.Categorical`
        Cluster labels ``"0"``, ``"1"``, ... (``"0"`` the largest cluster after merging).
    `adata.obsm['den_clusters_proba' | key_added + '_proba']` : :class:`numpy.ndarray`
        Class probabilities (cells x clusters), temperature-scaled on held-out cells.
    `adata.obs['den_clusters_confidence' | key_added + '_confidence']` : :class:`pandas.Series` (float32)
        Largest class probability.
    `adata.uns['den_clusters' | key_added]` : :class:`dict`
        ``params``, ``fit`` (``random_state``, and ``embedding``: a hash of the embedding's weights;
        tools refuse the clustering once ``den.tl.embed`` has trained again), ``eigenvalues``,
        ``n_eigengap`` (the k of the eigengap rule, or the
        forced k), ``n_spectral_clusters`` (after dissolving small clusters),
        ``n_clusters`` (after merging), ``training_labels`` (what the network learnt; ``-1``
        for cells outside a ``fit_cells`` sample),
        ``history``, ``calibration`` (the ``temperature`` fitted on a stratified 20 % of the
        cells held out of the network's training, and their expected calibration error,
        ``ece``, cross-fitted: each half scored with the temperature of the other) and the
        clustering ``model``.
    """
    start = logg.info("computing DEN clusters")
    check_copy(adata, copy)
    check_flags(progress_bar=progress_bar)
    check_key_added(adata, key_added, "cluster")
    config = ClusterConfig(**{k: v for k, v in locals().items() if k in ClusterConfig.names()})
    n_fit = check_fit_cells(fit_cells, getattr(adata, "n_obs", None))  # before any pass over X
    check_cluster_count(n_clusters, n_fit, "cells clustered")
    model = DENModel.from_adata(adata, key=key, cluster_key=None)
    emb_key = "X_den" if key == "den" else key
    if emb_key not in adata.obsm:
        msg = f"adata.obsm[{emb_key!r}] is missing. Run `den.tl.embed(adata)` first."
        raise KeyError(msg)
    if not np.isfinite(np.asarray(adata.obsm[emb_key], dtype=np.float64)).all():
        msg = f"adata.obsm[{emb_key!r}] holds NaN or inf values (edited since den.tl.embed?). Run `den.tl.embed(adata)` again."
        raise ValueError(msg)
    X = get_matrix(adata, model.config.get("layer"))
    model.gene_index(adata.var_names, query=False)
    seed = check_random_state(random_state)
    batches = training_batches(adata, model, key)
    rows = training_rows(adata.n_obs, fit_cells, seed, sample_strata(adata, key) if fit_cells else None)
    result = fit_clusters(
        model,
        Features(X, adata.var_names),
        adata.obsm[emb_key],
        config,
        seed=seed,
        rep=_embedding_rep(adata, key),
        batches=batches,
        progress_bar=progress_bar,
        graph=_embedding_graph(adata, key) if rows is None else None,
        rows=rows,
    )
    k = len(result.categories)
    logg.info(
        f"    {result.spectrum.n_clusters} clusters by the eigengap rule, {result.n_spectral} after dissolving small "
        f"ones, {k} after merging on the data graph"
        if n_clusters is None
        else f"    {k} clusters (forced)"
    )
    params = config.to_dict() | {"embedding_key": key, "fit_cells": fit_cells}
    clusters = cluster_columns(result.proba, result.categories)

    adata = adata.copy() if copy else adata
    make_actual(adata)
    write_clusters(adata, clusters, key_added)
    adata.uns[key_added] = {
        "params": params,
        "fit": {"random_state": seed, "embedding": fingerprint(adata.uns[key]["model"])},
        "n_clusters": k,
        "n_eigengap": int(result.spectrum.n_clusters),
        "n_spectral_clusters": result.n_spectral,
        "eigenvalues": result.spectrum.eigenvalues.astype(np.float64),
        "training_labels": _per_cell(result.labels, rows, adata.n_obs),
        "history": {name: np.asarray(h, dtype=np.float64) for name, h in result.history.items()},
        # temperature of the probabilities, fitted on held-out cells; ECE on other held-out cells
        "calibration": dict(model.cluster_config["calibration"]),
        "model": model.cluster_to_uns(),
    }
    logg.info(
        "    finished",
        time=start,
        deep=(
            f"added\n    {key_added!r}, cluster labels (adata.obs)\n    {key_added + '_proba'!r}, "
            f"probabilities (adata.obsm)\n    {key_added!r}, parameters, spectrum and model (adata.uns)"
        ),
    )
    return adata if copy else None


def _per_cell(labels: np.ndarray, rows: np.ndarray | None, n_cells: int) -> np.ndarray:
    """The training labels as one entry per cell, ``-1`` for cells outside the ``fit_cells`` sample."""
    out = np.full(n_cells, -1, dtype=np.int32)
    out[slice(None) if rows is None else rows] = labels
    return out


def _embedding_graph(adata: AnnData, key: str) -> np.ndarray | None:
    """The kNN graph :func:`den.tl.embed` stored in ``obsp``, if there and whole (cells x its neighbours), else ``None``."""
    resolved = adata.uns[key].get("fit", {})
    matrix = adata.obsp.get(resolved.get("distances_key", ""))
    return None if matrix is None else graph_from_matrix(matrix, int(resolved["n_neighbors"]))


def _embedding_rep(adata: AnnData, key: str) -> np.ndarray | None:
    """The ``use_rep`` :func:`den.tl.embed` built its kNN graph on, if recorded and present (else ``None``)."""
    rep_key = adata.uns[key].get("params", {}).get("use_rep")
    if rep_key is None or rep_key == "None" or rep_key not in adata.obsm:  # "None": files of den 0.1
        return None
    return np.asarray(adata.obsm[rep_key], dtype=np.float32)
