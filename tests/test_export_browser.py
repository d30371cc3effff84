"""`famwidget export`: an executed notebook becomes an HTML page whose widgets work offline."""

from __future__ import annotations

import json
import os
import shutil
import time

import nbformat
import pytest
from browser import READY, canvas_digest, check_blend_and_hover
from nbclient import NotebookClient
from test_standalone_browser import offline_page  # noqa: F401  (fixture)

from famwidget.bench.jupyter import jupyterlab, run_all, wait_for_kernel
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


def _reopen(page, server: str, root, name: str, nb, trusted: bool) -> None:
    """Put ``nb`` in the server's folder as ``name`` (signed if ``trusted``: as a notebook the
    user saved) and open it in JupyterLab; the kernel that starts never ran its cells."""
    from nbformat.sign import NotebookNotary

    if trusted:
        NotebookNotary().sign(nb)
    nbformat.write(nb, root / name)
    page.goto(f"{server}/lab/tree/{name}?reset")  # ?reset: no restored tabs of other tests
    page.wait_for_selector(".jp-OutputArea-output", timeout=120_000)


@pytest.mark.browser
def test_reopened_notebook_shows_the_saved_view(executed, page, jupyter_server, jupyter_root):
    """A notebook saved with its widget state (JupyterLab with saveState on, nbclient, nbconvert
    --execute) reopens with the saved view: thumbnails, the explained image, the caption."""
    nb = nbformat.read(executed, as_version=4)
    _reopen(page, jupyter_server, jupyter_root, "reopen-saved.ipynb", nb, trusted=True)
    page.wait_for_selector(READY, timeout=60_000)
    assert page.get_attribute(".fw-thumb.fw-selected", "data-index") == "2"
    assert page.eval_on_selector("canvas.fw-view", "c => [c.width, c.height]") == [32, 32]
    assert canvas_digest(page)  # the saved image and map are drawn
    assert page.eval_on_selector(".fw-caption", "e => e.textContent.trim().length") > 0
    assert "model not found" not in page.inner_text(".jp-OutputArea-output")


@pytest.mark.browser
def test_untrusted_notebook_shows_the_png_fallback(executed, page, jupyter_server, jupyter_root):
    """Where the widget cannot render (an untrusted notebook, a viewer with no widget manager)
    the output's image/png shows the explained view."""
    nb = nbformat.read(executed, as_version=4)
    data = nb.cells[0].outputs[0]["data"]
    assert {"image/png", "text/plain"} <= set(data), "the fallbacks are in the output"
    nb.cells.append(nbformat.v4.new_markdown_cell("not signed"))  # trust follows the content
    _reopen(page, jupyter_server, jupyter_root, "reopen-untrusted.ipynb", nb, trusted=False)
    image = page.wait_for_selector(".jp-OutputArea-output img", timeout=60_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 1", arg=image)
    assert page.locator(".famwidget").count() == 0
    assert "Error displaying widget" not in page.inner_text(".jp-OutputArea-output")


@pytest.fixture
def save_state_lab(tmp_path, monkeypatch):
    """A JupyterLab of its own whose widget manager saves widget state with the notebook
    (Settings > Save Widget State Automatically: ``saveState`` of
    ``@jupyter-widgets/jupyterlab-manager:plugin``; off by default)."""
    settings = tmp_path / "settings"
    manager = settings / "@jupyter-widgets" / "jupyterlab-manager"
    manager.mkdir(parents=True)
    (manager / "plugin.jupyterlab-settings").write_text(json.dumps({"saveState": True}))
    news = settings / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(settings))
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CODE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, root / "roundtrip.ipynb")
    with jupyterlab(root) as url:
        yield url, root


@pytest.mark.browser
@pytest.mark.slow
def test_jupyterlab_saves_the_state_and_reopens_the_view(save_state_lab, page, browser):
    """Run, save in JupyterLab with saveState on, reopen with a fresh kernel: the saved view
    (not "Error displaying widget: model not found")."""
    url, root = save_state_lab
    page.set_default_timeout(120_000)
    page.goto(f"{url}/lab/tree/roundtrip.ipynb?reset")
    wait_for_kernel(page)
    run_all(page)
    page.wait_for_selector(READY)
    page.click(".jp-NotebookPanel-toolbar [data-command='docmanager:save']")
    saved: dict = {}
    for _ in range(60):
        saved = famwidget_states(nbformat.read(root / "roundtrip.ipynb", as_version=4))
        if saved:
            break
        time.sleep(0.5)
    assert len(saved) == 1, "JupyterLab saved the widget state with the notebook"
    traits = next(iter(saved.values()))["traits"]
    assert "mountStandalone" in traits["_esm"], "the anywidget ESM is in the saved state"
    assert traits["selected"] == 2 and traits["heatmap"]
    shutil.copy(root / "roundtrip.ipynb", root / "reopened.ipynb")  # a new session, new kernel
    fresh = browser.new_page()
    try:
        fresh.goto(f"{url}/lab/tree/reopened.ipynb?reset")
        fresh.wait_for_selector(READY, timeout=120_000)
        assert fresh.get_attribute(".fw-thumb.fw-selected", "data-index") == "2"
        assert canvas_digest(fresh)
        assert "model not found" not in fresh.inner_text(".jp-OutputArea-output")
    finally:
        fresh.close()
