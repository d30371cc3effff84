"""`famwidget export`: an executed notebook becomes an HTML page whose widgets work offline."""

from __future__ import annotations

import os

import nbformat
import pytest
from browser import READY, check_blend_and_hover
from nbclient import NotebookClient
from test_standalone_browser import offline_page  # noqa: F401  (fixture)

from famwidget.cli import main
from famwidget.widget.export import famwidget_states

CODE = """
import torch, famwidget as fw
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
w = fw.Explorer(model, torch.rand(4, 3, 32, 32), labels=list("abcd"))
w.select(2)
w
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "small.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE)])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    nbformat.write(nb, path)
    return path


def test_saved_state_is_found(executed):
    states = famwidget_states(nbformat.read(executed, as_version=4))
    assert len(states) == 1
    traits = next(iter(states.values()))["traits"]
    assert traits["selected"] == 2 and isinstance(traits["heatmap"], bytes) and traits["heatmap"]


@pytest.mark.browser
def test_exported_page_renders_offline(executed, offline_page, screenshots):  # noqa: F811
    out = executed.with_name("small.html")
    assert main(["export", str(executed), "-o", str(out)]) == 0
    text = out.read_text()
    assert "application/vnd.jupyter.widget-state+json" not in text
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask, "a normal file's mode, not 0600"
    # once in the bundle, once in the mount script: the saved _esm is not embedded again
    assert text.count("mountStandalone") == 2
    page = offline_page
    page.goto(out.as_uri())
    page.wait_for_selector(READY)
    assert page.get_attribute(".fw-thumb.fw-selected", "data-index") == "2"
    check_blend_and_hover(page)
    page.screenshot(path=screenshots / "exported-notebook.png")
    assert page.blocked == [], f"the page tried the network: {page.blocked}"
    assert page.errors == []


def test_unexecuted_notebook_is_refused(tmp_path):
    path = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), path)
    with pytest.raises(ValueError, match="execute it first"):
        main(["export", str(path)])
