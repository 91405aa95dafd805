from __future__ import annotations

import pandas as pd
import pytest

import den
from den.cli import main


def test_demo_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "3", "--no-progress"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "den_embedding.png",
        "den_spectrum.png",
        "den_history.png",
        "den_marker_features.png",
        "den_marker_dotplot.png",
        "den_marker_features.csv",
        "pbmc68k_reduced_den.h5ad",
    } <= names
    assert any(n.startswith("den_shap_summary_") for n in names)
    table = pd.read_csv(out / "den_marker_features.csv")
    assert {"group", "names", "scores", "logfoldchanges"} <= set(table.columns)
    printed = capsys.readouterr().out
    assert "clusters" in printed and str(out) in printed


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"den {den.__version__}"
