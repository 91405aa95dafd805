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

    python benchmarks/scale.py [--sizes 100000 300000 1000000] [--genes 2000] [--fit-sample 100000]
"""

from __future__ import annotations

import argparse
import json
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


def write_cells(path: Path, n_cells: int, n_genes: int, seed: int = 0, workers: int = 1) -> None:
    """Write synthetic log-normalised cells to a CSR ``.h5ad``, one 8,192-cell block at a time.

    Each block's counts are drawn from its own generator, seeded by ``(seed, block)``, so the file
    is the same whatever the number of ``workers`` (processes generating blocks while this one writes).
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
    _CELLS.update(kind=kind, profile=profile, lib=lib, seed=seed)
    names = np.asarray([f"g{i}" for i in range(TYPES)])
    obs = pd.DataFrame({"group": pd.Categorical(names[kind])}, index=[f"cell{i}" for i in range(n_cells)])
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


def _block(start: int):
    """The cells of the block starting at row ``start`` (CSR), from the block's own generator."""
    from den.datasets._counts import sample_counts

    c = _CELLS
    sl = slice(start, min(start + BLOCK, len(c["kind"])))
    rng = np.random.default_rng([c["seed"], start // BLOCK])
    return sample_counts(c["profile"][c["kind"][sl]] * c["lib"][sl, None], 0.3, rng)[1]


@contextmanager
def _block_maker(workers: int):
    """``map`` in order: in this process, or over ``workers`` forked processes."""
    if workers <= 1:
        yield map
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield lambda fn, items: pool.imap(fn, items)


def child(path: str) -> None:
    """Run the pipeline on the backed file; print one JSON line."""
    import warnings

    import anndata as ad

    warnings.filterwarnings("ignore")
    adata = ad.read_h5ad(path, backed="r")
    out = {"n_cells": adata.n_obs, "rss_opened_gib": rss_gib("VmRSS")}
    t = time.perf_counter()
    den.tl.embed(adata, progress_bar=False)
    out["embed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    den.tl.cluster(adata, progress_bar=False)
    out["cluster_s"] = time.perf_counter() - t
    t = time.perf_counter()
    den.tl.marker_features(adata, progress_bar=False)
    out["markers_s"] = time.perf_counter() - t
    query = ad.read_h5ad(path, backed="r")  # every cell again, read from the file
    t = time.perf_counter()
    den.tl.transform(query, adata)
    out["transform_cells_per_s"] = query.n_obs / (time.perf_counter() - t)
    out["peak_rss_gib"] = rss_gib("VmHWM")
    out.update(_quality(adata))
    out["n_epochs"] = int(adata.uns["den"]["fit"]["n_epochs"])
    print(json.dumps(out))


def child_sample(path: str, n_fit: int) -> None:
    """``embed`` and ``cluster`` with ``fit_cells=n_fit`` on the backed file; print one JSON line."""
    import warnings

    import anndata as ad

    warnings.filterwarnings("ignore")
    adata = ad.read_h5ad(path, backed="r")
    out = {}
    t = time.perf_counter()
    den.tl.embed(adata, fit_cells=n_fit, progress_bar=False)  # trains on the sample, places every cell
    out["sample_embed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    den.tl.cluster(adata, fit_cells=n_fit, progress_bar=False)  # clusters the same sample, assigns every cell
    out["sample_cluster_s"] = time.perf_counter() - t
    out["sample_total_s"] = out["sample_embed_s"] + out["sample_cluster_s"]
    out["sample_peak_rss_gib"] = rss_gib("VmHWM")
    out.update(_quality(adata, "sample_"))
    print(json.dumps(out))


def _quality(adata, prefix: str = "") -> dict:
    """kNN-15 accuracy of the map on a seeded 20,000-cell sample, cluster ARI and k, against the true types."""
    from _metrics import knn_accuracy
    from sklearn.metrics import adjusted_rand_score

    truth = adata.obs["group"].to_numpy()
    sample = np.random.default_rng(0).choice(adata.n_obs, min(20_000, adata.n_obs), replace=False)
    return {
        prefix + "knn_acc": knn_accuracy(adata.obsm["X_den"][sample], truth[sample]),
        prefix + "ari": adjusted_rand_score(truth, adata.obs["den_clusters"]),
        prefix + "k": int(adata.obs["den_clusters"].nunique()),
    }


def _run_child(*args) -> dict:
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"the run {args} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--fit-sample", type=int, help="also fit on this many cells and transform the rest")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-sample", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.child_sample:
        child_sample(args.child_sample[0], int(args.child_sample[1]))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"cells_{n}.h5ad"
            t = time.perf_counter()
            write_cells(path, n, args.genes)
            write_s = time.perf_counter() - t
            row = _run_child("--child", str(path))
            if args.fit_sample and args.fit_sample < n:
                row |= {"fit_sample": args.fit_sample} | _run_child("--child-sample", str(path), str(args.fit_sample))
                row["sample_speedup"] = (row["embed_s"] + row["cluster_s"]) / row["sample_total_s"]
            row["file_gib"] = path.stat().st_size / 2**30
            row["write_s"] = write_s
            rows.append(row)
            path.unlink()
    for a, b in zip(rows, rows[1:], strict=False):
        t_a, t_b = a["embed_s"] + a["cluster_s"], b["embed_s"] + b["cluster_s"]
        b["time_exponent"] = float(np.log(t_b / t_a) / np.log(b["n_cells"] / a["n_cells"]))
    report("scale: backed .h5ad, embed -> cluster -> markers -> transform", rows)


if __name__ == "__main__":
    main()
