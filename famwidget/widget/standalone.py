"""Standalone pages: one HTML file with the bundle inlined and the widget's state embedded.

The page loads the bundle from a Blob URL (as anywidget does) and mounts it on a stand-in model
(``js/standalone.js``) that serves the embedded traits and the precomputed explanations of every
thumbnail. No kernel, no network: the file works from disk, in any modern browser.
"""

from __future__ import annotations

import base64
import html
import json
import os
import pathlib
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .explorer import Explorer

#: the synced traits a page embeds (everything the frontend reads)
TRAITS = (
    "thumbs",
    "gallery",
    "selected",
    "image",
    "heatmap",
    "view",
    "channels",
    "channel_info",
    "points",
    "state",
    "error",
    "progress",
    "alpha",
    "colormap",
    "threshold",
    "side_by_side",
    "method",
    "methods",
    "layer",
    "layers",
)
#: traits only some widgets have (ReIDExplorer's pair view)
EXTRA_TRAITS = ("pair", "pair_image", "pair_heatmap", "pair_target")


def _json_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no "</" sequence)."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def page_payload(widget: Explorer, methods: list[str]) -> dict[str, Any]:
    """Traits plus every thumbnail's explanation for ``methods`` at the current layer."""
    explanations: dict[str, Any] = {}
    n = widget.gallery.get("n", 0)
    for method in methods:
        for variant in widget._variants():
            for index in range(n):
                key = (index, method, widget.layer, *variant)
                payload, _ = widget._explained(key, stream=False)
                name = "|".join(map(str, [method, widget.layer, index, *variant]))
                explanations[name] = {k: _json_value(v) for k, v in payload.items()}
    names = [*TRAITS, *(n for n in EXTRA_TRAITS if widget.has_trait(n))]
    traits = {name: _json_value(getattr(widget, name)) for name in names}
    traits["methods"] = list(dict.fromkeys([widget.method, *methods]))
    traits["layers"] = [widget.layer]  # the page holds explanations at this layer only
    if traits["state"] == "computing":
        traits["state"] = "ready" if widget.explanation is not None else "idle"
    return {"traits": traits, "explanations": explanations}


MOUNT = """
<script type="text/plain" id="fw-bundle">{bundle}</script>
<script type="application/json" id="fw-states">{states}</script>
<script type="module">
const source = document.getElementById("fw-bundle").textContent;
const url = URL.createObjectURL(new Blob([source], {{ type: "text/javascript" }}));
const widget = await import(url);
const states = JSON.parse(document.getElementById("fw-states").textContent);
for (const el of document.querySelectorAll(".fw-export[data-model]")) {{
  const payload = states[el.dataset.model];
  if (payload) {{ el.replaceChildren(); widget.mountStandalone(el, payload); }}
}}
</script>
"""


def mount_point(model_id: str) -> str:
    """The element a page's widget ``model_id`` renders into (text shown without JavaScript)."""
    return (
        f'<div class="fw-export" data-model="{html.escape(model_id)}">'
        "famwidget view (needs JavaScript)</div>"
    )


def mount_scripts(bundle_source: str, states: dict[str, Any]) -> str:
    """The bundle (loaded from a Blob URL) and the states that fill every mount point."""
    return MOUNT.format(bundle=bundle_source.replace("</", "<\\/"), states=_script_json(states))


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body {{ margin: 24px; background: #fff; }} .fw-page-note {{ font: 13px system-ui,
sans-serif; color: #656d76; max-width: 860px; }}</style>
</head>
<body>
{mount}
<p class="fw-page-note">{note}</p>
{scripts}
</body>
</html>
"""


def write_page(
    widget: Explorer,
    path: pathlib.Path,
    methods: list[str],
    title: str = "famwidget",
    note: str = "",
) -> pathlib.Path:
    """Write the standalone page atomically (a temporary file renamed into place)."""
    from .explorer import bundle

    for method in methods:
        if method not in widget.methods:
            raise ValueError(f"method {method!r} is not offered by this Explorer: {widget.methods}")
    text = PAGE.format(
        title=html.escape(title),
        note=html.escape(note or "Made with famwidget: this page works offline, with no kernel."),
        mount=mount_point("page"),
        scripts=mount_scripts(bundle(), {"page": page_payload(widget, methods)}),
    )
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".famwidget-", suffix=".html")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
