from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch

import den
from den._explain import explain

FAST = {"n_background": 50, "max_cells_per_group": 40, "progress_bar": False}


@pytest.fixture
def explained(trained):
    den.tl.marker_features(trained, **FAST)
    return trained


def test_rank_genes_groups_layout(explained):
    entry = explained.uns["den_marker_features"]
    groups = entry["names"].dtype.names
    assert set(groups) == set(explained.obs["den_clusters"].cat.categories)
    assert entry["params"]["method"] == "den_shap" and entry["params"]["groupby"] == "den_clusters"
    assert entry["params"]["direction"] == "up"
    for g in groups:
        scores = entry["scores"][g]
        # genes higher in the group come first, each block sorted by mean SHAP
        first_negative = np.argmax(scores < 0) if (scores < 0).any() else len(scores)
        assert np.all(np.diff(scores[:first_negative]) <= 0)
    df = sc.get.rank_genes_groups_df(explained, groups[0], key="den_marker_features")
    assert list(df.columns) == ["names", "scores", "logfoldchanges", "pvals", "pvals_adj"]
    assert len(df) == explained.n_vars and df["pvals"].isna().all()


def test_cells_of_every_group_read_at_once(trained, monkeypatch):
    """Two reads of the data (background, then every group's cells), not one per group: on disk, one pass each."""
    import den.tl._marker_features as module

    reads = []
    original = module.rows
    monkeypatch.setattr(module, "rows", lambda gn, adata, idx: reads.append(len(idx)) or original(gn, adata, idx))
    den.tl.marker_features(trained, **FAST)
    n_explained = sum(trained.uns["den_marker_features"]["explainers"]["n_cells"])
    assert reads == [50, n_explained] and trained.obs["den_clusters"].nunique() == 3


def test_direction_any_sorts_by_score(trained):
    den.tl.marker_features(trained, direction="any", **FAST)
    entry = trained.uns["den_marker_features"]
    for g in entry["names"].dtype.names:
        assert np.all(np.diff(entry["scores"][g]) <= 0)


def test_scanpy_plots_read_it(explained):
    entry = explained.uns["den_marker_features"]
    top = {g for grp in entry["names"].dtype.names for g in entry["names"][grp][:3]}
    for plot in (sc.pl.rank_genes_groups_dotplot, sc.pl.rank_genes_groups_matrixplot):
        fig = plot(explained, key="den_marker_features", n_genes=3, show=False, return_fig=True)
        assert set(fig.var_names) == top  # scanpy plots the genes den ranked


def test_finds_planted_markers(explained):
    entry = explained.uns["den_marker_features"]
    hits = []
    for g in entry["names"].dtype.names:
        members = explained.obs["den_clusters"] == g
        truth = explained.obs.loc[members, "group"].value_counts().index[0]
        planted = set(explained.var_names[explained.var["marker_of"] == truth])
        hits.append(len(planted & set(entry["names"][g][:8])) / len(planted))
    assert np.mean(hits) >= 0.75


def test_logfoldchanges_from_log_data(explained):
    entry = explained.uns["den_marker_features"]
    g = entry["names"].dtype.names[0]
    gene = entry["names"][g][0]
    members = (explained.obs["den_clusters"] == g).to_numpy()
    x = explained[:, gene].X.toarray().ravel()
    expected = np.log2((np.expm1(x[members].mean()) + 1e-9) / (np.expm1(x[~members].mean()) + 1e-9))
    np.testing.assert_allclose(entry["logfoldchanges"][g][0], expected, rtol=1e-4)


def test_logfoldchanges_never_from_counts(trained):
    """A common set-up keeps raw counts in adata.raw: fold changes must come from the log data instead."""
    trained.raw = ad.AnnData(trained.layers["counts"], var=trained.var[[]], obs=trained.obs[[]])
    den.tl.marker_features(trained, **FAST)
    entry = trained.uns["den_marker_features"]
    assert entry["params"]["logfoldchanges_from"] == "X"
    lfc = np.concatenate([entry["logfoldchanges"][g] for g in entry["names"].dtype.names])
    assert np.isfinite(lfc).all() and np.abs(lfc).max() < 10


def test_additivity_recorded(explained):
    table = explained.uns["den_marker_features"]["explainers"]
    assert (table["explainer"] == "den DeepLIFT").all()
    assert (table["max_additivity_error"] < 1e-3).all()
    entry = explained.uns["den_marker_features"]
    assert entry["shap_values"].shape == (len(entry["shap_cells"]), explained.n_vars)


def test_h5ad_round_trip(explained, tmp_path):
    explained.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    g = back.uns["den_marker_features"]["names"].dtype.names[0]
    a = sc.get.rank_genes_groups_df(back, g, key="den_marker_features")
    b = sc.get.rank_genes_groups_df(explained, g, key="den_marker_features")
    np.testing.assert_array_equal(a["names"], b["names"])


def test_reproducible(trained):
    a, b = trained.copy(), trained.copy()
    den.tl.marker_features(a, random_state=7, **FAST)
    den.tl.marker_features(b, random_state=7, **FAST)
    np.testing.assert_array_equal(
        a.uns["den_marker_features"]["shap_values"], b.uns["den_marker_features"]["shap_values"]
    )


def test_other_groupby(trained):
    den.tl.marker_features(trained, groupby="group", key_added="by_group", **FAST)
    entry = trained.uns["by_group"]
    assert set(entry["names"].dtype.names) == set(trained.obs["group"].cat.categories)
    assert "model" in entry  # the head trained for this grouping


def test_integer_group_ids(trained):
    trained.obs["kind"] = trained.obs["group"].cat.codes.astype(np.int64) + 1  # another tool's integer labels
    den.tl.marker_features(trained, groupby="kind", key_added="by_kind", **FAST)
    assert set(trained.uns["by_kind"]["names"].dtype.names) == {"1", "2", "3"}


def test_renamed_clusters(trained):
    """Clusters renamed after den.tl.cluster (annotation) get markers under their new names, not dropped."""
    names = {c: f"type {c}" for c in trained.obs["den_clusters"].cat.categories[:2]}
    trained.obs["den_clusters"] = trained.obs["den_clusters"].cat.rename_categories(names)
    den.tl.marker_features(trained, **FAST)
    assert set(trained.uns["den_marker_features"]["names"].dtype.names) == set(
        trained.obs["den_clusters"].cat.categories
    )
    den.tl.cell_features(trained, [trained.obs_names[trained.obs["den_clusters"] == "type 0"][0]], n_background=20)


@pytest.mark.parametrize("names", [{"0": "1", "1": "0"}, {"1": "0"}], ids=["swapped", "merged-into-a-name"])
def test_clusters_renamed_to_the_networks_own_names(trained, names):
    """Names reused for other cells explain the cells as they are labelled now, not the network's old clusters."""
    trained.obs["den_clusters"] = trained.obs["den_clusters"].astype(str).replace(names).astype("category")
    den.tl.marker_features(trained, **FAST)
    entry = trained.uns["den_marker_features"]
    assert "model" in entry  # a head learnt the labels as they are
    if len(names) == 1:
        return
    group = trained.obs["den_clusters"].astype(str).to_numpy()
    cells = pd.Index(trained.obs_names).get_indexer(entry["shap_cells"])
    totals = pd.Series(entry["shap_values"].sum(1)).groupby(group[cells]).mean()
    assert (totals > 0).all()  # every group's cells push towards their own group's logit (swapped: away, before)


def test_needs_clustering(small):
    den.tl.embed(small, n_epochs=2, progress_bar=False)
    uns = set(small.uns)
    with pytest.raises(KeyError, match=r"den.tl.cluster"):
        den.tl.marker_features(small, **FAST)
    assert set(small.uns) == uns


def test_batched_deeplift_equals_shap_deep_explainer(trained):
    model = den.DENModel.from_adata(trained)
    X = trained.X.toarray()
    readout = np.eye(3, dtype=np.float32)[1]
    ours = explain(model.cluster_net, readout, X[:20], X[100:160], method="auto")
    theirs = explain(model.cluster_net, readout, X[:20], X[100:160], method="deep")
    assert ours.explainer == "den DeepLIFT" and theirs.explainer == "shap DeepExplainer"
    np.testing.assert_allclose(ours.values, theirs.values, atol=1e-5)
    np.testing.assert_allclose(ours.values.sum(1) + ours.base_value, ours.outputs, atol=1e-4)


def test_falls_back_when_additivity_fails(trained, monkeypatch):
    import den._explain as ex

    broken = dict(ex._EXPLAINERS)
    broken["auto"] = lambda model, x, bg, **kw: np.zeros_like(x) + 1.0
    monkeypatch.setattr(ex, "_EXPLAINERS", broken)
    model = den.DENModel.from_adata(trained)
    X = trained.X.toarray()
    with pytest.warns(RuntimeWarning, match="additivity"):
        att = explain(model.cluster_net, np.eye(3)[0], X[:5], X[100:130])
    assert att.explainer == "shap DeepExplainer" and att.notes
    assert att.max_additivity_error < 1e-2


def test_differentiating_features(trained):
    df = den.tl.differentiating_features(trained, "0", "1", max_cells=30, n_background=30)
    assert list(df.columns) == ["names", "score", "mean_abs_shap", "logfoldchange"]
    assert np.all(np.diff(df["score"]) <= 0)
    stored = trained.uns["den_differentiating_features"]["0_vs_1"]
    assert stored["params"]["outputs"] == "0 - 1"
    # the top gene is a planted marker of the group that cluster 0 recovers
    truth0 = trained.obs.loc[trained.obs["den_clusters"] == "0", "group"].value_counts().index[0]
    assert trained.var.loc[df["names"].iloc[0], "marker_of"] == truth0
    # groups given as numbers find the categories "0" and "1" (they were "not a group")
    by_number = den.tl.differentiating_features(trained, 0, 1, max_cells=30, n_background=30)
    assert list(by_number["names"]) == list(df["names"])


def test_differentiating_two_cells(trained):
    c1 = trained.obs_names[(trained.obs["den_clusters"] == "0").to_numpy()][0]
    c2 = trained.obs_names[(trained.obs["den_clusters"] == "2").to_numpy()][0]
    df = den.tl.differentiating_features(trained, c1, c2, groupby=None)
    assert len(df) == trained.n_vars
    # the SHAP values add up to the difference of the two cells' logit gaps
    model = den.DENModel.from_adata(trained)
    X = trained[[c1, c2]].X.toarray()
    with torch.no_grad():
        z = model.cluster_net(torch.from_numpy(X.astype(np.float32))).numpy()
    np.testing.assert_allclose(df["score"].sum(), (z[0, 0] - z[0, 2]) - (z[1, 0] - z[1, 2]), atol=1e-3)
    # the gene that differs most between the two cells, weighted by the network, ranks near the top
    top = df["names"].iloc[:10].tolist()
    truth0 = trained.obs.loc[trained.obs["den_clusters"] == "0", "group"].value_counts().index[0]
    assert set(top) & set(trained.var_names[trained.var["marker_of"] == truth0])
    with pytest.raises(KeyError, match="obs_names"):
        den.tl.differentiating_features(trained, "nope", c2, groupby=None)


def test_differentiating_bad_group(trained):
    with pytest.raises(KeyError, match="not a group"):
        den.tl.differentiating_features(trained, "0", "99")
