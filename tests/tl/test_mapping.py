"""Mapping queries: batch-balanced training, label transfer, calibration and the mapping score."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors
from snapshot import snapshot

import den
from den._calibration import expected_calibration_error, fit_temperature, held_out_split
from den._classifier import stratified_folds
from den._mapping import batch_balanced_knn, mapping_scores, relative_scores
from den._utils import softmax

FAST = {"n_epochs": 15, "progress_bar": False}


@pytest.fixture(scope="module")
def _split():
    adata = den.datasets.batches(1500, 200, 4, n_batches=3, novel_share=0.2, n_markers=8, marker_fold=8, random_state=0)
    ref, query = adata[~adata.obs["is_query"]].copy(), adata[adata.obs["is_query"]].copy()
    den.tl.embed(ref, **FAST)
    return ref, query


@pytest.fixture
def split(_split):
    return _split[0].copy(), _split[1].copy()


# --- calibration ------------------------------------------------------------------------------------------------


def test_fit_temperature_recovers_the_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5000, 5))
    p = softmax(logits, 2.5).astype(np.float64)
    labels = np.array([rng.choice(5, p=row / row.sum()) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)


def test_ece_is_zero_for_calibrated_and_large_for_overconfident():
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = rng.random(20000) < conf
    proba = np.stack([conf, 1 - conf], 1)
    labels = np.where(correct, 0, 1)
    assert expected_calibration_error(proba, labels) < 0.02
    sure = np.tile([[0.999, 0.001]], (20000, 1))
    assert expected_calibration_error(sure, labels) > 0.2


def test_held_out_split_is_stratified_and_disjoint():
    labels = np.repeat([0, 1, 2], [500, 300, 5])
    s = held_out_split(labels, seed=0)
    assert len(np.intersect1d(s.train, s.calibrate)) == 0 and len(np.intersect1d(s.calibrate, s.evaluate)) == 0
    assert len(s.train) + len(s.calibrate) + len(s.evaluate) == len(labels)
    assert 2 not in labels[np.concatenate([s.calibrate, s.evaluate])]  # a class of 5 stays whole in training
    assert (labels[s.calibrate] == 0).sum() == 50 and (labels[s.evaluate] == 1).sum() == 30


def test_cluster_probabilities_are_temperature_scaled(trained):
    cal = trained.uns["den_clusters"]["calibration"]
    assert cal["temperature"] > 0 and cal["n_evaluated"] > 0
    model = den.DENModel.from_adata(trained)
    t = model.cluster_config["calibration"]["temperature"]
    assert np.allclose(model.predict_proba(trained.X, trained.var_names), trained.obsm["den_clusters_proba"], atol=1e-5)
    model.cluster_config["calibration"]["temperature"] = 1.0
    p1 = model.predict_proba(trained.X, trained.var_names).astype(np.float64)
    pt = trained.obsm["den_clusters_proba"].astype(np.float64)
    # log-odds between two clusters shrink (or grow) by exactly the temperature
    ok = (p1 > 1e-30).all(1) & (pt > 1e-30).all(1)
    assert ok.sum() > 10
    ratio = np.log(pt[ok, 0] / pt[ok, 1]) / np.log(p1[ok, 0] / p1[ok, 1])
    assert np.allclose(ratio, 1 / t, rtol=1e-2)


# --- batch-balanced neighbours ----------------------------------------------------------------------------------


def test_batch_balanced_knn_takes_neighbours_from_every_batch():
    rng = np.random.default_rng(0)
    rep = np.concatenate([rng.normal(0, 1, (100, 5)), rng.normal(5, 1, (60, 5))])  # batches far apart
    batches = np.repeat(["a", "b"], [100, 60])
    idx, dist = batch_balanced_knn(rep, batches, 10)
    assert idx.shape == (160, 10)
    assert (batches[idx[:, :5]] == "a").all() and (batches[idx[:, 5:]] == "b").all()  # one block per batch
    assert (idx != np.arange(160)[:, None]).all()
    assert (np.diff(dist[:, :5], axis=1) >= 0).all() and (np.diff(dist[:, 5:], axis=1) >= 0).all()


def test_batch_balanced_knn_searches_large_batches_through_an_index(monkeypatch):
    """Above the exact search's size, each batch is an index queried by every cell (pynndescent's query, here a
    stand-in that returns the exact answer but puts some cells after their first neighbour and leaves some
    rows short): the blocks are the exact search's, with no cell its own neighbour."""
    import sys
    import types

    from den import _pairs

    rng = np.random.default_rng(0)
    rep = np.concatenate([rng.normal(0, 1, (100, 5)), rng.normal(5, 1, (60, 5))])
    batches = np.repeat(["a", "b"], [100, 60])
    exact = batch_balanced_knn(rep, batches, 10)
    calls = []

    class Index:  # stands in for pynndescent (importing it and its first call compile for half a minute)
        def __init__(self, reference, n_neighbors, **kwargs):
            self.reference = reference
            calls.append(len(reference))

        def prepare(self):
            pass

        def query(self, queries, k):
            dist, idx = NearestNeighbors(n_neighbors=k).fit(self.reference).kneighbors(queries)
            own = np.flatnonzero(dist[:, 0] == 0)[::3]  # a cell itself second, as among duplicates
            idx[own, :2], dist[own, :2] = idx[own, 1::-1], dist[own, 1::-1]
            idx[::11, -1], dist[::11, -1] = -1, np.inf  # too few found: searched exactly
            return idx.astype(np.int32), dist.astype(np.float32)

    monkeypatch.setattr(_pairs, "EXACT_KNN_MAX_CELLS", 50)  # 160 queries x 100 or 60 cells > 2,500
    monkeypatch.setitem(sys.modules, "pynndescent", types.ModuleType("pynndescent"))
    monkeypatch.setattr(sys.modules["pynndescent"], "NNDescent", Index, raising=False)
    idx, dist = batch_balanced_knn(rep, batches, 10)
    assert calls == [100, 60]
    np.testing.assert_array_equal(idx, exact[0])
    np.testing.assert_allclose(dist, exact[1], rtol=1e-6)


def test_fuzzy_weights_per_batch_block_keep_cross_batch_pairs():
    """Far-away cells of another batch get weights like near ones of the cell's own batch, block by block."""
    from den._pairs import fuzzy_weights, knn_pairs

    rng = np.random.default_rng(0)
    rep = np.concatenate([rng.normal(0, 1, (100, 5)), rng.normal(8, 1, (100, 5))])
    batches = np.repeat(["a", "b"], 100)
    idx, dist = batch_balanced_knn(rep, batches, 10)
    pairs = knn_pairs(idx)
    cross = batches[pairs[0]] != batches[pairs[1]]
    blocked = fuzzy_weights(idx, dist, pairs, n_blocks=2)
    pooled = fuzzy_weights(idx, dist, pairs)
    assert blocked[cross].mean() > 0.3
    assert pooled[cross].mean() < 0.05


def test_batch_key_mixes_batches_on_the_map(split):
    ref, _ = split
    b = ref.obs["batch"].astype(str).to_numpy()

    def mixing(xy):
        _, idx = NearestNeighbors(n_neighbors=16).fit(xy).kneighbors(xy)
        return (b[idx[:, 1:]] != b[:, None]).mean()

    mixed = ref.copy()
    den.tl.embed(mixed, batch_key="batch", **FAST)
    assert mixed.uns["den"]["params"]["batch_key"] == "batch"
    assert mixing(mixed.obsm["X_den"]) > mixing(ref.obsm["X_den"]) + 0.1


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda a: None, KeyError, "not a column"),
        (lambda a: a.obs.__setitem__("batch", "one"), ValueError, "single batch"),
        (lambda a: a.obs.__setitem__("batch", np.where(np.arange(a.n_obs) < 3, None, "x")), ValueError, "missing"),
    ],
)
def test_batch_key_errors(split, change, error, match):
    ref, _ = split
    key = "nope" if match == "not a column" else "batch"
    change(ref)
    before = snapshot(ref)
    with pytest.raises(error, match=match):
        den.tl.embed(ref, batch_key=key, **FAST)
    assert snapshot(ref) == before


# --- label transfer and mapping score ---------------------------------------------------------------------------


def test_transfer_labels_labels_the_query(split):
    ref, query = split
    before = snapshot(ref)
    den.tl.transfer_labels(query, ref, "cell_type", key_added="predicted", progress_bar=False)
    assert snapshot(ref) == before  # the reference is not modified
    truth = query.obs["cell_type"].astype(str).to_numpy()
    known = truth != "novel"
    assert (query.obs["predicted"].astype(str).to_numpy()[known] == truth[known]).mean() > 0.9
    proba = query.obsm["predicted_proba"]
    assert proba.shape == (query.n_obs, 4) and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert np.allclose(query.obs["predicted_confidence"], proba.max(1))
    entry = query.uns["predicted"]
    assert entry["categories"] == ["type0", "type1", "type2", "type3"]
    # a reference under 5,000 cells: calibrated on every cell's out-of-fold logits, not on a 20 % sample
    assert entry["calibration"]["method"] == "5-fold cross-fitting"
    assert entry["calibration"]["n_evaluated"] == ref.n_obs
    assert 0 <= entry["calibration"]["ece"] <= 0.1


@pytest.mark.parametrize(
    "to_value", [lambda t: int(t[-1]) * 10, lambda t: t in ("type0", "type1")], ids=["integers", "booleans"]
)
def test_transferred_labels_keep_the_reference_values(split, to_value, tmp_path):
    ref, query = split
    ref.obs["code"] = [to_value(t) for t in ref.obs["cell_type"].astype(str)]
    den.tl.transfer_labels(query, ref, "code", key_added="code", head_epochs=5, finetune_epochs=0, progress_bar=False)
    expected = ref.obs["code"].to_numpy()
    labels = query.obs["code"]
    assert labels.cat.categories.dtype == expected.dtype  # 10, 20 stay numbers (True stays a boolean), not '10', '20'
    assert set(labels.cat.categories) <= set(expected)
    types = query.obs["cell_type"].astype(str)
    known = (types != "novel").to_numpy()
    truth = np.array([to_value(t) for t in types[known]])
    assert (labels.to_numpy()[known] == truth).mean() > 0.9
    query.write_h5ad(tmp_path / "q.h5ad")  # and the file still writes and reads back the same
    assert ad.read_h5ad(tmp_path / "q.h5ad").obs["code"].equals(labels)


def test_label_order_follows_the_reference():
    from den._data import label_order as _label_order

    cats = pd.Series(pd.Categorical(["B", "T", "B"], categories=["T", "NK", "B"]))
    assert _label_order(cats) == ["T", "B"]  # the categorical's order, unused categories left out
    assert _label_order(pd.Series([10, 2, 2, 1])) == ["1", "2", "10"]  # numbers by value, not as text
    assert _label_order(pd.Series(["b", "a"])) == ["a", "b"]
    assert _label_order(pd.Series(["10", "2", "1"])) == ["1", "2", "10"]  # cluster names are numbers too


def test_stratified_folds_deal_every_class_round_the_folds():
    labels = np.repeat([0, 1, 2], [500, 52, 3])
    folds = stratified_folds(labels, 5, seed=0)
    for c, n in ((0, 100), (1, 10)):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.min() >= n and counts.max() <= n + 1
    assert len(set(folds[labels == 2])) == 3  # a class smaller than the folds: one cell per fold
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=1))


def test_cross_fitting_calibrates_on_out_of_fold_logits(split):
    from den._classifier import train_classifier
    from den.tl._mapping import _fronts, _inputs, _reference_labels

    ref, query = split
    model = den.DENModel.from_adata(ref, cluster_key=None)
    labels, _ = _reference_labels(ref, "cell_type")
    front, _ = _fronts(model, ref, query, _inputs(model, ref, query, "den", None))
    kw = {"head_epochs": 2, "finetune_epochs": 0, "batch_size": 256, "device": "cpu", "seed": 0, "progress_bar": False}
    held = train_classifier(model, front, labels, **kw)
    crossed = train_classifier(model, front, labels, cross_fit=True, **kw)
    assert held.calibration["method"] == "held-out 20 %" and held.calibration["n_evaluated"] < 0.25 * len(labels)
    assert crossed.calibration["n_evaluated"] == len(labels)
    # the network returned trains on every cell: the same seed and epochs as a held-out fit, more cells
    w_held, w_crossed = held.net[1].weight.detach(), crossed.net[1].weight.detach()
    assert not np.allclose(w_held, w_crossed)


def test_transfer_labels_errors_leave_the_query_alone(split):
    ref, query = split
    before = snapshot(query)
    with pytest.raises(KeyError, match="not a column of reference.obs"):
        den.tl.transfer_labels(query, ref, "nope", progress_bar=False)
    ref.obs["one"] = "x"
    with pytest.raises(ValueError, match="at least 2"):
        den.tl.transfer_labels(query, ref, "one", progress_bar=False)
    with pytest.raises(KeyError, match="lacks 150 of the 200 genes"):
        den.tl.transfer_labels(query[:, :50].copy(), ref, "cell_type", progress_bar=False)
    ref.obs["rare"] = ref.obs["cell_type"].astype(str)
    ref.obs.iloc[0, ref.obs.columns.get_loc("rare")] = "alone"  # a label on one cell (torch's loss failed on it)
    with pytest.raises(ValueError, match=r"labels on a single cell: \['alone'\]"):
        den.tl.transfer_labels(query, ref, "rare", progress_bar=False)
    ref.obs["texts"] = ref.obs["cell_type"].astype(str).where(np.arange(ref.n_obs) % 3 > 0)
    ref.obs["texts"] = ref.obs["texts"].astype(str)  # NaN -> "nan", a label it would hand out
    with pytest.raises(ValueError, match="holds 'nan' as a label"):
        den.tl.transfer_labels(query, ref, "texts", progress_bar=False)
    query.uns["den"] = dict(ref.uns["den"])  # the query's own map: transferring over it would replace its model
    before = snapshot(query)
    with pytest.raises(ValueError, match=r"holds the model of den.tl.embed.*another key_added"):
        den.tl.transfer_labels(query, ref, "cell_type", key_added="den", progress_bar=False)
    with pytest.raises(ValueError, match=r"holds the model of den.tl.embed.*another key_added"):
        den.tl.mapping_score(query, ref, key_added="den")
    assert snapshot(query) == before


def test_mapping_score_flags_the_novel_type(split):
    ref, query = split
    before = query.copy()
    den.tl.mapping_score(query, ref)
    score = query.obs["den_mapping_score"].to_numpy()
    novel = (query.obs["cell_type"] == "novel").to_numpy()
    # a query from a new batch, on a model that does not centre batches: ranked against the query, the
    # batch effect (every query cell far from the reference) does not hide the novel type
    assert roc_auc_score(novel, -score) > 0.9
    assert query.uns["den_mapping_score"]["params"]["against"] == "query"
    # ranked against the reference, the whole new batch looks unfamiliar and the novel type less so
    den.tl.mapping_score(before, ref, against="reference")
    assert roc_auc_score(novel, -before.obs["den_mapping_score"].to_numpy()) < roc_auc_score(novel, -score)


def test_relative_scores_ignore_a_shift_of_the_whole_query():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, size=(4, 8))
    ref = centres[rng.integers(0, 4, 2000)] + rng.normal(size=(2000, 8))
    known = centres[rng.integers(0, 4, 900)] + rng.normal(size=(900, 8))
    novel = rng.normal(0, 5, size=8) + rng.normal(size=(100, 8))
    query = np.concatenate([known, novel]) + 1.5  # every query cell moved off the reference
    s = relative_scores(ref, query)
    assert roc_auc_score(np.r_[np.zeros(900), np.ones(100)], -s) > 0.99
    assert 0.35 < s[:900].mean() < 0.65 and (s[:900] < 0.01).mean() < 0.03
    assert (s[900:] < 0.01).mean() > 0.9


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"against": "nope"}, ValueError, "use 'query' or 'reference'"),
        ({"n_neighbors": 0}, ValueError, "integer >= 1"),
        ({"n_neighbors": 10_000, "against": "reference"}, ValueError, r"more than the reference's \d+ cells"),
    ],
)
def test_mapping_score_errors_leave_the_query_alone(split, kwargs, error, match):
    ref, query = split
    before = snapshot(query)
    with pytest.raises(error, match=match):
        den.tl.mapping_score(query, ref, **kwargs)
    assert snapshot(query) == before
    small = query[:10].copy()
    with pytest.raises(ValueError, match="at least n_neighbors \\+ 2 = 17 query cells, not 10"):
        den.tl.mapping_score(small, ref)
    den.tl.mapping_score(small, ref, against="reference")  # the reference yardstick needs no query
    assert small.obs["den_mapping_score"].between(0, 1).all()


def test_mapping_scores_of_the_reference_distribution_are_uniform():
    rng = np.random.default_rng(0)
    ref, query = rng.normal(size=(2000, 5)), rng.normal(size=(1000, 5))
    far = rng.normal(6, 1, size=(50, 5))
    s = mapping_scores(ref, np.concatenate([query, far]))
    assert abs(np.mean(s[:1000]) - 0.5) < 0.1
    assert s[1000:].max() < 0.01


def test_batches_generator():
    a = den.datasets.batches(900, 150, 3, n_batches=3, novel_share=0.3, n_markers=5, random_state=2)
    assert a.shape == (900, 150)
    assert set(a.obs.loc[a.obs["cell_type"] == "novel", "batch"]) == {"query"}
    assert set(a.obs["batch"].cat.categories) == {"batch0", "batch1", "query"}
    with pytest.raises(ValueError, match="at least 2"):
        den.datasets.batches(100, 50, 2, n_batches=1)


def test_query_plot(split):
    ref, query = split
    den.tl.transform(query, ref)
    den.tl.mapping_score(query, ref)
    axes = den.pl.query(query, ref, color=["cell_type", "den_mapping_score"], show=False)
    assert len(axes) == 2 and len(axes[0].collections) >= 2
    assert type(axes[0].figure.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"  # legends kept on save
    with pytest.raises(KeyError, match="neither a column"):
        den.pl.query(query, ref, color="nope", show=False)
    with pytest.raises(KeyError, match="no 'den' or 'X_den'"):
        den.pl.query(query, ad.AnnData(np.zeros((3, 2), np.float32)), show=False)
    short = den.pl.query(query, ref, show=False)  # "den", as den.pl.embedding and scanpy spell it
    plain = den.pl.query(query, ref, basis="X_den", show=False)
    np.testing.assert_array_equal(short.collections[1].get_offsets(), plain.collections[1].get_offsets())
    assert short.get_xlabel() == "den1"


def test_query_plot_reads_genes_from_raw_as_scanpy(split):
    ref, query = split
    den.tl.transform(query, ref)
    gene = query.var_names[0]
    query.raw = query.copy()  # raw: the values before the scaling below
    query.X = np.ones(query.shape, np.float32)  # X constant: a colour from it would be flat
    raw_values = np.asarray(query.raw[:, gene].X.todense()).ravel()

    def drawn(**kw):
        ax = den.pl.query(query, ref, color=gene, show=False, **kw)
        values = np.sort(np.asarray(ax.collections[1].get_array()))
        matplotlib.pyplot.close("all")
        return values

    np.testing.assert_allclose(drawn(), np.sort(raw_values))  # use_raw=None: raw, as sc.pl.embedding
    np.testing.assert_allclose(drawn(use_raw=False), 1.0)


def test_query_plot_draws_into_a_given_axes(split):
    ref, query = split
    den.tl.transform(query, ref)
    fig, (left, right) = matplotlib.pyplot.subplots(1, 2)
    got = den.pl.query(query, ref, color="cell_type", ax=right, show=False)
    assert got is right and len(right.collections) >= 2 and not left.collections and len(fig.axes) == 2
    with pytest.raises(ValueError, match="ax= draws one panel; got 2 colors"):
        den.pl.query(query, ref, color=["cell_type", "batch"], ax=left, show=False)
    matplotlib.pyplot.close("all")


def test_query_plot_colours_as_scanpy_and_puts_unfamiliar_cells_on_top(split):
    from matplotlib.colors import to_rgba
    from scanpy.plotting import palettes

    ref, query = split
    den.tl.transform(query, ref)
    den.tl.mapping_score(query, ref)
    kinds = [f"k{i:02d}" for i in range(12)]  # more than 10: matplotlib's tab20 and scanpy's palette differ
    query.obs["kind"] = pd.Categorical(np.asarray(kinds)[np.arange(query.n_obs) % 12])  # no colours anywhere
    ax = den.pl.query(query, ref, color="kind", show=False)
    assert [to_rgba(c.get_facecolor()[0]) for c in ax.collections[1:]] == [to_rgba(c) for c in palettes.default_20[:12]]
    ax = den.pl.query(query, ref, color="den_mapping_score", show=False)
    drawn = ax.collections[1].get_array()
    assert drawn[-1] == query.obs["den_mapping_score"].min()  # the least familiar cell is drawn last, on top
    assert ax.figure.axes[-1].get_ylabel() == "den_mapping_score"  # the colour bar says what it shows
    matplotlib.pyplot.close("all")


def test_query_plot_takes_the_references_colours_and_order(split):
    from matplotlib.colors import to_rgba

    ref, query = split
    ref.obs["code"] = pd.Categorical(ref.obs["cell_type"].astype(str).str[-1].astype(int) * 5)  # 0, 5, 10, 15
    ref.uns["code_colors"] = ["#111111", "#222222", "#333333", "#444444"]  # as scanpy's plots leave them
    query = query[query.obs["cell_type"].astype(str).isin(["type2", "type3"])].copy()  # no 0 or 5 cells
    query.obs["code"] = query.obs["cell_type"].astype(str).str[-1].astype(int) * 5
    den.tl.transform(query, ref)
    ax = den.pl.query(query, ref, color="code", show=False)
    drawn = {c.get_label(): to_rgba(c.get_facecolor()[0]) for c in ax.collections[1:]}
    assert drawn == {"10": to_rgba("#333333"), "15": to_rgba("#444444")}
    query.obs["code"] = query.obs["code"].map({10: 10, 15: 2})  # 2: a label the reference lacks, after 10 by value
    ax = den.pl.query(query, ref, color="code", show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reference", "10", "2"]  # its order, then new ones
    assert to_rgba(ax.collections[1].get_facecolor()[0]) == to_rgba("#333333")


# --- batch centring: queries from new batches -------------------------------------------------------------------


@pytest.fixture(scope="module")
def _centred(_split):
    ref = _split[0].copy()
    den.tl.embed(ref, batch_key="batch", **FAST)
    return ref


def _query_accuracy(ref, query) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    truth = query.obs["cell_type"].astype(str).to_numpy()
    known = truth != "novel"
    knn = KNeighborsClassifier(15).fit(ref.obsm["X_den"], ref.obs["cell_type"].astype(str))
    return float((knn.predict(query.obsm["X_den"][known]) == truth[known]).mean())


def test_batch_centring_places_a_new_batch(_centred, split):
    ref, query = _centred.copy(), split[1]
    assert den.DENModel.from_adata(ref).batch_centering
    assert ref.uns["den"]["params"]["batch_centering"] is True
    den.tl.transform(query, ref, batch_key="batch")
    assert _query_accuracy(ref, query) > 0.9
    # the same cells, shifted together by a new gene-wise batch effect, land in the same places
    shifted = query.copy()
    shift = np.abs(np.random.default_rng(0).normal(0, 0.3, shifted.n_vars)).astype(np.float32)
    shifted.X = shifted.X.toarray() + shift
    den.tl.transform(shifted, ref, batch_key="batch")
    assert np.abs(shifted.obsm["X_den"] - query.obsm["X_den"]).max() < 1e-3 * np.ptp(ref.obsm["X_den"])


def test_batch_centring_needs_whole_batches(_centred, split):
    ref, query = _centred.copy(), split[1]
    with pytest.warns(UserWarning, match="one batch"):
        den.tl.transform(query, ref)
    with pytest.warns(UserWarning, match="fewer than 50 cells"):
        den.tl.transform(query[:20].copy(), ref, batch_key="batch")
    with pytest.raises(KeyError, match="not a column of the query"):
        den.tl.transform(query, ref, batch_key="nope")
    with pytest.raises(ValueError, match="needs the PCA layer"):
        den.tl.embed(ref.copy(), batch_key="batch", n_pcs=None, **FAST)


def test_batch_centred_model_clusters_and_explains(_centred, split):
    ref = _centred.copy()
    den.tl.cluster(ref, progress_bar=False, head_epochs=5, finetune_epochs=1)
    den.tl.marker_features(ref, max_cells_per_group=20, n_background=20, progress_bar=False)
    assert ref.uns["den_marker_features"]["mean_shap"].shape[1] == ref.obs["den_clusters"].nunique()
    query = split[1]
    den.tl.transfer_labels(query, ref, "cell_type", batch_key="batch", key_added="predicted", progress_bar=False)
    den.tl.mapping_score(query, ref, batch_key="batch")
    truth = query.obs["cell_type"].astype(str).to_numpy()
    novel = truth == "novel"
    assert (query.obs["predicted"].astype(str).to_numpy()[~novel] == truth[~novel]).mean() > 0.9
    assert roc_auc_score(novel, -query.obs["den_mapping_score"].to_numpy()) > 0.9


@pytest.mark.parametrize("centring", [True, False])
def test_fit_cells_with_batches_samples_every_batch(split, centring):
    """fit_cells with batch_key: a sample stratified by batch, the same for embed and cluster; every cell placed
    as den.tl.transform places it from the sample's fit done by hand."""
    from den._utils import training_rows

    ref = split[0]
    kw = {"batch_key": "batch", "batch_centering": centring, **FAST}
    den.tl.embed(ref, fit_cells=300, **kw)
    den.tl.cluster(ref, fit_cells=300, progress_bar=False, head_epochs=5, finetune_epochs=1)
    batches = ref.obs["batch"].astype(str).to_numpy()
    rows = training_rows(ref.n_obs, 300, 0, batches)
    share = pd.Series(batches[rows]).value_counts() / len(rows)
    pd.testing.assert_series_equal(share, pd.Series(batches).value_counts(normalize=True), atol=0.01, check_names=False)
    assert ref.uns["den"]["fit"]["n_cells_trained"] == len(rows)
    np.testing.assert_array_equal(np.flatnonzero(ref.uns["den_clusters"]["training_labels"] >= 0), rows)
    by_hand = ref[rows].copy()
    del by_hand.uns["den"], by_hand.obsm["X_den"]
    den.tl.embed(by_hand, **kw)
    den.tl.cluster(by_hand, progress_bar=False, head_epochs=5, finetune_epochs=1)
    query = ref.copy()
    del query.uns["den_clusters"]  # its own clustering (equal labels, other weights): transform refuses to mix them
    den.tl.transform(query, by_hand, batch_key="batch")
    np.testing.assert_allclose(ref.obsm["X_den"], query.obsm["X_den"], atol=1e-5)
    # the same clusters; their names follow sizes over every cell, the hand-made ones over the sample (a tie here)
    assert adjusted_rand_score(ref.obs["den_clusters"], query.obs["den_clusters"]) == 1


def test_a_centred_embedding_whose_batch_column_is_gone_says_so(_centred, split):
    """The user passed no batch_key: the message names the embedding's, and where it is missing."""
    ref = _centred.copy()
    del ref.obs["batch"]
    with pytest.raises(KeyError, match=r"adata.uns\['den'\] centres each batch of batch_key='batch'.*adata.obs"):
        den.tl.cluster(ref, progress_bar=False)
    with pytest.raises(KeyError, match=r"reference.uns\['den'\] centres each batch.*no longer a column of reference"):
        den.tl.mapping_score(split[1], ref, batch_key="batch")
    assert "den_clusters" not in ref.obs and "den_mapping_score" not in split[1].obs


def test_fit_cells_clusters_need_the_embeddings_batch_column(split):
    ref = split[0]
    den.tl.embed(ref, batch_key="batch", batch_centering=False, fit_cells=300, **FAST)
    del ref.obs["batch"]
    with pytest.raises(KeyError, match="trained with batch_key='batch', which is no longer a column"):
        den.tl.cluster(ref, fit_cells=300, progress_bar=False)
    assert "den_clusters" not in ref.obs


def test_transfer_labels_reads_minus_one_as_unlabelled(split):
    ref, query = split
    codes = ref.obs["cell_type"].cat.codes.to_numpy()
    ref.obs["coded"] = np.where(np.arange(ref.n_obs) % 3 == 0, -1, codes)  # as den.tl.embed(labels_key=...) takes
    den.tl.transfer_labels(query, ref, "coded", progress_bar=False)
    got = set(query.obs["coded"].dropna().astype(int))
    assert got and -1 not in got and got <= set(codes)
