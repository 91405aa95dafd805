"""Cluster quality: den.tl.cluster (k not given) vs Leiden (resolution 1.0) on scanpy's graph, same run.

Data: pbmc68k_reduced (bulk_labels), sklearn digits, and a synthetic data set
with well-separated groups (10 seeds: is the right k found?). Also the
parametric check (fit on 80 % of digits, assign the rest with transform) and
the time to cluster 100,000 cells.

    python benchmarks/cluster_quality.py [--seeds 0 1 2] [--large-cells 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scanpy as sc
from _common import report
from _datasets import digits, pbmc
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

import den


def leiden(adata, seed: int):
    a = adata.copy()
    sc.pp.pca(a, n_comps=min(50, a.n_vars - 1), random_state=seed)
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed)
    sc.tl.leiden(a, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    return a.obs["leiden"]


def scores(truth, pred) -> dict:
    return {
        "k": int(len(np.unique(pred))),
        "ARI": adjusted_rand_score(truth, pred),
        "NMI": normalized_mutual_info_score(truth, pred),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--synthetic-seeds", type=int, default=10)
    parser.add_argument("--large-cells", type=int, default=100_000)
    args = parser.parse_args()

    rows = []
    for name, load in [("pbmc68k_reduced", pbmc), ("digits", digits)]:
        for seed in args.seeds:
            adata, label = load()
            truth = adata.obs[label].to_numpy()
            den.tl.embed(adata, random_state=seed, progress_bar=False)
            t = time.perf_counter()
            den.tl.cluster(adata, random_state=seed, progress_bar=False)
            den_s = time.perf_counter() - t
            d = scores(truth, adata.obs["den_clusters"].to_numpy())
            leid = scores(truth, leiden(adata, seed).to_numpy())
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "true_k": len(np.unique(truth)),
                    **{f"den_{k}": v for k, v in d.items()},
                    **{f"leiden_{k}": v for k, v in leid.items()},
                    "den_cluster_s": den_s,
                }
            )

    synth = []
    for seed in range(args.synthetic_seeds):
        adata = den.datasets.synthetic(3000, 500, 8, n_markers=20, marker_fold=6, random_state=seed)
        den.tl.embed(adata, random_state=seed, progress_bar=False)
        den.tl.cluster(adata, random_state=seed, progress_bar=False)
        d = scores(adata.obs["group"], adata.obs["den_clusters"])
        leid = scores(adata.obs["group"], leiden(adata, seed))
        synth.append(
            {
                "seed": seed,
                "true_k": 8,
                "den_k": d["k"],
                "den_ARI": d["ARI"],
                "leiden_k": leid["k"],
                "leiden_ARI": leid["ARI"],
            }
        )

    param = []
    for seed in args.seeds:
        adata, label = digits()
        train, test = train_test_split(
            np.arange(adata.n_obs), test_size=0.2, random_state=seed, stratify=adata.obs[label]
        )
        full = adata.copy()
        den.tl.embed(full, random_state=seed, progress_bar=False)
        den.tl.cluster(full, random_state=seed, progress_bar=False)
        ref = adata[train].copy()
        den.tl.embed(ref, random_state=seed, progress_bar=False)
        den.tl.cluster(ref, random_state=seed, progress_bar=False)
        query = adata[test].copy()
        den.tl.transform(query, ref)
        # non-parametric yardstick: a 15-NN vote on the reference model's PCs, from the same reference labels
        model = den.DENModel.from_adata(ref)
        pcs = [np.concatenate(list(model.front_blocks(a.X, a.var_names))) for a in (ref, query)]
        knn_vote = KNeighborsClassifier(15).fit(pcs[0], ref.obs["den_clusters"]).predict(pcs[1])
        full_labels = full.obs["den_clusters"].to_numpy()[test]
        param.append(
            {
                "seed": seed,
                "ARI_heldout_vs_full_fit": adjusted_rand_score(full_labels, query.obs["den_clusters"]),
                "knn15_pcs_vs_full_fit": adjusted_rand_score(full_labels, knn_vote),
                "ARI_heldout_vs_truth": adjusted_rand_score(query.obs[label], query.obs["den_clusters"]),
            }
        )

    large = den.datasets.synthetic(args.large_cells, 2000, 15, random_state=0)
    t = time.perf_counter()
    den.tl.embed(large, progress_bar=False)
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    den.tl.cluster(large, progress_bar=False)
    cluster_s = time.perf_counter() - t
    speed = [
        {
            "n_cells": large.n_obs,
            "embed_s": embed_s,
            "cluster_s": cluster_s,
            "goal_cluster_s": 120,
            "k": int(large.uns["den_clusters"]["n_clusters"]),
            "ARI": adjusted_rand_score(large.obs["group"], large.obs["den_clusters"]),
        }
    ]

    right_k = sum(r["den_k"] == r["true_k"] for r in synth)
    report("cluster_quality (k not given; Leiden resolution 1.0 on scanpy's graph)", rows)
    report(
        "cluster_quality synthetic (8 well-separated groups)",
        synth,
        {
            "den_right_k": f"{right_k}/{len(synth)}",
            "leiden_right_k": f"{sum(r['leiden_k'] == r['true_k'] for r in synth)}/{len(synth)}",
        },
    )
    print(f"den found the right k in {right_k} of {len(synth)} seeds")
    means = {
        f"mean_{k}": float(np.mean([r[k] for r in param])) for k in ("ARI_heldout_vs_full_fit", "knn15_pcs_vs_full_fit")
    }
    report("cluster_quality parametric (digits: fit 80 %, transform 20 %)", param, means)
    print(
        "mean ARI of held-out cells vs a full fit: "
        f"transform {means['mean_ARI_heldout_vs_full_fit']:.3f}, "
        f"15-NN on PCs {means['mean_knn15_pcs_vs_full_fit']:.3f} (goal >= 0.9)"
    )
    report("cluster_quality speed", speed)


if __name__ == "__main__":
    main()
