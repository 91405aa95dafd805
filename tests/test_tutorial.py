"""The tutorial notebook runs from top to bottom on the current code.

Its outputs are stored, so nothing else notices when a change breaks it (it went stale once: a re-embedded
subset still carried the full data's clusters, which ``den.tl.transform`` now refuses as made on another map).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "tutorials" / "pbmc.ipynb"


def test_tutorial_runs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": NOTEBOOK.parent}})
    client.execute()  # raises CellExecutionError naming the cell that failed
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
