"""`den.tl.cluster`: clusters found without k, learnt by a network that assigns new cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scanpy import logging as logg

from den._data import dense_rows, get_matrix, iter_rows, pca
from den._model import DENModel
from den._pairs import knn
from den._spectral import discover_clusters, merge_clusters, spectral_labels
from den._train import predict, train_classifier
from den._utils import check_random_state, get_device, make_actual, torch_seed, training_threads

from ._cluster_results import write_clusters
from ._embed import _h5ad_safe

if TYPE_CHECKING:
    from anndata import AnnData


def cluster(
    adata: AnnData,
    *,
    n_clusters: int | None = None,
    key: str = "den",
    n_neighbors: int = 15,
    resolution: float = 1.0,
    gamma: float = 1.0,
    max_clusters: int = 40,
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
       :func:`den.tl.embed` trained on), each edge weighted by the network's
       own belief that the pair is near, ``1 - F_cdf(d_map^2 / gamma^2)``
       (the F-distribution of DEN's loss); edges it treats as far are
       dropped. DEN maps pack populations onto small islands (with
       ``min_dist=0``, at scale onto identical points), so a kNN graph *on
       the map* breaks into pieces; the data graph does not.
    2. The number of spectral clusters is the largest gap between consecutive
       *log* eigenvalues among the ``max_clusters + 1`` smallest of the
       normalised Laplacian of the well-placed cells (mean belief over their
       neighbours >= 0.5: stray cells between islands add no near-zero
       eigenvalues). k is raised to the number of eigenvalues more than 10
       times below the median nonzero one: two populations that the map
       brought into contact through a few cells form one piece with a small,
       nonzero eigenvalue. k-means on the row-normalised eigenvectors labels them;
       clusters smaller than ``max(n_neighbors, n_cells // 1000)`` cells are
       dissolved, and every other cell takes the majority label of its
       nearest labelled cells on the map.
    3. A DEN map can tear one population into several islands, so clusters
       are merged on the same data graph: greedy modularity agglomeration joins clusters while some
       pair shares more kNN edges than a random graph with the same degrees
       predicts (observed / expected > ``resolution``).
    4. A linear cluster head learns these labels from the encoder's last
       hidden layer with class-balanced cross-entropy, then a copy of the
       encoder and the head are fine-tuned end to end. The head reads the
       hidden layer, not the 2-D map, because the map's bottleneck places
       unseen cells less faithfully (held-out digits agree with a full fit at
       ARI 0.85 from the map, 0.91 from the hidden layer). The map in ``obsm``
       stays as :func:`den.tl.embed` made it; the clustering network assigns
       new cells in :func:`den.tl.transform`.

    Parameters
    ----------
    adata
        AnnData on which :func:`den.tl.embed` ran.
    n_clusters
        Force this many clusters instead of discovering k: the merge step stops
        at exactly k (or, when the map shows fewer, the spectral step is forced to k).
    key
        ``uns``/``obsm`` key of the embedding (``"den"`` -> ``obsm["X_den"]``).
    n_neighbors
        Neighbours per cell in the data kNN graph.
    resolution
        The resolution knob, as in Leiden's modularity: two clusters merge when
        their observed / expected share of data kNN edges exceeds it. Higher
        values keep more clusters.
    gamma
        Scale of map distances in the affinity, ``1 - F_cdf(d^2 / gamma^2)``:
        larger values join nearby islands, smaller ones split more.
    max_clusters
        Largest k considered by the eigengap rule and the bridge test.
    head_epochs
        Epochs training the cluster head on the frozen encoder (at least 1,000
        optimisation steps are taken, so small data sets get more epochs).
    finetune_epochs
        Epochs fine-tuning encoder + head end to end (at least 200 steps
        when > 0). Both stages use Adam at learning rate 1e-3.
    batch_size
        Cells per optimisation step.
    device
        ``"auto"``, ``"cpu"``, ``"cuda:0"``, ...
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
    `adata.obsm['den_clusters_proba']` : :class:`numpy.ndarray`
        Class probabilities (cells x clusters).
    `adata.obs['den_clusters_confidence']` : :class:`numpy.ndarray`
        Largest class probability.
    `adata.uns['den_clusters']` : :class:`dict`
        ``params``, ``eigenvalues``, ``n_eigengap`` (the k of the eigengap rule, or
        the forced k), ``n_spectral_clusters`` (after dissolving small clusters),
        ``n_clusters`` (after merging), ``training_labels`` (what the network learnt),
        ``history`` and the clustering ``model``.
    """
    start = logg.info("computing DEN clusters")
    seed = check_random_state(random_state)
    model = DENModel.from_adata(adata, key=key, cluster_key=None)
    emb_key = "X_den" if key == "den" else key
    if emb_key not in adata.obsm:
        msg = f"adata.obsm[{emb_key!r}] is missing. Run `den.tl.embed(adata)` first."
        raise KeyError(msg)
    if n_clusters is not None and not (1 <= n_clusters < adata.n_obs):
        msg = f"n_clusters={n_clusters} must be between 1 and the number of cells - 1."
        raise ValueError(msg)
    if gamma <= 0 or resolution <= 0 or max_clusters < 2:
        msg = "`gamma` and `resolution` must be > 0 and `max_clusters` >= 2."
        raise ValueError(msg)
    X = get_matrix(adata, model.config.get("layer"))
    model.gene_index(adata.var_names)
    dev = get_device(device)
    emb = np.asarray(adata.obsm[emb_key], dtype=np.float64)

    # the frozen PCA layer's output: the data graph's representation (unless `use_rep`) and the fine-tuning input
    pcs = None if model.encoder.projection is None else np.concatenate(list(model.project(X, adata.var_names)))
    n_nb = min(n_neighbors, adata.n_obs - 2)
    graph, _ = knn(_data_representation(adata, key, X, pcs), n_nb, random_state=seed)
    spectrum = discover_clusters(emb, graph, gamma=gamma, max_clusters=max_clusters, random_state=seed)
    labels = spectral_labels(spectrum, random_state=seed)
    if n_clusters is not None and labels.max() + 1 < n_clusters:  # fewer than asked for: split spectrally into k
        spectrum = discover_clusters(
            emb, graph, gamma=gamma, max_clusters=max_clusters, n_clusters=n_clusters, random_state=seed
        )
        labels = spectral_labels(spectrum, random_state=seed)
    n_spectral = int(labels.max()) + 1  # clusters below the minimum size are dissolved into their neighbours
    labels = merge_clusters(labels, graph, resolution=resolution, n_clusters=n_clusters)
    k = int(labels.max()) + 1
    logg.info(
        f"    {spectrum.n_clusters} clusters by the eigengap rule, {n_spectral} after dissolving small ones, "
        f"{k} after merging on the data graph"
        if n_clusters is None
        else f"    {k} clusters (forced)"
    )

    rng = np.random.default_rng(seed)
    with torch_seed(seed):
        net = model.make_cluster_net(k)
    encoder, head = net[0], net[1]
    encoder.to(dev)
    if pcs is not None:  # the copied encoder's frozen layer is the model's: reuse its output
        inputs = torch.from_numpy(pcs).to(dev)
        trainable = torch.nn.Sequential(encoder.mlp, head)
        hidden = predict(encoder.mlp, inputs, device=dev)
    else:
        inputs = lambda idx: torch.from_numpy(dense_rows(X, idx)).to(dev)
        trainable = net
        hidden = predict(encoder, model.iter_inputs(X, adata.var_names), device=dev)
    # (network, its inputs, epochs, minimum steps, progress label): the head first learns the labels
    # from the encoder's frozen last hidden layer, then encoder and head are fine-tuned together
    stages = {
        "head": (head, torch.from_numpy(hidden).to(dev), head_epochs, 1000, "DEN cluster head"),
        "finetune": (trainable, inputs, finetune_epochs, 200, "DEN fine-tuning"),
    }
    history = {}
    for stage, (trainee, x, n_epochs, min_steps, desc) in stages.items():
        if n_epochs <= 0:
            continue
        trainee.to(dev)
        with training_threads(dev):
            history[stage] = train_classifier(
                trainee,
                x,
                labels,
                n_epochs=_epochs(n_epochs, adata.n_obs, batch_size, min_steps=min_steps),
                batch_size=batch_size,
                learning_rate=1e-3,
                rng=rng,
                device=dev,
                progress_bar=progress_bar,
                desc=desc,
            )
    net.cpu().eval()
    categories = [str(c) for c in range(k)]
    model.attach_clusters(
        {"n_clusters": k, "categories": categories, "head_input": "hidden"},
        {kk: v.numpy() for kk, v in net.state_dict().items()},
    )
    proba = model.predict_proba(X, adata.var_names, device=str(dev))  # the same path as den.tl.transform

    params = {
        "n_clusters": n_clusters,
        "embedding_key": key,
        "n_neighbors": n_neighbors,
        "resolution": resolution,
        "gamma": gamma,
        "max_clusters": max_clusters,
        "head_epochs": head_epochs,
        "finetune_epochs": finetune_epochs,
        "batch_size": batch_size,
        "random_state": seed,
        "device": str(dev),
    }
    adata = adata.copy() if copy else adata
    make_actual(adata)
    write_clusters(adata, proba, categories, key_added)
    adata.uns[key_added] = {
        "params": _h5ad_safe(params),
        "n_clusters": k,
        "n_eigengap": int(spectrum.n_clusters),
        "n_spectral_clusters": n_spectral,
        "eigenvalues": spectrum.eigenvalues.astype(np.float64),
        "training_labels": labels.astype(np.int32),
        "history": {name: np.asarray(h, dtype=np.float64) for name, h in history.items()},
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


def _data_representation(adata: AnnData, key: str, X, pcs: np.ndarray | None) -> np.ndarray:
    """The representation whose kNN graph :func:`den.tl.embed` trained on.

    Its ``use_rep``; else ``pcs``, the output of the model's frozen PCA layer;
    else (a model without that layer) a PCA of ``X``.
    """
    params = adata.uns[key].get("params", {})
    rep_key = params.get("use_rep", "None")
    if rep_key != "None" and rep_key in adata.obsm:
        return np.asarray(adata.obsm[rep_key], dtype=np.float32)
    if pcs is not None:
        return pcs
    n_pcs = min(50, adata.n_vars, adata.n_obs - 1)
    mean, components, _ = pca(X, n_pcs, random_state=int(params.get("random_state", 0)))
    return np.concatenate([(block - mean) @ components for block in iter_rows(X)]).astype(np.float32)


def _epochs(n_epochs: int, n_cells: int, batch_size: int, *, min_steps: int) -> int:
    """``n_epochs``, raised so that small data sets still get ``min_steps`` optimisation steps."""
    steps_per_epoch = -(-n_cells // batch_size)
    return max(n_epochs, -(-min_steps // steps_per_epoch)) if n_epochs > 0 else 0
