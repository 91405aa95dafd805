from __future__ import annotations

import numpy as np
import pytest

from den._config import ClusterConfig, EmbedConfig


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"n_neighbors": 2.5}, TypeError, r"n_neighbors=2\.5: it must be an integer >= 1", id="float int"),
        pytest.param({"n_neighbors": "10"}, TypeError, r"n_neighbors='10'", id="string int"),
        pytest.param({"n_neighbors": True}, TypeError, r"n_neighbors=True", id="bool int"),
        pytest.param({"n_neighbors": 0}, ValueError, r"integer >= 1", id="zero"),
        pytest.param({"batch_size": 1}, ValueError, r"batch_size=1: it must be an integer >= 2", id="batch 1"),
        pytest.param(
            {"learning_rate": 1e4}, ValueError, r"learning_rate=10000\.0: it must be a number in \(0, 1\]", id="huge lr"
        ),
        pytest.param({"learning_rate": 0}, ValueError, r"learning_rate=0", id="zero lr"),
        pytest.param({"input_noise": np.inf}, ValueError, r"input_noise=inf", id="inf"),
        pytest.param({"hidden": [0]}, ValueError, r"hidden=\[0\]: it must be a list of integers >= 1", id="hidden 0"),
        pytest.param({"hidden": 128}, TypeError, r"hidden=128", id="hidden int"),
        pytest.param(
            {"device": "mps"}, ValueError, r"device='mps': it must be 'auto', 'cpu', 'cuda' or 'cuda:N'", id="mps"
        ),
        pytest.param({"loss": "umap"}, ValueError, r"loss='umap': it must be one of 'contrastive', 'paper'", id="loss"),
        pytest.param({"random_state": -1}, ValueError, r"random_state=-1", id="negative seed"),
        pytest.param({"random_state": np.random.default_rng()}, TypeError, r"integer seed", id="generator seed"),
        pytest.param({"n_pcs": 0}, ValueError, r"n_pcs=0: it must be None or an integer >= 1", id="n_pcs"),
        pytest.param({"label_head": 1}, TypeError, r"label_head=1: it must be True or False", id="bool"),
        pytest.param({"loss": "paper", "dof": 3.0}, ValueError, r"dof=3\.0.*paper", id="dof with paper"),
    ],
)
def test_embed_config_rejects(kwargs, error, match):
    with pytest.raises(error, match=match):
        EmbedConfig(**kwargs)


def test_embed_config_normalises_and_exports():
    c = EmbedConfig(n_neighbors=np.int64(7), hidden=[64, 32], learning_rate=1, label_head=np.bool_(False))
    assert c.n_neighbors == 7 and type(c.n_neighbors) is int
    assert c.hidden == (64, 32) and c.learning_rate == 1.0 and c.label_head is False
    d = c.to_dict()
    assert d["hidden"] == [64, 32] and d["dof"] is None and set(d) == set(EmbedConfig.names())


def test_unknown_parameter_named():
    with pytest.raises(TypeError, match=r"Unknown parameter\(s\) \['n_neighbours'\]"):
        EmbedConfig.from_kwargs(n_neighbours=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"n_neighbors": 1}, r"n_neighbors=1: it must be an integer >= 2", id="cluster n_neighbors"),
        pytest.param({"head_epochs": 0}, r"head_epochs=0", id="head epochs"),
        pytest.param({"n_clusters": 0}, r"n_clusters=0: it must be None or an integer >= 1", id="n_clusters"),
        pytest.param({"gamma": -1}, r"gamma=-1", id="gamma"),
        pytest.param({"resolution": 0}, r"resolution=0", id="resolution"),
    ],
)
def test_cluster_config_rejects(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ClusterConfig(**kwargs)
