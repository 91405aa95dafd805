"""The README's usage examples run as written (with the data they leave to the reader)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import den

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_two_examples():
    blocks = python_blocks()
    assert len(blocks) == 2
    assert "den.tl.embed(adata)" in blocks[0] and "den.DEN(" in blocks[1]


@pytest.mark.filterwarnings("ignore")
def test_anndata_example_runs(tmp_path, monkeypatch):
    import scanpy as sc

    monkeypatch.chdir(tmp_path)  # model.save("my_model") writes here
    scope = {"new_cells": sc.datasets.pbmc68k_reduced()[:60].copy()}
    exec(python_blocks()[0], scope)  # the README's own code
    plt.close("all")
    adata, new_cells = scope["adata"], scope["new_cells"]
    assert adata.obsm["X_den"].shape == (adata.n_obs, 2)
    assert new_cells.obsm["X_den"].shape == (60, 2)
    np.testing.assert_allclose(new_cells.obsm["X_den"], adata.obsm["X_den"][:60], atol=1e-4)  # same cells, same places
    assert (tmp_path / "my_model").exists()


@pytest.mark.filterwarnings("ignore")
def test_estimator_example_runs(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    monkeypatch.chdir(tmp_path)  # est.save("folder") writes here
    digits = load_digits()
    X = (digits.images[:500] / 16).astype(np.float32)  # images, (n, 8, 8)
    y = np.where(np.arange(500) % 10 == 0, digits.target[:500], -1)
    scope = {"den": den, "X": X, "X_new": X[:20], "y": y, "images": X[:4]}  # den imported by the first block
    exec(python_blocks()[1], scope)  # the README's own code
    plt.close("all")
    est = scope["est"]
    assert est.embedding_.shape == (500, 2)
    assert scope["values"].shape[:1] == (4,)
    assert (tmp_path / "folder").exists()
