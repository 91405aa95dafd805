"""Input not in memory gives the same results as in memory.

Two kinds: an AnnData opened with ``backed="r"``, and one whose X is a dask array read lazily from a
zarr store (``anndata.experimental.read_elem_lazy``).
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import den
from den._ondisk import OnDiskRows

FAST = {"n_epochs": 5, "progress_bar": False}


def _cells(layout: str) -> ad.AnnData:
    adata = den.datasets.synthetic(400, 80, 3, n_markers=8, marker_fold=8, random_state=1)
    if layout == "dense":
        adata.X = adata.X.toarray()
    del adata.layers["counts"]
    return adata


def _backed(layout: str, tmp_path):
    adata = _cells(layout)
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    return adata, ad.read_h5ad(path, backed="r")


def _lazy(layout: str, tmp_path):
    pytest.importorskip("dask")
    import zarr

    adata = _cells(layout)
    path = tmp_path / "cells.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's notice that zarr v3 becomes its default
        adata.write_zarr(path)
    X = ad.experimental.read_elem_lazy(zarr.open(path, mode="r")["X"])
    return adata, ad.AnnData(X=X, obs=adata.obs.copy(), var=adata.var.copy())


@pytest.fixture(params=["csr", "dense"])
def backed_pair(request, tmp_path):
    """The same cells in memory and on disk (CSR or dense X)."""
    memory, backed = _backed(request.param, tmp_path)
    yield memory, backed
    backed.file.close()


@pytest.fixture(params=["backed-csr", "backed-dense", "dask-csr", "dask-dense"])
def pair(request, tmp_path):
    """The same cells in memory and not in memory: backed, or a dask X from zarr (CSR or dense)."""
    kind, layout = request.param.split("-")
    memory, other = (_backed if kind == "backed" else _lazy)(layout, tmp_path)
    yield memory, other
    if kind == "backed":
        other.file.close()


def test_embed_cluster_transform_match_memory(pair):
    memory, backed = pair
    assert backed.isbacked or type(backed.X).__module__.startswith("dask")
    for a in (memory, backed):
        den.tl.embed(a, random_state=0, **FAST)
        den.tl.cluster(a, random_state=0, progress_bar=False, head_epochs=5, finetune_epochs=1)
    np.testing.assert_allclose(backed.obsm["X_den"], memory.obsm["X_den"], atol=1e-5)
    assert (backed.obs["den_clusters"] == memory.obs["den_clusters"]).all()
    query = memory[:50].copy()
    den.tl.transform(query, backed)
    np.testing.assert_allclose(query.obsm["X_den"], memory.obsm["X_den"][:50], atol=1e-5)


def test_fit_cells_on_disk_matches_memory(pair):
    """The sample is read from the file (rows in order), every cell placed and assigned as in memory."""
    memory, backed = pair
    for a in (memory, backed):
        den.tl.embed(a, fit_cells=150, **FAST)
        den.tl.cluster(a, fit_cells=150, progress_bar=False, head_epochs=5, finetune_epochs=1)
    np.testing.assert_allclose(backed.obsm["X_den"], memory.obsm["X_den"], atol=1e-5)
    assert (backed.obs["den_clusters"] == memory.obs["den_clusters"]).all()
    assert backed.uns["den"]["fit"]["n_cells_trained"] == 150


def test_marker_features_and_mapping_on_disk(pair):
    memory, backed = pair
    for a in (memory, backed):
        den.tl.embed(a, random_state=0, **FAST)
        den.tl.cluster(a, random_state=0, progress_bar=False, head_epochs=5, finetune_epochs=1)
        den.tl.marker_features(a, max_cells_per_group=30, n_background=30, progress_bar=False)
    m, b = memory.uns["den_marker_features"], backed.uns["den_marker_features"]
    np.testing.assert_allclose(b["mean_shap"], m["mean_shap"], atol=1e-5)
    np.testing.assert_allclose(
        b["logfoldchanges"].view(np.float32), m["logfoldchanges"].view(np.float32), atol=1e-4, equal_nan=True
    )
    query = memory[:60].copy()
    den.tl.mapping_score(query, backed)
    again = memory[:60].copy()
    den.tl.mapping_score(again, memory)
    np.testing.assert_allclose(query.obs["den_mapping_score"], again.obs["den_mapping_score"])


def test_fold_changes_from_a_dask_raw(tmp_path):
    """``adata.raw`` holding a dask X (raw values in a lazy store): fold changes read from it, as from memory."""
    memory, lazy = _lazy("csr", tmp_path)
    memory.raw, lazy.raw = memory, lazy  # .raw: the same log1p values, lazily in the second
    memory.X, lazy.X = memory.X * 2, lazy.X * 2  # the model's input no longer on the log1p scale of .raw
    for a in (memory, lazy):
        den.tl.embed(a, random_state=0, **FAST)
        den.tl.cluster(a, random_state=0, progress_bar=False, head_epochs=5, finetune_epochs=1)
        den.tl.marker_features(a, max_cells_per_group=30, n_background=30, progress_bar=False)
    m, b = memory.uns["den_marker_features"], lazy.uns["den_marker_features"]
    assert b["params"]["logfoldchanges_from"] == m["params"]["logfoldchanges_from"] == "raw"
    np.testing.assert_allclose(b["logfoldchanges"].view(np.float32), m["logfoldchanges"].view(np.float32), atol=1e-4)


def test_on_disk_rows_reads_any_order(pair):
    memory, backed = pair
    rows = OnDiskRows(backed.X)
    dense = memory.X.toarray() if sparse.issparse(memory.X) else memory.X
    pick = np.array([7, 3, 3, 399, 0])
    got = rows[pick]
    got = got.toarray() if sparse.issparse(got) else got
    np.testing.assert_array_equal(got, dense[pick])
    block = rows[10:20]
    np.testing.assert_array_equal(block.toarray() if sparse.issparse(block) else block, dense[10:20])
    np.testing.assert_allclose(rows.mean(0), dense.mean(0), rtol=1e-5)
    assert rows[np.zeros(400, bool)].shape == (0, 80)


def test_on_disk_rows_read_a_dense_sample_in_windows(backed_pair, monkeypatch):
    """A sample of many rows is read window by window, never the whole span at once (3.7 GiB at 300,000 cells)."""
    memory, backed = backed_pair
    rows = OnDiskRows(backed.X)
    monkeypatch.setattr(rows, "window_rows", 64)
    read = []
    original = rows._read
    monkeypatch.setattr(rows, "_read", lambda r: read.append(r) or original(r))
    pick = np.sort(np.random.default_rng(0).choice(400, 150, replace=False))[::-1]  # dense, any order
    got = rows[pick]
    dense = memory.X.toarray() if sparse.issparse(memory.X) else memory.X
    np.testing.assert_array_equal(got.toarray() if sparse.issparse(got) else got, dense[pick])
    assert all(isinstance(r, slice) and r.stop - r.start <= 64 for r in read)
    assert len(read) >= 400 // 64


@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_a_dask_x_is_never_computed_whole(tmp_path, monkeypatch, layout):
    """Every read of a dask X goes through row blocks: turning the whole array into numpy fails here."""
    _, lazy = _lazy(layout, tmp_path)
    import dask.array as da

    def whole(*args, **kwargs):
        raise AssertionError("the whole dask array was converted to numpy")

    monkeypatch.setattr(da.Array, "__array__", whole)
    den.tl.embed(lazy, **FAST)
    den.tl.cluster(lazy, progress_bar=False, head_epochs=5, finetune_epochs=1)
    den.tl.marker_features(lazy, n_background=20, max_cells_per_group=20, progress_bar=False)
    assert lazy.obsm["X_den"].shape == (400, 2) and "den_marker_features" in lazy.uns


def test_a_dask_x_is_read_in_whole_chunks_holding_the_rows(monkeypatch):
    """Rows of a dask X come from chunk-aligned slices (what it computes anyway), skipping chunks without rows."""
    da = pytest.importorskip("dask.array")
    X = np.arange(30_000, dtype=np.float32).reshape(10_000, 3)
    rows = OnDiskRows(da.from_array(X, chunks=(700, 3)))
    monkeypatch.setattr(rows, "window_rows", 2000)
    read = []
    original = rows._read
    monkeypatch.setattr(rows, "_read", lambda r: read.append(r) or original(r))
    for pick in (np.array([5, 9999, 5, 3000]), np.random.default_rng(0).choice(10_000, 4000)):
        read.clear()
        np.testing.assert_array_equal(rows[pick], X[pick])
        assert all(isinstance(r, slice) and r.start % 700 == 0 and r.stop - r.start <= 2000 for r in read)
    read.clear()
    rows[np.array([5, 9999, 5, 3000])]
    assert [(r.start, r.stop) for r in read] == [(0, 700), (2800, 3500), (9800, 10_000)]


def test_a_view_of_a_backed_anndata_is_refused_before_work(backed_pair):
    _, backed = backed_pair
    with pytest.raises(ValueError, match=r"view of an AnnData opened with backed='r'.*to_memory"):
        den.tl.embed(backed[:100], **FAST)


def test_copy_of_a_backed_anndata_is_refused_before_work(backed_pair, monkeypatch):
    """anndata copies a backed AnnData only to a file: den says so before training (it trained first)."""
    import den.tl._embed as embed_module

    memory, backed = backed_pair
    den.tl.embed(backed, **FAST)
    den.tl.cluster(backed, progress_bar=False)

    def no_training(*args, **kwargs):
        raise AssertionError("trained before refusing copy=True")

    monkeypatch.setattr(embed_module, "fit_embedding", no_training)
    calls = [
        lambda: den.tl.embed(backed, copy=True, **FAST),
        lambda: den.tl.cluster(backed, copy=True, progress_bar=False),
        lambda: den.tl.marker_features(backed, copy=True, n_background=10, max_cells_per_group=5),
        lambda: den.tl.transform(backed, memory, copy=True),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"copy=True on an AnnData opened with backed='r'.*to_memory"):
            call()
