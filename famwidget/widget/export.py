"""``famwidget export NOTEBOOK.ipynb``: an executed notebook as one HTML file whose famwidget
views render with no kernel and no network.

Stock ``nbconvert --to html`` loads require.js, the widget manager and anywidget from the network,
so offline the widgets are blank. Here the notebook is converted without its widget state, each
famwidget output becomes a mount point, and the page carries the frontend bundle (the one saved in
the notebook) and each widget's saved traits: the last explanation, blending, colormaps and
channel inspection all work from the file. Scripts that would fetch from the network (math and
diagram renderers of the stock template) are left out; other widget libraries' outputs fall back
to their text or image representation.
"""

from __future__ import annotations

import copy
import pathlib
import re
from typing import Any

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?</script>", re.S | re.I)
_URL = re.compile(r"""(src=["']|from\s+["']|import\s*\(\s*["'])https?://""", re.I)


def famwidget_states(nb: Any) -> dict[str, dict[str, Any]]:
    """Saved famwidget models of a notebook: model id → ``{traits, explanations}`` payload."""
    saved = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    found = {}
    for model_id, entry in saved.items():
        state = dict(entry.get("state", {}))
        if "heatmap" not in state and not any(
            b.get("path", [None])[0] == "heatmap" for b in entry.get("buffers", [])
        ):
            continue
        for buffer in entry.get("buffers", []):
            if buffer.get("encoding") == "base64" and len(buffer.get("path", [])) == 1:
                state[buffer["path"][0]] = {"$bytes": buffer["data"]}
        found[model_id] = {"traits": state, "explanations": {}}
    return found


def export_notebook(
    path: str | pathlib.Path, out: str | pathlib.Path | None = None
) -> pathlib.Path:
    """Write ``out`` (default: beside the notebook, ``.html``) and return its path."""
    import nbformat
    from nbconvert import HTMLExporter

    from .explorer import bundle as package_bundle
    from .standalone import mount_point, mount_scripts

    source = pathlib.Path(path)
    nb = nbformat.read(source, as_version=4)
    states = famwidget_states(nb)
    if not states:
        raise ValueError(
            f"{source} holds no saved famwidget state: execute it first (Jupyter saves widget "
            "state with the notebook; nbclient or `jupyter nbconvert --execute` do too)"
        )
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            model_id = data.get(WIDGET_VIEW, {}).get("model_id")
            if model_id in states:
                data.pop(WIDGET_VIEW)
                data["text/html"] = mount_point(model_id)
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    body = _REMOTE_SCRIPT.sub(lambda m: "" if _URL.search(m.group(0)) else m.group(0), body)
    saved_esm = next((s["traits"].get("_esm") for s in states.values()), None)
    script = mount_scripts(saved_esm or package_bundle(), states)
    body = body.replace("</body>", script + "</body>") if "</body>" in body else body + script
    target = pathlib.Path(out) if out is not None else source.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target
