"""Embedding quality: den vs scanpy PCA -> neighbors(15) -> UMAP, in the same run.

Prints kNN-15 5-fold label accuracy and trustworthiness (k = 10) on
pbmc68k_reduced (bulk_labels) and sklearn digits, plus den's held-out check:
fit on 80 % of digits, transform the other 20 %.

    python benchmarks/embed_quality.py [--seeds 0 1 2] [--embed-kwargs '{"n_epochs": 30}']
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _common import digits, knn_accuracy, pbmc, report, scanpy_umap, timer
from sklearn.manifold import trustworthiness
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

import den


def dense(X):
    return X.toarray() if hasattr(X, "toarray") else np.asarray(X)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--embed-kwargs", type=json.loads, default={})
    args = parser.parse_args()
    kw = {"progress_bar": False, **args.embed_kwargs}

    rows = []
    for name, load in [("pbmc68k_reduced", pbmc), ("digits", digits)]:
        for seed in args.seeds:
            adata, label = load()
            y = adata.obs[label].to_numpy()
            X = dense(adata.X)
            t = {}
            with timer(t, "den_s"):
                den.tl.embed(adata, random_state=seed, **kw)
            with timer(t, "umap_s"):
                umap = scanpy_umap(adata, seed=seed)
            row = {"dataset": name, "seed": seed}
            for method, emb in [("den", adata.obsm["X_den"]), ("umap", umap)]:
                row[f"{method}_knn_acc"] = knn_accuracy(emb, y, seed=seed)
                row[f"{method}_trust"] = float(trustworthiness(X, emb, n_neighbors=10))
            row["knn_acc_ratio"] = row["den_knn_acc"] / row["umap_knn_acc"]
            row["trust_diff"] = row["den_trust"] - row["umap_trust"]
            rows.append(row | t)

    holdout = []
    for seed in args.seeds:
        adata, label = digits()
        train, test = train_test_split(
            np.arange(adata.n_obs), test_size=0.2, random_state=seed, stratify=adata.obs[label]
        )
        ref, query = adata[train].copy(), adata[test].copy()
        den.tl.embed(ref, random_state=seed, **kw)
        den.tl.transform(query, ref)
        y_ref, y_q = ref.obs[label].to_numpy(), query.obs[label].to_numpy()
        in_sample = knn_accuracy(ref.obsm["X_den"], y_ref, seed=seed)
        clf = KNeighborsClassifier(15).fit(ref.obsm["X_den"], y_ref)
        held_out = float((clf.predict(query.obsm["X_den"]) == y_q).mean())
        holdout.append(
            {"seed": seed, "in_sample_knn_acc": in_sample, "held_out_knn_acc": held_out, "ratio": held_out / in_sample}
        )

    summary = {}
    for ds in ("pbmc68k_reduced", "digits"):
        r = [x for x in rows if x["dataset"] == ds]
        summary[ds] = {
            k: float(np.mean([x[k] for x in r]))
            for k in ("den_knn_acc", "umap_knn_acc", "den_trust", "umap_trust", "knn_acc_ratio", "trust_diff")
        }
    report("embed_quality", rows, {"holdout_digits": holdout, "mean": summary, "embed_kwargs": kw})
    report("embed_quality holdout (digits, fit 80 % / transform 20 %)", holdout)


if __name__ == "__main__":
    main()
