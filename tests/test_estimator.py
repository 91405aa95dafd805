from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import den

FAST = {"n_epochs": 5, "random_state": 0}


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=300, n_features=10, centers=4, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def fitted(blobs):
    return den.DEN(**FAST).fit(blobs[0])


#: checks that cannot pass, with the reason (any other failing check fails this test)
EXPECTED_FAILED_CHECKS = dict.fromkeys(
    ("check_estimator_sparse_array", "check_estimator_sparse_matrix"),
    "the check sizes predict_proba by the classifier tags (2 or 4 classes); DEN is a clusterer, its "
    "predict_proba has one column per cluster found, and DEN has no classifier tags",
)


def test_check_estimator():
    """scikit-learn's own estimator checks pass (two skipped, with the reason above)."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(
        den.DEN(n_epochs=3, max_clusters=5), expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None
    )
    failed = {r["check_name"]: str(r["exception"])[:200] for r in results if r["status"] == "failed"}
    assert not failed
    xfailed = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfailed <= set(EXPECTED_FAILED_CHECKS)


def test_sparse_fit_predict_proba(blobs):
    """What the two skipped checks would test, with DEN's own shapes: sparse input fits and predicts."""
    from scipy import sparse as sp

    X = sp.csr_matrix(blobs[0][:100])
    est = den.DEN(**FAST).fit(X)
    assert est.predict(X).shape == (100,)
    assert est.predict_proba(X).shape == (100, est.n_clusters_)


def test_fit_transform_predict(blobs, fitted):
    X, y = blobs
    assert fitted.embedding_.shape == (300, 2) and fitted.embedding_.dtype == np.float32
    np.testing.assert_allclose(fitted.transform(X), fitted.embedding_, atol=1e-6)
    assert fitted.n_clusters_ == 4 and adjusted_rand_score(y, fitted.labels_) > 0.95
    proba = fitted.predict_proba(X[:10])
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(fitted.predict(X[:10]), proba.argmax(1))
    assert fitted.n_features_in_ == 10 and len(fitted.history_) == 5


def test_fit_predict_and_fit_transform(blobs, fitted):
    X = blobs[0]
    est = den.DEN(**FAST)
    np.testing.assert_array_equal(est.fit_predict(X), fitted.labels_)
    np.testing.assert_allclose(den.DEN(**FAST).fit_transform(X), fitted.embedding_, atol=1e-6)


def test_reproducible_and_seeded(blobs):
    X = blobs[0][:120]
    a = den.DEN(cluster=False, **FAST).fit_transform(X)
    b = den.DEN(cluster=False, **FAST).fit_transform(X)
    c = den.DEN(cluster=False, n_epochs=5, random_state=1).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("kind", ["csr", "torch", "list"])
def test_input_types_agree(blobs, kind):
    X = blobs[0][:120]
    ref = den.DEN(cluster=False, **FAST).fit_transform(X)
    other = {"csr": sparse.csr_matrix(X), "torch": torch.from_numpy(X), "list": X.tolist()}[kind]
    got = den.DEN(cluster=False, **FAST).fit_transform(other)
    np.testing.assert_allclose(got, ref, atol=0.05 if kind == "csr" else 1e-5)


def test_bfloat16_tensor(blobs, fitted):
    X = torch.from_numpy(blobs[0][:50]).bfloat16()  # numpy has no bfloat16: den reads it as float32
    np.testing.assert_array_equal(fitted.transform(X), fitted.transform(X.float().numpy()))


@pytest.mark.parametrize("encoder", ["auto", "conv"])
def test_images(encoder):
    rng = np.random.default_rng(0)
    images = np.zeros((120, 8, 8), dtype=np.float32)
    labels = np.repeat([0, 1, 2], 40)
    for k, c in enumerate(labels):  # a bright square in one of three corners
        r0, c0 = [(0, 0), (0, 4), (4, 0)][c]
        images[k, r0 : r0 + 4, c0 : c0 + 4] = 1
    images += rng.normal(0, 0.1, images.shape).astype(np.float32)
    est = den.DEN(n_epochs=20, n_clusters=3, random_state=0, encoder=encoder).fit(images)
    if encoder == "conv":
        assert est.model_.config["encoder"] == "conv" and est.model_.config["input_shape"] == [1, 8, 8]
    else:  # the MLP reads the flattened pixels
        assert est.model_.config["encoder"] == "mlp" and len(est.model_.var_names) == 64
    assert est.image_shape_ == (1, 8, 8)
    assert adjusted_rand_score(labels, est.labels_) > 0.9
    np.testing.assert_allclose(est.transform(images[:, None]), est.embedding_, atol=1e-5)  # (n, C, H, W) too
    np.testing.assert_allclose(est.transform(images.reshape(120, 64)), est.embedding_, atol=1e-5)  # pixels in order
    with pytest.raises(ValueError, match=r"images of shape \(1, 4, 16\).*fitted on \(1, 8, 8\)"):
        est.transform(images.reshape(120, 4, 16))  # as many pixels, another image
    # SHAP over pixels: each class's own bright square pushes its images into their cluster
    values = est.explain(images, n_background=30).reshape(-1, 8, 8)
    for c, (r0, c0) in enumerate([(0, 0), (0, 4), (4, 0)]):
        mean = values[labels == c].mean(0)
        own, empty = mean[r0 : r0 + 4, c0 : c0 + 4].mean(), np.abs(mean[4:, 4:]).mean()  # bottom right: always dark
        assert own > 0 and own > 3 * empty


def test_channels_last_images_warn():
    images = np.random.default_rng(0).random((30, 8, 8, 3), dtype=np.float32)  # (n, H, W, C)
    with pytest.warns(UserWarning, match=r"np.moveaxis\(X, -1, 1\)"):
        den.DEN(n_epochs=1, cluster=False, random_state=0).fit(images)


def test_conv_needs_images(blobs):
    with pytest.raises(ValueError, match="needs images"):
        den.DEN(encoder="conv", **FAST).fit(blobs[0])


def test_save_load(tmp_path, blobs, fitted):
    fitted.save(tmp_path / "m")
    back = den.DEN.load(tmp_path / "m")
    assert back.get_params() == fitted.get_params()
    np.testing.assert_array_equal(back.transform(blobs[0]), fitted.transform(blobs[0]))
    np.testing.assert_array_equal(back.predict(blobs[0]), fitted.predict(blobs[0]))
    # the same folder is a DENModel folder
    assert den.DENModel.load(tmp_path / "m").has_clusters


def test_semi_supervised(blobs):
    X, y = blobs
    partial = np.where(np.arange(len(y)) % 5 == 0, y, -1)  # 20 % labelled
    est = den.DEN(**FAST).fit(X, partial)
    assert list(est.classes_) == [0, 1, 2, 3]
    assert (est.predict_labels(X) == y).mean() > 0.95
    strings = np.where(partial >= 0, np.array(["a", "b", "c", "d"])[y], None)
    est = den.DEN(cluster=False, **FAST).fit(X, strings)
    assert list(est.classes_) == ["a", "b", "c", "d"]
    assert est.predict_labels_proba(X[:3]).shape == (3, 4)


def test_semi_supervised_bad_y(blobs):
    X = blobs[0]
    with pytest.raises(ValueError, match="no labelled sample"):
        den.DEN(**FAST).fit(X, np.full(len(X), -1))
    with pytest.raises(ValueError, match="one label per sample"):
        den.DEN(**FAST).fit(X, np.zeros(3))


def test_in_a_pipeline_and_cloned(blobs):
    pipe = make_pipeline(StandardScaler(), den.DEN(cluster=False, **FAST))
    assert pipe.fit_transform(blobs[0][:100]).shape == (100, 2)
    est = clone(den.DEN(n_neighbors=7))
    assert est.get_params()["n_neighbors"] == 7 and not hasattr(est, "model_")


def test_params_checked_at_fit(blobs):
    with pytest.raises(ValueError, match=r"n_neighbors=0.*integer >= 1"):
        den.DEN(n_neighbors=0).fit(blobs[0])
    with pytest.raises(TypeError, match=r"n_epochs=2.5"):
        den.DEN(n_epochs=2.5).fit(blobs[0])


def test_a_denmodel_folder_loads_as_den(tmp_path, small):
    den.tl.embed(small, **FAST, progress_bar=False)
    den.tl.cluster(small, n_clusters=3, head_epochs=10, finetune_epochs=2, progress_bar=False)
    den.DENModel.from_adata(small).save(tmp_path / "m")
    est = den.DEN.load(tmp_path / "m")  # no estimator block: columns are the model's genes, by position
    X = small.X.toarray()
    np.testing.assert_allclose(est.transform(X), small.obsm["X_den"], atol=1e-4)
    assert (est.predict(X) == small.obs["den_clusters"].cat.codes.to_numpy()).mean() > 0.99


def test_a_denmodel_folder_reports_its_architecture(tmp_path, small):
    den.tl.embed(small, n_components=3, hidden=(32,), n_pcs=10, **FAST, progress_bar=False)
    den.DENModel.from_adata(small).save(tmp_path / "m")
    params = den.DEN.load(tmp_path / "m").get_params()
    assert (params["n_components"], params["hidden"], params["n_pcs"]) == (3, (32,), 10)


def test_refit_drops_the_last_fits_results(blobs):
    X, y = blobs
    est = den.DEN(n_clusters=4, **FAST).fit(X, y)
    assert hasattr(est, "labels_") and hasattr(est, "classes_")
    est.set_params(cluster=False).fit(X[::-1].copy())
    assert not hasattr(est, "labels_") and not hasattr(est, "n_clusters_") and not hasattr(est, "classes_")
    with pytest.raises(ValueError, match="set cluster=True"):
        est.fit_predict(X)


def test_clusters_on_the_maps_graph_with_its_options(blobs, monkeypatch):
    """``n_neighbors`` is the clustering's too (no second kNN search); ``min_cluster_size`` reaches it."""
    import den._clustering as clustering

    def no_search(*args, **kwargs):
        raise AssertionError("the clustering searched a second kNN graph")

    seen = {}
    discover = clustering.discover_clusters

    def spy(*args, **kwargs):
        seen["min_cluster_size"] = kwargs.get("min_cluster_size")
        return discover(*args, **kwargs)

    monkeypatch.setattr(clustering, "knn", no_search)
    monkeypatch.setattr(clustering, "discover_clusters", spy)
    est = den.DEN(n_neighbors=10, min_cluster_size=7, **FAST).fit(blobs[0])
    assert est.n_clusters_ >= 2 and seen["min_cluster_size"] == 7


@pytest.mark.parametrize("method", ["fit_transform", "fit_predict"])
def test_fit_params_refused_not_dropped(blobs, method):
    est = den.DEN(**FAST)
    with pytest.raises(
        TypeError, match=r"takes no fit parameters \(got \['progress_bar'\]\).*DEN\(progress_bar=True\)"
    ):
        getattr(est, method)(blobs[0], progress_bar=True)
    assert not hasattr(est, "model_")


def test_wrong_width_at_transform(fitted):
    with pytest.raises(ValueError, match="X has 3 features, but DEN is expecting 10"):
        fitted.transform(np.zeros((4, 3)))


def test_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        den.DEN().transform(np.zeros((4, 3)))


def test_feature_names(blobs, tmp_path):
    """A data frame's column names are recorded and checked as scikit-learn does (no silent reordering)."""
    import pandas as pd
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency

    check_dataframe_column_names_consistency("DEN", den.DEN(n_epochs=3, max_clusters=5))
    df = pd.DataFrame(blobs[0], columns=[f"gene{i}" for i in range(10)])
    est = den.DEN(**FAST).fit(df)
    assert list(est.feature_names_in_) == list(df.columns)
    est.save(tmp_path / "m")
    loaded = den.DEN.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.feature_names_in_, est.feature_names_in_)
    for model in (est, loaded):
        with pytest.raises(ValueError, match="same order"):
            model.transform(df[df.columns[::-1]])
        with pytest.raises(ValueError, match="unseen at fit time"):
            model.explain(df.rename(columns={"gene0": "other"}))
    np.testing.assert_allclose(loaded.transform(df), est.embedding_, atol=1e-5)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        est.transform(blobs[0])
    assert not hasattr(den.DEN(**FAST).fit(blobs[0]), "feature_names_in_")


def test_fit_searches_the_neighbour_graph_once(blobs, monkeypatch):
    """The clustering reuses the embedding's kNN graph (same representation, same k): one search, same clusters."""
    from den import _clustering, _embedding, _estimator

    X, _ = blobs
    calls = []
    for module in (_clustering, _embedding):
        search = module.knn
        monkeypatch.setattr(module, "knn", lambda *a, _s=search, **kw: (calls.append(1), _s(*a, **kw))[1])
    once = den.DEN(n_epochs=3, random_state=0, progress_bar=False).fit(X)
    assert len(calls) == 1
    fit_clusters = _estimator.fit_clusters
    monkeypatch.setattr(_estimator, "fit_clusters", lambda *a, **kw: fit_clusters(*a, **kw | {"graph": None}))
    twice = den.DEN(n_epochs=3, random_state=0, progress_bar=False).fit(X)  # the clustering searches again
    assert len(calls) == 3
    np.testing.assert_array_equal(once.labels_, twice.labels_)
    np.testing.assert_array_equal(once.predict_proba(X), twice.predict_proba(X))


def test_save_takes_numpy_numbers_and_a_device_and_writes_nothing_it_cannot_store(tmp_path, blobs):
    X, y = blobs
    est = den.DEN(n_components=np.int64(2), device=torch.device("cpu"), cluster=False, **FAST).fit(X)  # from a loop
    est.save(tmp_path / "m")
    back = den.DEN.load(tmp_path / "m")
    assert back.get_params()["n_components"] == 2 and back.get_params()["device"] == "cpu"
    labelled = den.DEN(cluster=False, **FAST).fit(X, np.asarray([b"a", b"b"], dtype=object)[y % 2])
    with pytest.raises(TypeError, match=r"classes_ holds b'a' \(bytes\), which a model folder cannot store"):
        labelled.save(tmp_path / "bytes")
    assert not (tmp_path / "bytes").exists()  # nothing half-written that would load without its classes


def test_arrays_walking_backwards(blobs, fitted):
    X = blobs[0]  # float32: no conversion copy hides the negative strides from torch
    np.testing.assert_allclose(fitted.transform(X[::-1]), fitted.transform(X)[::-1], atol=1e-5)
    np.testing.assert_allclose(fitted.model_.embed(X[::-1]), fitted.transform(X)[::-1], atol=1e-5)
    assert den.DEN(cluster=False, **FAST).fit(X[::-1]).embedding_.shape == (len(X), 2)


def test_a_data_frame_is_matched_by_its_column_names(blobs):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(blobs[0], columns=[f"g{i}" for i in range(blobs[0].shape[1])])
    est = den.DEN(cluster=False, **FAST).fit(df)
    assert list(est.model_.var_names) == list(df.columns)  # the model knows its features by name
    shuffled = df[df.columns[::-1]]
    np.testing.assert_allclose(est.model_.embed(shuffled), est.transform(df), atol=1e-5)


def test_images_after_a_fit_on_vectors_are_refused(fitted, blobs):
    with pytest.raises(ValueError, match=r"X has 3 dimensions, but DEN was fitted on samples x features"):
        fitted.transform(blobs[0].reshape(len(blobs[0]), 2, 5))


def test_too_many_clusters_refused_before_training(blobs):
    with pytest.raises(ValueError, match=r"n_clusters=300: it must be below the number of samples \(300\)"):
        den.DEN(n_clusters=300, n_epochs=500).fit(blobs[0])  # refused at once, not after 500 epochs


def test_a_denmodel_folder_with_labels_keeps_its_classes(tmp_path, small):
    small.obs["kind"] = small.obs["group"].astype(str).where(np.arange(small.n_obs) % 2 == 0)
    den.tl.embed(small, labels_key="kind", **FAST, progress_bar=False)
    den.DENModel.from_adata(small).save(tmp_path / "m")
    est = den.DEN.load(tmp_path / "m")
    assert list(est.classes_) == sorted(small.obs["kind"].dropna().unique())
    assert set(est.predict_labels(small.X.toarray())) <= set(est.classes_)


def test_tensors_numpy_cannot_hold(blobs, fitted):
    X = torch.tensor(blobs[0])
    expected = fitted.transform(blobs[0])
    np.testing.assert_allclose(fitted.model_.embed(X.bfloat16()), expected, atol=0.5)  # bfloat16 rounds the input
    assert fitted.transform(X.to(torch.float8_e4m3fn)).shape == expected.shape
    for sparse_tensor in (X.to_sparse(), X.to_sparse_csr()):  # read as scipy sparse, never densified whole
        np.testing.assert_allclose(fitted.transform(sparse_tensor), expected, atol=1e-5)
        np.testing.assert_allclose(fitted.model_.embed(sparse_tensor), expected, atol=1e-5)


def test_numeric_classes_in_order_and_finite(blobs):
    X, y = blobs
    mixed = np.asarray([1, 2, 2.5, 10], dtype=object)[y]  # ints and floats together
    assert list(den.DEN(cluster=False, **FAST).fit(X, mixed).classes_) == [1, 2, 2.5, 10]
    with pytest.raises(ValueError, match="y holds inf as a label"):
        den.DEN(cluster=False, **FAST).fit(X, np.asarray([0.0, 1.0, np.inf, 2.0])[y])
