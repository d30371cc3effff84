"""Standalone pages: one HTML file with the bundle inlined and the widget's state embedded.

The page loads the bundle from a Blob URL (as anywidget does) and mounts it on a stand-in model
(``js/standalone.js``) that serves the embedded traits and the precomputed explanations of every
thumbnail. No kernel, no network: the file works from disk, in any modern browser.

Binary values (images, maps, channel stacks) are stored once per page, in a table of base64
strings (:class:`Blobs`) that every view refers to as ``{"$blob": id}``: the image a gallery
entry shows under each method and pair view is in the file once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import os
import pathlib
import secrets
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .explorer import Explorer


def page_traits(widget: Explorer) -> list[str]:
    """The synced traits a page embeds: every one the widget's class declares, except
    anywidget's own (layout, view names, ...) and private ones (``_esm``: the page has the
    bundle). Derived from the class, so a trait added to the Explorer is embedded too."""
    import anywidget

    base = set(anywidget.AnyWidget.class_trait_names(sync=True))
    return sorted(n for n in widget.trait_names(sync=True) if n not in base and n[0] != "_")


class Blobs:
    """A page's table of binary values (images, maps, channel stacks), each stored once.

    ``ref(data)`` stores ``data`` (base64) the first time it is seen and returns the reference
    ``{"$blob": id}`` that views embed in its place; the same bytes always get the same id, so
    an image shown by every method and pair view is in the page once.
    """

    def __init__(self) -> None:
        self.table: list[str] = []
        self._ids: dict[bytes, int] = {}
        self.inlined = 0
        """Base64 characters the page would hold if every reference embedded its bytes."""

    def ref(self, data: bytes) -> dict[str, int]:
        digest = hashlib.sha256(data).digest()
        if digest not in self._ids:
            self._ids[digest] = len(self.table)
            self.table.append(base64.b64encode(data).decode("ascii"))
        blob = self._ids[digest]
        self.inlined += len(self.table[blob])
        return {"$blob": blob}

    def value(self, value: Any) -> Any:
        """A trait value for the page: bytes become a reference, anything else stays."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.ref(bytes(value))
        return value

    def stored(self) -> int:
        """Base64 characters the table holds."""
        return sum(map(len, self.table))


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no "</" sequence)."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def page_payload(widget: Explorer, methods: list[str], blobs: Blobs) -> dict[str, Any]:
    """Traits plus every thumbnail's explanation for ``methods`` at the current layer; binary
    values go into ``blobs`` (the page's shared table) and are referenced by id."""
    explanations: dict[str, Any] = {}
    n = widget.gallery.get("n", 0)
    for method in methods:
        for variant in widget._variants():
            for index in range(n):
                key = (index, method, widget.layer, *variant)
                payload, _ = widget._explained(key, stream=False)
                name = "|".join(map(str, [method, widget.layer, index, *variant]))
                explanations[name] = {k: blobs.value(v) for k, v in payload.items()}
    explanations.update(widget._map_page_pairs(methods, blobs.value))  # neighbour pair views
    traits = {name: blobs.value(getattr(widget, name)) for name in page_traits(widget)}
    traits["methods"] = list(dict.fromkeys([widget.method, *methods]))
    traits["layers"] = [widget.layer]  # the page holds explanations at this layer only
    if widget.gallery.get("paged"):  # no kernel to ask for pages: every thumbnail, once
        traits["thumbs"] = blobs.ref(widget._thumbs.all_bytes())
        traits["gallery"] = {**widget.gallery, "paged": False}
    if traits["state"] == "computing":
        traits["state"] = "ready" if widget.explanation is not None else "idle"
    return {"traits": traits, "explanations": explanations}


MOUNT = """
<script type="text/plain" id="fw-bundle">{bundle}</script>
<script type="application/json" id="fw-states">{states}</script>
<script type="module" nonce="{nonce}">
const source = document.getElementById("fw-bundle").textContent;
const url = URL.createObjectURL(new Blob([source], {{ type: "text/javascript" }}));
const widget = await import(url);
const page = JSON.parse(document.getElementById("fw-states").textContent);
for (const el of document.querySelectorAll(".fw-export[data-model]")) {{
  const payload = page.models[el.dataset.model];
  if (!payload) continue;
  el.replaceChildren();
  widget.mountStandalone(el, {{ ...payload, blobs: page.blobs, nonce: page.nonce }});
}}
</script>
"""


def mount_point(model_id: str) -> str:
    """The element a page's widget ``model_id`` renders into (text shown without JavaScript)."""
    return (
        f'<div class="fw-export" data-model="{html.escape(model_id)}">'
        "famwidget view (needs JavaScript)</div>"
    )


def mount_scripts(bundle_source: str, models: dict[str, Any], blobs: Blobs, nonce: str = "") -> str:
    """The bundle (loaded from a Blob URL) and the page's state: ``{"blobs": [base64, ...],
    "models": {model id: {traits, explanations}}, "nonce": ...}``, whose binary values are
    ``{"$blob": id}`` references into the one shared table. ``nonce`` (:func:`new_nonce`) marks
    the page's own inline code for its Content-Security-Policy (:func:`csp_meta`)."""
    states = {"blobs": blobs.table, "models": models, "nonce": nonce}
    return MOUNT.format(
        bundle=bundle_source.replace("</", "<\\/"), states=_script_json(states), nonce=nonce
    )


def new_nonce() -> str:
    """A fresh random nonce for one page (128 bits, URL-safe base64)."""
    return secrets.token_urlsafe(16)


def content_security_policy(nonce: str, style_attributes: Iterable[str] = ()) -> str:
    """The policy of every page famwidget writes: nothing is loaded from anywhere, only the
    page's own inline code runs (the script and styles marked with ``nonce``; the bundle that
    script imports from a Blob URL), images come from ``data:``/``blob:`` only. A ``<script>``
    in a label, or any other markup that is not the page's own, cannot run.
    ``style_attributes``: the values of ``style="..."`` attributes the page has (an exported
    notebook's outputs), allowed by their hashes."""
    hashes = sorted({_sha256(value) for value in style_attributes})
    styles = " ".join([f"'nonce-{nonce}'", *(["'unsafe-hashes'"] if hashes else []), *hashes])
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}' blob:; style-src {styles}; "
        "img-src data: blob:; font-src data:; base-uri 'none'; form-action 'none'"
    )


def _sha256(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def csp_meta(nonce: str, style_attributes: Iterable[str] = ()) -> str:
    """The ``<meta http-equiv="Content-Security-Policy">`` element of a page (first in head)."""
    policy = html.escape(content_security_policy(nonce, style_attributes))
    return f'<meta http-equiv="Content-Security-Policy" content="{policy}">'


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
{csp}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style nonce="{nonce}">
body {{ margin: 24px; background: #fff; }} .fw-page-note {{ font: 13px system-ui,
sans-serif; color: #656d76; max-width: 860px; }}</style>
</head>
<body>
{mount}
<p class="fw-page-note">{note}</p>
{scripts}
</body>
</html>
"""


def page_html(
    widget: Explorer, methods: list[str], title: str = "famwidget", note: str = ""
) -> tuple[str, Blobs]:
    """The standalone page's text, and its table of binary values (``Blobs.inlined`` says
    how large the page would be with every image embedded again in every view)."""
    from .explorer import bundle

    for method in methods:
        if method not in widget.methods:
            raise ValueError(f"method {method!r} is not offered by this Explorer: {widget.methods}")
    blobs = Blobs()
    models = {"page": page_payload(widget, methods, blobs)}
    nonce = new_nonce()
    text = PAGE.format(
        csp=csp_meta(nonce),
        nonce=nonce,
        title=html.escape(title),
        note=html.escape(note or "Made with famwidget: this page works offline, with no kernel."),
        mount=mount_point("page"),
        scripts=mount_scripts(bundle(), models, blobs, nonce),
    )
    return text, blobs


def write_page(
    widget: Explorer,
    path: pathlib.Path,
    methods: list[str],
    title: str = "famwidget",
    note: str = "",
) -> pathlib.Path:
    """Write the standalone page (atomically, with the permissions of a normal file)."""
    text, _ = page_html(widget, methods, title=title, note=note)
    return write_text(pathlib.Path(path), text)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: pathlib.Path, text: str) -> pathlib.Path:
    """Write ``text`` to ``path`` atomically (a temporary file renamed into place), with the
    mode a plain ``open(path, "w")`` gives: ``0o666`` less the umask (``0o644`` typically;
    the temporary file alone would be ``0o600``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".famwidget-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def page_sizes(path: str | pathlib.Path) -> dict[str, int]:
    """Bytes of a written page, of its shared table, and of the page had every view embedded
    its own copy of each image (what pages held before the table): measured from the file."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    start = text.index('id="fw-states">') + len('id="fw-states">')
    state = json.loads(text[start : text.index("</script>", start)].replace("<\\/", "</"))
    table = state["blobs"]
    counts = [0] * len(table)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if set(value) == {"$blob"}:
                counts[value["$blob"]] += 1
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(state["models"])
    size = len(text.encode("utf-8"))
    inline = sum(n * (len(b) + len('{"$bytes":""}')) for n, b in zip(counts, table, strict=True))
    refs = sum(n * len(f'{{"$blob":{i}}}') for i, n in enumerate(counts))
    listed = len(json.dumps(table, separators=(",", ":"))) + len('"blobs":,')
    without = size + inline - refs - listed
    return {"bytes": size, "table": sum(map(len, table)), "without_table": without}
