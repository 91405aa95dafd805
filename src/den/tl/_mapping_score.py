"""`den.tl.mapping_score`: does a query cell look like anything in the reference?"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from scanpy import logging as logg

from den._data import column_mean
from den._mapping import MAPPING_NEIGHBORS, mapping_scores, relative_scores
from den._pca import pca
from den._utils import check_copy, check_key_added, check_random_state, make_actual

from ._batches import batch_gene_means
from ._mapping import _fronts, _Inputs, _inputs, _model, warn_if_replacing

if TYPE_CHECKING:
    from anndata import AnnData

    from den._model import DENModel

#: ``against="query"``: reference cells in the kNN index, and cells of each side the joint PCA is fitted on
MAX_REFERENCE_CELLS = 50_000
MAX_PCA_CELLS = 10_000


def mapping_score(
    adata: AnnData,
    reference: AnnData,
    *,
    key: str = "den",
    batch_key: str | None = None,
    against: Literal["query", "reference"] = "query",
    n_neighbors: int = MAPPING_NEIGHBORS,
    random_state: int | None = 0,
    key_added: str = "den_mapping_score",
    copy: bool = False,
) -> AnnData | None:
    """Per query cell: how well the reference covers it, in ``[0, 1]``; near 0 flags a cell unlike the reference.

    ``against="query"`` (default): in a PCA of reference and query together (the model's genes,
    each batch centred as the model reads it), a cell's mean distance to its ``n_neighbors``
    nearest reference cells over its mean distance to its nearest other query cells, ranked
    robustly against the rest of the query (normal tail of the median/MAD-standardised log
    ratio). A population the reference lacks has close company in the query and none in the
    reference, and scores near 0; a batch effect that moves the whole query does not. The query
    is its own yardstick, so most of its cells must be of types the reference has.

    ``against="reference"``: a cell's distance to its nearest reference cells in the model's PCA
    space (plus its distance to that space) ranked against the same distance of every reference
    cell: the share of reference cells at least as far. It needs no assumption on the query, but
    a query from another batch or chemistry scores low as a whole.

    Either way, cells like the reference score roughly uniformly in ``[0, 1]``; below 0.01 is a
    reasonable flag.

    Parameters
    ----------
    adata
        Query cells, normalised like the reference.
    reference
        AnnData on which :func:`den.tl.embed` ran (its cells are the yardstick).
    key
        ``uns`` key of the reference's embedding model.
    batch_key
        Query batches, for a batch-centring reference model (as in :func:`den.tl.transform`).
    against
        ``"query"`` or ``"reference"``: what a cell's distance to the reference is ranked against.
    n_neighbors
        Neighbours per cell.
    random_state
        ``against="query"`` only: seed of the cell samples (the reference above 50,000 cells, the joint
        PCA's cells above 10,000 query or reference cells) and of the randomised PCA (above 2,000 genes).
    key_added
        ``obs`` column of the score; the parameters go to ``uns[key_added]``.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    Returns ``None`` or, with ``copy=True``, a copy of ``adata``, with `adata.obs[key_added]`
    and `adata.uns[key_added]['params']`.
    """
    start = logg.info("scoring how well the reference covers the query")
    check_copy(adata, copy)
    check_key_added(adata, key_added, "mapping_score")
    model = _model(reference, key)
    if model.encoder.projection is None:
        msg = "mapping_score needs a model with a PCA layer (den.tl.embed with n_pcs set, the default)."
        raise ValueError(msg)
    if not (isinstance(n_neighbors, int | np.integer) and not isinstance(n_neighbors, bool) and n_neighbors >= 1):
        msg = f"Invalid n_neighbors={n_neighbors!r}: it must be an integer >= 1."
        raise ValueError(msg)
    if against not in ("query", "reference"):
        msg = f"Invalid against={against!r}: use 'query' or 'reference'."
        raise ValueError(msg)
    if against == "query" and adata.n_obs < n_neighbors + 2:
        msg = (
            f"against='query' compares each cell with the rest of the query: it needs at least "
            f"n_neighbors + 2 = {n_neighbors + 2} query cells, not {adata.n_obs}. Pass against='reference'."
        )
        raise ValueError(msg)
    if against == "reference" and reference.n_obs < n_neighbors:
        msg = f"n_neighbors={n_neighbors} is more than the reference's {reference.n_obs} cells; pass fewer."
        raise ValueError(msg)
    seed = check_random_state(random_state)
    inputs = _inputs(model, reference, adata, key, batch_key)
    warn_if_replacing(
        adata, key_added, "the mapping score", ours=lambda e: "against" in e.get("params", {}), suffix="_den"
    )
    if against == "query":
        ref_pcs, query_pcs = _joint_pcs(model, reference, adata, inputs, seed)
        scores = relative_scores(ref_pcs, query_pcs, n_neighbors)
    else:
        ref_front, query_front = _fronts(model, reference, adata, inputs)
        ref_r, query_r = _residuals(model, reference, adata, inputs)
        scores = mapping_scores(ref_front, query_front, n_neighbors, ref_residual=ref_r, query_residual=query_r)
    adata = adata.copy() if copy else adata
    make_actual(adata)
    adata.obs[key_added] = scores
    params = {"embedding_key": key, "batch_key": batch_key, "against": against, "n_neighbors": int(n_neighbors)}
    adata.uns[key_added] = {"params": params | {"random_state": seed}}
    logg.info("    finished", time=start, deep=f"added\n    {key_added!r}, mapping score (adata.obs)")
    return adata if copy else None


class _CentredInputs:
    """Rows of a matrix as the model's genes minus each cell's centre: a matrix-like for :func:`den._pca.pca`."""

    def __init__(self, model: DENModel, X, var_names, rows: np.ndarray, centre: np.ndarray, codes: np.ndarray):
        self.model, self.X, self.var_names = model, X, var_names
        self.rows, self.centre, self.codes = rows, centre, codes
        self.shape = (len(rows), centre.shape[1])

    def __getitem__(self, sl) -> np.ndarray:
        rows = self.rows[sl]
        return self.model.inputs(self.X, self.var_names, rows) - self.centre[self.codes[rows]]

    def subset(self, positions: np.ndarray) -> _CentredInputs:
        """The same cells' rows at ``positions`` of this one."""
        return _CentredInputs(self.model, self.X, self.var_names, self.rows[positions], self.centre, self.codes)

    def blocks(self, size: int = 4096):
        """Consecutive row blocks."""
        for start in range(0, self.shape[0], size):
            yield self[start : start + size]


class _Stacked:
    """Two matrix-likes one above the other (row slices only)."""

    def __init__(self, top, bottom):
        self.top, self.bottom = top, bottom
        self.shape = (top.shape[0] + bottom.shape[0], top.shape[1])

    def __getitem__(self, sl: slice) -> np.ndarray:
        start, stop, _ = sl.indices(self.shape[0])
        n = self.top.shape[0]
        parts = []
        if start < n:
            parts.append(self.top[slice(start, min(stop, n))])
        if stop > n:
            parts.append(self.bottom[slice(max(start, n) - n, stop - n)])
        return np.concatenate(parts)


def _centred(
    model: DENModel, a: AnnData, X, batches, rows: np.ndarray, unbatched: np.ndarray, dtype=np.float32
) -> _CentredInputs:
    """``rows`` of ``X`` minus the cell's centre: its batch's gene means (batch-centring models), else ``unbatched``.

    The centre is held as ``dtype``, so the rows are centred in ``dtype``.
    """
    if batches is None:
        centre, codes = unbatched, np.zeros(a.n_obs, dtype=int)
    else:
        centre, codes = batch_gene_means(X, batches, model.gene_index(a.var_names))
    return _CentredInputs(model, X, a.var_names, rows, centre.astype(dtype), codes)


def _sample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))


def _joint_pcs(model: DENModel, reference: AnnData, query: AnnData, inputs: _Inputs, seed: int):
    """PCs of reference (a sample of up to ``MAX_REFERENCE_CELLS``) and query cells in one PCA of both."""
    rng = np.random.default_rng(seed)
    ref_rows = _sample(reference.n_obs, MAX_REFERENCE_CELLS, rng)
    none = np.zeros((1, len(model.var_names)), np.float32)  # the PCA centres the rows itself
    ref = _centred(model, reference, inputs.X_ref, inputs.ref_batches, ref_rows, none)
    qry = _centred(model, query, inputs.X_query, inputs.query_batches, np.arange(query.n_obs), none)
    fit_ref, fit_query = _sample(len(ref_rows), MAX_PCA_CELLS, rng), _sample(query.n_obs, MAX_PCA_CELLS, rng)
    n_comps = int(model.encoder.projection.weight.shape[0])
    mean, components, _ = pca(_Stacked(ref.subset(fit_ref), qry.subset(fit_query)), n_comps, random_state=seed)
    shift = mean @ components
    return tuple(np.concatenate([block @ components - shift for block in side.blocks()]) for side in (ref, qry))


def _residuals(model: DENModel, reference: AnnData, query: AnnData, inputs: _Inputs):
    """Each cell's distance to the PCA layer's space, in its units (reference and query cells)."""
    w = model.encoder.projection.weight.detach().cpu().numpy().astype(np.float64)  # components.T / scale
    scale = 1.0 / float(np.linalg.norm(w[0]))
    training_mean = None
    if inputs.ref_batches is None:  # the PCA layer's centre: the mean of the reference it was fitted on
        mean, cols = column_mean(inputs.X_ref), model.gene_index(reference.var_names)
        training_mean = (mean if cols is None else mean[cols])[None, :]
    out = []
    for a, X, batches in (
        (reference, inputs.X_ref, inputs.ref_batches),
        (query, inputs.X_query, inputs.query_batches),
    ):
        # what the PCA layer reads: genes minus the training mean, or minus the cell's own batch mean when centring
        side = _centred(model, a, X, batches, np.arange(a.n_obs), training_mean, dtype=np.float64)
        r = []
        for x in side.blocks():
            inside = (x @ w.T) * scale  # the centred genes' coordinates along the components
            r.append(np.sqrt(np.maximum((x**2).sum(1) - (inside**2).sum(1), 0)) / scale)
        out.append(np.concatenate(r))
    return out[0], out[1]
