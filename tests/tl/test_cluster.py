from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

import den
from den._pairs import graph_from_matrix

FAST = {"head_epochs": 5, "finetune_epochs": 1, "progress_bar": False}


def test_outputs(trained):
    labels = trained.obs["den_clusters"]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert list(labels.cat.categories) == sorted(labels.cat.categories, key=int)
    proba = trained.obsm["den_clusters_proba"]
    assert proba.shape == (trained.n_obs, 3)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(trained.obs["den_clusters_confidence"], proba.max(1), atol=1e-6)
    entry = trained.uns["den_clusters"]
    assert entry["n_clusters"] == 3 and entry["params"]["n_clusters"] == 3
    assert len(entry["eigenvalues"]) >= 3
    assert np.all(np.diff(entry["eigenvalues"]) >= -1e-9)  # ascending


def test_recovers_planted_groups(trained):
    assert adjusted_rand_score(trained.obs["group"], trained.obs["den_clusters"]) > 0.9


def test_n_clusters_honoured(trained):
    den.tl.cluster(trained, n_clusters=5, **FAST)
    assert trained.uns["den_clusters"]["n_clusters"] == 5
    assert trained.obsm["den_clusters_proba"].shape[1] == 5


def test_discovers_k_without_being_told():
    adata = den.datasets.synthetic(600, 100, 4, n_markers=10, marker_fold=8, random_state=3)
    den.tl.embed(adata, n_epochs=10, progress_bar=False)
    den.tl.cluster(adata, **FAST)
    assert adata.uns["den_clusters"]["n_clusters"] == 4
    assert adjusted_rand_score(adata.obs["group"], adata.obs["den_clusters"]) > 0.9


def test_torn_group_is_one_cluster():
    """One group torn into two far-apart islands of the map is still one cluster (the data graph decides).

    The map tears the group along its own structure (its first principal axis), as a map
    splitting a population into two sub-islands does.
    """
    adata = den.datasets.synthetic(600, 100, 3, n_markers=10, marker_fold=8, random_state=2)
    den.tl.embed(adata, n_epochs=10, progress_bar=False)
    group0 = np.flatnonzero(adata.obs["group"] == adata.obs["group"].cat.categories[0])
    x = adata.X[group0].toarray()
    axis = np.linalg.svd(x - x.mean(0), full_matrices=False)[2][0]
    side = (x - x.mean(0)) @ axis > 0
    adata.obsm["X_den"][group0[side]] += 1000.0  # a separate island, far from everything
    den.tl.cluster(adata, **FAST)
    entry = adata.uns["den_clusters"]
    assert entry["n_clusters"] == 3 <= entry["n_spectral_clusters"] <= entry["n_eigengap"]
    assert adjusted_rand_score(adata.obs["group"], adata.obs["den_clusters"]) > 0.9
    # forcing fewer clusters merges the closest groups: exactly k, and the merged groups stay whole
    den.tl.cluster(adata, n_clusters=2, **FAST)
    assert adata.uns["den_clusters"]["n_clusters"] == 2
    assert adjusted_rand_score(adata.obs["group"], adata.obs["den_clusters"]) > 0.4
    pairs = pd.crosstab(adata.obs["group"], adata.obs["den_clusters"])
    assert ((pairs > 0).sum(1) == 1).all()  # no group is split between the two clusters


def test_resolution_controls_merging(pbmc_embedded):
    ks = {}
    for res in (0.05, 1.0, 100.0):
        den.tl.cluster(pbmc_embedded, resolution=res, **FAST)
        entry = pbmc_embedded.uns["den_clusters"]
        assert entry["params"]["resolution"] == res
        ks[res] = (entry["n_clusters"], entry["n_spectral_clusters"])
    assert ks[100.0][0] == ks[100.0][1]  # no pair is that much over-connected: nothing merges
    assert ks[0.05][0] < ks[1.0][0] <= ks[100.0][0]


def test_reproducible(trained):
    a, b = trained.copy(), trained.copy()
    den.tl.cluster(a, random_state=4, **FAST)
    den.tl.cluster(b, random_state=4, **FAST)
    np.testing.assert_array_equal(a.obsm["den_clusters_proba"], b.obsm["den_clusters_proba"])


def test_embedding_untouched(trained):
    before = trained.obsm["X_den"].copy()
    den.tl.cluster(trained, **FAST)
    np.testing.assert_array_equal(trained.obsm["X_den"], before)


def test_key_added_and_copy(trained):
    out = den.tl.cluster(trained, key_added="mine", copy=True, **FAST)
    assert "mine" in out.obs and "mine_proba" in out.obsm and "mine" in out.uns
    assert "mine" not in trained.obs


def test_h5ad_round_trip_keeps_model(trained, tmp_path):
    trained.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    model = den.DENModel.from_adata(back)
    assert model.has_clusters
    np.testing.assert_allclose(model.predict_proba(back.X), trained.obsm["den_clusters_proba"], atol=1e-6)


def test_needs_embedding(small):
    with pytest.raises(KeyError, match=r"den.tl.embed"):
        den.tl.cluster(small, **FAST)


def test_bad_n_clusters(trained):
    before = trained.obs.copy()
    with pytest.raises(ValueError, match="n_clusters"):
        den.tl.cluster(trained, n_clusters=0, **FAST)
    with pytest.raises(ValueError, match="resolution"):
        den.tl.cluster(trained, resolution=0, **FAST)
    pd.testing.assert_frame_equal(trained.obs, before)


def test_fit_cells_checks(trained):
    """fit_cells as den.tl.embed checks it; n_clusters must fit in the sample; nothing written on failure."""
    before = (trained.obs.copy(), set(trained.uns))
    with pytest.raises(ValueError, match=r"fit_cells=1: it must be None or an integer >= 3"):
        den.tl.cluster(trained, fit_cells=1, **FAST)
    with pytest.raises(ValueError, match=r"n_clusters=30: it must be below the number of cells clustered \(30\)"):
        den.tl.cluster(trained, fit_cells=30, n_clusters=30, **FAST)
    pd.testing.assert_frame_equal(trained.obs, before[0])
    assert set(trained.uns) == before[1]


def test_head_reads_the_last_hidden_layer(trained):
    model = den.DENModel.from_adata(trained)
    encoder, head = model.cluster_net
    assert model.cluster_config["head_input"] == "hidden"
    assert isinstance(head, nn.Linear) and head.in_features == model.config["hidden"][-1]
    assert isinstance(encoder.mlp[-1], nn.ReLU)  # the 2-D output layer is gone


def test_loads_a_clustering_with_its_head_on_the_map(trained):
    """Clusterings saved with the published layout (MLP head on the 2-D map) still load and predict."""
    model = den.DENModel.from_adata(trained, cluster_key=None)
    net = model.make_cluster_net(3, head_input="embedding").eval()
    weights = {k: v.numpy() for k, v in net.state_dict().items()}
    model.attach_clusters({"n_clusters": 3, "categories": ["0", "1", "2"]}, weights)  # no "head_input" key
    X = trained.X.toarray().astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(X)), 1).numpy()
    np.testing.assert_allclose(model.predict_proba(X), expected, atol=1e-5)
    with pytest.raises(ValueError, match="head input"):
        model.make_cluster_net(3, head_input="pixels")


def test_reads_the_data_through_the_network_front_once(trained, monkeypatch):
    """The probabilities come from the front computed for training the clustering network: one pass over X."""
    from den._model import DENModel

    adata = trained.copy()
    passes, front_blocks = [], DENModel.front_blocks
    monkeypatch.setattr(
        DENModel, "front_blocks", lambda self, *a, **kw: (passes.append(1), front_blocks(self, *a, **kw))[1]
    )
    den.tl.cluster(adata, **FAST)
    assert len(passes) == 1
    monkeypatch.undo()
    model = DENModel.from_adata(adata, key="den", cluster_key="den_clusters")
    np.testing.assert_array_equal(adata.obsm["den_clusters_proba"], model.predict_proba(adata.X, adata.var_names))


def test_embed_stores_the_knn_graph_of_its_near_pairs(pbmc_embedded):
    """obsp["den_distances"]: each cell's n_neighbors nearest in the representation, as sc.pp.neighbors stores them."""
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    adata = pbmc_embedded
    graph = adata.obsp["den_distances"]
    k = adata.uns["den"]["fit"]["n_neighbors"]
    assert sparse.issparse(graph) and graph.shape == (adata.n_obs, adata.n_obs)
    assert adata.uns["den"]["fit"]["distances_key"] == "den_distances"
    rep = np.asarray(adata.obsm["X_pca"], dtype=np.float32)  # the use_rep embed recorded
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(rep).kneighbors(rep)
    stored = graph_from_matrix(graph, k)
    assert (stored[:, :5] == idx[:, 1:6]).mean() > 0.99  # the nearest first, self excluded
    rows = np.repeat(np.arange(adata.n_obs), k)
    np.testing.assert_allclose(np.asarray(graph[rows, stored.ravel()]).ravel(), dist[:, 1:].ravel(), rtol=1e-4)


def test_cluster_reads_the_stored_graph_instead_of_searching(pbmc_embedded, monkeypatch):
    from den import _clustering

    searches, search = [], _clustering.knn
    monkeypatch.setattr(_clustering, "knn", lambda *a, **kw: (searches.append(1), search(*a, **kw))[1])
    stored = pbmc_embedded.copy()
    den.tl.cluster(stored, **FAST)
    assert searches == []
    fresh = pbmc_embedded.copy()
    del fresh.obsp["den_distances"]
    den.tl.cluster(fresh, **FAST)  # the same search again: the same clusters
    assert searches == [1]
    np.testing.assert_array_equal(stored.obs["den_clusters"], fresh.obs["den_clusters"])
    np.testing.assert_array_equal(stored.obsm["den_clusters_proba"], fresh.obsm["den_clusters_proba"])
    subset = pbmc_embedded[pbmc_embedded.obs["bulk_labels"] != "Dendritic"].copy()  # rows lose neighbours
    assert graph_from_matrix(subset.obsp["den_distances"], 15) is None
    den.tl.cluster(subset, **FAST)  # searches its own graph
    assert searches == [1, 1]


def test_fit_cells_without_pca_layer_searches_a_pca_of_the_sample(monkeypatch):
    """n_pcs=None: the clustering's graph comes from a PCA of the sample (as the embedding's did), not of every cell."""
    import den._clustering as clustering

    adata = den.datasets.synthetic(400, 60, 3, n_markers=8, marker_fold=8, random_state=3)
    den.tl.embed(adata, n_pcs=None, fit_cells=150, n_epochs=5, progress_bar=False)
    seen = []
    real = clustering.representation
    monkeypatch.setattr(clustering, "representation", lambda f, *a: seen.append(f.n) or real(f, *a))
    den.tl.cluster(adata, fit_cells=150, **FAST)
    assert seen == [150]
    assert (adata.uns["den_clusters"]["training_labels"] >= 0).sum() == 150


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"fit_cells": 1}, "fit_cells=1"), ({"fit_cells": 30, "n_clusters": 30}, "n_clusters=30")]
)
def test_fit_cells_refused_before_reading_x(trained, monkeypatch, kwargs, match):
    """A bad fit_cells (or n_clusters beyond the sample) costs no pass over X (minutes on an atlas on disk)."""
    import den.tl._cluster as tool

    monkeypatch.setattr(tool, "get_matrix", lambda *a: pytest.fail("X was read"))
    with pytest.raises(ValueError, match=match):
        den.tl.cluster(trained, **kwargs, **FAST)
