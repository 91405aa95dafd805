"""`den.tl.embed`: train the DEN network on an AnnData and write the map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from scanpy import logging as logg

from den._config import EmbedConfig
from den._data import Features, check_names, get_matrix, warn_if_counts
from den._embedding import fit_embedding, warn_if_collapsed
from den._estimator import encode_labels
from den._utils import check_random_state, make_actual

if TYPE_CHECKING:
    from anndata import AnnData


def embed(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    labels_key: str | None = None,
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
        frozen PCA layer (a PCA of the genes; not written into ``adata``).
    labels_key
        Semi-supervised: a column of ``adata.obs`` with known labels; missing values
        (NaN) mark unlabelled cells. Labelled cells add same-label near pairs, near
        pairs with different labels are dropped, and (``label_head=True``) a head learns
        the labels from the map.
    n_components, n_neighbors, n_pcs, hidden, loss, dof, n_far, n_epochs, batch_size, learning_rate, min_dist, input_noise, ignore, label_weight, label_head
        See :class:`den.DEN`.
    device
        ``"auto"`` (one CUDA GPU if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
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
        near pairs, seed, device), ``history`` (mean loss per epoch) and ``model`` (JSON
        config and weights; see :class:`den.DENModel`).

    Examples
    --------
    >>> import scanpy as sc, den
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> den.tl.embed(adata, progress_bar=False)
    >>> adata.obsm["X_den"].shape
    (700, 2)
    """
    start = logg.info("computing DEN embedding")
    args = {k: v for k, v in locals().items() if k in EmbedConfig.names()}
    config = EmbedConfig(**args, encoder="mlp")
    key_obsm, key_uns = ("X_den", "den") if key_added is None else (key_added, key_added)
    X = get_matrix(adata, layer)
    check_names(adata)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    rep_key = _rep_key(adata, use_rep)
    rep = None if rep_key is None else _representation(adata, rep_key)
    codes, classes = _labels(adata, labels_key)
    warn_if_counts(X, where)
    seed = check_random_state(random_state)
    fit = fit_embedding(
        Features(X, adata.var_names),
        config,
        seed=seed,
        rep=rep,
        labels=codes,
        label_categories=classes,
        layer=layer,
        progress_bar=progress_bar,
    )
    coords = fit.model.embed(X, adata.var_names, device=device, check=False)  # the same path as den.tl.transform
    warn_if_collapsed(coords)
    params = config.to_dict() | {"layer": layer, "use_rep": rep_key, "labels_key": labels_key}
    params.pop("encoder")
    resolved = {
        "n_epochs": fit.n_epochs,
        "n_neighbors": fit.n_neighbors,
        "n_near_pairs": fit.n_near_pairs,
        "random_state": fit.seed,
        "device": str(device),
    }

    adata = adata.copy() if copy else adata
    make_actual(adata)
    adata.obsm[key_obsm] = coords
    adata.uns[key_uns] = {
        "params": params,
        "fit": resolved,
        "history": {"loss": np.asarray(fit.history, dtype=np.float64)},
        "model": fit.model.to_uns(),
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    {key_obsm!r}, DEN coordinates (adata.obsm)\n    {key_uns!r}, parameters, history and model (adata.uns)",
    )
    return adata if copy else None


def _rep_key(adata: AnnData, use_rep: str | None) -> str | None:
    if use_rep is None:
        return "X_pca" if "X_pca" in adata.obsm else None
    if use_rep not in adata.obsm:
        msg = f"use_rep={use_rep!r} is not in adata.obsm (available: {list(adata.obsm)}). Pass an existing key or None."
        raise KeyError(msg)
    return use_rep


def _representation(adata: AnnData, key: str) -> np.ndarray:
    rep = np.asarray(adata.obsm[key], dtype=np.float32)
    if rep.ndim != 2 or not np.isfinite(rep).all():
        msg = f"adata.obsm[{key!r}] must be a finite 2-D array (cells x dimensions); recompute it or pass another `use_rep`."
        raise ValueError(msg)
    return rep


def _labels(adata: AnnData, labels_key: str | None):
    if labels_key is None:
        return None, None
    if labels_key not in adata.obs:
        msg = f"labels_key={labels_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    codes, classes = encode_labels(
        adata.obs[labels_key].astype(object).where(adata.obs[labels_key].notna(), None), adata.n_obs
    )
    return codes, [str(c) for c in classes]
