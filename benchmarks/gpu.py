"""The GPU path, one prepared script for a lent GPU machine: 1,000,000 cells embedded on CUDA.

Writes ``--n`` synthetic cells x 2,000 genes (``scale.write_cells``: 15 types with planted markers) to a
backed ``.h5ad`` in a temporary folder, opens it with ``backed="r"`` and runs ``den.tl.embed`` on
``--device`` with ``--devices`` ranks (DDP over NCCL when more than one), then ``den.tl.cluster``. Prints
the wall time of each step, the training time alone (sum of the epoch times), peak GPU memory
(``torch.cuda.max_memory_allocated`` of this process: with ``--devices`` > 1 the spawned ranks' memory is not
counted), peak host RSS, the kNN-15 accuracy
of the map and the cluster ARI against the known types. The goal (issue 14): 1,000,000 cells embedded in
<= 3 min. It has not been run yet (no GPU was lent to the task that wrote it); ``--device cpu --n 20000``
checks the script itself on a CPU.

    python benchmarks/gpu.py [--n 1000000] [--device cuda] [--devices 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import report, rss_gib
from _metrics import knn_accuracy
from scale import write_cells
from sklearn.metrics import adjusted_rand_score

import den


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    import anndata as ad

    warnings.filterwarnings("ignore")
    row = {"n_cells": args.n, "device": args.device, "devices": args.devices}
    if torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name(0)
        torch.zeros(1, device="cuda")  # CUDA context before the clock starts
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.h5ad"
        t = time.perf_counter()
        write_cells(path, args.n, args.genes)
        row["write_s"] = time.perf_counter() - t
        adata = ad.read_h5ad(path, backed="r")
        t = time.perf_counter()
        den.tl.embed(adata, device=args.device, devices=args.devices, progress_bar=False)
        row["embed_s"] = time.perf_counter() - t
        row["train_s"] = float(np.sum(adata.uns["den"]["history"]["seconds"]))
        row["n_epochs"] = int(adata.uns["den"]["fit"]["n_epochs"])
        t = time.perf_counter()
        den.tl.cluster(adata, device=args.device, progress_bar=False)
        row["cluster_s"] = time.perf_counter() - t
        if torch.cuda.is_available():
            row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["peak_rss_gib"] = rss_gib("VmHWM")
        truth = adata.obs["group"].to_numpy()
        sample = np.random.default_rng(0).choice(adata.n_obs, min(20_000, adata.n_obs), replace=False)
        row["knn_acc"] = knn_accuracy(adata.obsm["X_den"][sample], truth[sample])
        row["ari"] = adjusted_rand_score(truth, adata.obs["den_clusters"])
        row["embed_goal_s"] = 180
    report("gpu: backed .h5ad, embed + cluster on the device", [row])


if __name__ == "__main__":
    main()
