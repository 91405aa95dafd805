"""Shared by the SHAP tools: which network explains which grouping, samples and group means."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from den._data import get_matrix, looks_like_counts, missing_label_texts, sample_values
from den._model import DENModel, load_arrays, state_arrays
from den._ondisk import OnDiskRows, is_lazy
from den._utils import torch_seed
from den.nn import ClusterHead
from den.train import fit_classifier

from ._batches import gene_shift, training_batches
from ._cluster_results import labels_as_learnt

if TYPE_CHECKING:
    from anndata import AnnData


#: groups with fewer cells get a warning
MIN_GROUP_CELLS = 5
#: log1p-normalised values stay far below this (log1p of 1e13); larger ones are counts or another scale
MAX_LOG1P = 30.0
#: an integer obs column with more distinct values than this is taken for a measurement, not groups
MAX_INTEGER_GROUPS = 100


@dataclass
class GroupNetwork:
    """A network from genes to one logit per group, and the grouping it explains."""

    model: DENModel
    net: nn.Module
    categories: list[str]  #: output i <-> categories[i]
    labels: pd.Categorical  #: each cell's group
    X: object  #: the matrix the model reads
    head: dict | None  #: weights + config of a head trained here (None for den's own clustering)
    #: batch-centring models: each batch's gene means minus all cells' (batches x model genes), each cell's batch
    batch_shift: tuple[np.ndarray, np.ndarray] | None = None


def group_network(
    adata: AnnData,
    groupby: str,
    *,
    key: str,
    random_state: int,
    head_epochs: int = 30,
    stored_head: dict | None = None,
) -> GroupNetwork:
    """The network that explains ``groupby``.

    For a den clustering (``uns[groupby]`` holds its model) this is den's
    clustering network. For any other categorical column, a cluster head is
    trained on the DEN embedding to predict it (or ``stored_head`` is reused).
    """
    labels = grouping(adata, groupby)
    uentry = adata.uns.get(groupby)
    own = isinstance(uentry, dict) and "model" in uentry
    model = DENModel.from_adata(adata, key=key, cluster_key=groupby if own else None)
    X = get_matrix(adata, model.config.get("layer"))
    model.gene_index(adata.var_names, query=False)
    network_cats = [str(c) for c in model.cluster_config["categories"]] if own and model.has_clusters else None
    # the clustering network, unless its labels were edited since (e.g. renamed): then a head on the labels as they are
    if network_cats is not None and labels_as_learnt(adata, groupby, network_cats):
        cats = network_cats
        return GroupNetwork(model, model.cluster_net, cats, labels, X, None, _batch_shift(adata, model, X, key))
    if (labels.codes < 0).any():  # the clustering network explains only its own labels; a head needs every cell's
        msg = (
            f"adata.obs[{groupby!r}] has missing values in {int((labels.codes < 0).sum())} cells and is no longer "
            "den.tl.cluster's labels (edited since); fill or drop them first."
        )
        raise ValueError(msg)
    cats = [str(c) for c in labels.categories]
    k = len(cats)
    emb_key = "X_den" if key == "den" else key
    head = ClusterHead(model.config["n_components"], k)
    if stored_head is not None and json.loads(str(stored_head["config"]))["categories"] == cats:
        load_arrays(head, stored_head["weights"], "the stored group head")
    else:
        with torch_seed(random_state):
            head = ClusterHead(model.config["n_components"], k)
        fit_classifier(
            head,
            np.asarray(adata.obsm[emb_key], dtype=np.float32),
            labels.codes.astype(np.int64),
            n_epochs=head_epochs,
            batch_size=512,
            learning_rate=1e-3,
            seed=random_state,
            device=torch.device("cpu"),
        )
    head.eval()
    stored = {"config": json.dumps({"categories": cats, "groupby": groupby}), "weights": state_arrays(head)}
    net = nn.Sequential(model.encoder, head).eval()
    return GroupNetwork(model, net, cats, labels, X, stored, _batch_shift(adata, model, X, key))


def grouping(adata: AnnData, groupby: str) -> pd.Categorical:
    """The groups of ``adata.obs[groupby]`` (categories with cells), or an error naming what makes it no grouping.

    NaN is allowed in a den clustering (its network explains the labelled cells); a tool that
    needs every cell's group checks that itself.
    """
    if groupby not in adata.obs:
        hint = " Run `den.tl.cluster(adata)` first." if groupby == "den_clusters" else ""
        msg = f"groupby={groupby!r} is not a column of adata.obs.{hint}"
        raise KeyError(msg)
    col = adata.obs[groupby]
    if col.isna().any() and not (isinstance(adata.uns.get(groupby), dict) and "model" in adata.uns[groupby]):
        msg = f"adata.obs[{groupby!r}] has missing values; fill or drop them first."
        raise ValueError(msg)
    if not isinstance(col.dtype, pd.CategoricalDtype):
        if col.dtype.kind == "f":
            msg = (
                f"adata.obs[{groupby!r}] is numeric; explaining groups needs a categorical grouping. Pass a column of "
                "groups (e.g. clusters, or bins of this value made with pandas.cut)."
            )
            raise ValueError(msg)
        if col.dtype.kind in "iu" and col.nunique() > MAX_INTEGER_GROUPS:
            msg = (
                f"adata.obs[{groupby!r}] holds {col.nunique()} distinct integers: a measurement (such as counts), "
                "not groups. Marker features need a categorical grouping; if these are groups, pass "
                f"`adata.obs[{groupby!r}] = adata.obs[{groupby!r}].astype('category')` first."
            )
            raise ValueError(msg)
        col = col.astype(str).astype("category")
    labels = pd.Categorical(col).remove_unused_categories()  # subsetting leaves empty categories behind
    texts = [t for t in missing_label_texts(labels.categories) if t != "-1"]  # -1: a real group (HDBSCAN's noise)
    if texts:
        msg = (
            f"adata.obs[{groupby!r}] holds {texts[0]!r} as a group: missing values turned into text (e.g. by "
            "astype(str))? Drop those cells or name their group."
        )
        raise ValueError(msg)
    if len(labels.categories) < 2:
        msg = (
            f"adata.obs[{groupby!r}] has {len(labels.categories)} group(s) with cells; explaining groups needs at "
            "least two. Pass a groupby with two or more groups (den.tl.cluster with a higher resolution finds more)."
        )
        raise ValueError(msg)
    if labels.value_counts().min() < MIN_GROUP_CELLS:
        tiny = labels.value_counts()[labels.value_counts() < MIN_GROUP_CELLS].to_dict()
        warnings.warn(
            f"Groups of adata.obs[{groupby!r}] with fewer than {MIN_GROUP_CELLS} cells ({tiny}): their marker "
            "genes rest on a handful of cells.",
            UserWarning,
            stacklevel=4,
        )
    return labels


def _batch_shift(adata: AnnData, model: DENModel, X, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """For a batch-centring model: what to subtract from each cell's genes so the network sees it centred.

    ``x - mean of its batch + mean of all cells`` has the PCA-layer output of the centred
    cell (the layer is linear and centred on the training cells' mean).
    """
    batches = training_batches(adata, model, key)
    return None if batches is None else gene_shift(X, batches, model.gene_index(adata.var_names))


def check_sizes(**sizes: int) -> None:
    """Each named size must be an integer >= 1 (cells to explain, background cells)."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            msg = f"Invalid {name}={value!r}: it must be an integer >= 1."
            raise ValueError(msg)


def sample_cells(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` indices where ``mask`` is true, sorted, drawn without replacement."""
    idx = np.flatnonzero(mask)
    if len(idx) > n:
        idx = np.sort(rng.choice(idx, n, replace=False))
    return idx


def stratified_background(labels: pd.Categorical, n: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n`` cells, drawn per group in proportion to its size (at least one each)."""
    codes = np.asarray(labels.codes)
    total = len(codes)
    picks = []
    for c in np.unique(codes[codes >= 0]):
        members = np.flatnonzero(codes == c)
        m = max(1, round(n * len(members) / total))
        picks.append(rng.choice(members, min(m, len(members)), replace=False))
    return np.sort(np.concatenate(picks))


def rows(gn: GroupNetwork, adata: AnnData, idx: np.ndarray) -> np.ndarray:
    """Dense float32 model inputs of the cells ``idx`` (centred on their batch for a batch-centring model)."""
    block = gn.model.inputs(gn.X, adata.var_names, idx)
    if gn.batch_shift is None:
        return block
    shift, codes = gn.batch_shift
    return block - shift[codes[idx]]


def log_means(
    adata: AnnData, gn: GroupNetwork, masks: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray] | None, str]:
    """Per-mask gene means on a log1p scale, for fold changes, and where they came from.

    Uses ``adata.raw`` when it holds the model's genes on a log1p scale (scanpy's
    convention), else the model's input when it is; otherwise (scaled data with
    negative values, raw counts, values beyond :data:`MAX_LOG1P`) returns ``None``.
    """
    genes = gn.model.var_names
    candidates = []
    if adata.raw is not None and genes.isin(adata.raw.var_names).all():
        raw = adata.raw.X
        candidates.append(("raw", OnDiskRows(raw) if is_lazy(raw) else raw, adata.raw.var_names.get_indexer(genes)))
    candidates.append(
        ("X" if gn.model.config.get("layer") is None else "layer", gn.X, gn.model.gene_index(adata.var_names))
    )
    for name, M, cols in candidates:
        values = sample_values(M)
        if looks_like_counts(values) or (values.size and values.max() > MAX_LOG1P) or _smallest(M) < 0:
            continue
        sums = {label: np.zeros(M.shape[1]) for label in masks}
        for start, block in _blocks(M):  # one pass over row blocks (on-disk input stays on disk)
            for label, mask in masks.items():
                sums[label] += np.asarray(block[mask[start : start + block.shape[0]]].sum(0, dtype=np.float64)).ravel()
        out = {}
        for label, mask in masks.items():
            mean = np.asarray(sums[label]).ravel() / max(int(mask.sum()), 1)
            out[label] = mean if cols is None else mean[cols]
        return out, name
    return None, "none (neither adata.raw nor the model's input is on a non-negative log1p scale)"


def _blocks(M, chunk: int = 8192):
    """``(first row, CSR or dense block)`` for consecutive row blocks of ``M``."""
    for start in range(0, M.shape[0], chunk):
        block = M[start : start + chunk]
        yield start, (sparse.csr_matrix(block) if sparse.issparse(block) else np.asarray(block))


def _smallest(M) -> float:
    if sparse.issparse(M):
        return float(M.data.min()) if M.nnz else 0.0
    values = [b.data.min() if sparse.issparse(b) and b.nnz else np.min(b) for _, b in _blocks(M) if b.shape[0]]
    return float(min(values)) if values else 0.0


def log2_fold_change(mean_a: np.ndarray, mean_b: np.ndarray) -> np.ndarray:
    """Scanpy's fold change of log1p means: log2((expm1(a) + 1e-9) / (expm1(b) + 1e-9))."""
    return np.log2((np.expm1(mean_a) + 1e-9) / (np.expm1(mean_b) + 1e-9))
