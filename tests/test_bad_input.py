"""The bad-input matrix: every bad input gets a clear error (type + message) and leaves the AnnData unchanged.

Each case names the input, the exception and a fragment of its message (which names the problem and,
where there is one, the fix). Warnings for valid but suspect input are at the end.
"""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from snapshot import snapshot

import den

FAST = {"n_epochs": 2, "progress_bar": False}
CFAST = {"head_epochs": 1, "finetune_epochs": 0, "progress_bar": False}
MFAST = {"n_background": 20, "max_cells_per_group": 10, "progress_bar": False}


def _check(adata, call, error, match):
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        call(adata)
    assert snapshot(adata) == before, "a failed call modified the AnnData"


# --- den.tl.embed: parameters ------------------------------------------------------------------------------------

EMBED_PARAMS = [
    ("n_components", 0, ValueError, r"n_components=0: it must be an integer >= 1"),
    ("n_components", 2.5, TypeError, r"n_components=2\.5"),
    ("n_components", "2", TypeError, r"n_components='2'"),
    ("n_neighbors", 0, ValueError, r"n_neighbors=0"),
    ("n_neighbors", -3, ValueError, r"n_neighbors=-3"),
    ("n_neighbors", 2.5, TypeError, r"n_neighbors=2\.5: it must be an integer"),
    ("n_neighbors", "10", TypeError, r"n_neighbors='10'"),
    ("n_neighbors", True, TypeError, r"n_neighbors=True"),
    ("n_neighbors", None, TypeError, r"n_neighbors=None"),
    ("n_pcs", 0, ValueError, r"n_pcs=0: it must be None or an integer >= 1"),
    ("n_pcs", 2.5, TypeError, r"n_pcs=2\.5"),
    ("hidden", [0], ValueError, r"hidden=\[0\]"),
    ("hidden", [-4, 8], ValueError, r"hidden=\[-4, 8\]"),
    ("hidden", [2.5], ValueError, r"hidden=\[2\.5\]"),
    ("hidden", 128, TypeError, r"hidden=128: it must be a list of integers"),
    ("hidden", "128", TypeError, r"hidden='128'"),
    ("loss", "umap", ValueError, r"loss='umap': it must be one of 'contrastive', 'paper'"),
    ("loss", None, ValueError, r"loss=None"),
    ("dof", 0, ValueError, r"dof=0: it must be None or a finite number > 0"),
    ("dof", -1.0, ValueError, r"dof=-1\.0"),
    ("dof", "3", TypeError, r"dof='3'"),
    ("n_far", 0, ValueError, r"n_far=0"),
    ("n_far", 1.5, TypeError, r"n_far=1\.5"),
    ("n_epochs", 0, ValueError, r"n_epochs=0: it must be None or an integer >= 1"),
    ("n_epochs", -1, ValueError, r"n_epochs=-1"),
    ("n_epochs", 2.5, TypeError, r"n_epochs=2\.5"),
    ("batch_size", 0, ValueError, r"batch_size=0: it must be an integer >= 2"),
    ("batch_size", 1, ValueError, r"batch_size=1"),
    ("batch_size", 64.0, TypeError, r"batch_size=64\.0"),
    ("learning_rate", 0, ValueError, r"learning_rate=0: it must be a number in \(0, 1\]"),
    ("learning_rate", -0.01, ValueError, r"learning_rate=-0\.01"),
    ("learning_rate", 1e4, ValueError, r"learning_rate=10000\.0"),
    ("learning_rate", float("nan"), ValueError, r"learning_rate=nan"),
    ("learning_rate", "0.01", TypeError, r"learning_rate='0\.01'"),
    ("min_dist", -1.0, ValueError, r"min_dist=-1\.0: it must be a finite number >= 0"),
    ("min_dist", float("inf"), ValueError, r"min_dist=inf"),
    ("input_noise", -0.1, ValueError, r"input_noise=-0\.1"),
    ("input_noise", float("nan"), ValueError, r"input_noise=nan"),
    ("ignore", 0.0, ValueError, r"ignore=0\.0: it must be a number in \(0, 1\]"),
    ("ignore", 1.5, ValueError, r"ignore=1\.5"),
    ("label_weight", -1.0, ValueError, r"label_weight=-1\.0"),
    ("label_head", 1, TypeError, r"label_head=1: it must be True or False"),
    ("label_head", "yes", TypeError, r"label_head='yes'"),
    ("batch_centering", "no", TypeError, r"batch_centering='no': it must be True or False"),
    ("device", "mps", ValueError, r"device='mps': it must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("device", "gpu", ValueError, r"device='gpu'"),
    ("device", "cuda:x", ValueError, r"device='cuda:x'"),
    ("device", 5, ValueError, r"device=5"),
    ("random_state", -1, ValueError, r"random_state=-1: it must be an integer in \[0, 2\*\*32 - 1\] or None"),
    ("random_state", 2**40, ValueError, r"random_state=1099511627776"),
    ("random_state", 2.5, TypeError, r"random_state=2\.5"),
    ("random_state", "0", TypeError, r"random_state='0'"),
    ("random_state", np.random.default_rng(0), TypeError, r"integer seed"),
]


@pytest.mark.parametrize(("name", "value", "error", "match"), EMBED_PARAMS, ids=lambda v: repr(v)[:20])
def test_embed_bad_parameter(small, name, value, error, match):
    _check(small, lambda a: den.tl.embed(a, **{**FAST, name: value}), error, match)


def test_embed_paper_loss_takes_no_dof(small):
    _check(small, lambda a: den.tl.embed(a, loss="paper", dof=3.0, **FAST), ValueError, r"dof=3\.0.*paper")


def test_embed_ignore_needs_the_paper_loss(small):
    _check(small, lambda a: den.tl.embed(a, ignore=0.9, **FAST), ValueError, r"ignore=0\.9.*loss='paper'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_embed_cuda_unavailable(small):
    _check(small, lambda a: den.tl.embed(a, device="cuda", **FAST), ValueError, r"CUDA is not available")


# --- den.tl.embed: data ------------------------------------------------------------------------------------------


def _dense(a):
    a.X = a.X.toarray()
    return a


def _set(a, value, row=3, col=4):
    a = _dense(a)
    a.X[row, col] = value
    return a


def _float64_overflow(a):
    a.X = a.X.toarray().astype(np.float64)
    a.X[0, 0] = 1e300
    return a


def _sparse_inf(a):
    a.X = a.X.copy()
    a.X.data[5] = -np.inf
    return a


def _strings(a):
    return ad.AnnData(np.full((a.n_obs, 3), "x", dtype=object), obs=a.obs)


def _dup_genes(a):
    a.var_names = ["g"] * 2 + list(a.var_names[2:])
    return a


def _constant(a):
    a.X = np.ones(a.shape, dtype=np.float32)
    return a


def _no_x(a):
    b = ad.AnnData(obs=a.obs, var=a.var)
    b.layers["log"] = a.X
    return b


def _text_rep(a):
    a.obsm["X_text"] = np.full((a.n_obs, 2), "a")
    return a


def _empty_rep(a):
    a.obsm["X_empty"] = np.zeros((a.n_obs, 0), dtype=np.float32)
    return a


def _rep_3d(a):
    a.obsm["X_bad"] = np.zeros((a.n_obs, 2, 2), dtype=np.float32)
    return a


def _constant_rep(a):
    a.obsm["X_flat"] = np.ones((a.n_obs, 3), dtype=np.float32)
    return a


def _nan_rep(a):
    a.obsm["X_pca"] = np.random.default_rng(0).normal(size=(a.n_obs, 5))
    a.obsm["X_pca"][0, 0] = np.nan
    return a


EMBED_DATA = [
    pytest.param(lambda a: _set(a, np.nan), {}, ValueError, "contains NaN or infinite", id="NaN"),
    pytest.param(lambda a: _set(a, np.inf), {}, ValueError, "contains NaN or infinite", id="inf"),
    pytest.param(_sparse_inf, {}, ValueError, "contains NaN or infinite", id="sparse -inf"),
    pytest.param(_float64_overflow, {}, ValueError, "beyond the float32 range", id="float64 overflow"),
    pytest.param(lambda a: a[:0].copy(), {}, ValueError, "empty", id="no cells"),
    pytest.param(lambda a: a[:, :0].copy(), {}, ValueError, "empty", id="no genes"),
    pytest.param(lambda a: a[:2].copy(), {}, ValueError, "at least 3 cells", id="two cells"),
    pytest.param(_strings, {}, ValueError, "non-numeric", id="strings"),
    pytest.param(_dup_genes, {}, ValueError, "var_names_make_unique", id="duplicate genes"),
    pytest.param(_constant, {}, ValueError, "constant matrix", id="constant X"),
    pytest.param(_no_x, {}, ValueError, "adata.X is None", id="X is None"),
    pytest.param(lambda a: a, {"layer": "nope"}, KeyError, "Layer 'nope' not found", id="missing layer"),
    pytest.param(lambda a: a, {"use_rep": "X_nope"}, KeyError, "use_rep='X_nope'", id="missing use_rep"),
    pytest.param(_rep_3d, {"use_rep": "X_bad"}, ValueError, "2-D array", id="3-D use_rep"),
    pytest.param(
        _empty_rep, {"use_rep": "X_empty"}, ValueError, r"at least one\); got shape \(\d+, 0\)", id="no columns"
    ),
    pytest.param(_constant_rep, {"use_rep": "X_flat"}, ValueError, "use_rep. is the same for every", id="flat rep"),
    pytest.param(_nan_rep, {}, ValueError, "finite 2-D array", id="NaN in X_pca"),
    pytest.param(_text_rep, {"use_rep": "X_text"}, ValueError, r"X_text'\] must be a finite 2-D", id="text use_rep"),
    pytest.param(lambda a: a, {"labels_key": "nope"}, KeyError, "labels_key='nope'", id="missing labels_key"),
]


@pytest.mark.parametrize(("make", "kwargs", "error", "match"), EMBED_DATA)
def test_embed_bad_data(small, make, kwargs, error, match):
    _check(make(small), lambda a: den.tl.embed(a, **FAST, **kwargs), error, match)


def test_embed_all_labels_missing(small):
    small.obs["known"] = np.nan
    _check(small, lambda a: den.tl.embed(a, labels_key="known", **FAST), ValueError, "no labelled sample")


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param(np.repeat([0.1, 0.5, 1.0], 100), id="doses"),
        pytest.param(np.array([0, 1, 2, 3, 4, 5, 0, 1, 2, 3] * 30), id="six classes"),
        pytest.param(np.array(["none", "drug", "NA"] * 100, dtype=object), id="'none' and 'NA' as names"),
        pytest.param(np.where(np.arange(300) % 100 == 0, np.arange(300) % 7, -1), id="1 % labelled, all different"),
    ],
)
def test_labels_that_are_classes_are_kept(labels):
    from den._estimator import encode_labels

    codes, classes = encode_labels(labels, len(labels))
    assert len(classes) >= 2 and (codes >= 0).sum() == (pd.Series(labels) != -1).sum()


def _nan_text(a):  # NaN turned into text, as astype(str) does
    a.obs["lab"] = np.where(np.arange(a.n_obs) % 2, "T", "B").astype(object)
    a.obs.loc[a.obs_names[::3], "lab"] = "nan"
    return a


def _one_label(a):
    a.obs["lab"] = "T cell"
    return a


def _measurement(a):
    a.obs["lab"] = np.linspace(0.5, 3.2, a.n_obs)  # e.g. percent_mito
    return a


def _cell_ids(a):
    a.obs["lab"] = np.arange(a.n_obs)  # e.g. n_counts: nearly one value per cell
    return a


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(_nan_text, r"holds 'nan' as the label of \d+ samples.*replace", id="'nan' text"),
        pytest.param(_one_label, "one label .'T cell'. for every labelled sample", id="one label"),
        pytest.param(
            _measurement, r"measurement or an ID.*\d+ of \d+ samples carry a label no other", id="measurement"
        ),
        pytest.param(_cell_ids, r"measurement or an ID.*\d+ of \d+ samples carry a label no other", id="IDs"),
    ],
)
def test_embed_labels_that_are_not_classes(small, make, match):
    _check(make(small), lambda a: den.tl.embed(a, labels_key="lab", **FAST), ValueError, match)


def test_embed_backed_csc(small, tmp_path):
    """CSC on disk cannot be read by rows cheaply: a clear error naming the fix (CSR or to_memory)."""
    small.X = sparse.csc_matrix(small.X)
    path = tmp_path / "c.h5ad"
    small.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(TypeError, match=r"cannot read by rows.*tocsr.*to_memory"):
        den.tl.embed(backed, **FAST)
    backed.file.close()


@pytest.mark.parametrize(
    "tool",
    [
        lambda x: den.tl.embed(x, **FAST),
        lambda x: den.tl.cluster(x),
        lambda x: den.tl.marker_features(x),
        lambda x: den.tl.differentiating_features(x, "0", "1"),
        lambda x: den.tl.cell_features(x, ["c0"]),
    ],
    ids=["embed", "cluster", "marker_features", "differentiating_features", "cell_features"],
)
def test_not_an_anndata(tool):
    with pytest.raises(TypeError, match="take an AnnData.*den.DEN"):
        tool(np.zeros((10, 3)))


def test_mapping_tools_not_an_anndata(trained):
    for call in (den.tl.transform, den.tl.mapping_score, lambda q, r: den.tl.transfer_labels(q, r, "group")):
        with pytest.raises(TypeError, match="take an AnnData"):
            call(np.zeros((10, 3)), trained)


# --- den.tl.cluster ------------------------------------------------------------------------------------------------

CLUSTER_PARAMS = [
    ("n_clusters", 0, ValueError, r"n_clusters=0: it must be None or an integer >= 1"),
    ("n_clusters", -2, ValueError, r"n_clusters=-2"),
    ("n_clusters", 2.5, TypeError, r"n_clusters=2\.5"),
    ("n_clusters", "3", TypeError, r"n_clusters='3'"),
    ("n_clusters", 10_000, ValueError, r"n_clusters=10000: it must be below the number of cells"),
    ("n_neighbors", 1, ValueError, r"n_neighbors=1: it must be an integer >= 2"),
    ("n_neighbors", 0, ValueError, r"n_neighbors=0"),
    ("resolution", 0, ValueError, r"resolution=0"),
    ("resolution", -1.0, ValueError, r"resolution=-1\.0"),
    ("resolution", float("nan"), ValueError, r"resolution=nan"),
    ("gamma", 0, ValueError, r"gamma=0"),
    ("gamma", float("inf"), ValueError, r"gamma=inf"),
    ("max_clusters", 1, ValueError, r"max_clusters=1: it must be an integer >= 2"),
    ("min_cluster_size", 0, ValueError, r"min_cluster_size=0"),
    ("head_epochs", 0, ValueError, r"head_epochs=0: it must be an integer >= 1"),
    ("head_epochs", -1, ValueError, r"head_epochs=-1"),
    ("finetune_epochs", -1, ValueError, r"finetune_epochs=-1: it must be an integer >= 0"),
    ("batch_size", 0, ValueError, r"batch_size=0"),
    ("batch_size", 1, ValueError, r"batch_size=1"),
    ("device", "mps", ValueError, r"device='mps'"),
    ("random_state", -1, ValueError, r"random_state=-1"),
]


@pytest.mark.parametrize(("name", "value", "error", "match"), CLUSTER_PARAMS, ids=lambda v: repr(v)[:20])
def test_cluster_bad_parameter(trained, name, value, error, match):
    _check(trained, lambda a: den.tl.cluster(a, **{**CFAST, name: value}), error, match)


def test_cluster_more_clusters_than_the_map_holds(trained):
    n = trained.n_obs - 1  # below the number of cells, above what the well-placed ones can hold
    _check(
        trained, lambda a: den.tl.cluster(a, **{**CFAST, "n_clusters": n}), ValueError, r"Pass n_clusters=\d+ or fewer"
    )


def _drop_embedding(a):
    del a.obsm["X_den"]
    return a


CLUSTER_DATA = [
    pytest.param(lambda a: den.datasets.synthetic(100, 20, 2), {}, KeyError, r"Run `den.tl.embed", id="not embedded"),
    pytest.param(lambda a: a, {"key": "other"}, KeyError, r"adata.uns\['other'\]", id="wrong key"),
    pytest.param(_drop_embedding, {}, KeyError, r"obsm\['X_den'\] is missing", id="map deleted"),
    pytest.param(
        lambda a: a[:, 3:].copy(),
        {},
        KeyError,
        r"adata lacks 3 of the 80 genes.*use the AnnData it ran on",
        id="genes missing",
    ),
    pytest.param(lambda a: _set(a, np.nan), {}, ValueError, "NaN or infinite", id="NaN"),
]


@pytest.mark.parametrize(("make", "kwargs", "error", "match"), CLUSTER_DATA)
def test_cluster_bad_data(trained, make, kwargs, error, match):
    _check(make(trained), lambda a: den.tl.cluster(a, **CFAST, **kwargs), error, match)


# --- den.tl.transform --------------------------------------------------------------------------------------------


def test_transform_bad_reference_types(trained, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    cases = [
        (42, TypeError, "must be an AnnData, a den.DENModel or a model folder"),
        (None, TypeError, "must be an AnnData"),
        (tmp_path / "missing", FileNotFoundError, "is not a folder"),
        (tmp_path / "file.txt", FileNotFoundError, "is not a folder"),
        (tmp_path, FileNotFoundError, "not a den model folder"),
        (den.datasets.synthetic(60, 80, 2), KeyError, r"Run `den.tl.embed"),
    ]
    query = trained.copy()
    for ref, error, match in cases:
        _check(query, lambda q, r=ref: den.tl.transform(q, r), error, match)


def _query_dup_genes(a):
    a.obsm.clear()
    a.var_names = ["gene0"] * 2 + list(a.var_names[2:])
    return a


TRANSFORM_DATA = [
    pytest.param(
        lambda a: a[:, 5:].copy(), {}, KeyError, r"lacks 5 of the 80 genes .*: gene0, gene1", id="genes missing"
    ),
    pytest.param(_query_dup_genes, {}, ValueError, "var_names_make_unique", id="duplicate genes"),
    pytest.param(lambda a: _set(a, np.nan), {}, ValueError, "NaN or infinite", id="NaN"),
    pytest.param(lambda a: a[:0].copy(), {}, ValueError, "empty", id="no cells"),
    pytest.param(lambda a: a, {"layer": "nope"}, KeyError, "Layer 'nope'", id="missing layer"),
    pytest.param(_strings, {}, ValueError, "non-numeric", id="strings"),
    pytest.param(lambda a: a, {"cluster_key": "nope"}, KeyError, "cluster_key='nope' is not in", id="cluster_key"),
]


@pytest.mark.parametrize(("make", "kwargs", "error", "match"), TRANSFORM_DATA)
def test_transform_bad_query(trained, make, kwargs, error, match):
    ref = trained.copy()
    _check(make(trained.copy()), lambda q: den.tl.transform(q, ref, **kwargs), error, match)


def test_query_lacks_the_models_layer(small):
    ref = small.copy()
    ref.layers["log"] = ref.X.copy()
    den.tl.embed(ref, layer="log", **FAST)
    query = small.copy()  # its values in X only
    for call in (den.tl.transform, den.tl.mapping_score):
        _check(query, lambda q, call=call: call(q, ref), KeyError, r"query.layers\['log'\] = query.X")
    _check(query, lambda q: den.tl.transform(q, ref), KeyError, r"or pass `layer=`")  # transform takes layer=
    with pytest.raises(KeyError) as caught:
        den.tl.mapping_score(query, ref)
    assert "pass `layer=`" not in str(caught.value)  # mapping_score has no layer=
    query.layers["log"] = query.X
    den.tl.transform(query, ref)  # the fix the message names works


def test_transform_edited_cluster_categories(trained):
    ref = trained.copy()
    config = json.loads(ref.uns["den_clusters"]["model"]["config"])
    config["categories"] = config["categories"][:-1]  # one fewer name than the network has outputs
    ref.uns["den_clusters"]["model"]["config"] = json.dumps(config)
    _check(trained.copy(), lambda q: den.tl.transform(q, ref), ValueError, "damaged or was edited")


# --- den.tl.marker_features / differentiating_features / cell_features -------------------------------------------

MARKER_CASES = [
    pytest.param(lambda a: a, {"groupby": "nope"}, KeyError, r"groupby='nope' is not a column", id="missing groupby"),
    pytest.param(
        lambda a: a.obs.insert(0, "score", np.linspace(0, 1, a.n_obs)) or a,
        {"groupby": "score"},
        ValueError,
        "is numeric",
        id="numeric groupby",
    ),
    pytest.param(
        lambda a: a.obs.insert(0, "n_counts", np.arange(a.n_obs)) or a,
        {"groupby": "n_counts"},
        ValueError,
        r"holds 400 distinct integers.*astype\('category'\)",
        id="integer measurement as groupby",
    ),
    pytest.param(
        lambda a: a.obs.insert(0, "one", "x") or a, {"groupby": "one"}, ValueError, "at least two", id="single group"
    ),
    pytest.param(lambda a: a, {"n_background": 0}, ValueError, "n_background", id="n_background 0"),
    pytest.param(lambda a: a, {"max_cells_per_group": 0}, ValueError, "max_cells_per_group", id="max cells 0"),
    pytest.param(lambda a: a, {"explainer": "lime"}, ValueError, "Unknown explainer", id="bad explainer"),
    pytest.param(lambda a: a, {"direction": "down"}, ValueError, "direction='down'", id="bad direction"),
    pytest.param(lambda a: a, {"key": "nope"}, KeyError, r"No den model in adata.uns\['nope'\]", id="bad key"),
    pytest.param(lambda a: a, {"n_genes": -1}, ValueError, r"n_genes=-1: it must be an integer >= 1", id="n_genes -1"),
    pytest.param(lambda a: a, {"n_genes": 0}, ValueError, r"n_genes=0", id="n_genes 0"),
    pytest.param(
        lambda a: a[:, 3:].copy(), {}, KeyError, r"adata lacks 3 of the 80 genes.*run den.tl.embed again", id="genes"
    ),
]


def _nan_groups(a):
    a.obs["g"] = a.obs["group"].astype(object)
    a.obs.iloc[0, a.obs.columns.get_loc("g")] = np.nan
    return a


@pytest.mark.parametrize(("make", "kwargs", "error", "match"), MARKER_CASES)
def test_marker_features_bad_input(trained, make, kwargs, error, match):
    _check(make(trained), lambda a: den.tl.marker_features(a, **{**MFAST, **kwargs}), error, match)


def test_marker_features_refuses_duplicate_cell_names(trained):
    a = trained.copy()
    a.obs_names = ["c0", *a.obs_names[1:-1], "c0"]  # as ad.concat without index_unique leaves them
    _check(a, lambda x: den.tl.marker_features(x, **MFAST), ValueError, "obs_names_make_unique")


def test_marker_features_missing_values_in_groupby(trained):
    a = _nan_groups(trained)
    _check(a, lambda x: den.tl.marker_features(x, groupby="g", **MFAST), ValueError, "missing values")


@pytest.mark.parametrize(
    "tool",
    [
        lambda a: den.tl.marker_features(a, **MFAST),
        lambda a: den.tl.differentiating_features(a, "T", "B", n_background=20, max_cells=10),
        lambda a: den.tl.cell_features(a, [a.obs_names[a.obs["den_clusters"] == "T"][0]], n_background=20),
    ],
    ids=["marker_features", "differentiating_features", "cell_features"],
)
def test_renamed_clusters_with_one_left_out(trained, tool):
    a = trained.copy()  # annotation in progress: cluster "2" not named yet, so NaN
    a.obs["den_clusters"] = a.obs["den_clusters"].map({"0": "T", "1": "B"}).astype("category")
    _check(a, tool, ValueError, r"missing values in \d+ cells .* fill or drop them")


def test_marker_features_before_clustering(small):
    den.tl.embed(small, **FAST)
    _check(small, lambda a: den.tl.marker_features(a, **MFAST), KeyError, r"Run `den.tl.cluster")


DIFF_CASES = [
    pytest.param(("0", "99"), {}, KeyError, r"'99' is not a group", id="missing group"),
    pytest.param(("0", "0"), {}, ValueError, "the same group", id="same group"),
    pytest.param(("nope", "x"), {"groupby": None}, KeyError, "obs_names", id="missing cell"),
    pytest.param(("0", "1"), {"groupby": "nope"}, KeyError, "groupby='nope'", id="missing groupby"),
    pytest.param(("0", "1"), {"max_cells": 0}, ValueError, "max_cells", id="max_cells 0"),
    pytest.param(("0", "1"), {"explainer": "x"}, ValueError, "Unknown explainer", id="bad explainer"),
    pytest.param(("0", "1"), {"key_added": "n_cells"}, ValueError, r"holds a int, not comparisons", id="key_added"),
]


@pytest.mark.parametrize(("groups", "kwargs", "error", "match"), DIFF_CASES)
def test_differentiating_bad_input(trained, groups, kwargs, error, match):
    trained.uns["n_cells"] = 400  # something of the user's under a key
    _check(trained, lambda a: den.tl.differentiating_features(a, *groups, **kwargs), error, match)


@pytest.mark.parametrize(
    ("module", "call"),
    [
        ("_marker_features", lambda a, **kw: den.tl.marker_features(a, groupby="group", **kw)),
        ("_cell_features", lambda a, **kw: den.tl.cell_features(a, a.obs_names[:2], **kw)),
        ("_differentiating", lambda a, **kw: den.tl.differentiating_features(a, "0", "1", **kw)),
    ],
    ids=["marker_features", "cell_features", "differentiating_features"],
)
def test_unknown_explainer_refused_before_a_head_is_trained(trained, monkeypatch, module, call):
    import importlib

    def no_work(*args, **kwargs):
        raise AssertionError("a group network was built before the explainer was checked")

    monkeypatch.setattr(importlib.import_module(f"den.tl.{module}"), "group_network", no_work)
    _check(trained, lambda a: call(a, explainer="lime"), ValueError, r"Unknown explainer='lime'")


def test_differentiating_two_cells_bad_input(trained):
    first = trained.obs_names[0]
    call = den.tl.differentiating_features
    _check(trained, lambda a: call(a, first, first, groupby=None), ValueError, "the same cell")
    trained.obs_names = [first] * 2 + list(trained.obs_names[2:])  # a cell name twice
    _check(trained, lambda a: call(a, first, a.obs_names[2], groupby=None), ValueError, "obs_names_make_unique")


@pytest.mark.parametrize(
    ("cells", "error", "match"),
    [
        pytest.param(["nope"], KeyError, "not in adata.obs_names", id="missing cell"),
        pytest.param([], ValueError, "at least one cell", id="no cells"),
        pytest.param(np.ones(3, dtype=bool), ValueError, r"one value per cell \(400\)", id="short mask"),
    ],
)
def test_cell_features_bad_input(trained, cells, error, match):
    _check(trained, lambda a: den.tl.cell_features(a, cells), error, match)


def test_cell_features_of_a_mask(trained):
    mask = np.zeros(trained.n_obs, dtype=bool)
    mask[[3, 7]] = True
    den.tl.cell_features(trained, mask, n_background=20)
    assert list(trained.uns["den_cell_features"]["cells"]) == list(trained.obs_names[[3, 7]])


def test_cell_features_of_a_cell_without_group(trained):
    trained.obs["den_clusters"] = trained.obs["den_clusters"].astype(object)
    trained.obs.iloc[0, trained.obs.columns.get_loc("den_clusters")] = np.nan
    trained.obs["den_clusters"] = trained.obs["den_clusters"].astype("category")
    cell = trained.obs_names[0]
    _check(trained, lambda a: den.tl.cell_features(a, [cell]), ValueError, "have no group")


def test_plots_of_cells_no_longer_in_the_anndata(trained):
    """After subsetting, the plots refuse cells that were explained but are gone (they drew another cell)."""
    den.tl.cell_features(trained, [trained.obs_names[0]], n_background=20)
    den.tl.marker_features(trained, **MFAST)
    subset = trained[1:].copy()
    with pytest.raises(KeyError, match="subset after den.tl.cell_features"):
        den.pl.cell_features(subset, trained.obs_names[0], show=False)
    shown = trained.uns["den_marker_features"]["shap_cells"][0]
    group = str(trained.obs.loc[shown, "den_clusters"])
    with pytest.raises(KeyError, match="subset after den.tl.marker_features"):
        den.pl.shap_summary(trained[trained.obs_names != shown].copy(), group, show=False)


@pytest.mark.parametrize(
    ("call", "owner"),
    [
        pytest.param(
            lambda a: den.tl.cluster(a, key_added="den", progress_bar=False), "embed", id="cluster over embed"
        ),
        pytest.param(lambda a: den.tl.embed(a, key_added="den_clusters", **FAST), "cluster", id="embed over cluster"),
        pytest.param(lambda a: den.tl.marker_features(a, key_added="den", **MFAST), "embed", id="markers over embed"),
        pytest.param(
            lambda a: den.tl.cell_features(a, [a.obs_names[0]], key_added="den_clusters"), "cluster", id="cells"
        ),
        pytest.param(
            lambda a: den.tl.differentiating_features(a, "0", "1", key_added="den"), "embed", id="differentiating"
        ),
    ],
)
def test_key_added_never_overwrites_another_tools_model(trained, call, owner):
    _check(trained, call, ValueError, rf"holds the model of den.tl.{owner}")


@pytest.mark.parametrize("hidden", [(128, 128), (64,)], ids=["same network", "other network"])
def test_clustering_of_an_earlier_embedding_is_refused(trained, hidden):
    """Re-running embed after cluster: tools that read the clusters say so (they failed with a torch dump, or
    gave clusters of the old map)."""
    den.tl.embed(trained, hidden=hidden, random_state=1, **FAST)
    query = trained[:20].copy()
    _check(query, lambda q: den.tl.transform(q, trained), ValueError, r"earlier den.tl.embed.*den.tl.cluster\(adata\)")
    _check(trained, lambda a: den.tl.marker_features(a, **MFAST), ValueError, "earlier den.tl.embed")
    den.DENModel.from_adata(trained, cluster_key=None)  # the embedding alone still loads
    den.tl.cluster(trained, progress_bar=False)  # the fix the message names
    den.tl.transform(trained[:20].copy(), trained)  # (query still carries the stale clusters: transform refuses it)


def test_embedding_the_same_map_again_keeps_the_clusters(trained):
    den.tl.embed(trained, n_epochs=5, progress_bar=False)  # the same seed and settings: the same weights
    den.tl.transform(trained[:20].copy(), trained)  # so the clusters are not refused as stale


def test_cell_features_duplicate_obs_names(trained):
    trained.obs_names = ["c"] * 2 + list(trained.obs_names[2:])
    _check(trained, lambda a: den.tl.cell_features(a, ["c"]), ValueError, "obs_names_make_unique")


# --- every tool: names and seeds -------------------------------------------------------------------------------

TOOL_CALLS = {
    "embed": lambda a, **kw: den.tl.embed(a, **FAST, **kw),
    "cluster": lambda a, **kw: den.tl.cluster(a, progress_bar=False, **kw),
    "transform": lambda a, **kw: den.tl.transform(a[:20].copy(), a, **kw),
    "marker_features": lambda a, **kw: den.tl.marker_features(a, **MFAST, **kw),
    "mapping_score": lambda a, **kw: den.tl.mapping_score(a, a.copy(), **kw),
    "transfer_labels": lambda a, **kw: den.tl.transfer_labels(a, a.copy(), "group", progress_bar=False, **kw),
}


@pytest.mark.parametrize("tool", list(TOOL_CALLS))
@pytest.mark.parametrize(
    ("key", "error", "match"),
    [
        (None, TypeError, "key_added=None: it must be a name"),
        (5, TypeError, "key_added=5"),
        ("", ValueError, "key_added=''"),
        ("a/b", ValueError, r"without '/'"),
    ],
)
def test_key_added_must_be_a_name_h5ad_can_hold(trained, tool, key, error, match):
    """None, a number, "" or "a/b" failed half-way (cluster) or wrote a file read_h5ad could not open."""
    if key is None and tool in ("embed", "transform", "transfer_labels"):
        pytest.skip("None is these tools' documented default")
    _check(trained, lambda a: TOOL_CALLS[tool](a, key_added=key), error, match)


@pytest.mark.parametrize("tool", list(TOOL_CALLS))
def test_copy_must_be_a_bool(trained, tool):
    """copy="no" was read as True: a copy returned, adata left without results."""
    _check(trained, lambda a: TOOL_CALLS[tool](a, copy="no"), TypeError, "copy='no': it must be True or False")


PROGRESS_CALLS = {
    "embed": lambda a: den.tl.embed(a, n_epochs=2, progress_bar="no"),
    "cluster": lambda a: den.tl.cluster(a, progress_bar="no"),
    "marker_features": lambda a: den.tl.marker_features(a, n_background=20, max_cells_per_group=10, progress_bar="no"),
    "transfer_labels": lambda a: den.tl.transfer_labels(a, a.copy(), "group", progress_bar="no"),
}


@pytest.mark.parametrize("tool", list(PROGRESS_CALLS))
def test_progress_bar_must_be_a_bool(trained, tool):
    """progress_bar="no" was read as True (a bar drawn); refused before any work, as copy is."""
    _check(trained, PROGRESS_CALLS[tool], TypeError, "progress_bar='no': it must be True or False")


@pytest.mark.parametrize("tool", ["mapping_score", "marker_features", "transfer_labels"])
@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (1.7, TypeError), ("7", TypeError), (2**40, ValueError)])
def test_random_state_follows_one_rule_in_every_tool(trained, tool, seed, error):
    _check(trained, lambda a: TOOL_CALLS[tool](a, random_state=seed), error, rf"random_state={seed!r}: it must be")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"head_epochs": 0}, ValueError, "head_epochs=0"),  # ran 0 s and reported a calibrated-looking ECE
        ({"head_epochs": 1.5}, TypeError, r"head_epochs=1\.5"),
        ({"finetune_epochs": -1}, ValueError, "finetune_epochs=-1"),
        ({"batch_size": 0}, ValueError, "batch_size=0"),  # ZeroDivisionError inside training
        ({"batch_size": 1}, ValueError, "batch_size=1"),
    ],
)
def test_transfer_labels_checks_its_training_as_cluster_does(trained, kwargs, error, match):
    _check(trained, lambda a: TOOL_CALLS["transfer_labels"](a, **kwargs), error, match)


def test_transfer_labels_says_when_it_replaces_the_querys_own_column(trained):
    ref, query = trained[:200].copy(), trained[200:].copy()
    query.obs["group"] = ("own " + query.obs["group"].astype(str)).astype("category")
    with pytest.warns(UserWarning, match=r"adata.obs\['group'\] \(the query's own column\) is replaced"):
        den.tl.transfer_labels(query, ref, "group", progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the labels of its own earlier run: replaced without a word
        den.tl.transfer_labels(query, ref, "group", progress_bar=False)
        den.tl.transfer_labels(query, ref, "group", key_added="from_ref", progress_bar=False)


def test_cell_features_names_positions_as_the_mistake(trained):
    for cells in (3, [0, 1]):
        _check(
            trained, lambda a, c=cells: den.tl.cell_features(a, c), KeyError, r"for positions pass e.g. adata.obs_names"
        )


# --- model folders --------------------------------------------------------------------------------------------------


@pytest.fixture
def saved(trained, tmp_path):
    path = tmp_path / "m"
    den.DENModel.from_adata(trained).save(path)
    return path


def _write_weights(path, arrays):
    np.savez(path / "weights.npz", **arrays)


MODEL_DAMAGE = [
    pytest.param(
        lambda p: (p / "config.json").write_text("{not json"), ValueError, "config.json' is damaged", id="bad json"
    ),
    pytest.param(
        lambda p: (p / "config.json").write_text("[1, 2]"), ValueError, "not a den model config", id="json not a dict"
    ),
    pytest.param(
        lambda p: (p / "weights.npz").write_bytes(np.random.default_rng(0).bytes(500)),
        ValueError,
        "weights.npz' is damaged",
        id="random bytes",
    ),
    pytest.param(lambda p: (p / "weights.npz").write_bytes(b""), ValueError, "damaged", id="empty weights"),
    pytest.param(
        lambda p: (p / "weights.npz").unlink(), FileNotFoundError, "not a den model folder", id="weights missing"
    ),
    pytest.param(
        lambda p: (p / "config.json").unlink(), FileNotFoundError, "not a den model folder", id="config missing"
    ),
    pytest.param(
        lambda p: _write_weights(p, {"encoder/x": np.zeros(3)}), ValueError, "do not fit its config", id="wrong weights"
    ),
]


@pytest.mark.parametrize(("damage", "error", "match"), MODEL_DAMAGE)
def test_damaged_model_folder(saved, damage, error, match):
    damage(saved)
    with pytest.raises(error, match=match) as info:
        den.DENModel.load(saved)
    assert str(saved) in str(info.value) or "den model" in str(info.value)


def test_nan_weights_refused(saved):
    with np.load(saved / "weights.npz") as f:
        arrays = {k: f[k] for k in f.files}
    key = next(k for k in arrays if k.endswith("weight") and arrays[k].dtype.kind == "f" and "mlp" in k)
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] = np.nan
    _write_weights(saved, arrays)
    with pytest.raises(ValueError, match="NaN or infinite.*damaged"):
        den.DENModel.load(saved)


def test_newer_format_refused(saved):
    meta = json.loads((saved / "config.json").read_text())
    meta["config"]["format_version"] = 99
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="newer den.*Upgrade scden"):
        den.DENModel.load(saved)


def test_unknown_encoder_refused(saved):
    meta = json.loads((saved / "config.json").read_text())
    meta["config"]["encoder"] = "transformer"
    (saved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="Unknown encoder 'transformer'"):
        den.DENModel.load(saved)


def test_save_onto_a_file(trained, tmp_path):
    (tmp_path / "f").write_text("x")
    model = den.DENModel.from_adata(trained)
    for overwrite in (False, True):  # overwrite=True once reached pathlib's own error
        with pytest.raises(FileExistsError, match="is a file; den saves a model into a folder"):
            model.save(tmp_path / "f", overwrite=overwrite)
    assert (tmp_path / "f").read_text() == "x"


def test_save_and_load_expand_the_home_folder(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    den.DENModel.from_adata(trained).save("~/model")
    assert (tmp_path / "model" / "config.json").exists() and not (tmp_path / "~").exists()
    assert den.DENModel.load("~/model").var_names.equals(trained.var_names)


# --- DENModel's public inference ------------------------------------------------------------------------------------

MODEL_INPUTS = [
    pytest.param(lambda X: np.where(np.arange(X.shape[0])[:, None] == 0, np.nan, X), ValueError, "NaN", id="NaN rows"),
    pytest.param(lambda X: X[:, :10], ValueError, "10 columns but the model reads 80", id="wrong width"),
    pytest.param(lambda X: X[0], ValueError, "numeric 2-D matrix", id="1-D"),
    pytest.param(lambda X: np.full(X.shape, "a"), ValueError, "numeric 2-D matrix", id="strings"),
]


@pytest.mark.parametrize(("make", "error", "match"), MODEL_INPUTS)
@pytest.mark.parametrize("method", ["embed", "predict_proba", "hidden"])
def test_model_inference_checks_input(trained, make, error, match, method):
    model = den.DENModel.from_adata(trained)
    X = trained.X.toarray()
    with pytest.raises(error, match=match):
        getattr(model, method)(make(X))


@pytest.mark.parametrize("kind", ["coo", "list", "torch"])
def test_model_inference_accepts_other_containers(trained, kind):
    model = den.DENModel.from_adata(trained)
    X = trained.X.toarray()
    other = {"coo": sparse.coo_matrix(X), "list": X.tolist(), "torch": torch.from_numpy(X)}[kind]
    np.testing.assert_allclose(model.embed(other), model.embed(X), rtol=1e-5, atol=1e-5)


def test_model_without_clusters(small):
    den.tl.embed(small, **FAST)
    model = den.DENModel.from_adata(small)
    with pytest.raises(ValueError, match="no clustering network"):
        model.predict_proba(small.X)
    with pytest.raises(ValueError, match="no label head"):
        model.predict_label_proba(small.X)


# --- den.DEN ----------------------------------------------------------------------------------------------------

X_GOOD = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)

ESTIMATOR_FIT = [
    pytest.param(np.where(np.eye(60, 5) > 0, np.nan, X_GOOD), None, ValueError, "NaN.*np.nan_to_num", id="NaN"),
    pytest.param(X_GOOD, np.zeros((60, 2)), ValueError, r"y must be 1-D.*\(60, 2\)", id="y 2-D"),
    pytest.param(X_GOOD, np.array([0, 1, "a"] * 20, dtype=object), TypeError, "mixes text and numbers", id="y mixed"),
    pytest.param(X_GOOD[:2], None, ValueError, "minimum of 3", id="two samples"),
    pytest.param(X_GOOD[:, 0], None, ValueError, "2D array", id="1-D"),
    pytest.param(X_GOOD.astype(complex), None, ValueError, "[Cc]omplex", id="complex"),
    pytest.param("abc", None, TypeError, "numpy array", id="string"),
    pytest.param(X_GOOD, np.zeros(7), ValueError, "one label per sample", id="y length"),
    pytest.param(X_GOOD, np.full(60, -1), ValueError, "no labelled sample", id="y all unlabelled"),
    pytest.param(X_GOOD, X_GOOD[:, 0], ValueError, "measurement or an ID", id="y continuous"),
    pytest.param(
        np.where(np.eye(60, 5) > 0, 1e39, X_GOOD.astype(np.float64)), None, ValueError, "float32 range", id="f32"
    ),
    pytest.param(X_GOOD, np.arange(60), ValueError, "60 of 60 samples carry a label no other", id="y one per sample"),
    pytest.param(X_GOOD, np.where(np.arange(60) < 6, 3, -1), ValueError, "one label", id="y one class"),
    pytest.param(X_GOOD, np.array(["a", "b", "None"] * 20, dtype=object), ValueError, "'None'", id="y 'None' text"),
    pytest.param(np.ones((60, 5)), None, ValueError, "constant matrix", id="constant"),
]


@pytest.mark.parametrize(("X", "y", "error", "match"), ESTIMATOR_FIT)
def test_estimator_fit_bad_input(X, y, error, match):
    with pytest.raises(error, match=match):
        den.DEN(n_epochs=2).fit(X, y)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        pytest.param({"cluster": "yes"}, TypeError, "cluster='yes'", id="cluster"),
        pytest.param({"progress_bar": "no"}, TypeError, "progress_bar='no'", id="progress_bar"),
        pytest.param({"resolution": 0}, ValueError, "resolution=0", id="resolution"),
        pytest.param({"encoder": "rnn"}, ValueError, "encoder='rnn'", id="encoder"),
        pytest.param({"encoder": "conv"}, ValueError, "needs images", id="conv on vectors"),
        pytest.param({"max_clusters": 1}, ValueError, "max_clusters=1", id="max_clusters"),
    ],
)
def test_estimator_bad_params(params, error, match):
    with pytest.raises(error, match=match):
        den.DEN(n_epochs=2, **params).fit(X_GOOD)


def test_estimator_explain_checks_its_arguments():
    est = den.DEN(n_epochs=2).fit(X_GOOD)
    with pytest.raises(ValueError, match="n_background=0"):
        est.explain(X_GOOD[:4], n_background=0)
    with pytest.raises(ValueError, match="random_state=-1"):
        est.explain(X_GOOD[:4], random_state=-1)


def test_estimator_without_clusters_cannot_predict():
    est = den.DEN(n_epochs=2, cluster=False).fit(X_GOOD)
    with pytest.raises(ValueError, match="no clustering network"):
        est.predict(X_GOOD)
    for method in (est.predict_labels_proba, est.predict_labels):
        with pytest.raises(ValueError, match="no label head"):
            method(X_GOOD)


# --- the CLI ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "match"),
    [
        pytest.param(["demo", "--epochs", "0"], 2, "must be at least 1", id="epochs 0"),
        pytest.param(["demo", "--epochs", "-1"], 2, "must be at least 1", id="epochs -1"),
        pytest.param(["demo", "--epochs", "abc"], 2, "not an integer", id="epochs abc"),
        pytest.param(["demo", "--seed", "-1"], 2, r"must be in \[0", id="seed -1"),
        pytest.param(["demo", "--seed", "x"], 2, "not an integer", id="seed x"),
        pytest.param(["demo", "--out", ""], 2, "output folder is empty", id="out empty"),
        pytest.param(["demo", "--nope"], 2, "unrecognized arguments", id="unknown option"),
        pytest.param(["nope"], 2, "invalid choice", id="unknown command"),
        pytest.param([], 2, "required", id="no command"),
    ],
)
def test_cli_usage_errors(argv, code, match, capsys):
    from den.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert pytest.importorskip("re").search(match, err)


def test_cli_out_is_a_file(tmp_path, capsys):
    from den.cli import main

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(tmp_path / "f")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_cli_out_cannot_be_created(tmp_path, capsys):
    from den.cli import main

    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["demo", "--out", str(tmp_path / "f" / "sub")])  # below a file
    assert info.value.code == 1
    assert "cannot create --out" in capsys.readouterr().err


def test_cli_failure_is_one_line(monkeypatch, tmp_path, capsys):
    import den.cli

    def boom(*a, **k):
        raise RuntimeError("something broke")

    monkeypatch.setattr(den.cli, "demo", boom)
    assert den.cli.main(["demo", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "den: error: RuntimeError: something broke (run with --debug for the traceback)"
    with pytest.raises(RuntimeError, match="something broke"):
        den.cli.main(["demo", "--out", str(tmp_path / "o"), "--debug"])


# --- plots: results missing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plot", "kwargs", "match"),
    [
        pytest.param(den.pl.history, {}, "den.tl.embed", id="history"),
        pytest.param(den.pl.spectrum, {}, "den.tl.cluster", id="spectrum"),
        pytest.param(den.pl.marker_features, {}, "den.tl.marker_features", id="marker_features"),
        pytest.param(den.pl.shap_summary, {"group": "0"}, "den.tl.marker_features", id="shap_summary"),
        pytest.param(den.pl.cell_features, {"cell": "c"}, "den.tl.cell_features", id="cell_features"),
        pytest.param(
            den.pl.differentiating_features,
            {"group1": "0", "group2": "1"},
            "den.tl.differentiating_features",
            id="differentiating",
        ),
        pytest.param(den.pl.embedding, {}, "den.tl.embed", id="embedding"),
    ],
)
def test_plot_without_results(small, plot, kwargs, match):
    _check(small, lambda a: plot(a, show=False, **kwargs), KeyError, match)


@pytest.mark.parametrize(
    ("plot", "key", "tool"),
    [
        (den.pl.history, "den_clusters", "embed"),
        (den.pl.spectrum, "den", "cluster"),
        (den.pl.marker_features, "den", "marker_features"),
    ],
)
def test_plot_of_another_tools_entry(trained, plot, key, tool):
    with pytest.raises(KeyError, match=rf"not a result of den.tl.{tool}"):
        plot(trained, key=key, show=False)


def test_image_attributions_bad_shapes():
    with pytest.raises(ValueError, match="do not match the images"):
        den.pl.image_attributions(np.zeros((4, 8, 8)), np.zeros((4, 10)), np.zeros(4), show=False)
    with pytest.raises(ValueError, match="Cannot draw images"):
        den.pl.image_attributions(np.zeros((4, 64)), np.zeros((4, 64)), np.zeros(4), show=False)
    with pytest.raises(ValueError, match="do not have the shape"):
        den.pl.image_attributions(np.zeros((4, 64)), np.zeros((4, 64)), np.zeros(4), image_shape=(7, 7), show=False)
    for groups in (np.zeros(3), np.array(["a", None, "b", "a"], dtype=object)):
        with pytest.raises(ValueError, match="one group per image"):
            den.pl.image_attributions(np.zeros((4, 8, 8)), np.zeros((4, 64)), groups, show=False)


# --- names that survive writing -------------------------------------------------------------------------------------


def test_group_names_with_slashes_survive_h5ad_and_zarr(trained, tmp_path):
    trained.obs["cell type"] = trained.obs["group"].cat.rename_categories(["CD4+/CD25 T", "B/plasma", "NK"])
    den.tl.marker_features(trained, groupby="cell type", key_added="m", **MFAST)
    den.tl.differentiating_features(
        trained, "CD4+/CD25 T", "B/plasma", groupby="cell type", max_cells=10, n_background=10
    )
    trained.write_h5ad(tmp_path / "a.h5ad")
    trained.write_zarr(tmp_path / "a.zarr")
    for back in (ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_zarr(tmp_path / "a.zarr")):
        entry = back.uns["m"]
        assert set(entry["names"].dtype.names) == {"CD4+/CD25 T", "B/plasma", "NK"}
        assert list(entry["groups"]) == list(trained.uns["m"]["groups"])
        store = back.uns["den_differentiating_features"]
        assert len(store) == 1
        (comparison,) = store.values()
        assert comparison["params"]["group1"] == "CD4+/CD25 T"
        ax = den.pl.differentiating_features(back, "CD4+/CD25 T", "B/plasma", show=False)
        assert ax is not None


def test_unused_categories_are_ignored(trained):
    """Subsetting leaves unused categories behind; they must not crash the head or the explainer."""
    trained.obs["g"] = pd.Categorical(trained.obs["group"], categories=[*trained.obs["group"].cat.categories, "gone"])
    den.tl.marker_features(trained, groupby="g", key_added="m", **MFAST)
    assert "gone" not in trained.uns["m"]["names"].dtype.names


# --- honest warnings for valid but suspect input --------------------------------------------------------------------


def test_warns_raw_counts(small):
    small.X = small.layers["counts"]
    with pytest.warns(UserWarning, match="raw counts"):
        den.tl.embed(small, **FAST)


def test_warns_query_on_another_scale(trained):
    query = trained.copy()
    query.X = trained.X * 1000  # e.g. counts where the reference was log1p
    with pytest.warns(UserWarning, match="another scale"):
        den.tl.transform(query, trained)


def test_no_scale_warning_for_a_matching_query(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        den.tl.transform(trained[:50].copy(), trained)


def test_no_scale_warning_for_a_split_of_scaled_data(pbmc_embedded):
    """pbmc68k_reduced's X is z-scored (centred): totals per cell are meaningless there, a random split is not off."""
    rng = np.random.default_rng(0)
    query = pbmc_embedded[rng.random(pbmc_embedded.n_obs) < 0.2].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        den.tl.transform(query, pbmc_embedded)


def test_warns_uncentred_query_on_a_centred_reference(pbmc_embedded):
    query = pbmc_embedded[:100].copy()
    query.X = np.expm1(np.abs(query.X)) * 50  # counts-like where the reference was scaled
    with pytest.warns(UserWarning, match="another scale"):
        den.tl.transform(query, pbmc_embedded)


def test_warns_duplicate_cell_names(small):
    small.obs_names = ["c"] * 2 + list(small.obs_names[2:])
    with pytest.warns(UserWarning, match="obs_names_make_unique"):
        den.tl.embed(small, **FAST)


def test_warns_single_cluster(small):
    den.tl.embed(small, **FAST)
    with pytest.warns(UserWarning, match="single cluster"):
        den.tl.cluster(small, min_cluster_size=10_000, **CFAST)  # every cluster but the largest dissolves


def test_warns_tiny_groups(trained):
    trained.obs["g"] = trained.obs["group"].astype(str)
    trained.obs.iloc[:3, trained.obs.columns.get_loc("g")] = "rare"
    with pytest.warns(UserWarning, match="fewer than 5 cells"):
        den.tl.marker_features(trained, groupby="g", key_added="m", **MFAST)


def test_warns_collapsed_map():
    from den._embedding import warn_if_collapsed

    with pytest.warns(UserWarning, match="collapsed"):
        warn_if_collapsed(np.zeros((50, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_collapsed(np.random.default_rng(0).normal(size=(50, 2)))


def test_warns_n_neighbors_too_large(small):
    with pytest.warns(UserWarning, match="too large"):
        den.tl.embed(small[:20].copy(), n_neighbors=50, **FAST)


# --- small data that works -----------------------------------------------------------------------------------------


def test_thirty_cells_three_groups():
    adata = den.datasets.synthetic(30, 60, 3, n_markers=10, marker_fold=10, random_state=0)
    den.tl.embed(adata, progress_bar=False)
    den.tl.cluster(adata, progress_bar=False)
    assert adata.uns["den_clusters"]["n_clusters"] == 3
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(adata.obs["group"], adata.obs["den_clusters"]) > 0.9
    den.tl.marker_features(adata, progress_bar=False)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda a, q: den.tl.transform(q, a, key="den_clusters"), r"den_clusters'\] is a result of den.tl.cluster"),
        (
            lambda a, q: den.tl.transform(q, a, cluster_key="den"),
            r"den'\] is a result of den.tl.embed, not of .*cluster",
        ),
        (lambda a, q: den.tl.cluster(a, key="den_clusters", **CFAST), r"result of den.tl.cluster, not of den.tl.embed"),
        (lambda a, q: den.tl.mapping_score(q, a, key="den_clusters"), r"result of den.tl.cluster, not of den.tl.embed"),
        (lambda a, q: den.tl.transfer_labels(q, a, "group", key="den_clusters"), r"pass the key_added of den.tl.embed"),
    ],
    ids=["transform-key", "transform-cluster_key", "cluster", "mapping_score", "transfer_labels"],
)
def test_a_key_naming_another_tools_result(trained, call, match):
    query = trained[:40].copy()
    for k in ("den", "den_clusters"):
        del query.uns[k]
    before = snapshot(trained), snapshot(query)
    with pytest.raises(ValueError, match=match):
        call(trained, query)
    assert (snapshot(trained), snapshot(query)) == before


def test_batches_of_one_cell_are_refused_and_small_ones_warned(small):
    small.obs["per_cell"] = np.arange(small.n_obs).astype(str)  # a column of cell ids passed as batch_key
    _check(small, lambda a: den.tl.embed(a, batch_key="per_cell", **FAST), ValueError, r"batches of a single cell")
    small.obs["pairs"] = (np.arange(small.n_obs) // 2).astype(str)
    with pytest.warns(UserWarning, match=r"batches with fewer than 50 cells .* Merge small batches"):
        den.tl.embed(small, batch_key="pairs", **FAST)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: den.tl.differentiating_features(a, "0", "1", key_added="den_marker_features", n_background=20),
        lambda a: den.tl.cell_features(a, [a.obs_names[0]], key_added="den_marker_features", n_background=20),
    ],
    ids=["differentiating_features", "cell_features"],
)
def test_key_added_never_overwrites_the_markers(trained, call):
    den.tl.marker_features(trained, **MFAST)
    _check(trained, call, ValueError, r"holds the result of den.tl.marker_features.*another key_added")


def test_mapping_score_says_it_replaces_a_column_of_the_querys_own(trained):
    query = trained[:60].copy()
    for k in ("den", "den_clusters"):
        del query.uns[k]
    with pytest.warns(UserWarning, match=r"obs\['group'\] \(the query's own column\) is replaced by the mapping score"):
        den.tl.mapping_score(query, trained, key_added="group")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its own earlier score: replaced without a word
        den.tl.mapping_score(query, trained, key_added="group")


def test_marker_features_refuses_nan_as_text(trained):
    a = trained.copy()
    a.obs["g"] = a.obs["group"].astype(str).where(np.arange(a.n_obs) % 4 > 0).astype(str)  # NaN -> "nan"
    _check(a, lambda x: den.tl.marker_features(x, groupby="g", **MFAST), ValueError, r"holds 'nan' as a group")
    a.obs["g"] = np.where(np.arange(a.n_obs) % 4 > 0, a.obs["group"].astype(str), "-1")  # HDBSCAN's noise: a group
    den.tl.marker_features(a, groupby="g", **MFAST)
    assert "-1" in list(a.uns["den_marker_features"]["groups"])


def test_cluster_refuses_a_map_with_nan(trained):
    trained.obsm["X_den"][3, 0] = np.nan
    _check(trained, lambda a: den.tl.cluster(a, **CFAST), ValueError, r"obsm\['X_den'\] holds NaN or inf")
