import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from den._pairs import knn
from den._spectral import count_clusters, discover_clusters, log_gap_k, merge_clusters, spectral_labels


@pytest.fixture(scope="module")
def two_groups():
    """Two well-separated Gaussian groups, each torn at random into two pieces by the starting labels.

    (A map that tears a population does so without regard to the data's own structure.)
    """
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (200, 5)), rng.normal(8, 1, (200, 5))]).astype(np.float32)
    truth = np.repeat([0, 1], 200)
    pieces = truth * 2 + (rng.random(400) < 0.5)
    idx, _ = knn(X, 10)
    return truth, pieces, idx


def test_merge_joins_pieces_of_one_group(two_groups):
    truth, pieces, idx = two_groups
    merged = merge_clusters(pieces, idx)
    assert merged.max() + 1 == 2
    assert adjusted_rand_score(truth, merged) == 1.0


def test_merge_stops_at_n_clusters(two_groups):
    truth, pieces, idx = two_groups
    assert merge_clusters(pieces, idx, n_clusters=3).max() + 1 == 3
    assert merge_clusters(pieces, idx, n_clusters=1).max() + 1 == 1


def test_high_resolution_keeps_pieces(two_groups):
    _, pieces, idx = two_groups
    assert adjusted_rand_score(pieces, merge_clusters(pieces, idx, resolution=50.0)) == 1.0


def test_labels_ordered_by_size(two_groups):
    truth, _, idx = two_groups
    small_first = np.where(np.arange(400) < 30, 0, truth + 1)  # sizes 30, 170, 200
    merged = merge_clusters(small_first, idx, resolution=50.0)
    assert list(np.bincount(merged)) == [200, 170, 30]


def test_count_clusters_log_gap():
    # two exact zeros, then the structure inside the pieces: the log gap after the zeros
    assert count_clusters(np.array([0, 0, 0.04, 0.05, 0.06])) == 2
    # no zero block beyond the first: the largest relative gap still decides
    assert count_clusters(np.array([0, 0.001, 0.002, 0.05, 0.06])) == 3


def test_count_clusters_bridge():
    lam = np.array([0, 0, 0.0008, 0.15, 0.16, 0.18, 0.2])  # a bridged pair: 0.0008, 200x below the median
    assert log_gap_k(lam) == 2  # the plain rule sees the step up from the zeros only
    assert count_clusters(lam) == 3
    assert count_clusters(lam, bridge_ratio=1000) == 2
    # the spread of eigenvalues inside populations is well under an order of magnitude: no change
    assert count_clusters(np.array([0, 0, 0, 0.04, 0.06, 0.07, 0.08, 0.15, 0.2, 0.25])) == 3


@pytest.mark.parametrize("n", [150, 1500])
def test_bridged_islands_are_two_clusters(n):
    """Two islands joined by a thin bridge of cells, a third apart: three clusters, whatever the islands' size."""
    rng = np.random.default_rng(0)
    bridge = np.c_[np.linspace(0.35, 1.65, 8), rng.normal(0, 0.02, 8)]
    centres = [(0, 0), (2, 0), (0, 6)]
    X = np.concatenate([*(rng.normal(c, 0.15, (n, 2)) for c in centres), bridge]).astype(np.float32)
    truth = np.r_[np.repeat([0, 1, 2], n), bridge[:, 0] > 1]
    idx, _ = knn(X, 10)
    spectrum = discover_clusters(X, idx)  # the map is the data here
    assert log_gap_k(spectrum.eigenvalues[:41]) == 2  # the bridge joins two islands into one piece
    assert spectrum.n_clusters == 3
    labels = merge_clusters(spectral_labels(spectrum), idx)
    assert adjusted_rand_score(truth, labels) == 1.0
