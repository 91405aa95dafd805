from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import den
from den._config import EmbedConfig
from den._utils import get_device

FAST = {"n_epochs": 3, "progress_bar": False}


@pytest.mark.parametrize(
    ("key_added", "key_obsm", "key_uns"),
    [
        pytest.param(None, "X_den", "den", id="None"),
        pytest.param("custom", "custom", "custom", id="custom"),
    ],
)
def test_writes_obsm_and_uns(small, key_added, key_obsm, key_uns):
    den.tl.embed(small, key_added=key_added, **FAST)
    emb = small.obsm[key_obsm]
    assert emb.shape == (small.n_obs, 2) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    entry = small.uns[key_uns]
    assert len(entry["history"]["loss"]) == 3
    assert {"config", "weights"} <= set(entry["model"])


def test_params_recorded(small):
    den.tl.embed(small, n_neighbors=7, random_state=3, min_dist=0.2, **FAST)
    p = small.uns["den"]["params"]
    expected = EmbedConfig(n_neighbors=7, random_state=3, min_dist=0.2, n_epochs=3).to_dict()
    del expected["encoder"]  # an AnnData's features are vectors: always the MLP
    assert p == expected | {
        "layer": None,
        "use_rep": None,
        "labels_key": None,
        "batch_key": None,
        "batch_centering": True,
        "fit_cells": None,
    }
    assert p["layer"] is None and p["dof"] is None  # real None, not the string "None"
    fit = small.uns["den"]["fit"]
    assert fit["n_epochs"] == 3 and fit["n_neighbors"] == 7 and fit["random_state"] == 3 and fit["n_near_pairs"] > 0
    assert p["device"] == "auto" and fit["device"] == str(get_device("auto"))  # resolved, e.g. "cpu"


def test_sparse_use_rep(small):
    rep = np.random.default_rng(0).normal(size=(small.n_obs, 10)).astype(np.float32)
    rep[rep < 0] = 0
    dense, sp = small.copy(), small.copy()
    dense.obsm["X_r"], sp.obsm["X_r"] = rep, sparse.csr_matrix(rep)
    for a in (dense, sp):
        den.tl.embed(a, use_rep="X_r", **FAST)
    np.testing.assert_array_equal(dense.obsm["X_den"], sp.obsm["X_den"])


def test_params_survive_h5ad(small, tmp_path):
    den.tl.embed(small, **FAST)
    small.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    p = back.uns["den"]["params"]
    assert p["layer"] is None and p["use_rep"] is None and list(p["hidden"]) == [128, 128]


@pytest.mark.parametrize("lr", [2e-2, 1e-9])
def test_loss_decreases_only_when_learning(small, lr):
    """The loss falls by a clear margin when the network learns, and does not without learning."""
    den.tl.embed(small, n_epochs=15, learning_rate=lr, input_noise=0, progress_bar=False)
    loss = small.uns["den"]["history"]["loss"]
    if lr > 1e-6:
        assert loss[-1] < 0.85 * loss[0]
    else:
        assert loss[-1] > 0.97 * loss[0]


def test_separates_groups(small):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    den.tl.embed(small, n_epochs=10, progress_bar=False)
    acc = cross_val_score(KNeighborsClassifier(15), small.obsm["X_den"], small.obs["group"], cv=5).mean()
    assert acc > 0.95


def test_reproducible_with_seed(small):
    a, b, c = small.copy(), small.copy(), small.copy()
    den.tl.embed(a, random_state=1, **FAST)
    den.tl.embed(b, random_state=1, **FAST)
    den.tl.embed(c, random_state=2, **FAST)
    np.testing.assert_array_equal(a.obsm["X_den"], b.obsm["X_den"])
    assert not np.array_equal(a.obsm["X_den"], c.obsm["X_den"])


def test_copy_leaves_input_untouched(small):
    before = small.copy()
    out = den.tl.embed(small, copy=True, **FAST)
    assert "X_den" in out.obsm and "den" in out.uns
    assert "X_den" not in small.obsm and "den" not in small.uns
    assert (small.X != before.X).nnz == 0


def test_sparse_and_dense_agree(small):
    dense = small.copy()
    dense.X = small.X.toarray()
    den.tl.embed(small, **FAST)
    den.tl.embed(dense, **FAST)
    w_sparse = den.DENModel.from_adata(small).encoder.projection.weight
    w_dense = den.DENModel.from_adata(dense).encoder.projection.weight
    np.testing.assert_allclose(w_sparse.numpy(), w_dense.numpy(), atol=1e-5)
    # float32 rounding differs between the two paths, and training amplifies it a little
    np.testing.assert_allclose(small.obsm["X_den"], dense.obsm["X_den"], atol=0.05)


def test_layer_and_use_rep(small):
    small.layers["log"] = small.X.copy()
    small.X = sparse.csr_matrix(small.shape, dtype=np.float32)  # X itself is useless
    small.obsm["X_pca"] = np.random.default_rng(0).normal(size=(small.n_obs, 5))
    den.tl.embed(small, layer="log", use_rep="X_pca", **FAST)
    p = small.uns["den"]["params"]
    assert p["layer"] == "log" and p["use_rep"] == "X_pca"
    assert den.DENModel.from_adata(small).config["layer"] == "log"


def test_gene_input_without_pca_layer(small):
    den.tl.embed(small, n_pcs=None, **FAST)
    model = den.DENModel.from_adata(small)
    assert model.encoder.projection is None
    np.testing.assert_allclose(model.embed(small.X), small.obsm["X_den"], atol=1e-5)


def test_width_does_not_grow_with_genes():
    small_model = den.DENModel.build(
        {"n_genes": 100, "var_names": [], "n_components": 2, "hidden": [128, 128], "n_pcs": 50, "layer": None}
    )
    big_model = den.DENModel.build(
        {"n_genes": 20000, "var_names": [], "n_components": 2, "hidden": [128, 128], "n_pcs": 50, "layer": None}
    )
    assert small_model.n_parameters == big_model.n_parameters < 30_000


def test_defaults_agree_with_the_configuration():
    """`den.tl.embed`, `den.DEN` and `EmbedConfig` share one set of defaults."""
    import inspect

    defaults = EmbedConfig.defaults()
    for fn in (den.tl.embed, den.DEN.__init__):
        sig = inspect.signature(fn).parameters
        for name, value in defaults.items():
            if name in sig:
                assert sig[name].default == value or tuple(sig[name].default or ()) == value, (fn, name)


def test_view_without_warnings(small):
    view = small[:200]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        den.tl.embed(view, **FAST)
    assert view.obsm["X_den"].shape == (200, 2)


# --- bad input: a clear error and the AnnData unchanged -------------------------------------


def _nan(a):
    a.X = a.X.toarray()
    a.X[3, 4] = np.nan
    return a


def _inf(a):
    a.X = a.X.copy()
    a.X.data[0] = np.inf
    return a


def _strings(a):
    return ad.AnnData(np.full((a.n_obs, 3), "x", dtype=object), obs=a.obs)


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "match"),
    [
        pytest.param(_nan, {}, ValueError, "NaN or infinite", id="nan"),
        pytest.param(_inf, {}, ValueError, "NaN or infinite", id="inf"),
        pytest.param(lambda a: a[:0].copy(), {}, ValueError, "empty", id="empty"),
        pytest.param(lambda a: a[:, :0].copy(), {}, ValueError, "empty", id="no genes"),
        pytest.param(lambda a: a[:2].copy(), {}, ValueError, "at least 3 cells", id="too few cells"),
        pytest.param(lambda a: a, {"layer": "nope"}, KeyError, "Layer 'nope' not found", id="missing layer"),
        pytest.param(lambda a: a, {"use_rep": "X_nope"}, KeyError, "use_rep='X_nope'", id="missing use_rep"),
        pytest.param(_strings, {}, ValueError, "non-numeric", id="non-numeric"),
        pytest.param(lambda a: a, {"ignore": 0.0}, ValueError, "ignore", id="bad ignore"),
        pytest.param(lambda a: a, {"ignore": 0.9}, ValueError, "paper", id="ignore needs the paper's loss"),
        pytest.param(lambda a: a, {"min_dist": -1.0}, ValueError, "min_dist", id="bad min_dist"),
        pytest.param(lambda a: a, {"input_noise": np.nan}, ValueError, "input_noise", id="bad input_noise"),
        pytest.param(lambda a: a, {"loss": "square"}, ValueError, "loss", id="bad loss"),
        pytest.param(lambda a: a, {"device": "cuda:7"}, ValueError, "device", id="no cuda"),
    ],
)
def test_bad_input(small, make, kwargs, error, match):
    adata = make(small)
    obsm, uns = set(adata.obsm), set(adata.uns)
    with pytest.raises(error, match=match):
        den.tl.embed(adata, **FAST, **kwargs)
    assert set(adata.obsm) == obsm and set(adata.uns) == uns


def test_raw_counts_warn(small):
    small.X = small.layers["counts"]
    with pytest.warns(UserWarning, match="log1p"):
        den.tl.embed(small, **FAST)


def test_obs_untouched(small):
    before = small.obs.copy()
    den.tl.embed(small, **FAST)
    pd.testing.assert_frame_equal(small.obs, before)


def test_min_dist_keeps_populations_from_collapsing(small):
    """With the paper's loss a population packs onto a point; `min_dist` leaves it room."""
    spread = {}
    for md in (0.0, 0.2):
        a = den.tl.embed(
            small,
            loss="paper",
            min_dist=md,
            n_epochs=30,
            learning_rate=2e-3,
            input_noise=0,
            progress_bar=False,
            copy=True,
        )
        emb = a.obsm["X_den"]
        d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)  # 300 cells: a small dense matrix is fine
        spread[md] = np.median(np.sort(d, axis=1)[:, 5])  # distance to the 5th map neighbour
    assert spread[0.2] > 1.3 * spread[0.0]


def test_input_noise_is_relative_to_the_neighbour_spacing():
    """Noise is ``input_noise`` x (median near-pair distance / sqrt(dims)) per dimension; 0 leaves inputs exact.

    (Its benefit, a better held-out ratio, is measured by benchmarks/suite.py.)
    """
    import torch

    from den._embedding import noise_scale
    from den._pairs import PairBatch, PairSampler
    from den.train import EmbeddingPlan, TensorSource

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    near = (np.arange(100), np.arange(100, 200))
    gen = torch.Generator().manual_seed(0)
    source = TensorSource(x, torch.device("cpu"))
    expected = np.median(np.linalg.norm(x[:100] - x[100:], axis=1)) / 4
    assert np.isclose(noise_scale(source, near, gen), expected, rtol=0.02)  # torch takes the lower median
    sampler = PairSampler(near, batch_size=100, n_far=4, far_rule="shared", generator=gen)
    rows = torch.arange(200)
    for sigma in (0.0, 0.3):
        plan = EmbeddingPlan(
            torch.nn.Identity(),
            source,
            sampler,
            loss="contrastive",
            dof=3.0,
            min_dist=0,
            ignore=1,
            noise=sigma,
            generator=gen,
        )
        staged_rows, _, eps = plan.stage(PairBatch(rows, torch.arange(4)))
        delta = plan.inputs(staged_rows, eps).numpy() - x
        assert np.isclose(delta.std(), sigma, rtol=0.05, atol=1e-7)


def test_contrastive_map_keeps_structure_inside_populations(small):
    """The contrastive loss spreads each population (the paper's collapses it onto a point)."""

    def spread(a):
        emb, g = a.obsm["X_den"], a.obs["group"].to_numpy()
        within = np.median([np.linalg.norm(emb[g == c] - emb[g == c].mean(0), axis=1).mean() for c in np.unique(g)])
        centres = np.stack([emb[g == c].mean(0) for c in np.unique(g)])
        return within / np.median(np.linalg.norm(centres[:, None] - centres[None], axis=2)[np.triu_indices(3, 1)])

    ours = den.tl.embed(small, n_epochs=30, progress_bar=False, copy=True)
    paper = den.tl.embed(
        small, loss="paper", n_epochs=30, learning_rate=2e-3, input_noise=0, progress_bar=False, copy=True
    )
    assert spread(ours) > 3 * spread(paper)


def test_paper_loss_switch(small):
    den.tl.embed(small, loss="paper", **FAST)
    model = den.DENModel.from_adata(small)
    assert model.config["loss"] == "paper" and model.kernel == (1, 2.0)


def test_semi_supervised_labels(small):
    small.obs["known"] = small.obs["group"].astype(object)
    small.obs.loc[small.obs_names[::2], "known"] = np.nan  # half unlabelled
    den.tl.embed(small, labels_key="known", **FAST)
    model = den.DENModel.from_adata(small)
    assert model.has_labels and model.label_config["categories"] == list(small.obs["group"].cat.categories)
    proba = model.predict_label_proba(small.X)
    assert proba.shape == (small.n_obs, 3)
    assert small.uns["den"]["params"]["labels_key"] == "known"


def test_labels_key_missing(small):
    with pytest.raises(KeyError, match="labels_key"):
        den.tl.embed(small, labels_key="nope", **FAST)


def _scanpy_pca(adata, n_comps=20):
    import scanpy as sc

    sc.pp.pca(adata, n_comps=n_comps, random_state=0)


def test_pca_layer_takes_scanpys_pca(small):
    """After sc.pp.pca the network reads the user's PCs (scaled), not a second PCA of its own."""
    _scanpy_pca(small)
    den.tl.embed(small, n_pcs=20, **FAST)
    assert small.uns["den"]["fit"]["pca"] == "adata.varm['PCs']"
    model = den.DENModel.from_uns(small.uns["den"]["model"])
    front = np.concatenate(list(model.front_blocks(small.X, small.var_names)))
    scale = np.sqrt(small.uns["pca"]["variance"][0])
    np.testing.assert_allclose(front * scale, small.obsm["X_pca"], atol=1e-3 * np.abs(small.obsm["X_pca"]).max())


def _double_x(a):
    a.X = a.X * 2


def _add_layer(a):
    a.layers["log"] = a.X.copy()


@pytest.mark.parametrize(
    ("change", "kw"),
    [
        pytest.param(_double_x, {"n_pcs": 10}, id="matrix changed since"),
        pytest.param(_add_layer, {"n_pcs": 10, "layer": "log"}, id="another layer"),
        pytest.param(None, {"n_pcs": 20}, id="fewer PCs than n_pcs"),
    ],
)
def test_pca_layer_computes_its_own_otherwise(small, change, kw):
    _scanpy_pca(small, n_comps=10)
    if change is not None:
        change(small)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        den.tl.embed(small, **kw, **FAST)
    assert small.uns["den"]["fit"]["pca"] == "den"
    stale = [w for w in caught if "no longer matches adata.X" in str(w.message)]
    assert len(stale) == (change is _double_x)  # only a matrix changed since sc.pp.pca is a stale X_pca


def test_too_few_scanpy_pcs_are_rejected_before_reading_x(small, monkeypatch):
    """Fewer PCs than the layer holds: no pass over X to check them (they could not be used)."""
    import den.tl._embed as embed_module

    _scanpy_pca(small, n_comps=10)
    monkeypatch.setattr(embed_module, "column_mean", lambda X: pytest.fail("read X for unusable PCs"))
    den.tl.embed(small, n_pcs=20, **FAST)
    assert small.uns["den"]["fit"]["pca"] == "den"


@pytest.mark.parametrize("setup", ["den's PCA layer", "scanpy's X_pca", "no PCA layer"])
def test_fit_cells_trains_on_a_sample_and_places_every_cell(setup):
    """embed + cluster with fit_cells: the map and clusters of the sample done by hand, every cell transformed."""
    import scanpy as sc
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    adata = den.datasets.synthetic(600, 80, 3, n_markers=8, marker_fold=8, random_state=2)
    if setup == "scanpy's X_pca":
        sc.pp.pca(adata, n_comps=50)  # near pairs from X_pca, the PCA layer from scanpy's loadings
    kw = {"n_epochs": 20, "progress_bar": False} | ({"n_pcs": None} if setup == "no PCA layer" else {})
    sample = np.sort(np.random.default_rng(0).choice(600, 200, replace=False))  # random_state=0, as documented
    ref = adata[sample].copy()
    den.tl.embed(adata, fit_cells=200, **kw)
    den.tl.cluster(adata, fit_cells=200, progress_bar=False)
    if setup == "scanpy's X_pca":  # the sample by hand would not reproduce scanpy's PCA (other mean): no twin
        assert adata.uns["den"]["fit"]["pca"] == "adata.varm['PCs']"  # the whole data's loadings, reused
    else:
        den.tl.embed(ref, **kw)
        den.tl.cluster(ref, progress_bar=False)
        query = adata.copy()
        den.tl.transform(query, ref)
        np.testing.assert_allclose(adata.obsm["X_den"], query.obsm["X_den"], atol=1e-5)
        np.testing.assert_array_equal(adata.obs["den_clusters"], query.obs["den_clusters"])
    assert adata.obs["den_clusters"].nunique() == 3
    assert adata.uns["den"]["fit"]["n_cells_trained"] == 200 and adata.uns["den"]["params"]["fit_cells"] == 200
    assert "den_distances" not in adata.obsp  # the sample's graph does not cover every cell
    trained = adata.uns["den_clusters"]["training_labels"]
    assert len(trained) == 600 and (trained >= 0).sum() == 200
    unseen = np.flatnonzero(trained < 0)  # cells the networks never saw land among their group
    acc = cross_val_score(KNeighborsClassifier(15), adata.obsm["X_den"][unseen], adata.obs["group"][unseen], cv=5)
    assert acc.mean() > 0.95


def test_fit_cells_at_least_the_cells_is_the_whole_fit(small):
    a, b = small.copy(), small.copy()
    den.tl.embed(a, **FAST)
    den.tl.embed(b, fit_cells=small.n_obs, **FAST)
    np.testing.assert_array_equal(a.obsm["X_den"], b.obsm["X_den"])
    assert "den_distances" in b.obsp and b.uns["den"]["fit"]["n_cells_trained"] == small.n_obs


def test_fit_cells_sample_must_hold_two_labelled_classes(small):
    """Labels checked on the sample: one labelled class there would teach the map nothing, as on the whole data."""
    sampled = np.random.default_rng(0).choice(small.n_obs, 50, replace=False)  # random_state=0's sample
    outside = np.setdiff1d(np.arange(small.n_obs), sampled)
    small.obs["label"] = pd.Categorical([None] * small.n_obs, categories=["a", "b"])
    where = small.obs.columns.get_loc("label")
    small.obs.iloc[[sampled[0], outside[0]], where] = ["a", "b"]  # two labelled cells, one in the sample
    before = (set(small.obsm), set(small.uns))
    with pytest.raises(ValueError, match="fit_cells=50 sample holds labelled cells of fewer than two classes"):
        den.tl.embed(small, labels_key="label", fit_cells=50, **FAST)
    assert (set(small.obsm), set(small.uns)) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fit_cells": 0}, ValueError, r"fit_cells=0: it must be None or an integer >= 3"),
        ({"fit_cells": 100.0}, TypeError, r"fit_cells=100\.0"),
    ],
)
def test_fit_cells_bad_input(small, kwargs, error, match):
    small.obs["batch"] = np.repeat(["a", "b"], small.n_obs // 2)
    before = (set(small.obsm), set(small.uns), set(small.obsp))
    with pytest.raises(error, match=match):
        den.tl.embed(small, **FAST, **kwargs)
    assert (set(small.obsm), set(small.uns), set(small.obsp)) == before


def test_fit_cells_refused_before_reading_x(small, monkeypatch):
    """A bad fit_cells costs no pass over X (minutes on an atlas on disk)."""
    import den.tl._embed as tool

    monkeypatch.setattr(tool, "get_matrix", lambda *a: pytest.fail("X was read"))
    with pytest.raises(ValueError, match="fit_cells=1"):
        den.tl.embed(small, fit_cells=1, **FAST)
