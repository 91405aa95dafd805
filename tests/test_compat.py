"""Files written by den 0.1 (tests/data, made by the 0.1 release) still load and transform exactly."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

import den

DATA = Path(__file__).parent / "data"


def test_h5ad_from_0_1_transforms_exactly():
    ref = ad.read_h5ad(DATA / "den_0.1_synthetic.h5ad")
    assert ref.uns["den"]["params"]["layer"] == "None"  # how 0.1 stored None
    query = ref.copy()
    del query.obsm["X_den"]
    den.tl.transform(query, ref)
    np.testing.assert_allclose(query.obsm["X_den"], ref.obsm["X_den"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(query.obs["den_clusters"], ref.obs["den_clusters"])
    np.testing.assert_allclose(query.obsm["den_clusters_proba"], ref.obsm["den_clusters_proba"], atol=1e-5)


def test_model_folder_from_0_1_loads():
    model = den.DENModel.load(DATA / "den_0.1_model")
    assert model.config["format_version"] == 1 and model.config.get("encoder", "mlp") == "mlp"
    ref = ad.read_h5ad(DATA / "den_0.1_synthetic.h5ad")
    np.testing.assert_allclose(model.embed(ref.X, ref.var_names), ref.obsm["X_den"], rtol=1e-5, atol=1e-5)
    assert model.has_clusters and model.kernel == (1, 2.0)  # the paper's F(1, 2) for old maps


def test_cluster_and_markers_run_on_a_0_1_map():
    ref = ad.read_h5ad(DATA / "den_0.1_synthetic.h5ad")
    den.tl.cluster(ref, head_epochs=2, finetune_epochs=0, progress_bar=False)
    den.tl.marker_features(ref, n_background=20, max_cells_per_group=10, progress_bar=False)
    assert ref.uns["den_clusters"]["n_clusters"] >= 2


def test_plots_and_key_checks_read_a_0_1_file():
    """0.1's embedding entry has no "fit": the plots and the key_added guard still recognise it."""
    import matplotlib.pyplot as plt
    import pytest

    ref = ad.read_h5ad(DATA / "den_0.1_synthetic.h5ad")
    den.pl.history(ref, show=False)
    den.pl.spectrum(ref, show=False)
    plt.close("all")
    with pytest.raises(ValueError, match="holds the model of den.tl.embed"):
        den.tl.cluster(ref, key_added="den", progress_bar=False)
