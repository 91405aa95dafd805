"""Shared helpers for the benchmark scripts: data sets, metrics, machine info, output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager

import numpy as np


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }


@contextmanager
def timer(out: dict, key: str):
    t = time.perf_counter()
    yield
    out[key] = round(time.perf_counter() - t, 3)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def pbmc():
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    return adata, "bulk_labels"


def digits():
    import anndata as ad
    import pandas as pd
    from sklearn.datasets import load_digits

    d = load_digits()
    adata = ad.AnnData((d.data / 16.0).astype(np.float32))
    adata.obs["label"] = pd.Categorical(d.target.astype(str))
    return adata, "label"


def scanpy_umap(adata, *, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """scanpy's PCA -> neighbors -> UMAP on a copy; returns the coordinates."""
    import scanpy as sc

    a = adata.copy()
    sc.pp.pca(a, n_comps=min(50, a.n_vars - 1), random_state=seed)
    sc.pp.neighbors(a, n_neighbors=n_neighbors, random_state=seed)
    sc.tl.umap(a, random_state=seed)
    return a.obsm["X_umap"]


def knn_accuracy(emb: np.ndarray, labels, k: int = 15, seed: int = 0) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(k), emb, np.asarray(labels), cv=cv).mean())


def report(name: str, rows: list[dict], extra: dict | None = None) -> None:
    """Print a readable table and a JSON document of the results."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print(f"\n== {name} ==")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))
    doc = {"benchmark": name, "machine": machine(), "rows": rows, **(extra or {})}
    print("\nJSON:", json.dumps(doc, default=float))
    sys.stdout.flush()


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
