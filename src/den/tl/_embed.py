"""`den.tl.embed`: train the DEN network and write the 2-D map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from scanpy import logging as logg

from den._data import dense_rows, get_matrix, pca, warn_if_counts
from den._model import DENModel
from den._pairs import knn, near_pairs
from den._train import train_embedding
from den._utils import check_random_state, get_device, make_actual, torch_seed, training_threads
from den.nn import input_projection, set_pca

if TYPE_CHECKING:
    from anndata import AnnData


def embed(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    n_components: int = 2,
    n_neighbors: int = 10,
    n_pcs: int | None = 50,
    hidden: Sequence[int] = (128, 128),
    n_epochs: int | None = None,
    batch_size: int = 256,
    learning_rate: float = 2e-3,
    ignore: float = 1.0,
    min_dist: float = 0.2,
    log_pull: float = 0.5,
    input_noise: float = 0.1,
    min_neighbors: int = 4,
    n_far: int | None = None,
    uniform_far: float = 0.5,
    device: str = "auto",
    random_state: int | None = 0,
    key_added: str | None = None,
    progress_bar: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Train a Differentiating Embedding Network and embed the cells :cite:p:`Robinson2020`.

    A Siamese network reads the genes of each cell and is trained so that pairs
    of mutual nearest neighbours land close and distance-weighted random pairs
    land far apart, under an F-distribution loss. The trained network is
    *parametric*: :func:`den.tl.transform` places new cells without refitting.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes), log-normalised.
    layer
        Train on ``adata.layers[layer]`` instead of ``adata.X``.
    use_rep
        Representation in ``adata.obsm`` for the nearest-neighbour graph that
        defines the pairs. Default: ``"X_pca"`` when present, else a PCA den
        computes (without writing it into ``adata``).
    n_components
        Dimension of the embedding.
    n_neighbors
        Neighbours per cell for near pairs.
    n_pcs
        Width of the frozen PCA layer at the network's input (genes -> PCs),
        so that training is fast and attributions still land on genes.
        ``None`` feeds the genes straight into a trainable first layer (slower).
    hidden
        Widths of the hidden layers of the MLP.
    n_epochs
        Passes over all pairs. ``None``: ``150_000 / n_cells`` clipped to
        [20, 100], so small data sets get enough optimisation steps while the
        cost stays linear in cells.
    batch_size
        Pairs per optimisation step.
    learning_rate
        Initial Adam learning rate; it decays to 0 on a cosine schedule.
    ignore
        Drop loss terms at or above this value (pairs the network treats as
        genuinely different); ``1.0`` keeps all.
    min_dist
        Map distance below which near pairs are no longer pulled together, as
        UMAP's ``min_dist``. The paper's loss (``min_dist=0``) pulls them with a
        force that does not fade as they meet, so each population collapses
        onto a point and cells of different types can land on the same spot;
        with a floor the far pairs spread each population out. Map units: with
        ``n_components=2`` populations lie about 2-10 apart. The default 0.2
        was chosen by benchmark (see the docs' benchmarks page).
    log_pull
        Share of the epochs, at the start of training, in which near pairs are
        pulled by ``-log(1 - p)`` instead of the paper's ``p`` (``p = F_cdf(d^2)``).
        The paper's pull fades as ``d ** -(n_components + 1)`` once a pair is apart,
        so a cell that lands between populations early on stays there, where a kNN
        vote misreads it; the log pull fades as ``1 / d`` and brings it back. Kept to
        the end, it also pulls neighbouring populations into each other and
        ``den.tl.cluster`` merges them (digits: ARI 0.84 instead of 0.89), so the
        default switches to the paper's term after half of the epochs. ``0`` is the
        paper's loss, ``1`` the log term throughout (see the docs' benchmarks page).
        The loss history changes scale at the switch (:func:`den.pl.history` marks it).
    input_noise
        Gaussian noise added to the network's inputs in training, in units of the
        typical distance between near partners (per input dimension), so that the
        network learns to place cells it has not seen: digits held out of training
        keep 0.962 of the training cells' kNN accuracy at the defaults (0.946 with
        the paper's loss and no noise); more noise helps held-out cells further but
        blurs the map (see the docs' benchmarks page). ``0`` turns it off.
    min_neighbors
        Closest neighbours every cell keeps as near pairs even when not mutual.
    n_far
        Far partners drawn per cell per epoch. ``None``: ``max(1, n_neighbors // 2)``.
        The loss balances near and far terms, so this sets noise and cost, not weight.
    uniform_far
        Share of far partners drawn uniformly; the rest are drawn with probability
        proportional to distance, as in the paper (``0`` reproduces it exactly).
        Uniform partners include cells of the same cluster, whose push spreads
        each cluster out and preserves local structure better (trustworthiness).
    device
        ``"auto"`` (one CUDA GPU if available, else CPU), ``"cpu"``, ``"cuda:0"``, ...
    random_state
        Seed for the PCA, pair sampling, weights and batching.
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
        ``params`` (the arguments), ``history`` (mean loss per epoch) and
        ``model`` (JSON config and weights; see :class:`den.DENModel`).

    Examples
    --------
    >>> import scanpy as sc, den
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> den.tl.embed(adata, progress_bar=False)
    >>> adata.obsm["X_den"].shape
    (700, 2)
    """
    start = logg.info("computing DEN embedding")
    seed = check_random_state(random_state)
    key_obsm, key_uns = ("X_den", "den") if key_added is None else (key_added, key_added)
    if n_epochs is None:
        n_epochs = int(np.clip(round(150_000 / max(adata.n_obs, 1)), 20, 100))
    if n_far is None:
        n_far = max(1, n_neighbors // 2)
    _check_params(
        n_components=n_components,
        n_neighbors=n_neighbors,
        n_epochs=n_epochs,
        batch_size=batch_size,
        ignore=ignore,
        min_dist=min_dist,
        log_pull=log_pull,
        input_noise=input_noise,
        min_neighbors=min_neighbors,
        n_pcs=n_pcs,
        n_far=n_far,
        uniform_far=uniform_far,
    )
    X = get_matrix(adata, layer)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if adata.n_obs < n_neighbors + 2:
        msg = f"den needs more cells than n_neighbors + 1 = {n_neighbors + 1}; got {adata.n_obs}. Lower `n_neighbors`."
        raise ValueError(msg)
    if use_rep is not None and use_rep not in adata.obsm:
        msg = f"use_rep={use_rep!r} is not in adata.obsm (available: {list(adata.obsm)}). Pass an existing key or None."
        raise KeyError(msg)
    dev = get_device(device)
    warn_if_counts(X, where)

    rng = np.random.default_rng(seed)
    config = {
        "n_genes": int(adata.n_vars),
        "var_names": [str(v) for v in adata.var_names],
        "n_components": int(n_components),
        "hidden": [int(h) for h in hidden],
        "n_pcs": None if n_pcs is None else int(min(n_pcs, adata.n_vars, adata.n_obs - 1)),
        "layer": layer,
    }
    with torch_seed(seed):
        model = DENModel.build(config)
    encoder = model.encoder
    rep_key = use_rep if use_rep is not None else ("X_pca" if "X_pca" in adata.obsm else None)
    if n_pcs is not None or rep_key is None:
        mean, components, variance = pca(X, config["n_pcs"] or 50, random_state=seed)
        scale = float(np.sqrt(variance[0])) if variance[0] > 0 else 1.0
        projection = encoder.projection or input_projection(adata.n_vars, components.shape[1])
        set_pca(projection, mean, components, scale)
        # the frozen layer's output, computed as inference computes it
        pcs = np.concatenate(list(model.project(X, adata.var_names, projection)))
    rep = np.asarray(adata.obsm[rep_key], dtype=np.float32) if rep_key is not None else pcs
    if not np.isfinite(rep).all():
        msg = f"adata.obsm[{rep_key!r}] contains NaN or infinite values; recompute it or pass another `use_rep`."
        raise ValueError(msg)
    logg.debug(f"    kNN graph on {rep_key or 'den PCA'} ({rep.shape[1]} dims)")
    knn_idx, _ = knn(rep, n_neighbors, random_state=seed)
    near = near_pairs(knn_idx, min_neighbors=min_neighbors)

    if n_pcs is not None:
        inputs = torch.from_numpy(pcs).to(dev)
        net = encoder.mlp
    else:
        net = encoder

        def inputs(idx: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(dense_rows(X, idx)).to(dev)

    net.to(dev)
    with training_threads(dev):  # one torch thread on CPU: see den._utils.training_threads
        history = train_embedding(
            net,
            inputs,
            rep,
            near,
            n_far=n_far,
            uniform_far=uniform_far,
            n_components=n_components,
            n_epochs=n_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            ignore=ignore,
            min_dist=min_dist,
            log_pull=log_pull,
            input_noise=input_noise,
            rng=rng,
            device=dev,
            progress_bar=progress_bar,
        )
    encoder.eval()
    coords = model.embed(X, adata.var_names, device=str(dev))  # the same path as den.tl.transform
    encoder.cpu().eval()

    params = {
        "layer": layer,
        "use_rep": rep_key,
        "n_components": n_components,
        "n_neighbors": n_neighbors,
        "n_pcs": n_pcs,
        "hidden": list(hidden),
        "n_epochs": n_epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "ignore": ignore,
        "min_dist": min_dist,
        "log_pull": log_pull,
        "input_noise": input_noise,
        "min_neighbors": min_neighbors,
        "n_far": n_far,
        "uniform_far": uniform_far,
        "random_state": seed,
        "device": str(dev),
        "n_near_pairs": len(near[0]),
    }
    adata = adata.copy() if copy else adata
    make_actual(adata)
    adata.obsm[key_obsm] = coords
    adata.uns[key_uns] = {
        "params": _h5ad_safe(params),
        "history": {"loss": np.asarray(history, dtype=np.float64)},
        "model": model.to_uns(),
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    {key_obsm!r}, DEN coordinates (adata.obsm)\n    {key_uns!r}, parameters, history and model (adata.uns)",
    )
    return adata if copy else None


def _h5ad_safe(params: dict) -> dict:
    """h5ad cannot store None: record it as the string "None"."""
    return {k: ("None" if v is None else v) for k, v in params.items()}


def _check_params(
    *,
    n_components,
    n_neighbors,
    n_epochs,
    batch_size,
    ignore,
    min_dist,
    log_pull,
    input_noise,
    min_neighbors,
    n_pcs,
    n_far,
    uniform_far,
) -> None:
    rules = {
        "n_components": (n_components, n_components >= 1, "an integer >= 1"),
        "n_neighbors": (n_neighbors, n_neighbors >= 1, "an integer >= 1"),
        "n_epochs": (n_epochs, n_epochs >= 1, "an integer >= 1"),
        "batch_size": (batch_size, batch_size >= 2, "an integer >= 2"),
        "ignore": (ignore, 0 < ignore <= 1, "a number in (0, 1]"),
        "min_dist": (min_dist, 0 <= min_dist < np.inf, "a finite number >= 0"),
        "log_pull": (log_pull, 0 <= log_pull <= 1, "a number in [0, 1]"),
        "input_noise": (input_noise, 0 <= input_noise < np.inf, "a finite number >= 0"),
        "min_neighbors": (min_neighbors, min_neighbors >= 0, "an integer >= 0"),
        "n_pcs": (n_pcs, n_pcs is None or n_pcs >= 1, "None or an integer >= 1"),
        "n_far": (n_far, n_far >= 1, "an integer >= 1"),
        "uniform_far": (uniform_far, 0 <= uniform_far <= 1, "a number in [0, 1]"),
    }
    for name, (value, ok, rule) in rules.items():
        if not ok:
            msg = f"Invalid {name}={value!r}; it must be {rule}."
            raise ValueError(msg)
