"""``famwidget export NOTEBOOK.ipynb``: an executed notebook as one HTML file whose famwidget
views render with no kernel and no network.

Stock ``nbconvert --to html`` loads require.js, the widget manager and anywidget from the network,
so offline the widgets are blank. Here the notebook is converted without its widget state, each
famwidget output becomes a mount point, and the page carries the frontend bundle (this package's,
which also reads traits saved by earlier versions) and each widget's saved traits, with every
image stored once in a shared table: the last explanation, blending, colormaps and channel
inspection all work from the file. Scripts that would fetch from the network (math and diagram
renderers of the stock template) are left out; other widget libraries' outputs fall back to
their text or image representation. The page's Content-Security-Policy (``standalone.csp_meta``)
lets only famwidget's mount script and the page's ``<style>`` elements run or apply: any other
inline script (a notebook output's, the template's) is blocked.
"""

from __future__ import annotations

import base64
import copy
import html
import pathlib
import re
from typing import Any

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?</script>", re.S | re.I)
_URL = re.compile(r"""(src=["']|from\s+["']|import\s*\(\s*["'])https?://""", re.I)
_STYLE = re.compile(r"<style\b(?![^>]*\bnonce=)", re.I)
_HEAD = re.compile(r"<head\b[^>]*>", re.I)
_STYLE_ATTRIBUTE = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I)


def famwidget_states(nb: Any) -> dict[str, dict[str, Any]]:
    """Saved famwidget models of a notebook: model id → ``{traits, explanations}`` payload,
    binary traits as ``bytes`` (the saved base64 buffers, decoded)."""
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
                state[buffer["path"][0]] = base64.b64decode(buffer["data"])
        found[model_id] = {"traits": state, "explanations": {}}
    return found


def export_notebook(
    path: str | pathlib.Path, out: str | pathlib.Path | None = None
) -> pathlib.Path:
    """Write ``out`` (default: beside the notebook, ``.html``) and return its path.

    Every famwidget view's binary values go into one table of the page, each stored once
    (the same gallery shown by two widgets is in the page once)."""
    import nbformat
    from nbconvert import HTMLExporter

    from .standalone import Blobs, csp_meta, mount_point, mount_scripts, new_nonce, write_text

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
    saved_esm = [s["traits"].pop("_esm", None) for s in states.values()]  # the page has it once
    blobs = Blobs()
    models = {
        model_id: {
            "traits": {k: blobs.value(v) for k, v in payload["traits"].items()},
            "explanations": payload["explanations"],
        }
        for model_id, payload in states.items()
    }
    nonce = new_nonce()  # the page's own styles and mount script; nothing else runs
    body = _STYLE.sub(f'<style nonce="{nonce}"', body)
    head = _HEAD.search(body)
    at = head.end() if head else 0
    attributes = [html.unescape(a or b) for a, b in _STYLE_ATTRIBUTE.findall(body)]
    body = body[:at] + csp_meta(nonce, attributes) + body[at:]
    script = mount_scripts(_page_bundle(saved_esm), models, blobs, nonce)
    body = body.replace("</body>", script + "</body>") if "</body>" in body else body + script
    target = pathlib.Path(out) if out is not None else source.with_suffix(".html")
    return write_text(target, body)


def _page_bundle(saved: list[str | None]) -> str:
    """The frontend for the page: this package's bundle (it reads the page's shared image
    table, and the traits saved by earlier versions), else a saved one that reads the table."""
    from .explorer import bundle

    try:
        return bundle()
    except FileNotFoundError:
        usable = [esm for esm in saved if esm and "$blob" in esm]
        if not usable:
            raise
        return usable[0]
