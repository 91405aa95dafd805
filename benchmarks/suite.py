"""The panel benchmark: den vs scanpy's UMAP vs openTSNE on seven data sets, in the same run.

For each data set and seed: den's map (``den.tl.embed``), scanpy's PCA -> neighbors(15)
-> UMAP and openTSNE on the same 50 PCs, each scored by kNN-15 accuracy (5-fold),
trustworthiness (k = 10), recall@15, spread and, on the trajectory, Spearman along
its lineages (definitions in ``_metrics.py`` and docs/benchmarks.md); den's held-out
ratio (fit on 80 %, ``den.tl.transform`` the other 20 %); ``den.tl.cluster`` vs Leiden
(resolution 1, on scanpy's graph) by ARI and k; wall times. Every competitor is warmed
up on the same data first (numba compiles scanpy's and UMAP's code on first use).
Prints a table per data set, the panel means and the goals of the panel issue, and
one JSON document.

    python benchmarks/suite.py [--datasets digits zeisel] [--seeds 0 1 2]
        [--embed-kwargs '{"n_epochs": 30}'] [--cluster-kwargs '{}']
        [--competitors-from results.json]   # reuse competitor rows of an earlier run (sweeps)
        [--json-out results.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import scanpy as sc
from _common import machine
from _datasets import PANEL
from _metrics import knn_accuracy, map_scores, pcs
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

import den

MAP_METRICS = ("knn_acc", "trust", "recall15", "spread", "spearman")


def scanpy_graph(adata, seed: int):
    """scanpy's PCA -> neighbors(15) on a copy (the graph UMAP and Leiden share)."""
    a = adata.copy()
    sc.pp.pca(a, n_comps=min(50, a.n_vars - 1), random_state=seed)
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed)
    return a


def run_umap(adata, seed: int) -> tuple[np.ndarray, float, object]:
    t = time.perf_counter()
    a = scanpy_graph(adata, seed)
    sc.tl.umap(a, random_state=seed)
    return np.asarray(a.obsm["X_umap"]), time.perf_counter() - t, a


def run_tsne(adata, seed: int) -> tuple[np.ndarray, float]:
    from openTSNE import TSNE

    t = time.perf_counter()
    a = adata.copy()
    sc.pp.pca(a, n_comps=min(50, a.n_vars - 1), random_state=seed)
    emb = TSNE(n_jobs=-1, random_state=seed).fit(np.asarray(a.obsm["X_pca"], dtype=np.float64))
    return np.asarray(emb), time.perf_counter() - t


def run_leiden(graph_adata, seed: int) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    sc.tl.leiden(graph_adata, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    return graph_adata.obs["leiden"].to_numpy(), time.perf_counter() - t


def user_pca(adata, seed: int):
    """``sc.pp.pca`` as a scanpy user runs it before any embedding (den's kNN graph then uses ``X_pca``)."""
    sc.pp.pca(adata, n_comps=min(50, adata.n_vars - 1, adata.n_obs - 1), random_state=seed)


def held_out(adata, label: str, seed: int, kw: dict) -> dict:
    """Fit on a stratified 80 %, transform the other 20 %; kNN-15 accuracy of the 20 % from the 80 %'s map.

    The 80 % get their own PCA: nothing of the held-out cells enters the fit.
    """
    train, test = train_test_split(np.arange(adata.n_obs), test_size=0.2, random_state=seed, stratify=adata.obs[label])
    ref, query = adata[train].copy(), adata[test].copy()
    user_pca(ref, seed)
    den.tl.embed(ref, random_state=seed, **kw)
    den.tl.transform(query, ref)
    y_ref, y_q = ref.obs[label].to_numpy(), query.obs[label].to_numpy()
    in_sample = knn_accuracy(ref.obsm["X_den"], y_ref, seed=seed)
    clf = KNeighborsClassifier(15).fit(ref.obsm["X_den"], y_ref)
    out = float((clf.predict(query.obsm["X_den"]) == y_q).mean())
    return {"heldout_acc": out, "heldout_in_sample": in_sample, "heldout_ratio": out / in_sample}


def warm_up(adata, seed: int) -> None:
    """Compile and cache on this data shape before anything is timed."""
    _, _, g = run_umap(adata, seed)
    run_leiden(g, seed)
    run_tsne(adata, seed)
    den.tl.embed(adata.copy(), n_epochs=1, progress_bar=False, random_state=seed)


def run_dataset(
    name: str, seeds, ekw: dict, ckw: dict, competitors: dict | None, holdout: bool, clusters: bool
) -> list[dict]:
    adata, label = PANEL[name]()
    adata.obsm.pop("X_pca", None)  # every method starts from the same matrix (pbmc68k_reduced ships a PCA)
    y = adata.obs[label].to_numpy()
    rep = pcs(adata)
    warm_up(adata, 12345)
    rows = []
    for seed in seeds:
        row: dict = {"dataset": name, "seed": seed, "n_cells": adata.n_obs}
        a = adata.copy()
        t = time.perf_counter()
        user_pca(a, seed)  # timed with den: UMAP's time includes its PCA too
        den.tl.embed(a, random_state=seed, **ekw)
        row["den_s"] = time.perf_counter() - t
        row |= {f"den_{k}": v for k, v in map_scores(a, rep, a.obsm["X_den"], y, seed=seed).items()}
        if clusters:
            t = time.perf_counter()
            den.tl.cluster(a, random_state=seed, **{"progress_bar": False, **ckw})
            row["den_cluster_s"] = time.perf_counter() - t
            row["den_ari"] = adjusted_rand_score(y, a.obs["den_clusters"])
            row["den_k"] = int(a.obs["den_clusters"].nunique())
        if holdout:
            row |= {f"den_{k}": v for k, v in held_out(adata, label, seed, ekw).items()}
        cached = (competitors or {}).get((name, seed))
        if cached is not None:
            row |= cached
        else:
            umap, row["umap_s"], g = run_umap(adata, seed)
            row |= {f"umap_{k}": v for k, v in map_scores(adata, rep, umap, y, seed=seed).items()}
            leiden, row["leiden_s"] = run_leiden(g, seed)
            row["leiden_ari"] = adjusted_rand_score(y, leiden)
            row["leiden_k"] = int(len(np.unique(leiden)))
            tsne, row["tsne_s"] = run_tsne(adata, seed)
            row |= {f"tsne_{k}": v for k, v in map_scores(adata, rep, tsne, y, seed=seed).items()}
        row["time_ratio"] = row["den_s"] / row["umap_s"]
        rows.append(row)
        print(json.dumps(row, default=float), flush=True)
    return rows


def mean_rows(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        keys = [k for k in rs[0] if isinstance(rs[0][k], int | float) and k != "seed"]
        out[name] = {k: float(np.mean([r[k] for r in rs if k in r])) for k in keys}
    return out


def goals(means: dict[str, dict]) -> list[dict]:
    """The panel issue's goals, per data set and on the panel means."""
    checks = []

    def add(where, goal, value, bar, ok):
        checks.append({"where": where, "goal": goal, "den": value, "bar": bar, "met": bool(ok)})

    for name, m in means.items():
        add(name, "kNN acc >= UMAP", m["den_knn_acc"], m["umap_knn_acc"], m["den_knn_acc"] >= m["umap_knn_acc"])
        add(
            name,
            "trust >= UMAP - 0.01",
            m["den_trust"],
            m["umap_trust"] - 0.01,
            m["den_trust"] >= m["umap_trust"] - 0.01,
        )
        add(name, "recall@15 >= UMAP", m["den_recall15"], m["umap_recall15"], m["den_recall15"] >= m["umap_recall15"])
        add(
            name,
            "spread >= 0.5 UMAP",
            m["den_spread"],
            0.5 * m["umap_spread"],
            m["den_spread"] >= 0.5 * m["umap_spread"],
        )
        if "den_heldout_ratio" in m:
            add(name, "held-out ratio >= 0.95", m["den_heldout_ratio"], 0.95, m["den_heldout_ratio"] >= 0.95)
        add(name, "embed time <= 3x UMAP", m["den_s"], 3 * m["umap_s"], m["den_s"] <= 3 * m["umap_s"])
        if "den_spearman" in m:
            add(
                name, "Spearman >= UMAP", m["den_spearman"], m["umap_spearman"], m["den_spearman"] >= m["umap_spearman"]
            )
    keys = [
        k for k in ("den_recall15", "tsne_recall15", "den_ari", "leiden_ari") if all(k in m for m in means.values())
    ]
    panel = {k: float(np.mean([m[k] for m in means.values()])) for k in keys}
    if "den_ari" not in panel:
        panel |= {"den_ari": float("nan"), "leiden_ari": float("nan")}
    add(
        "panel",
        "mean recall@15 >= openTSNE",
        panel["den_recall15"],
        panel["tsne_recall15"],
        panel["den_recall15"] >= panel["tsne_recall15"],
    )
    add("panel", "mean ARI >= Leiden", panel["den_ari"], panel["leiden_ari"], panel["den_ari"] >= panel["leiden_ari"])
    wins = sum(m.get("den_ari", -1) >= m["leiden_ari"] for m in means.values())
    add("panel", "ARI >= Leiden on >= 5 of 7", wins, 5, wins >= 5)
    return checks


def table(title: str, rows: list[dict], cols: list[str]) -> None:
    cols = [c for c in cols if any(c in r for r in rows)]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))
    widths = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    print(f"\n== {title} ==")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(widths[c]) for c in cols))


def print_tables(rows: list[dict], means: dict[str, dict], checks: list[dict]) -> None:
    for name, m in means.items():
        per_method = []
        for method in ("den", "umap", "tsne"):
            r = {"method": method}
            r |= {k: m.get(f"{method}_{k}") for k in (*MAP_METRICS, "s")}
            per_method.append(r)
        per_method[0] |= {k: m.get(f"den_{k}") for k in ("heldout_ratio", "ari", "k", "cluster_s")}
        per_method.append(
            {"method": "leiden", "ari": m.get("leiden_ari"), "k": m.get("leiden_k"), "s": m.get("leiden_s")}
        )
        n_seeds = sum(r["dataset"] == name for r in rows)
        cols = ["method", *MAP_METRICS, "heldout_ratio", "ari", "k", "s", "cluster_s"]
        table(f"{name} (mean of {n_seeds} seeds; s = wall seconds)", per_method, cols)
    cols = [
        "dataset",
        "den_knn_acc",
        "umap_knn_acc",
        "den_trust",
        "umap_trust",
        "den_recall15",
        "umap_recall15",
        "tsne_recall15",
        "den_spread",
        "umap_spread",
        "den_heldout_ratio",
        "den_ari",
        "leiden_ari",
        "den_k",
        "leiden_k",
        "den_s",
        "umap_s",
        "time_ratio",
    ]
    table("panel (means over seeds)", [{"dataset": n, **m} for n, m in means.items()], cols)
    table("goals", checks, ["where", "goal", "den", "bar", "met"])
    print(f"\n{sum(c['met'] for c in checks)} of {len(checks)} goals met")


def load_competitors(path: str) -> dict:
    doc = json.load(open(path))
    keep = ("umap_", "tsne_", "leiden_")
    return {(r["dataset"], r["seed"]): {k: v for k, v in r.items() if k.startswith(keep)} for r in doc["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(PANEL), choices=list(PANEL))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--embed-kwargs", type=json.loads, default={})
    parser.add_argument("--cluster-kwargs", type=json.loads, default={})
    parser.add_argument("--competitors-from", default=None, help="reuse UMAP / openTSNE / Leiden rows of this JSON")
    parser.add_argument("--no-holdout", action="store_true", help="skip the held-out fits (sweeps)")
    parser.add_argument("--no-cluster", action="store_true", help="skip den.tl.cluster (sweeps of the map)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sc.settings.verbosity = 0
    ekw = {"progress_bar": False, **args.embed_kwargs}
    competitors = load_competitors(args.competitors_from) if args.competitors_from else None
    t0 = time.perf_counter()
    rows = []
    for name in args.datasets:
        rows += run_dataset(
            name, args.seeds, ekw, args.cluster_kwargs, competitors, not args.no_holdout, not args.no_cluster
        )
    means = mean_rows(rows)
    checks = goals(means) if len(means) else []
    print_tables(rows, means, checks)
    doc = {
        "benchmark": "suite",
        "machine": machine(),
        "den_version": den.__version__,
        "embed_kwargs": ekw,
        "cluster_kwargs": args.cluster_kwargs,
        "competitors_from": args.competitors_from,
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
        "means": means,
        "goals": checks,
    }
    print("\nJSON:", json.dumps(doc, default=float))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(doc, f, default=float, indent=1)


if __name__ == "__main__":
    main()
