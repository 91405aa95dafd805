"""The tutorial notebooks run from top to bottom on the current code.

Their outputs are stored, so nothing else notices when a change breaks one (pbmc.ipynb went stale once: a re-embedded
subset still carried the full data's clusters, which ``den.tl.transform`` now refuses as made on another map).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).parents[1] / "tutorials"


@pytest.mark.parametrize("name", ["pbmc.ipynb", "batches.ipynb"])
def test_tutorial_runs(name):
    notebook = TUTORIALS / name
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": TUTORIALS}})
    client.execute()  # raises CellExecutionError naming the cell that failed
    outputs = [o for cell in nb.cells for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # no tqdm.auto warning for hidden bars (every call here passes progress_bar=False; no ipywidgets needed)
    assert not [o for o in outputs if "IProgress" in o.get("text", "")]
