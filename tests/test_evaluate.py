"""famwidget.evaluate: the table on the shipped models, its files and its command line."""

from __future__ import annotations

import csv
import json
import math

import pytest

from famwidget import evaluate as ev

FRACTIONS = ("avg_drop", "pointing_game", "mass_in_mask", "mask_area")


@pytest.fixture(scope="module")
def rows(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("evaluation")
    table = ev.evaluate(
        methods=["grad-cam", "grad-fam", "fixations"],
        cases=("flowers", "reid"),
        n=8,
        device="cpu",
        out=out,
        steps=8,
        randomisation_images=3,
    )
    return table, out


def by(rows, case, method):
    return next(r for r in rows if r["case"] == case and r["method"] == method)


def test_rows_are_the_applicable_methods_and_the_random_reference(rows):
    table, _ = rows
    pairs = [(r["case"], r["method"]) for r in table]
    assert pairs == [
        ("flowers", "grad-cam"),
        ("flowers", "fixations"),
        ("flowers", ev.RANDOM),
        ("reid", "grad-fam"),
        ("reid", "fixations"),
        ("reid", ev.RANDOM),
    ]
    assert all(set(ev.COLUMNS) <= set(r) for r in table)
    assert all(r["n"] == 8 for r in table)


def test_numbers_are_in_range(rows):
    table, _ = rows
    for r in table:
        for key in FRACTIONS:
            assert 0.0 <= r[key] <= 1.0, (r["case"], r["method"], key, r[key])
        assert 0.0 < r["deletion_auc"] < 1.1 and 0.0 < r["insertion_auc"] < 1.1
        assert 0.05 < r["mask_area"] < 0.3  # petals / identity parts: a part of the image
        if r["method"] == ev.RANDOM:
            assert r["randomisation_corr"] is None and r["s_per_image"] is None
        else:
            # the column is the mean of the curve, one value per randomised stage, top first
            curve = list(r["randomisation_curve"].values())
            assert len(curve) >= 4
            assert math.isclose(r["randomisation_corr"], sum(curve) / len(curve), rel_tol=1e-6)
    assert by(table, "flowers", "grad-cam")["avg_increase"] is not None
    assert by(table, "reid", "grad-fam")["avg_increase"] is None  # a cosine never exceeds 1


def test_localisation_columns_equal_a_hand_computation(rows):
    """mask area, mass in mask and the pointing game recomputed from the maps by hand (not
    through famwidget.metrics): every image's value and the row's mean."""
    import torch

    import famwidget as fw

    table, _ = rows
    case = ev.load_case("reid", 8)
    heat = fw.explain(case.model, case.images, method="grad-fam", target=case.target).heatmap
    heat = torch.nn.functional.interpolate(
        heat[:, None], size=case.masks.shape[-2:], mode="bilinear", align_corners=False
    )[:, 0].clamp_min(0)
    masks = case.masks.float()
    mass = [float((h * m).sum() / h.sum()) for h, m in zip(heat, masks, strict=True)]
    hits = []
    for h, m in zip(heat, masks, strict=True):
        top = h >= h.max() - 1e-6
        hits.append(float(m[top].mean() >= 0.5))
    row = by(table, "reid", "grad-fam")
    assert row["per_image"]["mass_in_mask"] == pytest.approx(mass, abs=1e-4)
    assert row["per_image"]["pointing_game"] == hits
    assert row["mass_in_mask"] == pytest.approx(sum(mass) / 8, abs=1e-4)
    assert row["mask_area"] == pytest.approx(float(masks.mean()), abs=1e-6)


def test_seconds_and_peak_per_image_are_summed_over_the_batches(monkeypatch):
    """s/image is the measured seconds of every batch over the image count; peak MB the
    largest batch's (a fake measure: 0.5 s and 10 / 30 MiB per batch of 4, 8 images)."""
    import contextlib
    import types

    import torch

    peaks = iter([10 * 2**20, 30 * 2**20])

    @contextlib.contextmanager
    def fake_measure(device):
        usage = types.SimpleNamespace(seconds=None, peak_bytes=None)
        yield usage
        usage.seconds, usage.peak_bytes = 0.5, next(peaks)

    monkeypatch.setattr(ev.metrics, "measure", fake_measure)
    case = types.SimpleNamespace(images=torch.zeros(8, 3, 4, 4), model=None)
    maps, per_image, peak = ev.timed_maps(ev.Run(ev.RANDOM), case, batch=4)
    assert maps.shape == (8, 4, 4)
    assert per_image == pytest.approx(2 * 0.5 / 8) and peak == pytest.approx(30.0)


def test_methods_beat_random_maps_on_the_ground_truth(rows):
    table, _ = rows
    for case, method in (("flowers", "grad-cam"), ("reid", "grad-fam")):
        row, chance = by(table, case, method), by(table, case, ev.RANDOM)
        assert row["deletion_auc"] < chance["deletion_auc"] - 0.1
        assert row["insertion_auc"] > chance["insertion_auc"] + 0.05
        assert row["mass_in_mask"] > 1.5 * row["mask_area"]
        assert row["pointing_game"] > chance["pointing_game"]
    chance = by(table, "reid", ev.RANDOM)
    assert abs(chance["mass_in_mask"] - chance["mask_area"]) < 0.05  # the chance level


def test_json_and_csv_hold_the_table(rows):
    table, out = rows
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["columns"] == list(ev.COLUMNS)
    assert saved["settings"]["n"] == 8 and saved["settings"]["device"] == "cpu"
    assert [r["method"] for r in saved["rows"]] == [r["method"] for r in table]
    with open(out / "evaluation.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == list(ev.COLUMNS)
    assert math.isclose(float(lines[0]["mass_in_mask"]), table[0]["mass_in_mask"])
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.csv", "evaluation.json"]


def test_format_table_prints_every_row_and_dashes_for_missing():
    row = {k: None for k in ev.COLUMNS}
    row.update(case="reid", method="grad-fam", precision="fp32", n=2, deletion_auc=0.25)
    row.update(s_per_image=0.0012345, peak_mb=12.34)
    text = ev.format_table([row, {**row, "method": ev.RANDOM, "s_per_image": None}], "title")
    lines = text.splitlines()
    assert lines[0] == "title" and "deletion" in lines[1] and "s/image" in lines[1]
    assert "0.250" in lines[3] and "0.001234" in lines[3] and "12.3" in lines[3]
    assert lines[4].split()[-2:] == ["-", "12.3"]
    assert "mass" not in lines[1]  # a column with no value anywhere is left out


def test_main_prints_both_tables(tmp_path, capsys):
    code = ev.main(
        [
            "--cases",
            "reid",
            "--methods",
            "grad-fam",
            "-n",
            "2",
            "--steps",
            "2",
            "--randomisation-images",
            "0",
            "--choices",
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "famwidget evaluate: n=2" in printed and "relu-baseline masking=blur" in printed
    choices = json.loads((tmp_path / "choices.json").read_text())["rows"]
    assert len(choices) == 7 and choices[-1]["method"] == "grad-fam"  # for reference
    assert {r["options"] for r in choices[:6]} == {
        f"weights={w} masking={m}" for w in ev.CHOICES["weights"] for m in ev.CHOICES["masking"]
    }


def test_unknown_case_and_bad_settings_are_explained():
    with pytest.raises(ValueError, match="available: flowers, reid, ssl"):
        ev.load_case("faces", 2)
    with pytest.raises(ValueError, match="baseline must be one of"):
        ev.evaluate(cases=(), baseline="noise")


def test_per_image_values_are_kept_for_paired_comparisons(rows):
    table, _ = rows
    row = by(table, "reid", "grad-fam")
    assert len(row["per_image"]["deletion_auc"]) == 8
    assert math.isclose(
        sum(row["per_image"]["mass_in_mask"]) / 8, row["mass_in_mask"], rel_tol=1e-6
    )
    assert row["mass_in_mask_sem"] > 0
