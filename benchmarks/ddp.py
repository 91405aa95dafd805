"""Several devices: ``den.tl.embed(devices=2)`` (torch.distributed DDP over gloo, 2 CPU ranks) vs one process.

For each data set, one process then two ranks, same seed, default training, in the same run (the
one-process run first also warms up the imports and the caches). Printed per run: the median wall
time of an epoch (rank 0's, from ``uns["den"]["history"]["seconds"]``), the whole ``embed`` call
(two ranks: spawning both processes included), and the kNN-15 accuracy of the map against the known
labels (5-fold, on a seeded 20,000-cell sample). Ratios: epoch time (2 ranks / 1) and the change of
kNN accuracy. Goals (issue 14): ratio <= 0.75, |change| <= 0.01. On a lent GPU machine pass
``--device cuda --devices N``.

    python benchmarks/ddp.py [--datasets synthetic fashion] [--devices 2] [--device cpu] [--seed 0]
                           [--batch-size 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import report
from _datasets import _anndata, fashion_mnist_all
from _metrics import knn_accuracy

import den

#: cells sampled for the kNN accuracy (5-fold CV cost grows with n)
SCORE_CELLS = 20_000


def synthetic50k():
    return den.datasets.synthetic(50_000, 2000, 15, random_state=0), "group"


def fashion70k():
    images, labels = fashion_mnist_all()
    return _anndata((images.reshape(-1, 784) / 255.0).astype(np.float32), labels)


DATASETS = {"synthetic": ("synthetic 50k x 2000", synthetic50k), "fashion": ("Fashion-MNIST 70k", fashion70k)}


def run(adata, key: str, *, devices: int, device: str, seed: int, batch_size: int) -> dict:
    t = time.perf_counter()
    den.tl.embed(adata, devices=devices, device=device, batch_size=batch_size, random_state=seed, progress_bar=False)
    wall = time.perf_counter() - t
    entry = adata.uns["den"]
    seconds = np.asarray(entry["history"]["seconds"])
    rng = np.random.default_rng(seed)
    pick = rng.choice(adata.n_obs, min(SCORE_CELLS, adata.n_obs), replace=False)
    return {
        "ranks": devices,
        "epochs": entry["fit"]["n_epochs"],
        "epoch_s": float(np.median(seconds)),
        "train_s": float(seconds.sum()),
        "embed_s": wall,
        "knn15": knn_accuracy(adata.obsm["X_den"][pick], adata.obs[key].to_numpy()[pick], seed=seed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=512, help="pairs a step, per rank (both sides)")
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        label, load = DATASETS[name]
        adata, key = load()
        kw = {"device": args.device, "seed": args.seed, "batch_size": args.batch_size}
        one = run(adata, key, devices=1, **kw)
        many = run(adata, key, devices=args.devices, **kw)
        for r in (one, many):
            rows.append({"data": label, **r})
        rows.append(
            {
                "data": label,
                "ranks": f"{args.devices}/1",
                "epoch_s": many["epoch_s"] / one["epoch_s"],
                "train_s": many["train_s"] / one["train_s"],
                "embed_s": many["embed_s"] / one["embed_s"],
                "knn15": many["knn15"] - one["knn15"],
            }
        )
    report(
        "ddp",
        rows,
        {
            "goals": {"epoch_ratio_max": 0.75, "knn_change_max": 0.01},
            "device": args.device,
            "seed": args.seed,
            "batch_size": args.batch_size,
        },
    )


if __name__ == "__main__":
    main()
