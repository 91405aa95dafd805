"""den on a CUDA GPU: training, reproducibility, and models that move between GPU and CPU.

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

import den
from den._loss import add_rows
from den._pairs import PairSampler, exact_knn
from den.train import _runner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _knn_accuracy(emb: np.ndarray, labels) -> float:
    return float(cross_val_score(KNeighborsClassifier(15), emb, labels, cv=5).mean())


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16, y


@pytest.fixture(scope="module")
def fitted(digits):
    return den.DEN(device="cuda", random_state=0).fit(digits[0])


def test_add_rows_sums_repeated_indices_in_a_fixed_order():
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 50, (4000,), generator=g)  # every row repeated about 80 times
    rows = torch.randn(4000, 2, generator=g)
    want = torch.zeros(50, 2, dtype=torch.float64).index_add_(0, index, rows.double())
    runs = []
    for _ in range(5):
        target = torch.zeros(50, 2, device="cuda")
        add_rows(target, index.cuda(), rows.cuda())
        runs.append(target.cpu())
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    torch.testing.assert_close(runs[0].double(), want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("far_rule", ["shared", "distance"])
def test_pairs_are_drawn_on_the_device(far_rule):
    gen = torch.Generator(device="cuda").manual_seed(0)
    near = (np.arange(100), (np.arange(100) + 1) % 100)
    rep = torch.randn(100, 5, device="cuda")
    sampler = PairSampler(near, batch_size=16, n_far=8, far_rule=far_rule, generator=gen, rep=rep)
    batches = list(sampler.epoch())
    assert len(batches) == 7
    assert all(b.rows.is_cuda and b.far.is_cuda for b in batches)
    assert sorted(torch.cat([b.rows[: len(b.rows) // 2] for b in batches]).tolist()) == list(range(100))


def test_den_trains_on_cuda(fitted, digits):
    X, y = digits
    assert fitted.model_.config["encoder"] == "mlp"
    assert _knn_accuracy(fitted.embedding_, y) >= 0.95  # 0.98 on CPU
    assert adjusted_rand_score(y, fitted.labels_) >= 0.7
    modules = [fitted.model_.encoder, fitted.model_.cluster_net]
    assert all(p.device.type == "cpu" for m in modules for p in m.parameters())  # the trained model is kept on CPU


def test_cuda_and_cpu_place_cells_alike(fitted, digits):
    X = digits[0]
    on_gpu = fitted.transform(X)
    on_cpu = copy.copy(fitted).set_params(device="cpu")  # the same trained model
    np.testing.assert_allclose(on_cpu.transform(X), on_gpu, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(on_gpu, fitted.embedding_, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(on_cpu.predict(X), fitted.predict(X))


def test_saved_on_gpu_loads_anywhere(fitted, digits, tmp_path):
    fitted.save(tmp_path / "model")
    back = den.DEN.load(tmp_path / "model")
    back.set_params(device="cpu")
    np.testing.assert_allclose(back.transform(digits[0]), fitted.transform(digits[0]), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    ("encoder", "kwargs", "labelled"),
    [
        pytest.param("mlp", {}, False, id="mlp"),
        pytest.param("conv", {}, False, id="conv"),
        pytest.param("mlp", {"loss": "paper"}, False, id="paper loss"),
        pytest.param("mlp", {"cluster": True, "n_clusters": 10}, False, id="clusters"),
        pytest.param("mlp", {}, True, id="labels"),
    ],
)
def test_a_seed_repeats_a_cuda_run(digits, encoder, kwargs, labelled):
    X, y = digits
    X = X.reshape(-1, 8, 8) if encoder == "conv" else X
    y = np.where(np.arange(len(y)) % 5 == 0, y, -1) if labelled else None
    settings = {"device": "cuda", "encoder": encoder, "n_epochs": 15, "cluster": False, "random_state": 3} | kwargs
    runs = [den.DEN(**settings).fit(X, y) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].embedding_, runs[1].embedding_)
    if settings["cluster"]:
        np.testing.assert_array_equal(runs[0].labels_, runs[1].labels_)
    if labelled:
        np.testing.assert_array_equal(runs[0].predict_labels(X), runs[1].predict_labels(X))


def test_cuda_graph_steps_train_as_eager_steps(digits, monkeypatch):
    X, y = digits
    captures, capture = [], _runner.cuda_capture
    monkeypatch.setattr(_runner, "cuda_capture", lambda step: (captures.append(1), capture(step))[1])
    settings = {"device": "cuda", "cluster": False, "random_state": 0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graphed = den.DEN(**settings).fit(X).embedding_
    assert len(captures) == 1  # the embedding's steps are replayed by default ...
    assert not [w for w in caught if "Training eagerly" in str(w.message)]  # ... from a capture that worked
    monkeypatch.setattr(_runner.Runner, "_capture", lambda self, plan, world: None)
    eager = den.DEN(**settings).fit(X).embedding_
    np.testing.assert_allclose(graphed, eager, rtol=1e-4, atol=1e-3)
    assert _knn_accuracy(graphed, y) >= 0.95


def test_exact_knn_on_cuda_matches_the_cpu():
    rep = np.random.default_rng(0).normal(size=(5000, 50)).astype(np.float32)  # no ties, unlike digits' pixels
    idx, dist = exact_knn(rep, 16, torch.device("cuda"))
    idx_cpu, dist_cpu = exact_knn(rep, 16, torch.device("cpu"))
    assert (idx == idx_cpu).mean() >= 0.999  # ties may order differently
    np.testing.assert_allclose(dist[:, 1:], dist_cpu[:, 1:], rtol=1e-3)


def test_semi_supervised_on_cuda(digits):
    X, y = digits
    partial = np.where(np.random.default_rng(0).random(len(y)) < 0.1, y, -1)
    est = den.DEN(device="cuda", n_epochs=30, cluster=False, random_state=0).fit(X, partial)
    unlabelled = partial < 0
    assert (est.predict_labels(X[unlabelled]) == y[unlabelled]).mean() >= 0.85


def test_anndata_tools_on_cuda(pbmc):
    den.tl.embed(pbmc, device="cuda", random_state=0, progress_bar=False)
    assert pbmc.uns["den"]["fit"]["device"].startswith("cuda")
    assert _knn_accuracy(pbmc.obsm["X_den"], pbmc.obs["bulk_labels"]) >= 0.75  # 0.82 on CPU
    den.tl.cluster(pbmc, device="cuda", progress_bar=False)
    assert adjusted_rand_score(pbmc.obs["bulk_labels"], pbmc.obs["den_clusters"]) >= 0.3
    query = pbmc[:100].copy()
    del query.obsm["X_den"]
    den.tl.transform(query, pbmc, device="cuda")
    np.testing.assert_allclose(query.obsm["X_den"], pbmc.obsm["X_den"][:100], rtol=1e-4, atol=1e-3)
    assert (query.obs["den_clusters"] == pbmc.obs["den_clusters"][:100]).mean() >= 0.99
    den.tl.marker_features(pbmc, progress_bar=False)
    assert len(pbmc.uns["den_marker_features"]["names"]) > 0
