"""`den.tl.transform`: place new cells on a trained map without refitting."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scanpy import logging as logg

from den._data import check_query_scale, get_matrix, trained_matrix
from den._model import DENModel, fingerprint
from den._utils import check_copy, check_key_name, make_actual, uns_owner

from ._batches import query_batches, training_batches
from ._cluster_results import cluster_columns, labels_as_learnt, relabel, write_clusters, written_labels

#: where den.tl.cluster writes by default; transform reads it when present, without asking
DEFAULT_CLUSTER_KEY = "den_clusters"

if TYPE_CHECKING:
    from anndata import AnnData


def transform(
    adata: AnnData,
    reference: AnnData | DENModel | str | Path,
    *,
    key: str = "den",
    cluster_key: str | None = DEFAULT_CLUSTER_KEY,
    layer: str | None = None,
    batch_key: str | None = None,
    key_added: str | None = None,
    device: str = "auto",
    copy: bool = False,
) -> AnnData | None:
    """Embed (and assign to clusters) new cells with a trained DEN model.

    Each cell is mapped on its own by the network in evaluation mode, so its
    coordinates never depend on which other cells are in the query, except with a
    batch-centring model (``embed(batch_key=..., batch_centering=True)``): there each
    query batch is centred on its own mean, which assumes the batch holds a mix of
    the cell types like the reference's batches (a batch of one sorted population
    is moved). Genes are matched by name and reordered as needed.

    Parameters
    ----------
    adata
        Query cells, normalised like the reference.
    reference
        An AnnData on which :func:`den.tl.embed` ran, a :class:`den.DENModel`,
        or a folder written by :meth:`den.DENModel.save`.
    key
        ``uns`` key of the embedding model when ``reference`` is an AnnData.
    cluster_key
        ``uns`` key of the clustering model when ``reference`` is an AnnData;
        also the key the query's cluster results are written under. ``None``: the map
        only, without clusters (e.g. for a clustering made on an earlier embedding).
    layer
        Query layer to read; default: the layer the model was trained on.
    batch_key
        For a model trained with ``batch_key`` and ``batch_centering`` (a batch-centring
        model): the column of ``adata.obs`` naming each query cell's batch; each batch is
        centred on its own, so new batches need no refitting. Without it the whole query is
        one batch. Ignored (not needed) for other models.
    key_added
        ``obsm`` key for the coordinates; default ``"X_den"`` (or ``key`` when it is not ``"den"``).
    device
        ``"auto"``, ``"cpu"``, ``"cuda:0"``, ...
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None`` or, with ``copy=True``, a copy of ``adata``, with

    `adata.obsm['X_den' | key_added]` : :class:`numpy.ndarray`
        Coordinates on the reference map.
    `adata.obs[cluster_key]`, `adata.obsm[cluster_key + '_proba']`, `adata.obs[cluster_key + '_confidence']`
        Cluster labels, probabilities and confidence, when the reference has a clustering. When the
        reference's clusters were renamed or merged since :func:`den.tl.cluster` (annotation), the
        labels carry its names and the confidence sums the merged clusters' probabilities; the
        probabilities keep one column per cluster of the network.
    `adata.uns[cluster_key + '_colors']`
        The reference's cluster colours, when it has them for the same clusters (as :func:`scanpy.tl.ingest`).
    """
    start = logg.info("placing cells on the DEN map")
    check_copy(adata, copy)
    for name, param in ((key_added, "key_added"), (cluster_key, "cluster_key")):
        if name is not None:
            check_key_name(name, param)
    model = _resolve_reference(reference, key=key, cluster_key=cluster_key)
    key_obsm = key_added or ("X_den" if key == "den" else key)
    _check_own_results(adata, model, key_obsm, cluster_key)
    X = (
        get_matrix(adata, layer)
        if layer is not None
        else trained_matrix(adata, model.config.get("layer"), layer_option=True)
    )
    cols = model.gene_index(adata.var_names)  # raises before anything is written
    check_query_scale(model.config.get("input_stats"), X if cols is None else _columns(X, cols), "The query")
    batches = query_batches(adata, batch_key, model)
    coords = model.embed(X, adata.var_names, device=device, check=False, batches=batches)
    proba = (
        model.predict_proba(X, adata.var_names, device=device, check=False, batches=batches)
        if model.has_clusters and cluster_key is not None  # None: the map alone, whatever the reference
        else None
    )
    if not np.isfinite(coords).all() or (proba is not None and not np.isfinite(proba).all()):
        msg = (
            "The model returned non-finite coordinates for this query. Check that the query holds no inf values "
            "and is normalised as the reference was."
        )
        raise FloatingPointError(msg)
    clusters = None if proba is None else cluster_columns(proba, model.cluster_config["categories"])
    names = None if proba is None else _annotation(reference, model, key, cluster_key, device)
    if names is not None:  # the reference's clusters were renamed or merged since den.tl.cluster: use its names
        clusters = relabel(clusters, model.cluster_config["categories"], *names)

    adata = adata.copy() if copy else adata
    make_actual(adata)
    adata.obsm[key_obsm] = coords
    if clusters is not None:
        write_clusters(adata, clusters, cluster_key)
        _copy_colors(adata, reference, cluster_key)
    logg.info("    finished", time=start, deep=f"added\n    {key_obsm!r}, DEN coordinates (adata.obsm)")
    return adata if copy else None


def _annotation(reference, model: DENModel, key: str, cluster_key: str, device: str):
    """``(network cluster -> name, names in order)`` when the reference's clusters were renamed or merged, else None.

    The network's cluster of every reference cell is set against its current label; each network
    cluster must carry one label (>= 95 % of its cells), else a warning and the network's names.
    """
    if not hasattr(reference, "obs") or cluster_key not in reference.obs:
        return None
    network = [str(c) for c in model.cluster_config["categories"]]
    if labels_as_learnt(reference, cluster_key, network):
        return None
    current = reference.obs[cluster_key]
    own = written_labels(reference, cluster_key, network)
    if own is None:  # the probabilities are gone: ask the network
        X = trained_matrix(reference, model.config.get("layer"))
        batches = training_batches(reference, model, key, where="reference")
        proba = model.predict_proba(X, reference.var_names, device=device, check=False, batches=batches)
        own = np.asarray(network)[proba.argmax(1)]
    known = current.notna().to_numpy()  # cells without a label say nothing about the names
    table = pd.crosstab(own[known], current[known].astype(str).to_numpy())
    if (table.max(1) < 0.95 * table.sum(1)).any():
        warnings.warn(
            f"reference.obs[{cluster_key!r}] was edited since `den.tl.cluster` beyond renaming or merging clusters; "
            "the query gets the clustering network's own names. Run `den.tl.cluster` again to learn the new groups.",
            UserWarning,
            stacklevel=3,
        )
        return None
    unseen = [c for c in network if c not in table.index]  # no reference cell in it: keeps its own name
    order = [str(c) for c in (current.cat.categories if hasattr(current, "cat") else sorted(table.columns))]
    return table.idxmax(1).to_dict() | {c: c for c in unseen}, order + [c for c in unseen if c not in order]


def _check_own_results(adata: AnnData, model: DENModel, key_obsm: str, cluster_key: str | None) -> None:
    """Refuse to write another model's map or clusters over den results ``adata`` holds.

    Its ``uns`` would still hold those networks, which den.tl.cluster and the SHAP tools read
    with the new coordinates and labels. The reference's own model (``transform(adata, adata)``) is fine.
    """
    own_key = "den" if key_obsm == "X_den" else key_obsm
    fix = "Pass key_added= (e.g. 'X_den_reference') to keep both maps"
    _refuse_other(
        adata, own_key, "embed", model.to_uns(), "another den map", f"coordinates over obsm[{key_obsm!r}]", fix
    )
    if model.has_clusters and cluster_key is not None:
        written = f"clusters over obs[{cluster_key!r}]"
        fix = "Pass cluster_key=None for the map alone"
        _refuse_other(adata, cluster_key, "cluster", model.cluster_to_uns(), "other den clusters", written, fix)


def _refuse_other(adata: AnnData, key: str, tool: str, ours: dict, what: str, written: str, fix: str) -> None:
    """An error when ``adata.uns[key]`` holds a ``tool`` network other than ``ours`` (compared by weights)."""
    entry = adata.uns.get(key)
    if uns_owner(entry) == tool and fingerprint(entry["model"]) != fingerprint(ours):
        msg = (
            f"adata holds {what} (adata.uns[{key!r}]: den.tl.{tool} on these cells, or a copy of an earlier one); "
            f"transform would write the reference's {written} while the tools reading uns[{key!r}] use that other "
            f"network. {fix}, or delete adata.uns[{key!r}] first."
        )
        raise ValueError(msg)


def _copy_colors(adata: AnnData, reference, cluster_key: str) -> None:
    """The reference's cluster colours (``uns[cluster_key + '_colors']``) for the same clusters, as ``sc.tl.ingest``."""
    colors = getattr(reference, "uns", {}).get(f"{cluster_key}_colors")
    own = reference.obs.get(cluster_key) if hasattr(reference, "obs") else None
    if colors is None or not isinstance(own, pd.Series) or not hasattr(own, "cat"):
        return
    categories = list(own.cat.categories)
    if categories == list(adata.obs[cluster_key].cat.categories) and len(colors) == len(categories):
        adata.uns[f"{cluster_key}_colors"] = np.asarray(colors, dtype=object)


def _columns(X, cols: np.ndarray):
    """The model's genes of ``X`` (for the scale check: a sample of rows is enough)."""
    rows = np.unique(np.linspace(0, X.shape[0] - 1, min(2000, X.shape[0])).astype(int))
    return X[rows][:, cols]


def _resolve_reference(reference, *, key: str, cluster_key: str | None) -> DENModel:
    if isinstance(reference, DENModel):
        return reference
    if isinstance(reference, str | Path):
        return DENModel.load(reference)
    if hasattr(reference, "uns"):
        if cluster_key not in (None, DEFAULT_CLUSTER_KEY) and cluster_key not in reference.uns:  # asked for, absent
            msg = (
                f"cluster_key={cluster_key!r} is not in reference.uns; pass the key_added of den.tl.cluster, "
                "or cluster_key=None for the map alone."
            )
            raise KeyError(msg)
        return DENModel.from_adata(reference, key=key, cluster_key=cluster_key)
    msg = f"`reference` must be an AnnData, a den.DENModel or a model folder, not {type(reference).__name__}."
    raise TypeError(msg)
