"""`den.tl.transfer_labels`: labels from the reference for query cells; reading both matrices for the mapping tools."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg
from torch import nn

from den._classifier import train_classifier
from den._config import ClusterConfig
from den._data import check_query_scale, get_matrix, label_order, missing_label_texts, trained_matrix
from den._estimator import unlabelled
from den._model import DENModel
from den._utils import check_copy, check_flags, check_key_added, check_random_state, make_actual, predict, softmax

from ._batches import query_batches, training_batches
from ._cluster_results import cluster_columns, write_clusters
from ._transform import _columns

if TYPE_CHECKING:
    from anndata import AnnData


def transfer_labels(
    adata: AnnData,
    reference: AnnData,
    obs: str,
    *,
    key: str = "den",
    batch_key: str | None = None,
    head_epochs: int = 30,
    finetune_epochs: int = 10,
    batch_size: int = 512,
    random_state: int | None = 0,
    device: str = "auto",
    key_added: str | None = None,
    progress_bar: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Transfer a column of labels from the reference to the query, with calibrated probabilities.

    A classifier with the architecture of den's clustering network (a copy of the
    reference's trained encoder, cut at its last hidden layer, and a linear head) learns
    ``reference.obs[obs]`` from the reference's genes: first the head alone, then head and
    encoder copy end to end. Its probabilities are temperature-scaled with a temperature
    fitted on cells it did not train on, which also measure their expected calibration
    error (cross-fitted in two halves): a stratified 20 % held out of training or, below
    5,000 labelled cells, the out-of-fold predictions of 5 fold classifiers (the classifier
    used then trains on every labelled cell). The reference is not modified. As
    ``sc.tl.ingest(obs=...)``, but the classifier reads genes, so query cells are labelled
    one by one, independently of the rest of the query. Pair it with
    :func:`den.tl.mapping_score` to flag cells that match nothing in the reference.

    Parameters
    ----------
    adata
        Query cells, normalised like the reference.
    reference
        AnnData on which :func:`den.tl.embed` ran, with the labels in ``obs``.
    obs
        Column of ``reference.obs`` to transfer; missing values (NaN) and ``-1`` mark cells left out of
        training, as in :func:`den.tl.embed`'s ``labels_key``.
    key
        ``uns`` key of the reference's embedding model.
    batch_key
        Query batches, for a batch-centring reference model (as in :func:`den.tl.transform`).
    head_epochs, finetune_epochs, batch_size
        Training of the classifier, as in :func:`den.tl.cluster`.
    random_state
        Seed of the held-out split (or folds) and the training.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    key_added
        Query ``obs`` column of the labels; default ``obs`` (a column the query already has is
        replaced, as by :func:`scanpy.tl.ingest`, with a warning).
    progress_bar
        Show progress bars.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None`` or, with ``copy=True``, a copy of ``adata``, with

    `adata.obs[key_added]` : :class:`pandas.Categorical`
        Transferred labels, as the reference's values (integer or boolean labels stay so).
    `adata.obs[key_added + '_confidence']`, `adata.obsm[key_added + '_proba']`
        Largest calibrated probability, and all of them (columns: ``uns[key_added]['categories']``).
    `adata.uns[key_added]` : :class:`dict`
        ``params``, ``categories`` and ``calibration`` (``temperature``, ``ece`` on unseen cells
        before and after scaling, ``n_evaluated`` and the ``method``).
    """
    start = logg.info(f"transferring {obs!r} from the reference")
    check_copy(adata, copy)
    check_flags(progress_bar=progress_bar)
    out_key = obs if key_added is None else key_added
    check_key_added(adata, out_key, "transfer_labels")
    ClusterConfig(head_epochs=head_epochs, finetune_epochs=finetune_epochs, batch_size=batch_size)  # cluster's rules
    model = _model(reference, key)
    labels, categories = _reference_labels(reference, obs)
    seed = check_random_state(random_state)
    inputs = _inputs(model, reference, adata, key, batch_key)
    # once the inputs are checked, before the training (the user may stop it)
    what = "the labels transferred from the reference"
    warn_if_replacing(adata, out_key, what, ours=lambda e: "calibration" in e, suffix="_transferred")
    ref_front, query_front = _fronts(model, reference, adata, inputs)
    known = labels >= 0
    trained = train_classifier(
        model,
        ref_front[known],
        labels[known],
        head_epochs=head_epochs,
        finetune_epochs=finetune_epochs,
        batch_size=batch_size,
        device=device,
        seed=seed,
        progress_bar=progress_bar,
        name="label",
        cross_fit=True,
    )
    classifier = nn.Sequential(trained.net[0].body, trained.net[1])
    logits = predict(classifier, [query_front], device=torch.device("cpu"))
    columns = cluster_columns(softmax(logits, trained.calibration["temperature"]), categories)
    columns["labels"] = _as_reference_values(columns["labels"], reference.obs[obs])
    params = {
        "obs": obs,
        "embedding_key": key,
        "head_epochs": head_epochs,
        "finetune_epochs": finetune_epochs,
        "batch_size": batch_size,
        "random_state": seed,
    }
    adata = adata.copy() if copy else adata
    make_actual(adata)
    write_clusters(adata, columns, out_key)
    adata.uns[out_key] = {"params": params, "categories": list(categories), "calibration": dict(trained.calibration)}
    logg.info("    finished", time=start, deep=f"added\n    {out_key!r}, labels, confidence, probabilities")
    return adata if copy else None


def warn_if_replacing(adata: AnnData, key: str, what: str, *, ours, suffix: str) -> None:
    """Say when ``what`` replaces a column of the query's own, as ingest does silently.

    ``ours(entry)``: whether ``adata.uns[key]`` is the tool's own earlier result (then it is replaced quietly).
    """
    earlier = adata.uns.get(key)
    if key in adata.obs and not (isinstance(earlier, dict) and ours(earlier)):
        msg = (
            f"adata.obs[{key!r}] (the query's own column) is replaced by {what}; pass key_added (e.g. "
            f"key_added={key + suffix!r}) to keep both."
        )
        warnings.warn(msg, UserWarning, stacklevel=3)


def _model(reference, key: str) -> DENModel:
    if not hasattr(reference, "uns"):
        msg = f"`reference` must be the AnnData den.tl.embed ran on, not {type(reference).__name__}."
        raise TypeError(msg)
    return DENModel.from_adata(reference, key=key, cluster_key=None)


def _reference_labels(reference: AnnData, obs: str) -> tuple[np.ndarray, list[str]]:
    if obs not in reference.obs:
        msg = f"obs={obs!r} is not a column of reference.obs (columns: {list(reference.obs.columns)})."
        raise KeyError(msg)
    column = reference.obs[obs]
    known = ~unlabelled(column)  # NaN or -1, as den.tl.embed(labels_key=...) reads them
    values = column.astype(str).to_numpy()
    categories = label_order(column[known])
    texts = missing_label_texts(categories)
    if texts:
        msg = (
            f"reference.obs[{obs!r}] holds {texts[0]!r} as a label: missing values turned into text (e.g. by "
            f"astype(str))? Mark them as NaN, e.g. reference.obs[{obs!r}].replace(['nan', ''], np.nan)."
        )
        raise ValueError(msg)
    if len(categories) < 2:
        msg = f"reference.obs[{obs!r}] holds {len(categories)} label(s); transferring needs at least 2."
        raise ValueError(msg)
    counts = pd.Series(values[known]).value_counts()
    if (counts < 2).any():
        single = sorted(counts.index[counts < 2])
        msg = (
            f"reference.obs[{obs!r}] has labels on a single cell: {single[:5]}; a label needs at least 2 cells to be "
            "learnt and calibrated. Merge them into another label or set them to NaN (unlabelled)."
        )
        raise ValueError(msg)
    codes = pd.Categorical(np.where(known, values, None), categories=categories).codes.astype(np.int64)
    return codes, categories


def _as_reference_values(labels: pd.Categorical, column: pd.Series) -> pd.Categorical:
    """``labels`` (categories as text) with the reference's own values: numbers and booleans stay so."""
    values = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column.dropna())
    if all(isinstance(v, str) for v in values):
        return labels
    by_text = {str(v): v for v in values}
    return labels.rename_categories([by_text[c] for c in labels.categories])


@dataclass(frozen=True)
class _Inputs:
    """Reference and query matrices, checked once, and each cell's batch (batch-centring models only)."""

    X_ref: object
    X_query: object
    ref_batches: np.ndarray | None
    query_batches: np.ndarray | None


def _inputs(model: DENModel, reference: AnnData, query: AnnData, key: str, batch_key: str | None) -> _Inputs:
    """Read and check both matrices (the query against the model) before any work."""
    layer = model.config.get("layer")
    X_ref, X_query = get_matrix(reference, layer), trained_matrix(query, layer)
    cols = model.gene_index(query.var_names)  # raises before any work if genes are missing
    check_query_scale(
        model.config.get("input_stats"), X_query if cols is None else _columns(X_query, cols), "The query"
    )
    return _Inputs(
        X_ref,
        X_query,
        training_batches(reference, model, key, where="reference"),
        query_batches(query, batch_key, model),
    )


def _fronts(model: DENModel, reference: AnnData, query: AnnData, inputs: _Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The frozen-front outputs (PCs) of reference and query."""
    ref = model.front_blocks(inputs.X_ref, reference.var_names, batches=inputs.ref_batches)
    q = model.front_blocks(inputs.X_query, query.var_names, batches=inputs.query_batches)
    return np.concatenate(list(ref)), np.concatenate(list(q))
