import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from den._pairs import knn
from den._spectral import merge_clusters


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
