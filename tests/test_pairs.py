from __future__ import annotations

import numpy as np

from den._pairs import far_pairs, knn, near_pairs


def test_knn_is_exact_and_excludes_self(rng):
    x = rng.normal(size=(200, 5)).astype(np.float32)
    idx, dist = knn(x, 7)
    assert idx.shape == (200, 7)
    assert not (idx == np.arange(200)[:, None]).any()
    full = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(np.argsort(full, 1)[:, :7], 1))
    np.testing.assert_allclose(dist, np.sort(full, 1)[:, :7], rtol=1e-4)


def test_near_pairs_mutual_plus_closest():
    # 0 <-> 1 mutual; 2's neighbour is 1, but 1's is 0: kept only as 2's closest partner
    knn_idx = np.array([[1], [0], [1], [2]])
    i, j = near_pairs(knn_idx, min_neighbors=1)
    pairs = set(zip(i.tolist(), j.tolist(), strict=True))
    assert pairs == {(0, 1), (1, 2), (2, 3)}
    i, j = near_pairs(knn_idx, min_neighbors=0)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(0, 1)}


def test_near_pairs_unique_ordered(rng):
    x = rng.normal(size=(300, 3))
    i, j = near_pairs(knn(x, 10)[0])
    assert (i < j).all()
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == len(i)
    assert set(np.concatenate([i, j]).tolist()) == set(range(300))  # nobody left without a near pair


def test_far_pairs_weighted_by_distance(rng):
    # one cell at distance 100, the others at ~1: far draws must favour the distant one
    x = np.concatenate([rng.normal(scale=0.1, size=(99, 2)), [[100.0, 0.0]]])
    i, j = far_pairs(x, 10, np.random.default_rng(0))
    assert len(i) == len(j) == 1000
    assert (i != j).all()
    share = (j[i != 99] == 99).mean()
    # a uniform draw would pick it 1 % of the time; weighted, about 29 %
    assert share > 0.15


def test_far_pairs_reproducible(rng):
    x = rng.normal(size=(50, 3))
    a = far_pairs(x, 4, np.random.default_rng(3))
    b = far_pairs(x, 4, np.random.default_rng(3))
    np.testing.assert_array_equal(a[1], b[1])
