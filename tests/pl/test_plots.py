from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import den


@pytest.fixture(scope="module")
def full(_trained):
    adata = _trained.copy()
    den.tl.marker_features(adata, n_background=30, max_cells_per_group=20, progress_bar=False)
    den.tl.differentiating_features(adata, "0", "1", max_cells=20, n_background=20)
    return adata


@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        pytest.param(den.pl.history, {}, id="history"),
        pytest.param(den.pl.spectrum, {}, id="spectrum"),
        pytest.param(den.pl.marker_features, {"n_genes": 3}, id="marker_heatmap"),
        pytest.param(den.pl.shap_summary, {"group": "0"}, id="shap_summary"),
        pytest.param(den.pl.differentiating_features, {"group1": "0", "group2": "1"}, id="differentiating"),
    ],
)
def test_returns_axes_or_figure(full, fn, kwargs):
    ax = fn(full, show=False, **kwargs)
    assert isinstance(ax, Axes)
    fig = fn(full, show=False, return_fig=True, **kwargs)
    assert isinstance(fig, Figure)
    plt.close("all")


def test_draws_into_given_axes(full):
    fig, ax = plt.subplots()
    assert den.pl.history(full, ax=ax, show=False) is ax
    plt.close(fig)


def test_cell_features(full):
    cell = full.obs_names[0]
    den.tl.cell_features(full, [cell], n_background=30)
    entry = full.uns["den_cell_features"]
    np.testing.assert_allclose(entry["values"].sum(1) + entry["base_values"], entry["outputs"], atol=1e-4)
    fig = den.pl.cell_features(full, cell, show=False, return_fig=True)
    assert isinstance(fig, Figure)
    # the waterfall shows the cell's largest SHAP value first
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    top = entry["genes"][np.argmax(np.abs(entry["values"][0]))]
    assert any(top in label for label in labels)
    assert "expression as den read it" in fig.axes[0].get_title()  # what the numbers beside the genes are
    plt.close("all")
    with pytest.raises(KeyError, match="den.tl.cell_features"):
        den.pl.cell_features(full, full.obs_names[1], show=False)


def test_shap_summary_shows_the_top_genes(full):
    entry = full.uns["den_marker_features"]
    values = np.asarray(entry["shap_values"])[np.asarray(entry["shap_groups"]) == "0"]
    top = np.argsort(-np.abs(values).mean(0))[:4]
    ax = den.pl.shap_summary(full, "0", n_genes=4, show=False)
    labels = {t.get_text() for t in ax.get_yticklabels()}
    assert labels == set(den.DENModel.from_adata(full, cluster_key=None).var_names[top])
    # no row for the sum of the other genes: the axis spans the shown genes' values
    lo, hi = ax.get_xlim()
    assert hi - lo < 3 * np.ptp(values[:, top])
    assert f"other {values.shape[1] - 4} genes add" in ax.get_xlabel()
    plt.close("all")


def test_embedding_colours(full):
    axes = den.pl.embedding(full, color=["den_clusters", "den_clusters_confidence"], show=False)
    assert len(axes) == 2
    plt.close("all")


def test_marker_dotplot(full):
    dot = den.pl.marker_features(full, kind="dotplot", n_genes=2, dendrogram=False, show=False, return_fig=True)
    entry = full.uns["den_marker_features"]
    expected = {g for grp in entry["names"].dtype.names for g in entry["names"][grp][:2]}
    assert set(dot.var_names) == expected  # the genes den ranked, not scanpy's own
    plt.close("all")


def test_marker_dotplot_names_categories_without_cells(full):
    ghost = full.copy()
    col = ghost.obs["den_clusters"]
    ghost.obs["den_clusters"] = col.cat.add_categories(["ghost"])
    plt.close("all")
    with pytest.raises(ValueError, match=r"categories without cells \(\['ghost'\]\).*remove_unused_categories"):
        den.pl.marker_features(ghost, kind="dotplot", dendrogram=False, show=False)
    assert not plt.get_fignums()
    assert isinstance(den.pl.marker_features(ghost, show=False), Axes)  # the heatmap reads den's result only
    plt.close("all")


def test_marker_heatmap_rejects_dotplot_options(full):
    with pytest.raises(TypeError, match="kind='dotplot'"):
        den.pl.marker_features(full, dendrogram=False, show=False)


def test_embedding_names_an_unknown_colour_and_its_closest_names(full):
    var = full.var_names[1]
    with pytest.raises(KeyError, match=rf"color='{var.upper()}' is neither.* Did you mean '{var}'"):
        den.pl.embedding(full, color=["den_clusters", var.upper()], show=False)  # before drawing anything
    assert not plt.get_fignums()
    den.pl.embedding(full, color=["den_clusters", var], show=False)
    plt.close("all")


def test_spectrum_says_when_k_was_forced(full):
    ax = den.pl.spectrum(full, show=False)  # the fixture clusters with n_clusters=3
    assert "forced: n_clusters = 3" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close("all")


def test_differentiating_bars_show_which_genes_are_lower_in_the_group(full):
    ax = den.pl.differentiating_features(full, "0", "1", n_genes=5, show=False)
    table = full.uns["den_differentiating_features"]["0_vs_1"]["table"].set_index("names")
    bars = {t.get_text(): p for t, p in zip(ax.get_yticklabels(), ax.patches, strict=False)}
    assert bars and all((p.get_hatch() == "///") == (table.loc[g, "logfoldchange"] < 0) for g, p in bars.items())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["higher in 0", "lower in 0"]
    plt.close("all")


def test_marker_heatmap_reads_a_string_as_one_group(full):
    ax = den.pl.marker_features(full, groups="0", show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0"]
    with pytest.raises(KeyError, match=r"Groups \['01'\] are not in"):  # not the groups '0' and '1'
        den.pl.marker_features(full, groups="01", show=False)
    with pytest.raises(ValueError, match="kind='dot': use 'heatmap' or 'dotplot'"):
        den.pl.marker_features(full, kind="dot", show=False)
    with pytest.raises(ValueError, match="n_genes=0"):
        den.pl.marker_features(full, n_genes=0, show=False)
    plt.close("all")


def test_missing_results_name_the_tool(small):
    with pytest.raises(KeyError, match="den.tl.embed"):
        den.pl.history(small, show=False)
    with pytest.raises(KeyError, match="den.tl.cluster"):
        den.pl.spectrum(small, show=False)
    with pytest.raises(KeyError, match="den.tl.marker_features"):
        den.pl.marker_features(small, show=False)
    with pytest.raises(KeyError, match="den.tl.embed"):
        den.pl.embedding(small, show=False)


def test_a_one_dimensional_map_is_refused_before_drawing(full):
    flat = full.copy()
    flat.obsm["X_den"] = flat.obsm["X_den"][:, :1]
    plt.close("all")
    with pytest.raises(ValueError, match=r"obsm\['X_den'\] has 1 column .*n_components=2"):
        den.pl.embedding(flat, color="den_clusters", show=False)
    with pytest.raises(ValueError, match=r"reference.obsm\['X_den'\] has 1 column"):
        den.pl.query(full, flat, show=False)
    assert not plt.get_fignums()  # nothing drawn


def test_docstrings_filled():
    for name in den.pl.__all__:
        doc = getattr(den.pl, name).__doc__
        assert "{ax_show_return_fig}" not in doc
        assert "return_fig" in doc


def test_spectrum_marks_k_and_the_bridge_cut_off(full):
    ax = den.pl.spectrum(full, show=False)
    entry = full.uns["den_clusters"]
    cut = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    lam = np.asarray(entry["eigenvalues"])[: entry["params"]["max_clusters"] + 1]
    assert len(cut) == 1 and np.isclose(cut[0].get_ydata()[0], np.median(lam[lam >= 1e-6]) / 10)
    k_line = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert k_line[0].get_xdata()[0] == entry["n_eigengap"] + 0.5
    assert ax.get_yscale() == "symlog"
    plt.close("all")


def test_image_attributions_scale_what_they_draw():
    rng = np.random.default_rng(0)
    images = rng.random((30, 3, 6, 6))
    shap_values = np.full(images.shape, 0.5)  # every channel pushes by 0.5: 1.5 a pixel, as drawn
    shap_values[:, :, 0, 0] = -0.2
    groups = np.repeat(np.arange(15), 2)
    fig = den.pl.image_attributions(images, shap_values, groups, max_groups=4, return_fig=True)
    drawn = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "RdBu_r"]
    assert len(drawn) == 4 and all(im.get_clim() == (-1.5, 1.5) for im in drawn)  # not saturated at 0.5
    assert np.allclose(drawn[0].get_array(), np.where(np.arange(36).reshape(6, 6) == 0, -0.6, 1.5))
    assert fig._suptitle.get_text() == "the 4 largest of 15 groups (max_groups=4)"
    plt.close("all")
    names = pd.Series(groups.astype(str))  # cluster names as den writes them: "10" after "9", not after "1"
    fig = den.pl.image_attributions(images, shap_values, names, max_groups=12, return_fig=True)
    titles = [ax.get_title().split(" ")[0] for ax in fig.axes if ax.get_title()]
    assert titles == [str(g) for g in range(12)]
    plt.close("all")


def test_shap_summary_title_gives_the_explained_cells(full):
    ax = den.pl.shap_summary(full, "0", show=False)
    n = int((np.asarray(full.uns["den_marker_features"]["shap_groups"]) == "0").sum())
    assert f"({n} cells explained)" in ax.get_title().replace("\n", " ")
    assert "expression (as den read it)" in [a.get_ylabel() for a in ax.figure.axes]  # not shap's "Feature value"
    plt.close("all")


def test_marker_heatmap_names_each_groups_block_of_genes(full):
    ax = den.pl.marker_features(full, n_genes=3, show=False)
    blocks = [t.get_text() for t in ax.child_axes[0].get_xticklabels()]
    owners = {}
    for group in ["0", "1", "2"]:
        for gene in full.uns["den_marker_features"]["names"][group][:3]:
            owners.setdefault(gene, group)
    assert blocks == list(dict.fromkeys(owners.values()))  # every group whose genes are shown, in order
    plt.close("all")


def test_marker_heatmap_scales_each_group_to_show_its_markers(full):
    from den.tl._marker_features import shap_table

    entry = full.uns["den_marker_features"]
    raw = den.pl.marker_features(full, n_genes=2, standard_scale=None, show=False).get_images()[0].get_array()
    scaled = den.pl.marker_features(full, n_genes=2, show=False).get_images()[0].get_array()
    groups = list(entry["names"].dtype.names)
    genes = list(dict.fromkeys(g for grp in groups for g in entry["names"][grp][:2]))
    table = shap_table(entry, "mean_shap").loc[genes, groups].to_numpy().T
    assert np.allclose(raw, table)  # None: mean SHAP as is
    assert np.allclose(np.abs(scaled).max(1), 1.0)  # every group's row reaches the ends of the scale
    assert np.allclose(scaled, table / np.abs(table).max(1, keepdims=True))
    with pytest.raises(ValueError, match="standard_scale='var'"):
        den.pl.marker_features(full, standard_scale="var", show=False)
    plt.close("all")


def test_marker_heatmap_stays_readable_with_many_genes(full):
    fig = den.pl.marker_features(full, n_genes=40, return_fig=True)
    assert fig.get_size_inches()[0] <= 16.0  # not 0.32 inch a column at 100+ columns
    plt.close("all")


@pytest.mark.parametrize("n_genes", [0, -3])
def test_gene_counts_are_checked_before_drawing(full, n_genes):
    cell = full.obs_names[0]
    den.tl.cell_features(full, [cell], n_background=20)
    for draw in (
        lambda: den.pl.shap_summary(full, "0", n_genes=n_genes, show=False),
        lambda: den.pl.cell_features(full, cell, n_genes=n_genes, show=False),
        lambda: den.pl.differentiating_features(full, "0", "1", n_genes=n_genes, show=False),
    ):
        with pytest.raises(ValueError, match=rf"n_genes={n_genes}: it must be an integer >= 1"):
            draw()
    plt.close("all")


def test_marker_heatmap_reads_a_number_as_one_group(full):
    ax = den.pl.marker_features(full, groups=0, show=False)  # clusters named "0", "1", ...: a number names one
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0"]
    plt.close("all")
