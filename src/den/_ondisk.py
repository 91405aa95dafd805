"""Matrices den reads by rows without loading them: an AnnData opened with ``backed="r"``, or a dask array.

den reads its input only through row blocks (:func:`den._data.iter_rows`, ``dense_rows``) and
row subsets, so a matrix that is not in memory needs nothing but an object that answers those
reads. Each read asks for sorted, unique rows (what HDF5 can serve) and puts them back in the
order asked for. A dask array (as ``anndata.experimental.read_elem_lazy`` makes of a zarr or
HDF5 store, or any dask-backed ``adata.X``) is computed one block of rows at a time.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


class OnDiskRows:
    """Row access to a matrix not in memory: anndata's backed CSR dataset, an HDF5 dense dataset, or a dask array.

    Parameters
    ----------
    dataset
        ``adata.X`` of an AnnData opened with ``backed="r"``, or a 2-D dask array (dense or
        scipy sparse chunks).
    """

    #: the most rows one contiguous read of a row subset takes from the file
    window_rows = 8192

    def __init__(self, dataset):
        self.dataset = dataset
        self.shape = tuple(dataset.shape)
        self.dtype = np.dtype(dataset.dtype)
        self.lazy = is_lazy(dataset)
        self.is_sparse = sparse.issparse(getattr(dataset, "_meta", None)) if self.lazy else hasattr(dataset, "format")

    @property
    def ndim(self) -> int:
        return 2

    def __getitem__(self, rows):
        """Rows ``rows`` (a slice, or integer / boolean indices in any order, repeats allowed)."""
        if isinstance(rows, tuple):
            msg = "On-disk matrices are read by rows only."
            raise TypeError(msg)
        if isinstance(rows, slice):
            start, stop, step = rows.indices(self.shape[0])
            if step == 1:
                return self._read(slice(start, max(start, stop)))
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)
        if len(unique) == 0:
            return self._empty()
        lo, hi = int(unique[0]), int(unique[-1]) + 1
        if self.lazy:  # a dask array computes whole chunks anyway: read those holding the rows, then pick
            block = self._read_chunks(unique)
        elif hi - lo <= 4 * len(unique):  # dense enough: contiguous reads, then pick
            block = self._read_windows(unique)
        else:
            block = self._read(unique)
        return block[inverse] if not np.array_equal(inverse, np.arange(len(unique))) else block

    def _read_windows(self, unique: np.ndarray):
        """Sorted rows ``unique``, read as contiguous windows of at most :attr:`window_rows` rows.

        Never more than one window beyond the rows asked for is in memory (a sample of a third
        of the cells read the whole matrix at once).
        """
        blocks = []
        start = 0
        while start < len(unique):
            lo = int(unique[start])
            stop = int(np.searchsorted(unique, lo + self.window_rows))
            hi = int(unique[stop - 1]) + 1
            blocks.append(self._read(slice(lo, hi))[unique[start:stop] - lo])
            start = stop
        return self._stack(blocks)

    def _read_chunks(self, unique: np.ndarray):
        """Sorted rows ``unique`` of a dask array, computed chunk-aligned slice by slice.

        Each slice is a run of consecutive row chunks holding some of the rows (at most
        :attr:`window_rows` rows, or one chunk); chunks without a row are skipped.
        """
        bounds = np.cumsum([0, *self.dataset.chunks[0]])
        chunk = np.searchsorted(bounds, unique, side="right") - 1
        runs = np.flatnonzero(np.diff(chunk) > 1) + 1  # a chunk without rows between: a new run
        blocks = []
        for part in np.split(np.arange(len(unique)), runs):
            start = 0
            while start < len(part):
                c0 = chunk[part[start]]
                limit = max(bounds[c0] + self.window_rows, bounds[c0 + 1])  # the window, or one chunk
                stop = start + int(np.searchsorted(bounds[chunk[part[start:]] + 1], limit, side="right"))
                lo, hi = int(bounds[c0]), int(bounds[chunk[part[stop - 1]] + 1])
                blocks.append(self._read(slice(lo, hi))[unique[part[start:stop]] - lo])
                start = stop
        return self._stack(blocks)

    def _stack(self, blocks: list):
        if len(blocks) == 1:
            return blocks[0]
        return sparse.vstack(blocks, format="csr") if self.is_sparse else np.concatenate(blocks)

    def _read(self, rows):
        block = self.dataset[rows]
        if self.lazy:
            block = block.compute()
        if self.is_sparse:
            return sparse.csr_matrix(block)
        return np.asarray(block)

    def _empty(self):
        if self.is_sparse:
            return sparse.csr_matrix((0, self.shape[1]), dtype=self.dtype)
        return np.zeros((0, self.shape[1]), dtype=self.dtype)

    def mean(self, axis: int = 0) -> np.ndarray:
        """Column means (``axis=0``), streaming row chunks."""
        if axis != 0:
            msg = "Only column means (axis=0) of an on-disk matrix are supported."
            raise ValueError(msg)
        from ._data import column_mean

        return column_mean(self)


def on_disk(X) -> bool:
    """Whether ``X`` is a backed dataset den can read row by row (not loaded into memory)."""
    from anndata.abc import CSRDataset

    if isinstance(X, CSRDataset):
        return True
    try:
        import h5py
    except ImportError:  # pragma: no cover - anndata depends on h5py
        return False
    return isinstance(X, h5py.Dataset) and len(X.shape) == 2


def is_lazy(X) -> bool:
    """Whether ``X`` is a 2-D dask array (read by :class:`OnDiskRows` one block of rows at a time)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "compute") and getattr(X, "ndim", 0) == 2
