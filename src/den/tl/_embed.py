"""`den.tl.embed`: train the DEN network on an AnnData and write the map."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from scanpy import logging as logg
from scipy import sparse

from den._config import EmbedConfig
from den._data import Features, check_names, column_mean, get_matrix, warn_if_counts
from den._embedding import fit_embedding, pca_width, warn_if_collapsed
from den._estimator import encode_labels
from den._pairs import graph_matrix
from den._pca import reproduces
from den._utils import (
    check_copy,
    check_fit_cells,
    check_flags,
    check_key_added,
    check_random_state,
    get_device,
    make_actual,
    training_rows,
)

from ._batches import MIN_BATCH_CELLS

if TYPE_CHECKING:
    from anndata import AnnData


def embed(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    labels_key: str | None = None,
    batch_key: str | None = None,
    batch_centering: bool = True,
    fit_cells: int | None = None,
    n_components: int = 2,
    n_neighbors: int = 15,
    n_pcs: int | None = 50,
    hidden: Sequence[int] = (128, 128),
    loss: Literal["contrastive", "paper"] = "contrastive",
    dof: float | None = None,
    n_far: int = 128,
    n_epochs: int | None = None,
    batch_size: int = 512,
    learning_rate: float = 2e-2,
    min_dist: float = 0.0,
    input_noise: float = 0.15,
    ignore: float = 1.0,
    label_weight: float = 1.0,
    label_head: bool = True,
    device: str = "auto",
    devices: int = 1,
    random_state: int | None = 0,
    key_added: str | None = None,
    progress_bar: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Train a Differentiating Embedding Network and embed the cells :cite:p:`Robinson2020`.

    A Siamese network reads the genes of each cell and is trained so that pairs of
    nearest neighbours land close and pairs drawn at random land far apart, under a
    loss built on the F distribution of squared map distances. The trained network is
    *parametric*: :func:`den.tl.transform` places new cells without refitting. The
    AnnData adapter of :class:`den.DEN`; its docs describe every training parameter.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes), log-normalised.
    layer
        Train on ``adata.layers[layer]`` instead of ``adata.X``.
    use_rep
        Representation in ``adata.obsm`` for the nearest-neighbour graph that defines
        the near pairs. Default: ``"X_pca"`` when present, else the output of den's
        frozen PCA layer (a PCA of the genes; not written into ``adata``). When
        ``"X_pca"`` is used and scanpy's loadings (``varm["PCs"]``) still reproduce it
        from the training matrix, the PCA layer takes them instead of a second PCA.
    labels_key
        Semi-supervised: a column of ``adata.obs`` with known labels; missing values
        (NaN, ``None``) or ``-1`` mark unlabelled cells. Labelled cells add same-label near pairs, near
        pairs with different labels are dropped, and (``label_head=True``) a head learns
        the labels from the map.
    batch_key
        A column of ``adata.obs`` naming each cell's batch (donor, lab, technology).
        Near pairs are mined batch-balanced, as BBKNN: each cell's
        ``ceil(n_neighbors / n_batches)`` nearest cells of every batch, so the network
        learns to place one cell type from different batches together. To take near
        pairs from an integrated representation instead (harmony, scVI), pass it as
        ``use_rep``.
    batch_centering
        With ``batch_key``: the network reads each batch centred in the PCA space (each
        cell's PCs minus its batch's mean PCs), which cancels gene-wise batch shifts; a
        query from a new batch is centred on its own (:func:`den.tl.transform` with
        ``batch_key``). Each batch should hold a mix of the cell types.
    fit_cells
        Train on a seeded sample of this many cells (drawn with ``random_state``), then place
        every cell with the trained network, as :func:`den.tl.transform` places new cells: the
        route for data too large to train on whole (1,000,000 cells on disk with a
        100,000-cell sample: 3.1x faster than the whole fit, with :func:`den.tl.cluster`'s
        ``fit_cells``; docs: benchmarks, "Atlas scale"). The training budget follows the
        sample's size. With ``batch_key`` the sample is stratified: each batch gives its share,
        and at least 50 cells (all of a smaller batch). ``None`` (default), or at least the
        number of cells: train on every cell. No kNN graph is stored (:func:`den.tl.cluster`
        then searches its own).
    n_components, n_neighbors, n_pcs, hidden, loss, dof, n_far, n_epochs, batch_size, learning_rate, min_dist, input_noise, ignore, label_weight, label_head
        See :class:`den.DEN`.
    device
        ``"auto"`` (one CUDA GPU if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    devices
        Train data-parallel on this many processes (torch.distributed DDP); see :class:`den.DEN`.
    random_state
        Seed for the PCA, pair sampling, weights and batching; ``None`` draws one (recorded).
    key_added
        Write ``obsm[key_added]`` and ``uns[key_added]`` instead of ``obsm["X_den"]`` and ``uns["den"]``.
    progress_bar
        Show a progress bar over epochs.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None`` or, with ``copy=True``, a copy of ``adata``, with

    `adata.obsm['X_den' | key_added]` : :class:`numpy.ndarray` (dtype `float32`)
        DEN coordinates.
    `adata.uns['den' | key_added]` : :class:`dict`
        ``params`` (the arguments), ``fit`` (what they resolved to: epochs, neighbours,
        learning rate, near pairs, seed, device, ``devices``, ``n_cells_trained``, ``pca``:
        ``"adata.varm['PCs']"`` or ``"den"``, and ``distances_key``, the ``obsp`` key of the graph below),
        ``history`` (mean loss and wall seconds per epoch) and ``model`` (JSON config and
        weights; see :class:`den.DENModel`).
    `adata.obsp['den_distances' | key_added + '_distances']` : :class:`scipy.sparse.csr_matrix`
        The kNN graph the near pairs came from (each cell's ``n_neighbors`` nearest, with their
        distances in the representation), as ``sc.pp.neighbors`` stores ``distances``;
        :func:`den.tl.cluster` reads it instead of searching again. Not written with
        ``batch_key`` (batch-balanced neighbours) nor when ``fit_cells`` trained on a sample.

    Examples
    --------
    >>> import scanpy as sc, den
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> den.tl.embed(adata, progress_bar=False)
    >>> adata.obsm["X_den"].shape
    (700, 2)
    """
    start = logg.info("computing DEN embedding")
    check_copy(adata, copy)
    check_flags(progress_bar=progress_bar, batch_centering=batch_centering)
    check_fit_cells(fit_cells, None)  # before any pass over X
    args = {k: v for k, v in locals().items() if k in EmbedConfig.names()}
    config = EmbedConfig(**args, encoder="mlp")
    key_obsm, key_uns = ("X_den", "den") if key_added is None else (key_added, key_added)
    check_key_added(adata, key_uns, "embed")
    X = get_matrix(adata, layer)
    check_names(adata)
    rep_key = _rep_key(adata, use_rep)
    rep = None if rep_key is None else _representation(adata, rep_key)
    codes, classes = _labels(adata, labels_key)
    batches = _batches(adata, batch_key, batch_centering=batch_centering, n_pcs=n_pcs)
    warn_if_counts(X, "adata.X" if layer is None else f"adata.layers[{layer!r}]")
    seed = check_random_state(random_state)
    rows = training_rows(adata.n_obs, fit_cells, seed, batches)
    take = (lambda a: a) if rows is None else (lambda a: None if a is None else a[rows])
    _check_sampled_labels(take(codes), fit_cells)
    fit = fit_embedding(
        Features(take(X), adata.var_names),
        config,
        seed=seed,
        rep=take(rep),
        labels=take(codes),
        label_categories=classes,
        batches=take(batches),
        batch_centering=batches is not None and bool(batch_centering),
        layer=layer,
        given_pca=_scanpy_pca(adata, X, layer, n_pcs) if rep_key == "X_pca" and n_pcs is not None else None,
        progress_bar=progress_bar,
    )
    # the same path as den.tl.transform
    coords = fit.model.embed(X, adata.var_names, device=device, check=False, batches=batches)
    warn_if_collapsed(coords)
    inputs = {"layer": layer, "use_rep": rep_key, "labels_key": labels_key, "batch_key": batch_key}
    entry = _uns_entry(fit, config, inputs | {"batch_centering": batch_centering, "fit_cells": fit_cells})
    entry["fit"]["n_cells_trained"] = adata.n_obs if rows is None else len(rows)

    adata = adata.copy() if copy else adata
    make_actual(adata)
    graph_key = f"{key_uns}_distances"
    adata.obsp.pop(graph_key, None)  # an earlier embedding's graph
    if fit.graph is not None and rows is None:  # den.tl.cluster reads it instead of searching again
        adata.obsp[graph_key] = graph_matrix(fit.graph, fit.graph_distances)
        entry["fit"]["distances_key"] = graph_key
    adata.obsm[key_obsm] = coords
    adata.uns[key_uns] = entry
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    {key_obsm!r}, DEN coordinates (adata.obsm)\n    {key_uns!r}, parameters, history and model "
        f"(adata.uns)\n    {graph_key!r}, the kNN graph of the near pairs (adata.obsp)",
    )
    return adata if copy else None


def _uns_entry(fit, config: EmbedConfig, inputs: dict) -> dict:
    """``uns["den"]``: ``params`` (the arguments), ``fit`` (what they resolved to), ``history`` and ``model``."""
    params = config.to_dict() | inputs
    params.pop("encoder")
    resolved = {
        "n_epochs": fit.n_epochs,
        "learning_rate": fit.learning_rate,
        "n_neighbors": fit.n_neighbors,
        "n_near_pairs": fit.n_near_pairs,
        "random_state": fit.seed,
        "device": str(get_device(config.device)),  # the one trained on: "auto" resolved
        "devices": config.devices,
        "pca": "adata.varm['PCs']" if fit.pca_given else "den",
    }
    history = {
        "loss": np.asarray(fit.history, dtype=np.float64),
        "seconds": np.asarray(fit.epoch_seconds, dtype=np.float64),
    }
    return {"params": params, "fit": resolved, "history": history, "model": fit.model.to_uns()}


def _rep_key(adata: AnnData, use_rep: str | None) -> str | None:
    if use_rep is None:
        return "X_pca" if "X_pca" in adata.obsm else None
    if use_rep not in adata.obsm:
        msg = f"use_rep={use_rep!r} is not in adata.obsm (available: {list(adata.obsm)}). Pass an existing key or None."
        raise KeyError(msg)
    return use_rep


def _scanpy_pca(adata: AnnData, X, layer: str | None, n_pcs: int):
    """``sc.pp.pca``'s mean, loadings and variances, when they still give ``obsm["X_pca"]`` from ``X``.

    The PCA layer then holds the user's PCA (no second PCA; the network reads the PCs the
    near pairs came from). Anything else (no loadings, another layer, fewer than the
    ``n_pcs`` the layer will hold, a changed matrix) -> None, before any pass over ``X``.
    """
    info = adata.uns.get("pca")
    if "PCs" not in adata.varm or not isinstance(info, dict) or "variance" not in info:
        return None
    params = info.get("params", {})
    if not params.get("zero_center", True) or params.get("layer") != layer:
        return None
    components = np.asarray(adata.varm["PCs"], dtype=np.float64)
    variance = np.asarray(info["variance"], dtype=np.float64)
    if components.ndim != 2 or variance.shape != (components.shape[1],) or not np.isfinite(components).all():
        return None
    if components.shape[1] < pca_width(n_pcs, X.shape):  # fewer than the layer holds: unusable
        return None
    mean = column_mean(X)
    if not reproduces(X, mean, components, np.asarray(adata.obsm["X_pca"])):
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        warnings.warn(
            f"adata.obsm['X_pca'] no longer matches {where}: scanpy's loadings do not reproduce it (was the matrix "
            "changed after sc.pp.pca?). den takes its near pairs from X_pca; run `sc.pp.pca` again, or delete "
            "adata.obsm['X_pca'] to let den compute its own PCA.",
            UserWarning,
            stacklevel=3,
        )
        return None
    return mean, components, variance


def _representation(adata: AnnData, key: str) -> np.ndarray:
    value = adata.obsm[key]
    value = value.toarray() if sparse.issparse(value) else value
    try:
        rep = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        rep = np.empty((0,))  # not numbers: the message below
    if rep.ndim != 2 or rep.shape[1] == 0 or not np.isfinite(rep).all():
        msg = (
            f"adata.obsm[{key!r}] must be a finite 2-D array (cells x dimensions, at least one); got shape "
            f"{rep.shape}. Recompute it or pass another `use_rep`."
        )
        raise ValueError(msg)
    return rep


def _batches(adata: AnnData, batch_key: str | None, *, batch_centering, n_pcs: int | None) -> np.ndarray | None:
    if batch_key is None:
        return None
    if batch_key not in adata.obs:
        msg = f"batch_key={batch_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    column = adata.obs[batch_key]
    if column.isna().any():
        msg = f"adata.obs[{batch_key!r}] has {int(column.isna().sum())} missing values; give every cell a batch."
        raise ValueError(msg)
    batches = column.astype(str).to_numpy()
    names, counts = np.unique(batches, return_counts=True)
    if len(names) < 2:
        msg = f"adata.obs[{batch_key!r}] holds a single batch; pass batch_key=None for one batch."
        raise ValueError(msg)
    _check_batch_sizes(batch_key, names, counts)
    if batch_centering and n_pcs is None:
        msg = "batch_centering=True needs the PCA layer (n_pcs set); pass n_pcs=50 or batch_centering=False."
        raise ValueError(msg)
    return batches


def _check_batch_sizes(batch_key: str, names: np.ndarray, counts: np.ndarray) -> None:
    """Refuse batches of one cell; warn of batches too small to hold a mix of the cell types."""
    few = {str(n): int(c) for n, c in sorted(zip(names, counts, strict=True), key=lambda nc: nc[1])[:5]}
    if counts.min() < 2:
        msg = (
            f"adata.obs[{batch_key!r}] has {int((counts < 2).sum())} batches of a single cell (of {len(names)} "
            f"batches; smallest: {few}): batch-balanced neighbours need a mix of cell types in every batch. Pass "
            "the column naming each cell's batch (donor, lab, technology), or merge the small ones."
        )
        raise ValueError(msg)
    if counts.min() < MIN_BATCH_CELLS:
        warnings.warn(
            f"adata.obs[{batch_key!r}] has {int((counts < MIN_BATCH_CELLS).sum())} of {len(names)} batches with "
            f"fewer than {MIN_BATCH_CELLS} cells (smallest: {few}). Every cell takes near neighbours from every "
            "batch, and a small batch cannot hold each cell type, so it links cells of different types (the map "
            "blurs). Merge small batches, or pass batch_key=None.",
            UserWarning,
            stacklevel=4,
        )


def _check_sampled_labels(codes: np.ndarray | None, fit_cells: int | None) -> None:
    """Refuse a ``fit_cells`` sample whose labelled cells hold fewer than two classes (the whole data's check, on the sample)."""
    if codes is not None and len(np.unique(codes[codes >= 0])) < 2:
        msg = (
            f"The fit_cells={fit_cells} sample holds labelled cells of fewer than two classes: labels would teach the "
            "map nothing. Raise fit_cells, or label more cells."
        )
        raise ValueError(msg)


def _labels(adata: AnnData, labels_key: str | None):
    if labels_key is None:
        return None, None
    if labels_key not in adata.obs:
        msg = f"labels_key={labels_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    column = adata.obs[labels_key]
    codes, classes = encode_labels(
        column.astype(object).where(column.notna(), None), adata.n_obs, name=f"adata.obs[{labels_key!r}]"
    )
    return codes, [str(c) for c in classes]
