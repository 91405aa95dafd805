"""Embedding speed and memory: den.tl.embed vs scanpy PCA -> neighbors -> UMAP, in the same run.

1. 10,000 cells x 2,000 genes (synthetic, log-normalised, sparse, 15 cell types):
   wall time of each, reported as a ratio (goal den / scanpy <= 2.0).
2. 100,000 cells x 2,000 genes: den.tl.embed wall time (goal <= 10 min) and
   peak RSS above the loaded input (goal <= 2 GiB), measured in a fresh process.
3. den.tl.transform throughput on those 100,000 cells (goal >= 50,000 cells/s).

    python benchmarks/embed_speed.py [--large-cells 100000] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import report, rss_gib

import den


def child(path: str) -> None:
    """Load the data, then embed and transform it; print timings and memory as JSON."""
    import anndata as ad

    adata = ad.read_h5ad(path)
    base = rss_gib("VmRSS")
    t = time.perf_counter()
    den.tl.embed(adata, progress_bar=False)
    embed_s = time.perf_counter() - t
    peak = rss_gib("VmHWM")
    query = adata.copy()
    t = time.perf_counter()
    den.tl.transform(query, adata)
    transform_s = time.perf_counter() - t
    print(
        json.dumps(
            {
                "n_cells": adata.n_obs,
                "embed_s": embed_s,
                "input_rss_gib": base,
                "peak_rss_gib": peak,
                "peak_above_input_gib": peak - base,
                "transform_s": transform_s,
                "transform_cells_per_s": adata.n_obs / transform_s,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--large-cells", type=int, default=100_000)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    import scanpy as sc

    # warm up numba (scanpy's kNN and UMAP compile on first use) so that neither side pays start-up costs
    warm = den.datasets.synthetic(500, 200, 3, random_state=1)
    sc.pp.pca(warm)
    sc.pp.neighbors(warm)
    sc.tl.umap(warm)
    den.tl.embed(warm, n_epochs=1, progress_bar=False)

    adata = den.datasets.synthetic(args.cells, 2000, 15, random_state=0)
    rows = []
    t = time.perf_counter()
    den.tl.embed(adata, progress_bar=False)
    den_s = time.perf_counter() - t
    a = adata.copy()
    t = time.perf_counter()
    sc.pp.pca(a, random_state=0)
    sc.pp.neighbors(a, random_state=0)
    sc.tl.umap(a, random_state=0)
    sc_s = time.perf_counter() - t
    rows.append(
        {
            "data": f"{args.cells} x 2000",
            "den_embed_s": den_s,
            "scanpy_pca_neighbors_umap_s": sc_s,
            "ratio_den_over_scanpy": den_s / sc_s,
            "goal": "<= 2.0",
        }
    )
    report("embed_speed (same run)", rows)

    if args.skip_large:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "large.h5ad")
        den.datasets.synthetic(args.large_cells, 2000, 15, random_state=0).write_h5ad(path)
        out = subprocess.run([sys.executable, __file__, "--child", path], capture_output=True, text=True, check=True)
    large = json.loads(out.stdout.strip().splitlines()[-1])
    large["goals"] = "embed <= 600 s; peak above input <= 2 GiB; transform >= 50,000 cells/s"
    report(f"embed_speed ({args.large_cells} cells x 2000 genes, fresh process)", [large])


if __name__ == "__main__":
    main()
