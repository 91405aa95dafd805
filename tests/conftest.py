from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import scanpy as sc

import den

FAST = {"n_epochs": 3, "progress_bar": False}


@pytest.fixture
def rng():
    return np.random.default_rng(42)


@pytest.fixture
def small():
    """300 cells x 80 genes, 3 groups with strong planted markers (sparse, log-normalised)."""
    return den.datasets.synthetic(300, 80, 3, n_markers=8, marker_fold=8, random_state=0)


@pytest.fixture(scope="session")
def _trained():
    adata = den.datasets.synthetic(400, 80, 3, n_markers=8, marker_fold=8, random_state=1)
    den.tl.embed(adata, n_epochs=5, progress_bar=False)
    den.tl.cluster(adata, n_clusters=3, head_epochs=10, finetune_epochs=2, progress_bar=False)
    return adata


@pytest.fixture
def trained(_trained):
    """Embedded and clustered (k = 3) synthetic data; a fresh copy per test."""
    return _trained.copy()


@pytest.fixture(scope="session")
def _pbmc():
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def pbmc(_pbmc):
    return _pbmc.copy()


@pytest.fixture(scope="session")
def _pbmc_embedded(_pbmc):
    adata = _pbmc.copy()
    den.tl.embed(adata, n_epochs=30, progress_bar=False)
    return adata


@pytest.fixture
def pbmc_embedded(_pbmc_embedded):
    """pbmc68k_reduced with a DEN map (30 epochs); a fresh copy per test."""
    return _pbmc_embedded.copy()
