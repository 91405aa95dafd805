"""The paper's image claims, measured: clustering all 70,000 Fashion-MNIST images without k, and labels.

1. Clusters without k: ``den.DEN`` (MLP encoder on the pixels through its frozen 50-PC layer, and the
   convolutional encoder on the images) vs k-means on 50 PCs *given* k = 10 vs Leiden (resolution 1) on
   scanpy's graph (PCA -> neighbors 15), same run. Cluster accuracy (one-to-one Hungarian matching of
   clusters to classes; unmatched clusters count as errors) and NMI; wall time (den: the whole fit,
   embedding included). The published 2020 bar without labels: N2D, ACC 0.672 / NMI 0.684.
2. Semi-supervised: the same fit with 1 % and 10 % of the labels given (``fit(X, y)`` with -1 elsewhere),
   on Fashion-MNIST and on pbmc68k_reduced (bulk_labels): 15-NN 5-fold accuracy of the map on the
   *unlabelled* cells only, vs the unsupervised map on the same cells, and, as a yardstick of what the
   given labels can teach, a logistic regression on 50 PCs fitted on the labelled cells alone; on data
   up to 20,000 cells also a ceiling: the best 5-fold logistic regression given 80 % of the labels.

    python benchmarks/images.py [--n-images 70000] [--seeds 0] [--conv-epochs 3] [--skip-conv] [--skip-mlp]
                                [--skip-baselines] [--graph-bound] [--autoencoder EPOCHS] [--skip-semi]
                                [--skip-clusters]
                                [--semi-sets fashion pbmc]

``--graph-bound`` adds a yardstick: spectral clustering of the neighbour graph den starts from (pixels,
50 PCs, 15 neighbours), *given* k = 8 or 10, i.e. what that graph allows whatever the map does.
``--autoencoder EPOCHS`` adds another representation, as N2D's: an autoencoder trained here, then spectral
clustering of its code's graph given k, den without k on the code, and N2D's UMAP + Gaussian mixture (k = 10).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scanpy as sc
from _common import report
from _datasets import fashion_mnist_all
from _metrics import knn_accuracy
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import normalized_mutual_info_score
from sklearn.model_selection import StratifiedKFold, cross_val_score

import den


def cluster_accuracy(truth, pred) -> float:
    """Share of samples in clusters matched one-to-one to classes (Hungarian); unmatched clusters are errors."""
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1))
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(truth))


def scores(truth, pred) -> dict:
    return {
        "k": int(len(np.unique(pred))),
        "ACC": cluster_accuracy(truth, pred),
        "NMI": float(normalized_mutual_info_score(truth, pred)),
    }


def load(n: int):
    images, labels = fashion_mnist_all()
    return images[:n].astype(np.float32) / 255.0, labels[:n]


def baselines(flat: np.ndarray, y: np.ndarray, seed: int) -> list[dict]:
    import anndata as ad
    from sklearn.cluster import KMeans

    rows = []
    a = ad.AnnData(flat)
    t = time.perf_counter()
    sc.pp.pca(a, n_comps=50, random_state=seed)
    pca_s = time.perf_counter() - t
    t = time.perf_counter()
    km = KMeans(10, n_init=10, random_state=seed).fit_predict(a.obsm["X_pca"])
    rows.append(
        {
            "method": "k-means on 50 PCs (k = 10 given)",
            "seed": seed,
            **scores(y, km),
            "s": pca_s + time.perf_counter() - t,
        }
    )
    t = time.perf_counter()
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed)
    sc.tl.leiden(a, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    rows.append(
        {
            "method": "Leiden (resolution 1)",
            "seed": seed,
            **scores(y, a.obs["leiden"]),
            "s": pca_s + time.perf_counter() - t,
        }
    )
    return rows


def graph_bound(flat: np.ndarray, y: np.ndarray, seed: int, of: str = "den's data graph") -> list[dict]:
    """What a neighbour graph allows: spectral clustering of it *given* k.

    The graph den's pairs and clusters start from (15 neighbours on 50 PCs, or on ``flat`` itself when it
    has 50 columns or fewer, symmetrised), its normalised affinity's leading k eigenvectors, rows
    normalised, k-means with k = 8 and 10.
    """
    from scipy import sparse
    from scipy.sparse.linalg import eigsh
    from sklearn.cluster import KMeans

    from den._pairs import knn

    t = time.perf_counter()
    features = flat if flat.shape[1] <= 50 else PCA(50, random_state=seed).fit_transform(flat)
    graph, _ = knn(features, 15, random_state=seed)
    n = len(y)
    A = sparse.csr_matrix((np.ones(graph.size), (np.repeat(np.arange(n), graph.shape[1]), graph.ravel())), (n, n))
    A = ((A + A.T) > 0).astype(np.float64)
    d = 1 / np.sqrt(np.asarray(A.sum(1)).ravel())
    v0 = np.random.default_rng(seed).random(n)  # a seeded start: ARPACK's own is random
    vals, vecs = eigsh(sparse.diags(d) @ A @ sparse.diags(d), k=10, which="LA", v0=v0)
    vecs = vecs[:, np.argsort(-vals)]
    purity = float((y[graph] == y[:, None]).mean())
    rows = []
    for k in (8, 10):
        V = vecs[:, :k] / np.linalg.norm(vecs[:, :k], axis=1, keepdims=True)
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(V)
        name = f"spectral on {of} (k = {k} given)"
        rows.append({"method": name, "seed": seed, **scores(y, labels), "s": time.perf_counter() - t})
        rows[-1]["graph_15nn_purity"] = purity
    return rows


def autoencoder_rows(flat: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> list[dict]:
    """Another representation of the images, as N2D's: an autoencoder's 10-D code, then clusters of the code.

    N2D's architecture (784-500-500-2000-10 and back, ReLU, mean squared error, Adam 1e-3, batches of 256),
    trained ``epochs`` times over the images on this machine's threads; on the code: spectral clustering of
    its 15-NN graph given k, ``den.DEN`` without k, and N2D's own recipe (UMAP to 10 dimensions with 20
    neighbours and min_dist 0, a Gaussian mixture given k = 10).
    """
    import torch
    import umap
    from sklearn.mixture import GaussianMixture

    torch.manual_seed(seed)
    t = time.perf_counter()
    sizes = [flat.shape[1], 500, 500, 2000, 10]
    encoder, decoder = (_mlp(sizes), _mlp(sizes[::-1]))
    optimiser = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], 1e-3)
    X = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    for _ in range(epochs):
        for batch in torch.randperm(len(X)).split(256):
            loss = ((decoder(encoder(X[batch])) - X[batch]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        code = encoder(X).numpy()
    train_s = time.perf_counter() - t
    of = f"an autoencoder's code ({epochs} epochs)"
    rows = [{**r, "s": r["s"] + train_s} for r in graph_bound(code, y, seed, of=of)]
    t = time.perf_counter()
    labels = den.DEN(random_state=seed).fit(code).labels_
    rows.append(
        {"method": f"den without k on {of}", "seed": seed, **scores(y, labels), "s": train_s + time.perf_counter() - t}
    )
    t = time.perf_counter()
    u = umap.UMAP(n_components=10, n_neighbors=20, min_dist=0.0, random_state=seed).fit_transform(code)
    labels = GaussianMixture(10, covariance_type="full", random_state=seed).fit_predict(u)
    rows.append(
        {
            "method": f"N2D's recipe on {of} (k = 10 given)",
            "seed": seed,
            **scores(y, labels),
            "s": train_s + time.perf_counter() - t,
        }
    )
    for row in rows:
        print("row:", row, flush=True)
    return rows


def _mlp(sizes: list[int]):
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.ReLU()] if i < len(sizes) - 2 else [])
    return torch.nn.Sequential(*layers)


def den_rows(images: np.ndarray, y: np.ndarray, seed: int, conv_epochs: int | None, mlp: bool = True) -> list[dict]:
    rows = []
    variants = [("den, MLP encoder (default)", images.reshape(len(images), -1), {})] if mlp else []
    if conv_epochs is not None:
        variants.append(("den, conv encoder", images, {"encoder": "conv", "n_epochs": conv_epochs, "hidden": (64,)}))
    for name, X, kw in variants:
        t = time.perf_counter()
        est = den.DEN(random_state=seed, **kw).fit(X)
        rows.append(
            {
                "method": name,
                "seed": seed,
                **scores(y, est.labels_),
                "s": time.perf_counter() - t,
                "map_knn_acc": knn_accuracy(est.embedding_, y, seed=seed),
            }
        )
        print("row:", rows[-1], flush=True)  # as each fit ends: a long run cut short keeps what it measured
    return rows


def label_ceiling(X, pcs, y, seed: int) -> float:
    """The best 5-fold logistic regression given 80 % of the labels (C in 0.01 / 0.1 / 1; 50 PCs or all features)."""
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return max(
        float(cross_val_score(LogisticRegression(C=c, max_iter=3000), Z, y, cv=folds).mean())
        for c in (0.01, 0.1, 1.0)
        for Z in (pcs, X)
    )


def semi_supervised(X, y, seed: int, name: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    unsup = den.DEN(cluster=False, random_state=seed).fit(X).embedding_
    pcs = PCA(50, random_state=seed).fit_transform(X)  # for both yardsticks
    ceiling = label_ceiling(X, pcs, y, seed) if len(y) <= 20_000 else None
    rows = []
    for share in (0.01, 0.10):
        given = rng.random(len(y)) < share
        partial = np.where(given, y, -1).astype(np.int64)  # never np.where(given, uint8, -1): -1 becomes 255
        t = time.perf_counter()
        emb = den.DEN(cluster=False, random_state=seed).fit(X, partial).embedding_
        fit_s = time.perf_counter() - t
        unlabelled = ~given
        acc = knn_accuracy(emb[unlabelled], y[unlabelled], seed=seed)
        base = knn_accuracy(unsup[unlabelled], y[unlabelled], seed=seed)
        # yardstick: what the given labels alone teach a classifier on 50 PCs, scored on the unlabelled cells
        clf = LogisticRegression(max_iter=2000).fit(pcs[given], y[given])
        supervised = float((clf.predict(pcs[unlabelled]) == y[unlabelled]).mean())
        rows.append(
            {
                "data": name,
                "labels_given": share,
                "seed": seed,
                "knn_acc_unlabelled": acc,
                "unsupervised_same_cells": base,
                "gain": acc - base,
                "logistic on 50 PCs, given labels only": supervised,
                "ceiling: logistic, 80 % of labels": ceiling,
                "fit_s": fit_s,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=70_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--conv-epochs", type=int, default=3, help="epochs of the conv encoder (CPU budget)")
    parser.add_argument("--skip-conv", action="store_true")
    parser.add_argument("--skip-mlp", action="store_true", help="only the conv encoder (e.g. on a GPU)")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument(
        "--graph-bound", action="store_true", help="also spectral clustering of den's data graph given k"
    )
    parser.add_argument(
        "--autoencoder", type=int, metavar="EPOCHS", help="also clusters of an autoencoder's code (N2D's way)"
    )
    parser.add_argument("--skip-semi", action="store_true")
    parser.add_argument("--skip-clusters", action="store_true", help="only the semi-supervised part")
    parser.add_argument("--semi-sets", nargs="+", choices=("fashion", "pbmc"), default=["fashion", "pbmc"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sc.settings.verbosity = 0
    semi_sets = [] if args.skip_semi else args.semi_sets
    if not args.skip_clusters or "fashion" in semi_sets:  # a pbmc-only run does not read the images
        images, y = load(args.n_images)
        flat = images.reshape(len(images), -1)
        den.DEN(n_epochs=1, cluster=False).fit(flat[:2000])  # warm-up
    if not args.skip_clusters:
        rows = []
        for seed in args.seeds:
            rows += [] if args.skip_baselines else baselines(flat, y, seed)
            rows += graph_bound(flat, y, seed) if args.graph_bound else []
            rows += autoencoder_rows(flat, y, seed, args.autoencoder) if args.autoencoder else []
            rows += den_rows(images, y, seed, None if args.skip_conv else args.conv_epochs, mlp=not args.skip_mlp)
        rows.append({"method": "N2D (published, 2020)", "ACC": 0.672, "NMI": 0.684})
        report(f"images: Fashion-MNIST, {len(y)} images, clusters without k", rows)
    if not semi_sets:
        return
    semi = []
    if "fashion" in semi_sets:
        for seed in args.seeds:
            semi += semi_supervised(flat, y, seed, f"Fashion-MNIST {len(y)}")
    if "pbmc" in semi_sets:
        pbmc = sc.datasets.pbmc68k_reduced()
        labels = pbmc.obs["bulk_labels"].to_numpy().astype(str)
        codes = np.unique(labels, return_inverse=True)[1]
        x = np.asarray(pbmc.X)
        if "fashion" not in semi_sets:
            den.DEN(n_epochs=1, cluster=False).fit(x)  # warm-up
        for seed in (0, 1, 2):
            semi += semi_supervised(x, codes, seed, "pbmc68k_reduced")
    report("images: semi-supervised (kNN-15 accuracy of the map on the unlabelled cells)", semi)


if __name__ == "__main__":
    main()
