"""Every notebook in notebooks/ executes headless (nbclient), offline, without an error."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors
    views = [
        o
        for c in nb.cells
        for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert views, "the notebook shows at least one widget"
    state = (
        nb.metadata.get("widgets", {})
        .get("application/vnd.jupyter.widget-state+json", {})
        .get("state", {})
    )
    explorers = [s for s in state.values() if s.get("state", {}).get("_esm")]
    assert explorers, "the widget state is saved in the notebook"
    for entry in explorers:  # binary traits are saved as buffers beside the JSON state
        saved = {b["path"][0]: b for b in entry.get("buffers", [])}
        assert "heatmap" in saved and "image" in saved, "exported state holds the explanation"
        assert saved["heatmap"]["encoding"] == "base64" and len(saved["heatmap"]["data"]) > 100


def test_quickstart_exists():
    assert any(p.name == "quickstart.ipynb" for p in NOTEBOOKS)
