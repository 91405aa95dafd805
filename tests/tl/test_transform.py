from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

import den


def test_h5ad_round_trip_then_transform_reproduces(trained, tmp_path):
    path = tmp_path / "ref.h5ad"
    trained.write_h5ad(path)
    ref = ad.read_h5ad(path)
    query = trained.copy()
    del query.obsm["X_den"]
    den.tl.transform(query, ref)
    np.testing.assert_array_equal(query.obsm["X_den"], trained.obsm["X_den"])
    np.testing.assert_array_equal(query.obs["den_clusters"], trained.obs["den_clusters"])
    np.testing.assert_allclose(query.obsm["den_clusters_proba"], trained.obsm["den_clusters_proba"], atol=1e-6)


@pytest.mark.parametrize(
    "names",
    [
        {"0": "T cell", "1": "B cell", "2": "NK"},
        {"0": "A", "1": "A", "2": "B"},
        {"0": "1", "1": "0", "2": "2"},  # names swapped: the set of names is the network's own
        {"0": "0", "1": "0", "2": "2"},  # merged into an existing name
    ],
    ids=["renamed", "merged", "swapped", "merged-into-a-name"],
)
def test_query_takes_the_references_annotation(trained, names):
    before = trained.obs["den_clusters"].astype(str).to_numpy()
    ref = trained.copy()
    ref.obs["den_clusters"] = ref.obs["den_clusters"].astype(str).map(names).astype("category")
    ref.obs.loc[ref.obs_names[:20], "den_clusters"] = np.nan  # cells left unannotated say nothing
    query = trained.copy()
    den.tl.transform(query, ref)
    np.testing.assert_array_equal(query.obs["den_clusters"].astype(str), [names[b] for b in before])
    assert list(query.obs["den_clusters"].cat.categories) == list(ref.obs["den_clusters"].cat.categories)
    proba = query.obsm["den_clusters_proba"]  # one column per network cluster "0", "1", "2", as before
    confidence = query.obs["den_clusters_confidence"].to_numpy()
    labels = query.obs["den_clusters"].astype(str).to_numpy()
    for name in set(names.values()):  # a merged cluster is as sure as its parts together
        parts = [int(c) for c in names if names[c] == name]
        np.testing.assert_allclose(confidence[labels == name], proba[labels == name][:, parts].sum(1), rtol=1e-6)


def test_query_warns_when_annotation_does_not_map(trained):
    ref = trained.copy()
    ref.obs["den_clusters"] = np.where(np.arange(ref.n_obs) % 2 == 0, "x", "y")  # not a renaming of the clusters
    query = trained.copy()
    with pytest.warns(UserWarning, match="beyond renaming or merging"):
        den.tl.transform(query, ref)
    assert set(query.obs["den_clusters"].astype(str)) <= {"0", "1", "2"}


def test_cells_do_not_depend_on_the_batch(trained):
    alone = trained[[5]].copy()
    den.tl.transform(alone, trained)
    mixed = trained[::-1].copy()
    den.tl.transform(mixed, trained)
    np.testing.assert_allclose(
        alone.obsm["X_den"][0], mixed[trained.obs_names[5]].obsm["X_den"][0], rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(alone.obsm["X_den"][0], trained.obsm["X_den"][5], rtol=1e-5, atol=1e-5)


def test_genes_matched_by_name(trained):
    query = trained[:, ::-1].copy()
    query.obsm.clear()
    den.tl.transform(query, trained)
    np.testing.assert_allclose(query.obsm["X_den"], trained.obsm["X_den"], atol=1e-5)


def test_extra_genes_ignored(trained):
    extra = ad.AnnData(np.ones((trained.n_obs, 2), dtype=np.float32), obs=trained.obs[[]])
    extra.var_names = ["new1", "new2"]
    query = ad.concat([trained, extra], axis=1)
    den.tl.transform(query, trained)
    np.testing.assert_allclose(query.obsm["X_den"], trained.obsm["X_den"], atol=1e-5)


def test_missing_genes_named(trained):
    query = trained[:, 3:].copy()
    before = set(query.obsm)
    with pytest.raises(KeyError, match=r"lacks 3 .*gene0, gene1, gene2"):
        den.tl.transform(query, trained)
    assert set(query.obsm) == before


def test_reference_without_model(small):
    with pytest.raises(KeyError, match="Run `den.tl.embed"):
        den.tl.transform(small, small)


def test_bad_reference_type(small):
    with pytest.raises(TypeError, match="reference"):
        den.tl.transform(small, 42)


def test_copy_and_key_added(trained):
    query = trained.copy()
    out = den.tl.transform(query, trained, key_added="X_mapped", copy=True)
    assert "X_mapped" in out.obsm and "X_mapped" not in query.obsm


def test_save_load_model(trained, tmp_path):
    model = den.DENModel.from_adata(trained)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)
    # a weights-only format: readable without pickle
    with np.load(tmp_path / "m" / "weights.npz", allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    loaded = den.DENModel.load(tmp_path / "m")
    assert loaded.has_clusters and loaded.cluster_config["n_clusters"] == 3
    query = trained.copy()
    den.tl.transform(query, tmp_path / "m")
    np.testing.assert_array_equal(query.obsm["X_den"], trained.obsm["X_den"])
    np.testing.assert_array_equal(query.obs["den_clusters"], trained.obs["den_clusters"])
    assert "features" in repr(loaded)


@pytest.mark.parametrize("kind", ["model", "folder", "anndata"])
def test_cluster_key_none_maps_only_whatever_the_reference(trained, tmp_path, kind):
    """``cluster_key=None`` is the map alone for every kind of reference (a model wrote ``obs[None]``)."""
    model = den.DENModel.from_adata(trained)
    model.save(tmp_path / "m")
    reference = {"model": model, "folder": tmp_path / "m", "anndata": trained}[kind]
    query = trained[:, :].copy()
    query.obs = query.obs[[]]
    query.obsm.clear()
    den.tl.transform(query, reference, cluster_key=None)
    np.testing.assert_array_equal(query.obsm["X_den"], trained.obsm["X_den"])
    assert list(query.obs.columns) == [] and list(query.obsm) == ["X_den"]


def test_cluster_key_checked_before_work(trained):
    query = trained.copy()
    with pytest.raises(ValueError, match=r"Invalid cluster_key='a/b'"):
        den.tl.transform(query, den.DENModel.from_adata(trained), cluster_key="a/b")


def test_load_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a den model folder"):
        den.DENModel.load(tmp_path)


def test_query_takes_the_references_cluster_colours(trained):
    ref = trained.copy()
    ref.obs["den_clusters"] = ref.obs["den_clusters"].cat.rename_categories({"0": "T", "1": "B", "2": "NK"})
    ref.uns["den_clusters_colors"] = ["#aa0000", "#00aa00", "#0000aa"]  # set by the user or a scanpy plot
    query = trained[:30].copy()
    query.uns.pop("den_clusters_colors", None)
    den.tl.transform(query, ref)
    assert list(query.uns["den_clusters_colors"]) == ["#aa0000", "#00aa00", "#0000aa"]
    ref.uns["den_clusters_colors"] = ["#aa0000", "#00aa00"]  # not one colour per cluster: scanpy chooses
    query = trained[:30].copy()
    query.uns.pop("den_clusters_colors", None)
    den.tl.transform(query, ref)
    assert "den_clusters_colors" not in query.uns


def test_query_with_its_own_den_results_is_not_overwritten(trained):
    query = trained[200:].copy()
    den.tl.embed(query, n_epochs=2, random_state=3, progress_bar=False)  # the query's own map and network
    before = query.obsm["X_den"].copy()
    with pytest.raises(ValueError, match=r"holds another den map .* key_added="):
        den.tl.transform(query, trained)
    np.testing.assert_array_equal(query.obsm["X_den"], before)
    den.tl.transform(query, trained, key_added="X_den_reference")  # both maps kept
    np.testing.assert_allclose(query.obsm["X_den_reference"], trained[200:].obsm["X_den"], atol=1e-5)
    den.tl.cluster(query, n_clusters=2, head_epochs=1, finetune_epochs=0, progress_bar=False)
    del query.uns["den"]
    with pytest.raises(ValueError, match=r"holds other den clusters .* cluster_key=None"):
        den.tl.transform(query, trained)
    den.tl.transform(trained, trained)  # the reference's own model: nothing to refuse
