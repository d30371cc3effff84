"""Security: model files are never unpickled, the token-less JupyterLab launcher binds loopback
only, and every page famwidget writes carries a Content-Security-Policy that lets only its own
inline code run (the real-browser side is tests/test_security_browser.py)."""

from __future__ import annotations

import ast
import base64
import hashlib
import pathlib
import re

import nbformat
import pytest
import torch

import famwidget as fw
from famwidget.bench.jupyter import jupyterlab
from famwidget.dataset import cli as dataset_cli
from famwidget.dataset.specs import load_data, load_model, load_weights
from famwidget.widget import standalone

PACKAGE = pathlib.Path(fw.__file__).parent


class WritesAFile:
    """A pickle that, when unpickled, creates the file ``target`` (``open(target, "w")``)."""

    def __init__(self, target: pathlib.Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture
def malicious(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """``(file, target)``: a torch file whose unpickling would write ``target``."""
    target = tmp_path / "written-by-the-pickle.txt"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": WritesAFile(target)}, path)
    return path, target


def test_the_malicious_file_does_write_when_unpickled(malicious):
    """The control: an unrestricted unpickle of the file runs its code (so the tests below
    that it writes nothing check something real)."""
    path, target = malicious
    torch.load(path, weights_only=False).popitem()[1].close()
    assert target.exists()


def test_weights_file_with_a_pickle_is_refused_and_writes_nothing(malicious):
    path, target = malicious
    with pytest.raises(ValueError, match="holds Python objects other than tensors") as info:
        load_weights(path)
    assert "never unpickles code" in str(info.value) and "io.open" in str(info.value)
    assert "state_dict" in str(info.value)  # what is accepted
    with pytest.raises(ValueError, match="holds Python objects other than tensors"):
        load_model("zoo:flower_net", str(path))
    assert not target.exists()


def test_data_file_with_a_pickle_is_refused_and_writes_nothing(malicious):
    path, target = malicious
    with pytest.raises(ValueError, match="holds Python objects other than tensors"):
        load_data(str(path))
    assert not target.exists()


def test_a_pickle_named_safetensors_is_refused_and_writes_nothing(malicious):
    path, target = malicious
    renamed = path.with_suffix(".safetensors")
    path.rename(renamed)
    with pytest.raises(Exception, match="(?i)header|safetensor|deserializ"):
        load_weights(renamed)
    assert not target.exists()


def test_famwidget_explain_refuses_a_pickled_weights_file(malicious, tmp_path, capsys):
    path, target = malicious
    argv = ["--model", "zoo:flower_net", "--weights", str(path), "--data", "flowers:2"]
    code = dataset_cli.main([*argv, "--out", str(tmp_path / "out.zarr"), "--no-progress"])
    assert code == 1
    assert "holds Python objects other than tensors" in capsys.readouterr().err
    assert not target.exists() and not (tmp_path / "out.zarr").exists()


def test_no_loader_in_the_package_can_unpickle():
    """Every torch.load in famwidget passes weights_only=True; no pickle.load(s), no
    torch.jit.load, no numpy allow_pickle=True; the zoo loads .safetensors only."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{path.relative_to(PACKAGE)}:{node.lineno} {name}"
            if name.endswith("torch.load") or (name == "load" and "weights_only" in keywords):
                found.append(where)
                assert keywords.get("weights_only") == "True", f"{where} may unpickle"
            assert not re.fullmatch(r"(pickle|cPickle|dill|joblib)\.loads?", name), where
            assert name not in ("torch.jit.load", "torch.package.PackageImporter"), where
            assert keywords.get("allow_pickle") != "True", where
    assert found  # the one torch.load of the command line's weights and data files
    zoo = (PACKAGE / "zoo" / "__init__.py").read_text(encoding="utf-8")
    assert "safetensors" in zoo and "torch.load" not in zoo
    assert all(p.suffix == ".safetensors" for p in (PACKAGE / "zoo" / "weights").iterdir())


@pytest.mark.parametrize("ip", ["0.0.0.0", "::", "192.168.1.10", "localhost", ""])
def test_the_token_less_launcher_refuses_any_address_but_loopback(tmp_path, ip):
    with (
        pytest.raises(ValueError, match="binds 127.0.0.1 only") as info,
        jupyterlab(tmp_path, ip=ip),
    ):
        pass
    assert "no token or password" in str(info.value) and repr(ip) in str(info.value)
    assert not (tmp_path / "jupyter.log").exists()  # refused before anything started


def test_the_launcher_command_binds_loopback_only():
    source = (PACKAGE / "bench" / "jupyter.py").read_text(encoding="utf-8")
    assert source.count('"--ip=127.0.0.1"') == 1 and "--ip=0" not in source
    assert re.findall(r"--ip=[^\"]*", source) == ["--ip=127.0.0.1"]


def policy_of(text: str) -> tuple[str, dict[str, list[str]]]:
    """The page's CSP meta content and its directives; the meta must come before any script
    or style element (a policy applies to what follows it)."""
    meta = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert meta, "the page has a Content-Security-Policy meta"
    first_code = min(text.index(tag) for tag in ("<script", "<style") if tag in text)
    assert meta.start() < first_code
    content = meta.group(1).replace("&#x27;", "'")
    directives = {}
    for part in content.split(";"):
        name, *values = part.split()
        directives[name] = values
    return content, directives


def check_policy(text: str, directives: dict[str, list[str]]) -> str:
    """Only the page's own inline code: every executable script and every style carries the
    page's nonce, nothing may be fetched, images from data:/blob: only. Returns the nonce."""
    assert directives["default-src"] == ["'none'"]
    nonces = [v for v in directives["script-src"] if v.startswith("'nonce-")]
    assert len(nonces) == 1 and set(directives["script-src"]) == {nonces[0], "blob:"}
    nonce = nonces[0][len("'nonce-") : -1]
    assert len(nonce) >= 16
    assert directives["style-src"][0] == f"'nonce-{nonce}'"
    values = [v for vs in directives.values() for v in vs]
    assert "'unsafe-inline'" not in values and "'unsafe-eval'" not in values
    assert directives["img-src"] == ["data:", "blob:"]
    assert directives["base-uri"] == ["'none'"] and directives["form-action"] == ["'none'"]
    for name in directives:  # nothing may reach a server
        assert not any(v.startswith(("http", "'self'", "*")) for v in directives[name]), name
    data = r'<script type="(?:application/json|text/plain|text/x-mathjax-config)"[^>]*>.*?</script>'
    markup = re.sub(data, "", text, flags=re.S)  # data blocks (bundle, state): never run
    for tag in re.findall(r"<script\b[^>]*>", markup):
        assert f'nonce="{nonce}"' in tag, f"a script without the page's nonce: {tag}"
    for tag in re.findall(r"<style\b[^>]*>", markup):
        assert f'nonce="{nonce}"' in tag, f"a style without the page's nonce: {tag}"
    return nonce


def test_to_html_pages_carry_a_policy_of_their_own_inline_code(tiny_embedding, images, tmp_path):
    w = fw.Explorer(tiny_embedding, images, labels=["<script>alert(1)</script>", *"bcde"])
    w.select(0)
    first = w.to_html(tmp_path / "a.html").read_text(encoding="utf-8")
    second = w.to_html(tmp_path / "b.html").read_text(encoding="utf-8")
    w.close()
    nonces = []
    for text in (first, second):
        _, directives = policy_of(text)
        nonce = check_policy(text, directives)
        assert f'"nonce":"{nonce}"' in text  # handed to the widget for its <style>
        assert "<script>alert(1)</script>" not in text  # the label is data, not markup
        nonces.append(nonce)
    assert nonces[0] != nonces[1], "each page gets a fresh nonce"


def sha256_source(text: str) -> str:
    """A CSP hash source as the browser computes it for an attribute value."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def test_the_policy_allows_listed_style_attributes_by_hash_only():
    policy = standalone.content_security_policy("abc", ["color: red", "color: red", "top: 0"])
    styles = policy.split("style-src ")[1].split(";")[0].split()
    assert styles[:2] == ["'nonce-abc'", "'unsafe-hashes'"] and len(styles) == 4
    assert sha256_source("color: red") in styles and sha256_source("top: 0") in styles
    assert "unsafe-hashes" not in standalone.content_security_policy("abc")


def test_exported_notebooks_carry_the_policy(tmp_path, tiny_embedding, images):
    """``famwidget export``: the nbconvert page gets the policy; its styles get the nonce, its
    style attributes their hashes; the famwidget mount script runs, other inline scripts do not
    (a notebook's own <script> output is left in the page but blocked: the browser test)."""
    from famwidget.widget.export import export_notebook

    w = fw.Explorer(tiny_embedding, images)
    w.select(1)
    state = {k: getattr(w, k) for k in ("heatmap", "image", "view", "selected", "state")}
    buffers = [
        {"path": [k], "encoding": "base64", "data": base64.b64encode(state.pop(k)).decode()}
        for k in ("heatmap", "image")
    ]
    w.close()
    nb = nbformat.v4.new_notebook()
    html_out = '<b style="color: red">styled</b><script>window.pwned = 1</script>'
    nb.cells = [
        nbformat.v4.new_code_cell(
            "w",
            outputs=[
                nbformat.v4.new_output(
                    "display_data",
                    {"application/vnd.jupyter.widget-view+json": {"model_id": "m1"}},
                )
            ],
        ),
        nbformat.v4.new_code_cell(
            "HTML(...)", outputs=[nbformat.v4.new_output("display_data", {"text/html": html_out})]
        ),
    ]
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "state": {"m1": {"state": state, "buffers": buffers}}
        }
    }
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    text = export_notebook(path).read_text(encoding="utf-8")
    _, directives = policy_of(text)
    nonce = check_policy(text.replace("<script>window.pwned = 1</script>", ""), directives)
    assert "'unsafe-hashes'" in directives["style-src"]
    assert sha256_source("color: red") in directives["style-src"]
    assert text.count(f'type="module" nonce="{nonce}"') == 1
