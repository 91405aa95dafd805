"""Choosing den's kNN library: time and recall of the neighbour graph den builds its near pairs from.

The graph is the 15 nearest neighbours of every cell on 50 PCs. Candidates, same run, same matrices:
pynndescent (den 0.1's library above 50,000 cells, the one scanpy uses), faiss-cpu's HNSW graph (M = 16,
efConstruction 40, efSearch 32) and, up to ``--exact-max`` cells, exact search (scikit-learn, den's exact
path, and faiss's flat index). Recall@15: share of the true 15 nearest neighbours found, on 1,000 seeded
rows checked against an exact search of those rows. pynndescent compiles its numba code on first use in
every process: its in-process time is measured after a warm-up, and its first call in a fresh process is
reported apart. Data: the 50 PCs of all 70,000 Fashion-MNIST images, and of synthetic cells
(``den.datasets.synthetic``, 15 groups, 500 genes) at each of ``--sizes``.

With ``--batches B`` it measures instead den's batch-balanced search (``den.tl.embed(batch_key=...)``:
each cell's nearest cells of every batch, ``ceil(15 / B)`` from each) on the same synthetic PCs, split
into B random batches: exact per batch (scikit-learn, den's path before the nineteenth session, up to
``--exact-max`` cells) against a pynndescent index per batch queried by every cell (den's path above
``EXACT_KNN_MAX_CELLS ** 2`` distances a batch); recall of the exact blocks on 1,000 seeded cells.

    python benchmarks/knn.py [--sizes 100000 300000 1000000] [--exact-max 100000] [--batches 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np
from _common import report
from _datasets import fashion_mnist_all

K = 15
N_CHECK = 1000
COLD = (
    "import time, numpy as np; t = time.perf_counter(); from pynndescent import NNDescent; "
    "X = np.random.default_rng(0).normal(size=(5000, 50)).astype(np.float32); "
    "NNDescent(X, n_neighbors=16, random_state=0, low_memory=True).neighbor_graph; "
    "print(time.perf_counter() - t)"
)


def pynndescent(X):
    from pynndescent import NNDescent

    return NNDescent(X, n_neighbors=K + 1, random_state=0, low_memory=True).neighbor_graph[0]


def faiss_hnsw(X):
    import faiss

    index = faiss.IndexHNSWFlat(X.shape[1], 16)
    index.hnsw.efConstruction = 40
    index.add(X)
    index.hnsw.efSearch = 32
    return index.search(X, K + 1)[1]


def faiss_exact(X):
    import faiss

    index = faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    return index.search(X, K + 1)[1]


def sklearn_exact(X):
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=K + 1).fit(X).kneighbors(X, return_distance=False)


def truth(X, rows):
    """Exact 15 nearest other rows of ``rows`` (faiss flat search of those rows only)."""
    import faiss

    index = faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    idx = index.search(X[rows], K + 1)[1]
    return [r[r != i][:K] for r, i in zip(idx, rows, strict=True)]


def recall(idx, rows, exact) -> float:
    found = [len(set(idx[i][idx[i] != i][:K]) & set(e)) / K for i, e in zip(rows, exact, strict=True)]
    return float(np.mean(found))


def fashion_pcs() -> np.ndarray:
    from sklearn.decomposition import PCA

    images, _ = fashion_mnist_all()
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return PCA(50, random_state=0).fit_transform(flat).astype(np.float32)


def synthetic_pcs(n: int) -> np.ndarray:
    """50 PCs of synthetic cells, as den computes its kNN representation."""
    import den
    from den._data import as_features
    from den._embedding import representation

    return representation(as_features(den.datasets.synthetic(n, 500, 15, random_state=0).X), None, 0)


def bench(name: str, X: np.ndarray, exact_max: int) -> list[dict]:
    rows = np.random.default_rng(0).choice(len(X), N_CHECK, replace=False)
    exact = truth(X, rows)
    methods = {"pynndescent": pynndescent, "faiss HNSW": faiss_hnsw}
    if len(X) <= exact_max:
        methods |= {"faiss exact": faiss_exact, "scikit-learn exact": sklearn_exact}
    out, times = [], {}
    for method, fn in methods.items():
        t = time.perf_counter()
        idx = fn(X)
        times[method] = time.perf_counter() - t
        out.append(
            {"data": name, "cells": len(X), "method": method, "s": times[method], "recall15": recall(idx, rows, exact)}
        )
    for r in out:
        r["time vs pynndescent"] = r["s"] / times["pynndescent"]
    return out


def bench_batched(X: np.ndarray, n_batches: int, exact_max: int) -> list[dict]:
    """den's batch-balanced neighbours: exact per batch vs a pynndescent index per batch, same matrix."""
    from sklearn.neighbors import NearestNeighbors

    from den import _pairs
    from den._mapping import batch_balanced_knn

    batches = np.random.default_rng(1).integers(0, n_batches, len(X))
    rows = np.random.default_rng(0).choice(len(X), N_CHECK, replace=False)
    k_b = int(np.ceil(K / n_batches))
    exact = []  # each checked row's exact block per batch, without itself
    for b in range(n_batches):
        members = np.flatnonzero(batches == b)
        idx = members[NearestNeighbors(n_neighbors=k_b + 1).fit(X[members]).kneighbors(X[rows])[1]]
        exact.append([r[r != i][:k_b] for r, i in zip(idx, rows, strict=True)])
    truth_rows = [np.concatenate([e[j] for e in exact]) for j in range(len(rows))]
    out, default = [], _pairs.EXACT_KNN_MAX_CELLS
    indexed = len(X) * np.bincount(batches).max() > default**2  # what den's default path does at this size
    default_name = "den's path: " + ("a pynndescent index per batch" if indexed else "exact (small enough)")
    for method, threshold in (("exact per batch", len(X)), (default_name, default)):
        if threshold > default and len(X) > exact_max:
            continue
        _pairs.EXACT_KNN_MAX_CELLS = threshold
        try:
            t = time.perf_counter()
            idx, _ = batch_balanced_knn(X, batches, K)
            seconds = time.perf_counter() - t
        finally:
            _pairs.EXACT_KNN_MAX_CELLS = default
        found = np.mean([len(set(idx[r]) & set(e)) / len(e) for r, e in zip(rows, truth_rows, strict=True)])
        out.append({"cells": len(X), "batches": n_batches, "method": method, "s": seconds, "recall": float(found)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--exact-max", type=int, default=100_000, help="largest data set searched exactly")
    parser.add_argument("--batches", type=int, help="measure den's batch-balanced search with this many batches")
    args = parser.parse_args()
    if args.batches:
        pynndescent(np.random.default_rng(0).normal(size=(5000, 50)).astype(np.float32))  # numba warm-up
        from pynndescent import NNDescent

        warm = NNDescent(np.random.default_rng(0).normal(size=(5000, 50)).astype(np.float32), n_neighbors=15)
        warm.prepare()
        warm.query(np.random.default_rng(1).normal(size=(100, 50)).astype(np.float32), k=3)  # the query's numba too
        full = synthetic_pcs(max(args.sizes))
        rows = [r for n in sorted(args.sizes) for r in bench_batched(full[:n], args.batches, args.exact_max)]
        report(f"batch-balanced kNN, {args.batches} batches, 15 neighbours on 50 PCs (same run)", rows)
        return
    cold = float(subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True).stdout)
    pynndescent(np.random.default_rng(0).normal(size=(5000, 50)).astype(np.float32))  # numba warm-up
    faiss_hnsw(np.random.default_rng(0).normal(size=(5000, 50)).astype(np.float32))
    rows = bench("Fashion-MNIST", fashion_pcs(), args.exact_max)
    full = synthetic_pcs(max(args.sizes))
    for n in sorted(args.sizes):
        rows += bench("synthetic", full[:n], args.exact_max)
    report(
        "kNN graph, 15 neighbours on 50 PCs (same run)",
        rows,
        {"pynndescent_first_call_fresh_process_s": cold},
    )
    print(f"pynndescent's first call in a fresh process (5,000 cells, numba compiling): {cold:.1f} s")


if __name__ == "__main__":
    main()
