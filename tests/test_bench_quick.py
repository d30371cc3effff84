"""The commands behind the README's numbers run in CI, at small sizes, as a user runs them:
``famwidget evaluate`` as a subprocess finishes and prints a table with every row and column,
the same rows as its CSV, and every ``famwidget bench --only NAME --smoke`` finishes and prints
its tables with every row and column. Nothing here checks a timing."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest

from famwidget import evaluate as ev
from famwidget.bench import BENCHMARKS

N = 2
CASES = ("flowers", "reid")  # a classifier and an embedding net
METHODS = ("grad-fam", "grad-cam", "score-fam", "score-cam", "fixations")  # vebi: its own test
TEXT_COLUMNS = ("case", "method", "precision", "options")


def run(*args: str, timeout: float = 280) -> str:
    """``python -m famwidget ARGS`` on one thread; its stdout (a failure shows stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAMWIDGET_MAX_SECONDS": "86400"}
    done = subprocess.run(
        [sys.executable, "-m", "famwidget", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, f"famwidget {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def parse_table(text: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the fixed-width table under ``title`` in ``text``."""
    lines = text.splitlines()
    assert title in lines, f"no table titled {title!r} in:\n{text[-2000:]}"
    start = lines.index(title)
    rule = lines[start + 2]
    assert set(rule.replace(" ", "")) == {"-"}, "a rule under the header"
    spans = [m.span() for m in re.finditer(r"-+", rule)]  # each column's width

    def cells(line: str) -> list[str]:
        assert len(line) <= len(rule), f"a row wider than the table: {line!r}"
        return [line[a:b].strip() for a, b in spans]

    rows = []
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        rows.append(cells(line))
    return cells(lines[start + 1]), rows


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[str, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("evaluation")
    text = run(
        "evaluate", "-n", str(N), "--cases", *CASES, "--methods", *METHODS, "--steps", "4",
        "--randomisation-images", "1", "--batch", str(N), "--out", str(out),
    )  # fmt: skip
    csv_files = sorted(out.glob("*.csv"))
    assert csv_files, f"no CSV under {out}"
    with csv_files[0].open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(ev.COLUMNS), "the CSV has every column, in order"
        rows = list(reader)
    return text, rows


def test_evaluate_prints_every_row_and_column(evaluated):
    """The printed table: one row per CSV row, every column that has a value, each cell the
    CSV's number as printed (3 decimals) or '-' where the CSV has none."""
    text, rows = evaluated
    header, printed = parse_table(text, f"famwidget evaluate: n={N} images per case")
    present = [k for k in ev.COLUMNS if any(r[k] != "" for r in rows)]
    assert header == [ev.HEADERS.get(k, k) for k in present]
    for key in ("deletion_auc", "insertion_auc", "avg_drop", "pointing_game", "mass_in_mask"):
        assert key in present, f"the table has no {key} column"
    assert [(r[0], r[1]) for r in printed] == [(r["case"], r["method"]) for r in rows]
    for cells, row in zip(printed, rows, strict=True):
        for key, cell in zip(present, cells, strict=True):
            if key in TEXT_COLUMNS:
                assert cell == row[key]
            elif row[key] == "":
                assert cell == "-", f"{row['method']} {key}: {cell!r} for no value"
            else:
                decimals = len(cell.partition(".")[2])  # the cell is rounded to these
                assert abs(float(cell) - float(row[key])) <= 0.5001 * 10.0**-decimals, (
                    f"{row['case']} {row['method']} {key}: printed {cell}, saved {row[key]}"
                )


def test_evaluate_has_every_method_and_the_random_reference(evaluated):
    _, rows = evaluated
    for case in CASES:
        names = [r["method"] for r in rows if r["case"] == case]
        assert names[-1] == "(random)", f"{case}: the chance level closes the rows"
        assert len(names) >= 4 and set(names[:-1]) <= set(METHODS), f"{case}: {names}"
    assert {r["method"] for r in rows} >= {"grad-fam", "grad-cam", "score-fam", "fixations"}
    for row in rows:
        assert int(row["n"]) == N
        for key in ("deletion_auc", "insertion_auc", "mass_in_mask", "mask_area"):
            value = float(row[key])  # every method and the random reference have these
            assert 0 <= value <= 1, f"{row['case']} {row['method']} {key} = {value}"
        if row["method"] != "(random)":
            for key in ("randomisation_corr", "s_per_image", "peak_mb"):  # numeric, no bound
                assert math.isfinite(float(row[key])), f"{row['method']} {key}: {row[key]!r}"


# ------------------------------------------------------------ famwidget bench --smoke

NUM = r"-?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?"  # a number as print_table writes it (3 digits)
INT = r"-?\d+"
TEXT = r".+"
SPREAD = rf"{NUM} s ±\d+%"
RATIO = rf"{NUM}x"


def grid(text: str, headers: list[str]) -> list[list[str]]:
    """The rows of the :func:`famwidget.bench.print_table` table whose header matches the
    regular expressions ``headers``: its columns start where the header's names start, and the
    table ends at the first blank line."""
    lines = text.splitlines()

    def matches(line: str) -> bool:
        names = re.split(r"\s{2,}", line.strip())
        return len(names) == len(headers) and all(
            re.fullmatch(h, n) for h, n in zip(headers, names, strict=True)
        )

    found = [k for k, line in enumerate(lines) if matches(line)]
    assert found, f"no table with the columns {headers} in:\n{text[-3000:]}"
    k = found[0]
    line = lines[k]
    names = re.split(r"\s{2,}", line.strip())
    starts, at = [], 0
    for name in names:
        at = line.index(name, at)
        starts.append(at)
        at += len(name)
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    rows = []
    for row in lines[k + 1 :]:
        if not row.strip():
            break
        rows.append([row[a:b].strip() for a, b in bounds])
    return rows


def check_table(text: str, headers: list[str], kinds: list[str], keys: list[tuple[str, ...]]):
    """The table has exactly the rows ``keys`` (its first cells, in any order), each cell of
    column ``i`` matching the regular expression ``kinds[i]``; returns the rows by key."""
    rows = grid(text, headers)
    width = len(keys[0])
    found = [tuple(r[:width]) for r in rows]
    assert sorted(found) == sorted(keys), f"rows {found}, expected {keys}"
    for row in rows:
        for header, kind, cell in zip(headers, kinds, row, strict=True):
            assert re.fullmatch(kind, cell), f"{row[:width]} {header}: {cell!r} is not {kind}"
    return {tuple(r[:width]): r for r in rows}


def last_json(text: str) -> dict:
    """The JSON object on the last line that holds one."""
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON line in:\n{text[-2000:]}"
    return json.loads(lines[-1])


def smoke_scorefam(text: str) -> None:
    headers = ["precision", "memory format", "batch", "images/s"]
    # fp32 always; bf16 where the machine runs it natively (then with every row)
    precisions = ["fp32"] + ["bf16"] * any(r[0] == "bf16" for r in grid(text, headers))
    check_table(
        text, headers, [TEXT, TEXT, INT, NUM],
        [(p, layout, b) for p in precisions for layout in ("contiguous", "cl-input")
         for b in ("1", "2")],
    )  # fmt: skip
    runs = [(p, "channels_last") for p in precisions]
    check_table(
        text,
        ["precision", "input", "batch", "s/image", "forwards/image", "forwards/s",
         "limit s/image", "ratio"],
        [TEXT, TEXT, INT, NUM, NUM, NUM, NUM, NUM],
        runs,
    )  # fmt: skip
    best = "|".join(precisions)  # the fastest configuration measured: bf16 where it runs natively
    assert re.search(rf"limit: K=512 plain forwards at the best configuration \(({best})", text)
    if "bf16" in precisions:  # the agreement table comes with a bf16 run
        check_table(text, ["image", r"pearson\(fp32, bf16\)"], [TEXT, NUM], [("0",), ("min",)])
    else:
        assert "pearson(fp32, bf16)" not in text


def smoke_fixations(text: str) -> None:
    models = ("resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16")
    check_table(
        text,
        ["model", "device", "forward ms/image", "fixations ms/image", "fixations / forward",
         "goal"],
        [TEXT, "cpu", NUM, NUM, NUM, "< 3"],
        [(m,) for m in models],
    )  # fmt: skip
    zoo = {"flower_net single": "Predicted()", "flower_net double": "Predicted()",
           "ssl_net": "Embedding()", "reid_net": "Embedding()"}  # fmt: skip
    rows = check_table(
        text,
        ["model", "target", "loc", "mass in parts", "pointing", "fixations in"],
        [TEXT, TEXT, TEXT, NUM, NUM, NUM],
        [(m, t, loc) for m, t in zoo.items() for loc in ("center", "argmax")],
    )
    for row in rows.values():  # shares of mass, images and points: within [0, 1]
        assert all(0 <= float(v) <= 1 for v in row[3:]), row


def smoke_widget(text: str) -> None:
    check_table(
        text,
        ["Score-FAM, one image", r"s \(median\)", "vs fw.explain", "range"],
        [TEXT, NUM, r"\d+\.\d\dx", rf"{NUM}-{NUM}"],
        [("fw.explain (main thread)",), ("fw.explain + on_progress",),
         ("fw.explain in a thread",), ("Explorer.select (worker, streaming)",)],
    )  # fmt: skip
    check_table(
        text,
        ["Score-FAM in JupyterLab", r"s \(median\)", "vs fw.explain", "range"],
        [TEXT, NUM, r"\d+\.\d\dx", rf"{NUM}-{NUM}"],
        [("fw.explain in a cell",), ("click → final map on screen",)],
    )  # fmt: skip
    for phase in ("library", "click"):  # the CPU seconds of each process were read
        line = re.search(rf"CPU seconds per round, {phase}: (.+)", text)
        assert line and {"chromium", "kernel"} <= set(re.findall(r"[a-z]+", line[1])), phase
    measures = [
        "100-image gallery: first paint (ms)", "scroll: work per frame (ms, p95)",
        "scroll: frame interval (ms, p95)", "thumbnails in the DOM at most",
        "click → Grad-FAM on screen, new (ms, median)",
        "4-image gallery: click → heatmap, new (ms, median)", "click → heatmap, new (ms, max)",
        "click → heatmap, cached (ms, median)", "hover → repaint (ms, p95)",
        "hover → repaint (ms, median)", "largest message kernel → page (bytes)",
        "largest message page → kernel (bytes)",
        "bytes per explanation (image + heatmap + channels)", "bundle (KB, minified)",
        "demo page (bytes, each image stored once)",
        "demo page (bytes, every view embedding its images)",
    ]  # fmt: skip
    check_table(text, ["measure", "value", "goal"], [TEXT, NUM, r"(< .+|bounded)?"],
                [(m,) for m in measures])  # fmt: skip
    found = last_json(text)
    assert found["messages"] > 0 and found["wire_bytes"]["total"] > 0, found
    assert found["demo_page"]["bytes"] > 0, found


def smoke_embedding(text: str) -> None:
    check_table(
        text,
        ["points", "dim", r"PCA s \(median of 1\)", "neighbour query ms", "map bytes",
         "bytes/point"],
        ["1000", "512", NUM, NUM, INT, NUM],
        [("1000",)],
    )  # fmt: skip
    check_table(
        text,
        ["page", r"first draw ms \(in page\)", r"goto \+ draw ms \(wall\)"],
        [TEXT, NUM, NUM],
        [("load 1",), ("load 2",), ("load 3",)],
    )
    check_table(
        text,
        ["frame", "p50 ms", "p95 ms", "max ms"],
        [TEXT, NUM, NUM, NUM],
        [("pan",), ("zoom",), ("pan, rAF interval",)],
    )
    assert last_json(text)["points_drawn"] == 1000


def smoke_scorefam_budget(text: str) -> None:
    peers = [t for t, m in (("pytorch-grad-cam", "pytorch_grad_cam"), ("torchcam", "torchcam"))
             if importlib.util.find_spec(m) is not None]  # fmt: skip
    budgets = ("exact", "2", "4", "8", "16", "32", "64")
    keys = [(rule, b) for rule in ("softmax", "relu-baseline") for b in budgets]
    rows = check_table(
        text,
        ["weights", "budget", "forwards", "seconds", "vs exact", "vs faster peer",
         r"r to exact \(min / median\)", "deletion AUC", "change"],
        [TEXT, TEXT, rf"{INT}|-", SPREAD, rf"{RATIO}|-", rf"{RATIO}|-",
         rf"{NUM} / {NUM}|-", rf"{NUM}|-", rf"[+-]{NUM}|-"],
        keys + [("softmax", f"{p} (exact)") for p in peers],
    )  # fmt: skip
    for key in keys:  # famwidget's own rows have every figure; only the peers' have '-'
        row = rows[key]
        assert "-" not in row[2:] and (row[5] != "-") == bool(peers), row
        assert all(-1 <= float(r) <= 1 for r in row[6].split(" / ")), row
        assert 0 <= float(row[7]) <= 1, row
    for peer in peers:
        assert rows[("softmax", f"{peer} (exact)")][4:] == ["-"] * 5


def smoke_memory(text: str) -> None:
    points = [("256", "4"), ("256", "16"), ("256", "64"), ("64", "16"), ("1024", "16")]
    rows = check_table(
        text,
        ["K channels", "batch_size", "masked forwards", "Score-FAM peak RSS rise MB",
         "one plain forward of the batch MB", "Score-FAM above it MB"],
        [INT, INT, INT, INT, INT, INT],
        points,
    )  # fmt: skip
    for (k, _), row in rows.items():  # dead channels are skipped: at most K forwards
        assert 1 <= int(row[2]) <= int(k), row


SMOKE = {
    "scorefam": smoke_scorefam,
    "fixations": smoke_fixations,
    "widget": smoke_widget,
    "embedding": smoke_embedding,
    "scorefam_budget": smoke_scorefam_budget,
    "memory": smoke_memory,
}


def test_every_benchmark_has_a_smoke_check():
    assert sorted(SMOKE) == sorted(BENCHMARKS), "a benchmark without a smoke check here"


IN_A_BROWSER = ("widget", "embedding")  # JupyterLab / an offline page in Chromium


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.browser) if n in IN_A_BROWSER else n for n in BENCHMARKS],
)
def test_bench_smoke_prints_every_row_and_column(name):
    """``famwidget bench --only NAME --smoke`` finishes and prints its tables with every row
    and column, each cell a number where the full run prints one (no timing is bounded)."""
    text = run("bench", "--only", name, "--smoke", "--device", "cpu", timeout=240)
    assert f"== {name} (cpu, smoke) ==" in text
    assert "not written yet" not in text
    SMOKE[name](text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--smoke", "--quick"], "--smoke and --quick exclude each other"),
     (["--smoke", "--peers"], "--peers has --quick instead")],
)  # fmt: skip
def test_bench_smoke_refuses_what_it_cannot_mean(argv, message):
    from famwidget.bench import main

    with pytest.raises(SystemExit, match=re.escape(message)):
        main(argv)
