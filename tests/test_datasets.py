"""The branching-trajectory generator: shape, pseudotime, and the true distance along the tree."""

import numpy as np
import pytest

import den


@pytest.fixture(scope="module")
def traj():
    return den.datasets.trajectory(600, 200, random_state=1)


def test_trajectory_layout(traj):
    assert traj.shape == (600, 200)
    assert set(traj.obs["segment"].cat.categories) == {"root", "A", "B", "A1", "A2"}
    pt = traj.obs["pseudotime"].to_numpy()
    seg = traj.obs["segment"].astype(str).to_numpy()
    # root spans [0, 1), A and B [1, 2), their children [2, 3)
    assert pt[seg == "root"].max() < 1 <= pt[seg == "A"].min()
    assert pt[seg == "A1"].min() >= 2
    assert traj.layers["counts"].sum() > 0 and np.isfinite(traj.X.data).all()


def test_tree_distance_follows_the_tree(traj):
    seg = traj.obs["segment"].astype(str).to_numpy()
    pt = traj.obs["pseudotime"].to_numpy()
    a1, b = np.flatnonzero(seg == "A1")[0], np.flatnonzero(seg == "B")[0]
    root = np.flatnonzero(seg == "root")[0]
    # A1 and B part at the end of the root (pseudotime 1)
    assert den.datasets.tree_distance(traj, [a1], [b])[0] == pytest.approx(pt[a1] + pt[b] - 2)
    # a root cell is an ancestor of every cell: the distance is the pseudotime difference
    assert den.datasets.tree_distance(traj, [root], [a1])[0] == pytest.approx(pt[a1] - pt[root])
    assert den.datasets.tree_distance(traj, [a1], [a1])[0] == pytest.approx(0)


def test_expression_is_ordered_along_a_branch(traj):
    """Neighbouring pseudotimes on one lineage have closer profiles than distant ones."""
    seg = traj.obs["segment"].astype(str).to_numpy()
    on = np.isin(seg, ["root", "B"])
    x = traj.X[on].toarray()
    pt = traj.obs["pseudotime"].to_numpy()[on]
    early, late = x[pt < 0.3].mean(0), x[pt > 1.7].mean(0)
    mid = x[(pt > 0.9) & (pt < 1.1)].mean(0)
    assert np.linalg.norm(early - mid) < np.linalg.norm(early - late)


def test_lineages_and_bad_trees():
    assert sorted(map(tuple, den.datasets.lineages(den.datasets._trajectory.DEFAULT_TREE))) == [
        ("root", "A", "A1"),
        ("root", "A", "A2"),
        ("root", "B"),
    ]
    with pytest.raises(ValueError, match="exactly one root"):
        den.datasets.trajectory(10, 5, tree={"a": "", "b": ""})
    with pytest.raises(ValueError, match="not a tree"):
        den.datasets.trajectory(10, 5, tree={"r": "", "a": "b", "b": "a"})
