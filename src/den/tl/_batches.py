"""Which batch each cell is in, for models that centre each batch (``den.tl.embed(batch_key=...)``)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData

    from den._model import DENModel

#: a query batch with fewer cells gets a warning: its mean, which centring subtracts, is noisy
MIN_BATCH_CELLS = 50


def training_batches(adata: AnnData, model: DENModel, key: str, *, where: str = "adata") -> np.ndarray | None:
    """The batches of the cells a batch-centring model was trained on (``None`` for other models)."""
    if not model.batch_centering:
        return None
    why = "den needs each cell's batch to read it as the map was trained"
    batch_key = _embedding_batch_key(adata, key, "centres each batch of", why, where=where)
    return query_batches(adata, batch_key, model, where=where)


def sample_strata(adata: AnnData, key: str) -> np.ndarray | None:
    """The batches a ``fit_cells`` sample is stratified by: the embedding's ``batch_key`` column, if it had one."""
    why = "fit_cells draws its sample per batch, as den.tl.embed did"
    batch_key = _embedding_batch_key(adata, key, "was trained with", why, fix=", or pass fit_cells=None")
    return None if batch_key is None else adata.obs[batch_key].astype(str).to_numpy()


def _embedding_batch_key(adata: AnnData, key: str, did: str, why: str, *, where: str = "adata", fix: str = ""):
    """The embedding's recorded ``batch_key`` (or ``None``), refused when its column has left ``obs``."""
    batch_key = adata.uns[key].get("params", {}).get("batch_key")
    if batch_key is not None and batch_key not in adata.obs:
        msg = (
            f"The embedding {where}.uns[{key!r}] {did} batch_key={batch_key!r}, which is no longer a column of "
            f"{where}.obs: {why}. Restore the column{fix}."
        )
        raise KeyError(msg)
    return batch_key


def query_batches(
    adata: AnnData, batch_key: str | None, model: DENModel, *, where: str = "the query"
) -> np.ndarray | None:
    """Each cell's batch for a batch-centring model; ``None`` when the model does not centre batches.

    Without ``batch_key`` all cells are one batch (with a warning), so each must be a whole batch.
    """
    if not model.batch_centering:
        return None
    if batch_key is None:
        warnings.warn(
            f"The model centres each batch, and {where} names no batch_key: all its cells are taken as one batch. "
            "Pass batch_key= when it holds several batches.",
            UserWarning,
            stacklevel=3,
        )
        batches = np.zeros(adata.n_obs, dtype=int).astype(str)
    elif batch_key not in adata.obs:
        msg = f"batch_key={batch_key!r} is not a column of {where}.obs (columns: {list(adata.obs.columns)})."
        raise KeyError(msg)
    else:
        column = adata.obs[batch_key]
        if column.isna().any():
            msg = f"{where}.obs[{batch_key!r}] has missing values; give every cell a batch."
            raise ValueError(msg)
        batches = column.astype(str).to_numpy()
    names, counts = np.unique(batches, return_counts=True)
    if counts.min() < MIN_BATCH_CELLS:
        small = {str(n): int(c) for n, c in zip(names, counts, strict=True) if c < MIN_BATCH_CELLS}
        warnings.warn(
            f"Batches of {where} with fewer than {MIN_BATCH_CELLS} cells ({small}): the batch mean that centring "
            "subtracts rests on few cells, so their positions are noisy.",
            UserWarning,
            stacklevel=3,
        )
    return batches


def batch_gene_means(X, batches: np.ndarray, cols: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each batch's gene means in the model's gene order, one pass over row blocks; and each cell's batch code.

    Returns ``(means, codes)``: one row of ``means`` per batch.
    """
    from scipy import sparse

    from den._data import CHUNK_ROWS
    from den._mapping import batch_codes

    codes = batch_codes(batches)
    k = int(codes.max()) + 1
    sums = np.zeros((k, X.shape[1]))
    for start in range(0, X.shape[0], CHUNK_ROWS):
        block = X[start : start + CHUNK_ROWS]
        c = codes[start : start + block.shape[0]]
        member = sparse.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(k, len(c)))
        part = member @ block
        sums += part.toarray() if sparse.issparse(part) else np.asarray(part)
    means = sums / np.maximum(np.bincount(codes, minlength=k), 1)[:, None]
    return (means if cols is None else means[:, cols]).astype(np.float32), codes


def gene_shift(X, batches: np.ndarray, cols: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each batch's gene means minus all cells' gene means, in the model's gene order.

    Returns ``(shift, codes)``: one row of ``shift`` per batch, ``codes`` each cell's row.
    """
    means, codes = batch_gene_means(X, batches, cols)
    counts = np.bincount(codes, minlength=len(means))
    overall = (means * counts[:, None]).sum(0) / counts.sum()
    return means - overall, codes
