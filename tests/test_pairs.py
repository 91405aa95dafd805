from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import torch

from den import _pairs
from den._pairs import (
    PairSampler,
    drop_label_conflicts,
    fuzzy_weights,
    knn,
    knn_pairs,
    label_pairs,
    mutual_pairs,
)


def test_knn_is_exact_and_excludes_self(rng):
    x = rng.normal(size=(200, 5)).astype(np.float32)
    idx, dist = knn(x, 7)
    assert idx.shape == (200, 7)
    assert not (idx == np.arange(200)[:, None]).any()
    full = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(np.argsort(full, 1)[:, :7], 1))
    np.testing.assert_allclose(dist, np.sort(full, 1)[:, :7], rtol=1e-4)


def test_blocked_exact_knn_matches_the_exact_search(rng, monkeypatch):
    monkeypatch.setattr(_pairs, "KNN_BLOCK_ROWS", 64)  # several blocks and a short last one
    x = rng.normal(20, 1, size=(300, 5)).astype(np.float32)  # off-centre, as PCs of a subset are
    x[1] = x[0]  # a duplicate: distance 0, like a row to itself
    idx, dist = _pairs.exact_knn(x, 8, torch.device("cpu"))
    full = np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=2)
    np.testing.assert_allclose(dist, np.sort(full, 1)[:, :8], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.sort(idx[2:], 1), np.sort(np.argsort(full[2:], 1)[:, :8], 1))
    assert set(idx[0, :2]) == set(idx[1, :2]) == {0, 1} and dist[0, 1] == dist[1, 1] == 0


def test_large_graphs_are_searched_exactly_on_a_cuda_device(rng, monkeypatch):
    monkeypatch.setattr(_pairs, "EXACT_KNN_MAX_CELLS", 100)
    monkeypatch.setattr(_pairs, "_fits", lambda rep, device: True)  # no GPU here to ask
    calls = []
    monkeypatch.setattr(_pairs, "exact_knn", lambda rep, k, device: (calls.append(device), _exact(rep, k))[1])
    x = rng.normal(size=(300, 5)).astype(np.float32)
    idx, _ = knn(x, 7, device=torch.device("cuda"))
    assert calls == [torch.device("cuda")]
    monkeypatch.setattr(_pairs, "EXACT_GPU_KNN_MAX_CELLS", 299)  # beyond it: pynndescent, as on the host

    class Approximate:  # stands in for pynndescent (importing it and its first call compile for half a minute)
        def __init__(self, rep, n_neighbors, **kwargs):
            self.neighbor_graph = _exact(rep, n_neighbors)
            calls.append("pynndescent")

    monkeypatch.setitem(sys.modules, "pynndescent", types.ModuleType("pynndescent"))
    monkeypatch.setattr(sys.modules["pynndescent"], "NNDescent", Approximate, raising=False)
    knn(x, 7, device=torch.device("cuda"))
    assert calls == [torch.device("cuda"), "pynndescent"]
    monkeypatch.setattr(_pairs, "EXACT_GPU_KNN_MAX_CELLS", 300)
    monkeypatch.setattr(_pairs, "_fits", lambda rep, device: False)  # too little free GPU memory: the host's search
    knn(x, 7, device=torch.device("cuda"))
    assert calls == [torch.device("cuda"), "pynndescent", "pynndescent"]
    np.testing.assert_array_equal(idx, _exact(x, 8)[0][:, 1:])  # the graph without each cell itself


def test_neighbours_pynndescent_did_not_find_are_searched_exactly(rng, monkeypatch):
    monkeypatch.setattr(_pairs, "EXACT_KNN_MAX_CELLS", 100)
    x = rng.normal(size=(300, 5)).astype(np.float32)

    class Incomplete:  # pynndescent leaves -1 where it found too few neighbours (many identical rows)
        def __init__(self, rep, n_neighbors, **kwargs):
            idx, dist = _exact(rep, n_neighbors)
            idx[::7, -2:], dist[::7, -2:] = -1, np.inf
            self.neighbor_graph = idx.astype(np.int32), dist.astype(np.float32)

    monkeypatch.setitem(sys.modules, "pynndescent", types.ModuleType("pynndescent"))
    monkeypatch.setattr(sys.modules["pynndescent"], "NNDescent", Incomplete, raising=False)
    idx, dist = knn(x, 7)
    assert (idx >= 0).all() and np.isfinite(dist).all()  # a -1 would pair each such cell with the last one
    np.testing.assert_array_equal(idx, _exact(x, 8)[0][:, 1:])


def _exact(x, k):
    full = np.linalg.norm(x[:, None] - x[None], axis=2)
    order = np.argsort(full, 1, kind="stable")[:, :k]
    return order, np.take_along_axis(full, order, 1)


def test_sorted_unique_is_numpys_unique(rng):
    values = rng.integers(0, 50, 1000)
    np.testing.assert_array_equal(_pairs.sorted_unique(values), np.unique(values))
    assert _pairs.sorted_unique(np.zeros(0, np.int64)).shape == (0,)


def test_mutual_pairs_plus_closest():
    # 0 <-> 1 mutual; 2's neighbour is 1, but 1's is 0: kept only as 2's closest partner
    knn_idx = np.array([[1], [0], [1], [2]])
    i, j = mutual_pairs(knn_idx, min_neighbors=1)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(0, 1), (1, 2), (2, 3)}
    i, j = mutual_pairs(knn_idx, min_neighbors=0)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(0, 1)}


def test_knn_pairs_every_edge_once(rng):
    x = rng.normal(size=(300, 3))
    idx = knn(x, 10)[0]
    i, j = knn_pairs(idx)
    assert (i < j).all()
    pairs = set(zip(i.tolist(), j.tolist(), strict=True))
    assert len(pairs) == len(i)
    expected = {(min(a, b), max(a, b)) for a in range(300) for b in idx[a].tolist()}
    assert pairs == expected


def test_fuzzy_weights_favour_close_neighbours(rng):
    x = rng.normal(size=(400, 4))
    idx, dist = knn(x, 15)
    pairs = knn_pairs(idx)
    w = fuzzy_weights(idx, dist, pairs)
    assert w.shape == pairs[0].shape and (w > 0).all() and (w <= 1 + 1e-9).all()
    # every cell's nearest neighbour has strength 1 (UMAP's rho), so its pair weighs 1
    first = {(min(a, idx[a, 0]), max(a, idx[a, 0])) for a in range(400)}
    lookup = dict(zip(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True), w, strict=True))
    assert all(abs(lookup[p] - 1) < 1e-9 for p in first)
    assert np.median(w) < 0.8  # farther neighbours weigh less


def test_label_pairs_same_label_never_self(rng):
    labels = np.array([0, 0, 0, 1, 1, -1, -1, 2])  # class 2 has one cell: no partner
    i, j = label_pairs(labels, 4, rng)
    assert len(i) == 4 * 5
    assert (labels[i] == labels[j]).all() and (i != j).all() and (labels[i] >= 0).all()


def test_drop_label_conflicts():
    pairs = (np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3]))
    labels = np.array([0, 0, 1, -1])
    i, j = drop_label_conflicts(pairs, labels)
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 1), (1, 3), (2, 3)]


def _sampler(n_far=8, far_rule="shared", **kw):
    near = (np.arange(0, 100), np.arange(100, 200))
    return PairSampler(
        near, batch_size=32, n_far=n_far, far_rule=far_rule, generator=torch.Generator().manual_seed(0), **kw
    )


def test_sampler_batches_cover_every_pair_once():
    sampler = _sampler()
    batches = list(sampler.epoch())
    assert len(batches) == sampler.steps_per_epoch() == 4
    seen = set()
    for b in batches:
        half = len(b.rows) // 2
        seen |= set(zip(b.rows[:half].tolist(), b.rows[half:].tolist(), strict=True))
        assert b.far.shape == (8,) and int(b.far.max()) < len(b.rows)
    assert seen == {(k, k + 100) for k in range(100)}


def test_sampler_reproducible():
    a = [b.rows.tolist() + b.far.tolist() for b in _sampler().epoch()]
    b = [b.rows.tolist() + b.far.tolist() for b in _sampler().epoch()]
    assert a == b


def test_pickled_sampler_resumes_its_draws():
    """A spawned rank gets the sampler by pickle: it continues the same draws, one generator still shared."""
    sampler = _sampler()
    next(iter(sampler.epoch()))  # move the generator on
    copy = pickle.loads(pickle.dumps(sampler))
    assert copy.generator is copy.draw_generator and copy.generator.device == sampler.generator.device
    a = [b.rows.tolist() + b.far.tolist() for b in sampler.epoch()]
    b = [b.rows.tolist() + b.far.tolist() for b in copy.epoch()]
    assert a == b


def test_sampler_distance_rule_prefers_distant_partners():
    rep = torch.zeros(200, 2)
    rep[150] = 100.0  # one cell far from all others
    sampler = _sampler(n_far=5, far_rule="distance", rep=rep)
    share = []
    for _ in range(10):
        for b in sampler.epoch():
            half = len(b.rows) // 2
            if (b.rows == 150).any():
                far_cells = b.rows[b.far]  # (anchors, n_far)
                share.append(float((far_cells[b.rows[:half] != 150] == 150).float().mean()))
    # a uniform draw picks it about 1 / 64 of the time; weighted by distance, far more often
    assert np.mean(share) > 0.1


def test_sampler_weights_thin_out_weak_pairs():
    w = np.r_[np.ones(50), np.full(50, 0.1)]
    counts = np.zeros(100)
    sampler = _sampler(weights=w)
    for _ in range(20):
        for b in sampler.epoch():
            half = len(b.rows) // 2
            np.add.at(counts, b.rows[:half].numpy(), 1)
    assert counts[:50].mean() > 5 * counts[50:].mean()


def test_sampler_extra_pairs_each_epoch():
    calls = []

    def extra():
        calls.append(1)
        return np.array([5, 6]), np.array([7, 8])

    sampler = _sampler(extra=extra)
    assert sampler.n_pairs == 102
    rows = torch.cat([b.rows for b in sampler.epoch()])
    assert {5, 6, 7, 8} <= set(rows.tolist())
