"""The commands behind the README's numbers run in CI, at small sizes, as a user runs them:
``famwidget evaluate`` as a subprocess finishes and prints a table with every row and column,
the same rows as its CSV. Nothing here checks a timing."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys

import pytest

from famwidget import evaluate as ev

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
