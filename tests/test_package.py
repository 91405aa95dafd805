from __future__ import annotations

import den


def test_version():
    assert den.__version__ != "unknown"


def test_public_api():
    for name in ["embed", "transform", "cluster", "marker_features", "differentiating_features"]:
        assert callable(getattr(den.tl, name))
    for name in [
        "embedding",
        "history",
        "spectrum",
        "marker_features",
        "shap_summary",
        "cell_features",
        "differentiating_features",
    ]:
        assert callable(getattr(den.pl, name))
