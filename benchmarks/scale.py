"""Atlas scale on one machine: the whole pipeline on synthetic cells that stay on disk.

For each size: ``n`` cells x 2,000 genes (15 types with planted markers, as
``den.datasets.synthetic``) are generated block by block and written to a CSR ``.h5ad`` without
ever holding the matrix in memory; a fresh process opens it with ``backed="r"`` and runs
``embed`` -> ``cluster`` -> ``marker_features`` (capped sample) -> ``transform`` (every cell, read from the
file again). Printed per size: wall time of each step, peak RSS (VmHWM), kNN-15 accuracy of the
map against the true types (5-fold, on a seeded 20,000-cell sample), cluster ARI and k, and the
growth exponent of embed + cluster time between sizes.

With ``--fit-sample N`` a second fresh process takes the route for data too large to train on
whole: ``embed`` and ``cluster`` with ``fit_cells=N`` (the networks train on a seeded sample of
``N`` cells and place / assign every cell of the file); the same metrics on the same 20,000
cells, and its time against the whole fit's embed + cluster in the same run.

With ``--batches B`` the cells come from ``B`` batches (each with its own gene-wise factors and
depth, as ``den.datasets.batches``) and the sample runs twice, with ``batch_key`` (a sample
stratified by batch, batch-balanced pairs and batch centring) and without; batch mixing of the
map (share of each cell's 15 map neighbours from other batches over that share under random
mixing, on the same 20,000 cells) joins the metrics, and the whole fit runs with ``batch_key``.
``--sample-only`` skips the whole fit.

With ``--stores h5ad zarr`` the same cells are also copied (chunk by chunk) into a zarr store, which
a fresh process reads lazily (``anndata.experimental.read_elem_lazy``: X a dask array) and runs
the same pipeline on; each row of the table is one store.

    python benchmarks/scale.py [--sizes 100000 300000 1000000] [--genes 2000] [--fit-sample 100000]
                               [--batches 8] [--sample-only] [--stores h5ad zarr]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from _common import report, rss_gib

import den

TYPES = 15


#: rows generated and written at a time
BLOCK = 8192
_CELLS: dict = {}  # what write_cells' worker processes read (inherited by fork)


def write_cells(path: Path, n_cells: int, n_genes: int, seed: int = 0, workers: int = 1, batches: int = 0) -> None:
    """Write synthetic log-normalised cells to a CSR ``.h5ad``, one 8,192-cell block at a time.

    Each block's counts are drawn from its own generator, seeded by ``(seed, block)``, so the file
    is the same whatever the number of ``workers`` (processes generating blocks while this one writes).
    ``batches`` > 0: each cell belongs to one of that many batches (``obs["batch"]``), each with
    gene-wise factors ``exp(N(0, 0.5))`` and a depth factor ``exp(N(0, 0.5))``, drawn from a
    second generator (the cells' types are those of the same call without batches).
    """
    import anndata as ad
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    from den.datasets._batches import _profiles

    rng = np.random.default_rng(seed)
    weights = rng.uniform(1, 3, TYPES)
    kind = rng.choice(TYPES, size=n_cells, p=weights / weights.sum())
    profile, _ = _profiles(TYPES, n_genes, 10, 4.0, rng)
    lib = 5000.0 * rng.lognormal(0, 0.3, size=n_cells)
    _CELLS.update(kind=kind, profile=profile, lib=lib, seed=seed, batch=None)
    names = np.asarray([f"g{i}" for i in range(TYPES)])
    obs = pd.DataFrame({"group": pd.Categorical(names[kind])}, index=[f"cell{i}" for i in range(n_cells)])
    if batches:
        effects = np.random.default_rng([seed, 1])
        batch = effects.integers(0, batches, n_cells)
        _CELLS.update(batch=batch, gene_factor=np.exp(effects.normal(0, 0.5, (batches, n_genes))))
        _CELLS["lib"] = lib * np.exp(effects.normal(0, 0.5, batches))[batch]
        obs["batch"] = pd.Categorical(np.asarray([f"batch{i}" for i in range(batches)])[batch])
    var = pd.DataFrame(index=[f"gene{i}" for i in range(n_genes)])
    ad.AnnData(obs=obs, var=var).write_h5ad(path)  # obs, var, empty X: X is written below
    starts = range(0, n_cells, BLOCK)
    with h5py.File(path, "a") as f, _block_maker(workers) as make:
        if "X" in f:
            del f["X"]
        g = f.create_group("X")
        g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n_cells, n_genes)})
        data = g.create_dataset("data", (0,), dtype=np.float32, maxshape=(None,), chunks=(1 << 20,))
        indices = g.create_dataset("indices", (0,), dtype=np.int32, maxshape=(None,), chunks=(1 << 20,))
        indptr = [0]
        for block in make(_block, starts):
            nnz = len(data)
            data.resize((nnz + block.nnz,))
            indices.resize((nnz + block.nnz,))
            data[nnz:] = block.data
            indices[nnz:] = block.indices
            indptr.extend((block.indptr[1:] + indptr[-1]).tolist())
        write_elem(g, "indptr", np.asarray(indptr, dtype=np.int64))
    _CELLS.clear()


def copy_to_zarr(h5ad: Path, store: Path) -> None:
    """Copy a CSR ``.h5ad`` written by :func:`write_cells` into a zarr store, X a few million values at a time."""
    import warnings

    import anndata as ad
    import h5py
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's notice that zarr v3 becomes its default
        meta = ad.read_h5ad(h5ad, backed="r")
        ad.AnnData(obs=meta.obs, var=meta.var).write_zarr(store)
        meta.file.close()
    step = 1 << 22
    with h5py.File(h5ad, "r") as f:
        root = zarr.open_group(store, mode="a")
        x = root.require_group("X")
        attrs = {k: str(v) for k, v in f["X"].attrs.items() if k != "shape"}
        x.attrs.update(attrs | {"shape": [int(v) for v in f["X"].attrs["shape"]]})
        for name in ("data", "indices", "indptr"):
            source = f["X"][name]
            target = x.create_array(name, shape=source.shape, dtype=source.dtype, chunks=(1 << 20,), overwrite=True)
            for start in range(0, source.shape[0], step):
                target[start : start + step] = source[start : start + step]
    zarr.consolidate_metadata(store)  # anndata reads the store's consolidated metadata, now with X


def open_cells(path: str):
    """The cells without loading X: ``backed="r"`` for an ``.h5ad``, X a dask array for a zarr store."""
    import anndata as ad

    if not path.endswith(".zarr"):
        return ad.read_h5ad(path, backed="r")
    import zarr
    from anndata.io import read_elem

    group = zarr.open_group(path, mode="r")
    X = ad.experimental.read_elem_lazy(group["X"])
    return ad.AnnData(X=X, obs=read_elem(group["obs"]), var=read_elem(group["var"]))


def _block(start: int):
    """The cells of the block starting at row ``start`` (CSR), from the block's own generator."""
    from den.datasets._counts import sample_counts

    c = _CELLS
    sl = slice(start, min(start + BLOCK, len(c["kind"])))
    rng = np.random.default_rng([c["seed"], start // BLOCK])
    mu = c["profile"][c["kind"][sl]]
    if c["batch"] is not None:
        mu = mu * c["gene_factor"][c["batch"][sl]]
        mu = mu / mu.sum(1, keepdims=True)
    return sample_counts(mu * c["lib"][sl, None], 0.3, rng)[1]


@contextmanager
def _block_maker(workers: int):
    """``map`` in order: in this process, or over ``workers`` forked processes."""
    if workers <= 1:
        yield map
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield lambda fn, items: pool.imap(fn, items)


def child(path: str, batch_key: str | None = None) -> None:
    """Run the pipeline on the backed file; print one JSON line."""
    import warnings

    warnings.filterwarnings("ignore")
    adata = open_cells(path)
    out = {"n_cells": adata.n_obs, "rss_opened_gib": rss_gib("VmRSS")}
    t = time.perf_counter()
    den.tl.embed(adata, batch_key=batch_key, progress_bar=False)
    out["embed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    den.tl.cluster(adata, progress_bar=False)
    out["cluster_s"] = time.perf_counter() - t
    t = time.perf_counter()
    den.tl.marker_features(adata, progress_bar=False)
    out["markers_s"] = time.perf_counter() - t
    query = open_cells(path)  # every cell again, read from the file
    t = time.perf_counter()
    den.tl.transform(query, adata, batch_key=batch_key)
    out["transform_cells_per_s"] = query.n_obs / (time.perf_counter() - t)
    out["peak_rss_gib"] = rss_gib("VmHWM")
    out.update(_quality(adata))
    out["n_epochs"] = int(adata.uns["den"]["fit"]["n_epochs"])
    print(json.dumps(out))


def child_sample(path: str, n_fit: int, prefix: str = "sample_", batch_key: str | None = None) -> None:
    """``embed`` and ``cluster`` with ``fit_cells=n_fit`` on the backed file; print one JSON line."""
    import warnings

    warnings.filterwarnings("ignore")
    adata = open_cells(path)
    out = {}
    t = time.perf_counter()
    den.tl.embed(adata, fit_cells=n_fit, batch_key=batch_key, progress_bar=False)  # trains on the sample, places all
    out[prefix + "embed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    den.tl.cluster(adata, fit_cells=n_fit, progress_bar=False)  # clusters the same sample, assigns every cell
    out[prefix + "cluster_s"] = time.perf_counter() - t
    out[prefix + "total_s"] = out[prefix + "embed_s"] + out[prefix + "cluster_s"]
    out[prefix + "peak_rss_gib"] = rss_gib("VmHWM")
    out.update(_quality(adata, prefix))
    print(json.dumps(out))


def _quality(adata, prefix: str = "") -> dict:
    """kNN-15 accuracy of the map on a seeded 20,000-cell sample, cluster ARI and k, against the true types;
    with batches, the map's batch mixing on the same cells."""
    from _metrics import knn_accuracy
    from mapping import batch_mixing
    from sklearn.metrics import adjusted_rand_score

    truth = adata.obs["group"].to_numpy()
    sample = np.random.default_rng(0).choice(adata.n_obs, min(20_000, adata.n_obs), replace=False)
    out = {
        prefix + "knn_acc": knn_accuracy(adata.obsm["X_den"][sample], truth[sample]),
        prefix + "ari": adjusted_rand_score(truth, adata.obs["den_clusters"]),
        prefix + "k": int(adata.obs["den_clusters"].nunique()),
    }
    if "batch" in adata.obs:
        out[prefix + "mixing"] = batch_mixing(adata.obsm["X_den"][sample], adata.obs["batch"].to_numpy()[sample])
    return out


def _run_child(*args) -> dict:
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"the run {args} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _run_store(path: Path, n: int, args) -> dict:
    """The whole fit and / or the sample route on one file, each in a fresh process."""
    whole = ["--child", str(path)] + (["batch"] if args.batches else [])  # batches: the whole fit with batch_key
    row = {} if args.sample_only else _run_child(*whole)
    if args.fit_sample and args.fit_sample < n:
        row |= {"fit_sample": args.fit_sample} | _run_child("--child-sample", str(path), str(args.fit_sample))
        if not args.sample_only:
            row["sample_speedup"] = (row["embed_s"] + row["cluster_s"]) / row["sample_total_s"]
        if args.batches:  # the same sample route with batch_key: stratified, batch-balanced, centred
            row |= _run_child("--child-sample", str(path), str(args.fit_sample), "batched_", "batch")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--fit-sample", type=int, help="also fit on this many cells and transform the rest")
    parser.add_argument("--batches", type=int, default=0, help="cells from this many batches (batch effects)")
    parser.add_argument("--sample-only", action="store_true", help="skip the whole fit (needs --fit-sample)")
    parser.add_argument("--stores", nargs="+", choices=["h5ad", "zarr"], default=["h5ad"], help="file formats")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--child-sample", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sample_only and not args.fit_sample:
        parser.error("--sample-only needs --fit-sample")
    if args.child:
        child(*args.child)
        return
    if args.child_sample:
        path, n_fit, *rest = args.child_sample
        child_sample(path, int(n_fit), *rest)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            h5ad = Path(tmp) / f"cells_{n}.h5ad"
            t = time.perf_counter()
            write_cells(h5ad, n, args.genes, batches=args.batches)
            write_s = time.perf_counter() - t
            for store in args.stores:
                path = h5ad
                row = {"store": store, "n_cells": n, "write_s": write_s, "file_gib": h5ad.stat().st_size / 2**30}
                if store == "zarr":
                    path = Path(tmp) / f"cells_{n}.zarr"
                    t = time.perf_counter()
                    copy_to_zarr(h5ad, path)
                    row["write_s"] = time.perf_counter() - t
                    row["file_gib"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30
                rows.append(row | _run_store(path, n, args))
                if store == "zarr":
                    shutil.rmtree(path)
            h5ad.unlink()
    for store in args.stores if not args.sample_only else []:  # growth between sizes, per store
        ordered = [r for r in rows if r["store"] == store]
        for a, b in zip(ordered, ordered[1:], strict=False):
            t_a, t_b = a["embed_s"] + a["cluster_s"], b["embed_s"] + b["cluster_s"]
            b["time_exponent"] = float(np.log(t_b / t_a) / np.log(b["n_cells"] / a["n_cells"]))
    report("scale: cells on disk (backed .h5ad or lazy zarr), embed -> cluster -> markers -> transform", rows)


if __name__ == "__main__":
    main()
