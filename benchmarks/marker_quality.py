"""Marker quality: SHAP-ranked genes (den.tl.marker_features) vs Wilcoxon rank_genes_groups.

1. Synthetic data with planted markers (den.datasets.synthetic), pipeline from
   scratch (embed -> cluster -> marker_features); each den cluster is matched
   to its majority true group; the score is the share of that group's planted
   markers among the cluster's top genes (as many as were planted). Wilcoxon
   on the same den clusters, same run. Goal: den >= 0.9 and within 0.1 of Wilcoxon.
2. pbmc68k_reduced: each den cluster's top 10 genes beside its majority
   bulk_labels population, and where classical markers rank.
3. Speed: marker_features on 10,000 cells x 2,000 genes, default settings (goal <= 60 s).

    python benchmarks/marker_quality.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scanpy as sc
from _common import report

import den

CLASSICAL = {
    "CD14+ Monocyte": ["LYZ", "S100A8", "S100A9", "FCN1", "CD14"],
    "CD19+ B": ["CD79A", "CD79B", "MS4A1", "CD19"],
    "CD56+ NK": ["NKG7", "GNLY", "GZMB", "PRF1"],
    "Dendritic": ["FCER1A", "CST3", "HLA-DQA1"],
    "CD8+ Cytotoxic T": ["CD8A", "CD8B", "CCL5", "GZMK"],
}


def planted_share(adata, key: str, n_markers: int) -> list[float]:
    entry = adata.uns[key]
    shares = []
    for g in entry["names"].dtype.names:
        members = (adata.obs["den_clusters"] == g).to_numpy()
        truth = adata.obs.loc[members, "group"].value_counts().index[0]
        planted = set(adata.var_names[adata.var["marker_of"] == truth])
        shares.append(len(planted & set(entry["names"][g][:n_markers])) / len(planted))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    rows = []
    n_markers = 10
    for seed in args.seeds:
        adata = den.datasets.synthetic(3000, 1000, 8, n_markers=n_markers, marker_fold=4, random_state=seed)
        den.tl.embed(adata, random_state=seed, progress_bar=False)
        den.tl.cluster(adata, random_state=seed, progress_bar=False)
        t = time.perf_counter()
        den.tl.marker_features(adata, random_state=seed, progress_bar=False)
        shap_s = time.perf_counter() - t
        t = time.perf_counter()
        sc.tl.rank_genes_groups(adata, "den_clusters", method="wilcoxon", key_added="wilcoxon")
        wil_s = time.perf_counter() - t
        den_share = planted_share(adata, "den_marker_features", n_markers)
        wil_share = planted_share(adata, "wilcoxon", n_markers)
        rows.append(
            {
                "seed": seed,
                "den_k": int(adata.uns["den_clusters"]["n_clusters"]),
                "den_shap_share": float(np.mean(den_share)),
                "wilcoxon_share": float(np.mean(wil_share)),
                "difference": float(np.mean(den_share) - np.mean(wil_share)),
                "den_s": shap_s,
                "wilcoxon_s": wil_s,
            }
        )
    report("marker_quality synthetic (share of planted markers in each cluster's top 10)", rows)

    adata = sc.datasets.pbmc68k_reduced()
    den.tl.embed(adata, progress_bar=False)
    den.tl.cluster(adata, progress_bar=False)
    den.tl.marker_features(adata, progress_bar=False)
    entry = adata.uns["den_marker_features"]
    pbmc_rows = []
    for g in entry["names"].dtype.names:
        members = (adata.obs["den_clusters"] == g).to_numpy()
        counts = adata.obs.loc[members, "bulk_labels"].value_counts()
        major = counts.index[0]
        names = list(entry["names"][g])
        ranks = {m: names.index(m) + 1 for m in CLASSICAL.get(major, []) if m in names}
        pbmc_rows.append(
            {
                "cluster": g,
                "n_cells": int(members.sum()),
                "majority": major,
                "purity": float(counts.iloc[0] / members.sum()),
                "top10": " ".join(names[:10]),
                "classical_marker_ranks": " ".join(f"{m}:{r}" for m, r in ranks.items()),
            }
        )
    report("marker_quality pbmc68k_reduced (top 10 SHAP genes per den cluster)", pbmc_rows)

    big = den.datasets.synthetic(10_000, 2000, 15, random_state=0)
    den.tl.embed(big, progress_bar=False)
    den.tl.cluster(big, progress_bar=False)
    t = time.perf_counter()
    den.tl.marker_features(big, progress_bar=False)
    speed = [
        {
            "n_cells": big.n_obs,
            "n_genes": big.n_vars,
            "k": int(big.uns["den_clusters"]["n_clusters"]),
            "explained_cells": len(big.uns["den_marker_features"]["shap_cells"]),
            "marker_features_s": time.perf_counter() - t,
            "goal_s": 60,
        }
    ]
    report("marker_quality speed (default settings)", speed)


if __name__ == "__main__":
    main()
