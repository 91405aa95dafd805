"""The GPU path, one prepared script for a lent GPU machine: 1,000,000 cells embedded on CUDA.

Writes ``--n`` synthetic cells x 2,000 genes (``scale.write_cells``: 15 types with planted markers,
``--workers`` processes generating blocks) to a backed ``.h5ad`` in a temporary folder, opens it with
``backed="r"`` and runs ``den.tl.embed`` on ``--device`` with ``--devices`` ranks (DDP over NCCL when
more than one), then ``den.tl.cluster``. Prints the wall time of each step and of the embedding's
phases (PCA layer: streaming PCA and projecting every cell; kNN graph and pair weights; training;
placing every cell), peak GPU memory (``torch.cuda.max_memory_allocated`` of this process: with
``--devices`` > 1 the spawned ranks' memory is not counted), peak host RSS, the kNN-15 accuracy of
the map and the cluster ARI against the known types. The goal (issue 14): 1,000,000 cells embedded in
<= 3 min. Then, unless ``--no-steps``, the time of one training step by batch size (the embedding
plan on 1,000,000 cells x 50 PCs in memory), eager and replayed as a CUDA graph (den's default on a GPU). ``--device cpu --n 20000`` checks
the script on a CPU.

    python benchmarks/gpu.py [--n 1000000] [--device cuda] [--devices 1] [--workers 8] [--no-steps | --steps-only]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from _common import report, rss_gib
from _metrics import knn_accuracy
from scale import write_cells
from sklearn.metrics import adjusted_rand_score

import den
from den import _embedding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--no-steps", action="store_true", help="skip the step time by batch size")
    parser.add_argument("--steps-only", action="store_true", help="only the step time by batch size")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.steps_only:
        report("gpu: one training step by batch size (1,000,000 x 50 in memory)", step_times(args.device))
        return
    row = {"n_cells": args.n, "device": args.device, "devices": args.devices}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.h5ad"
        t = time.perf_counter()
        write_cells(path, args.n, args.genes, workers=args.workers)  # forks: before CUDA starts
        row["write_s"] = time.perf_counter() - t
        print(f"written in {row['write_s']:.1f} s", flush=True)
        if torch.cuda.is_available():
            row["gpu"] = torch.cuda.get_device_name(0)
            torch.zeros(1, device="cuda")  # CUDA context before the clock starts
        row.update(pipeline(path, args))
    report("gpu: backed .h5ad, embed + cluster on the device", [row])
    if not args.no_steps:
        report("gpu: one training step by batch size (1,000,000 x 50 in memory)", step_times(args.device))


def pipeline(path: Path, args) -> dict:
    """Embed and cluster the backed file; the times of the embedding's phases included."""
    import anndata as ad

    row = {}
    adata = ad.read_h5ad(path, backed="r")
    with phase_timers(row):
        t = time.perf_counter()
        den.tl.embed(adata, device=args.device, devices=args.devices, progress_bar=False)
        row["embed_s"] = time.perf_counter() - t
    row["train_s"] = float(np.sum(adata.uns["den"]["history"]["seconds"]))
    row["place_s"] = row["embed_s"] - sum(row[k] for k in ("pca_layer_s", "knn_pairs_s", "train_call_s"))
    row["n_epochs"] = int(adata.uns["den"]["fit"]["n_epochs"])
    truth = adata.obs["group"].to_numpy()
    sample = np.random.default_rng(0).choice(adata.n_obs, min(20_000, adata.n_obs), replace=False)
    row["knn_acc"] = knn_accuracy(adata.obsm["X_den"][sample], truth[sample])
    print(f"embedded: {row}", flush=True)  # before clustering, in case a time limit ends the run there
    t = time.perf_counter()
    den.tl.cluster(adata, device=args.device, progress_bar=False)
    row["cluster_s"] = time.perf_counter() - t
    if torch.cuda.is_available():
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    row["peak_rss_gib"] = rss_gib("VmHWM")
    row["ari"] = adjusted_rand_score(truth, adata.obs["den_clusters"])
    row["k"] = adata.obs["den_clusters"].nunique()
    row["embed_goal_s"] = 180
    return row


@contextmanager
def phase_timers(row: dict):
    """Time the embedding's phases by wrapping the functions ``fit_embedding`` calls."""
    names = {"training_inputs": "pca_layer_s", "pair_sampler": "knn_pairs_s", "train": "train_call_s"}
    originals = {name: getattr(_embedding, name) for name in names}

    def timed(fn, key):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                row[key] = row.get(key, 0.0) + time.perf_counter() - t
                print(f"  {key} {row[key]:.1f} s", flush=True)  # as each phase ends, in case a time limit cuts the run

        return wrapper

    for name, key in names.items():
        setattr(_embedding, name, timed(originals[name], key))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(_embedding, name, fn)


def step_times(device: str, n: int = 1_000_000, sizes=(512, 2048, 8192), steps: int = 300) -> list[dict]:
    """Milliseconds per training step of den's embedding plan by batch size, eager and replayed as a CUDA graph.

    Each timed run follows 30 warm-up steps; a graph run's own warm-up and capture are inside its timed steps.
    """
    from den._pairs import PairSampler
    from den.nn import MLPEncoder
    from den.train import EmbeddingPlan, Runner, TensorSource

    dev = torch.device(device)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 50)).astype(np.float32)
    near = (np.arange(n), rng.integers(0, n, n))
    rows = []
    for size in sizes:
        row = {"batch_size": size}
        for mode, capture in (("eager", None), ("graph", "cuda")):
            gen = torch.Generator(device=dev).manual_seed(0)
            body = MLPEncoder(50, 2, (128, 128), None).body.to(dev)
            sampler = PairSampler(near, batch_size=size, n_far=128, far_rule="shared", generator=gen)
            plan = EmbeddingPlan(
                body,
                TensorSource(data, dev),
                sampler,
                loss="contrastive",
                dof=1.0,
                min_dist=0.0,
                ignore=1.0,
                noise=0.1,
                generator=gen,
            )
            plan.steps_per_epoch = lambda world_size=1: steps  # the runner's schedule length
            runner = Runner(n_epochs=1, learning_rate=0.02, device=dev, progress_bar=False, desc="steps")
            runner.capture = capture
            plan.batches = lambda s=sampler: _take(s.epoch(), 30)
            runner.run(plan)  # warm-up
            plan.batches = lambda s=sampler: _take(s.epoch(), steps)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            loss = runner.run(plan)[-1]  # ends with a host read of the loss: every step has run
            row[f"{mode}_ms"] = (time.perf_counter() - t) / steps * 1000
            row[f"{mode}_loss"] = loss
        row["graph_speedup"] = row["eager_ms"] / row["graph_ms"]
        row["graph_pairs_per_s"] = size / row["graph_ms"] * 1000
        rows.append(row)
    return rows


def _take(it, k: int):
    for _, item in zip(range(k), it, strict=False):
        yield item


if __name__ == "__main__":
    main()
