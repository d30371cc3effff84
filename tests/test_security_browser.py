"""Security in a real browser (Debian's Chromium): exported pages work under their
Content-Security-Policy, a label's markup stays text, a script injected into the page does not
run; the token-less JupyterLab of the tests listens on 127.0.0.1 only."""

from __future__ import annotations

import base64
import pathlib
import urllib.parse

import nbformat
import pytest
from browser import READY, canvas_digest, click_thumb_and_wait, set_range
from test_standalone_browser import offline_page  # noqa: F401  (fixture)

import famwidget as fw
from famwidget.widget.export import export_notebook

pytestmark = pytest.mark.browser

LABELS = [
    "<script>window.pwned = 'label script'</script>",
    "<img src=x onerror=\"window.pwned = 'label img'\">",
    "</script><script>window.pwned = 'closed the state'</script>",
    "plain",
    "last",
]
WATCH = (
    "window.violations = [];"
    " document.addEventListener('securitypolicyviolation',"
    " e => window.violations.push(e.violatedDirective + ' ' + (e.sample || e.blockedURI)));"
)
INJECT = """() => {
  const s = document.createElement('script');  // markup an attacker got into the page
  s.textContent = "window.pwned = 'injected script'";
  document.body.append(s);
  const d = document.createElement('div');
  d.innerHTML = '<img src="data:," onerror="window.pwned = \\'injected handler\\'">';
  document.body.append(d);
}"""


def test_a_page_works_under_its_policy_and_runs_no_label_or_injected_script(
    offline_page,  # noqa: F811
    tiny_embedding,
    images,
    tmp_path,
    screenshots,
):
    page = offline_page
    page.add_init_script(WATCH)
    w = fw.Explorer(tiny_embedding, images, labels=LABELS)
    w.select(0)
    path = w.to_html(tmp_path / "labels.html", methods=["grad-fam", "score-fam"])
    w.close()
    page.goto(path.as_uri())
    page.wait_for_selector(READY)
    # the widget's own styles apply (its <style> carries the page's nonce)
    assert page.eval_on_selector(".fw-gallery", "e => getComputedStyle(e).overflowY") == "auto"
    captions = page.eval_on_selector_all(".fw-thumb-caption", "es => es.map(e => e.textContent)")
    assert captions == LABELS  # markup shown as text
    set_range(page, "input.fw-alpha", 1)
    before = canvas_digest(page)
    click_thumb_and_wait(page, 3)
    assert canvas_digest(page) != before, "a click shows another map under the policy"
    page.select_option("select.fw-method", "score-fam")
    page.wait_for_selector(READY)
    assert page.evaluate("window.violations") == [], "the page's own code was blocked"
    page.evaluate(INJECT)
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None, "a script ran"
    blocked = page.evaluate("window.violations")
    assert any(v.startswith("script-src-elem") for v in blocked), blocked
    assert any(v.startswith("script-src-attr") for v in blocked), blocked
    assert page.blocked == [] and page.errors == []
    page.screenshot(path=screenshots / "page-under-csp.png")


def test_an_exported_notebook_works_under_its_policy(
    offline_page,  # noqa: F811
    tiny_embedding,
    images,
    tmp_path,
):
    """A notebook's own <script> output is blocked; its styled HTML keeps its style; the
    famwidget view renders and reacts."""
    w = fw.Explorer(tiny_embedding, images, labels=LABELS)
    w.select(1)
    state = {k: getattr(w, k) for k in ("gallery", "thumbs", "heatmap", "image", "view")}
    state.update(selected=1, state="ready", method=w.method, methods=w.methods, layer=w.layer)
    buffers = [
        {"path": [k], "encoding": "base64", "data": base64.b64encode(state.pop(k)).decode()}
        for k in ("thumbs", "heatmap", "image")
    ]
    w.close()
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "m1"}}
    styled = '<b class="styled" style="color: rgb(255, 0, 0)">red</b>'
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("w", outputs=[nbformat.v4.new_output("display_data", view)]),
        nbformat.v4.new_code_cell(
            "HTML(...)",
            outputs=[
                nbformat.v4.new_output(
                    "display_data", {"text/html": styled + "<script>window.pwned = 1</script>"}
                )
            ],
        ),
    ]
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"m1": {"state": state, "buffers": buffers}}
        }
    }
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    out = export_notebook(path)
    page = offline_page
    page.add_init_script(WATCH)
    page.goto(out.as_uri())
    page.wait_for_selector(READY)
    assert page.get_attribute(".fw-thumb.fw-selected", "data-index") == "1"
    assert canvas_digest(page)
    color = page.eval_on_selector("b.styled", "e => getComputedStyle(e).color")
    assert color == "rgb(255, 0, 0)", "the output's style attribute applies (by its hash)"
    assert page.evaluate("window.pwned") is None, "the notebook's inline script ran"
    blocked = page.evaluate("window.violations")
    assert blocked and all(v.startswith("script-src-elem") for v in blocked), blocked
    assert page.blocked == [] and page.errors == []


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket in LISTEN state on ``port`` (/proc/net/tcp, tcp6)."""
    found = set()
    for name in ("tcp", "tcp6"):
        table = pathlib.Path("/proc/net") / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, local_port = fields[1].split(":")
            if fields[3] == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(".".join(str(b) for b in raw[::-1]))
                else:
                    found.add(raw.hex())
    return found


def test_the_token_less_jupyterlab_listens_on_loopback_only(jupyter_server):
    port = urllib.parse.urlparse(jupyter_server).port
    assert listening_addresses(port) == {"127.0.0.1"}
