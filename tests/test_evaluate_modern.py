"""famwidget.evaluate on the modern zoo (SE CNN, ViT classifier, ViT re-ID): every method's maps
separate the trained model from its randomised copy, and on the ViT flower classifier the maps
put more of their mass on the petals than random maps do."""

from __future__ import annotations

import pytest
import torch

from famwidget import evaluate as ev

N = 12
RANDOMISATION_IMAGES = 2
RULES = {
    "se_flowers": ("fixations", "grad-cam", "score-cam", "vebi"),
    "vit_flowers": ("fixations", "grad-cam", "score-cam", "vebi"),
    "vit_reid": ("fixations", "grad-fam", "score-fam"),
}
# Measured on the first 2 held-out images of each case: (mean Spearman correlation over the
# cascade, top block first; the correlation after its last stage). The bounds add about 0.05-0.1.
MEASURED = {
    ("se_flowers", "fixations"): (0.808, 0.383),
    ("se_flowers", "grad-cam"): (0.395, 0.589),
    ("se_flowers", "score-cam"): (0.776, 0.551),
    ("se_flowers", "vebi"): (0.440, 0.218),
    ("vit_flowers", "fixations"): (0.943, 0.889),  # fixations on the ViT barely decorrelate
    ("vit_flowers", "grad-cam"): (0.035, 0.048),
    ("vit_flowers", "score-cam"): (0.384, -0.284),
    ("vit_flowers", "vebi"): (0.560, 0.404),
    ("vit_reid", "fixations"): (0.895, 0.619),
    ("vit_reid", "grad-fam"): (-0.157, -0.030),
    ("vit_reid", "score-fam"): (0.702, 0.076),
}
BOUND = {
    ("se_flowers", "fixations"): (0.87, 0.5),
    ("se_flowers", "grad-cam"): (0.5, 0.7),
    ("se_flowers", "score-cam"): (0.85, 0.65),
    ("se_flowers", "vebi"): (0.55, 0.35),
    ("vit_flowers", "fixations"): (0.98, 0.95),
    ("vit_flowers", "grad-cam"): (0.2, 0.2),
    ("vit_flowers", "score-cam"): (0.5, 0.0),
    ("vit_flowers", "vebi"): (0.65, 0.5),
    ("vit_reid", "fixations"): (0.95, 0.75),
    ("vit_reid", "grad-fam"): (0.1, 0.2),
    ("vit_reid", "score-fam"): (0.8, 0.3),
}
# vit_flowers, these 12 flowers (petals 13.1% of the image): mass in mask of fixations 0.250,
# Grad-CAM 0.155, Score-CAM 0.629, random maps 0.136
FIXATIONS_MARGIN = 0.08
CAM_MARGIN = 0.4


@pytest.fixture(scope="module")
def vit_rows(one_thread):
    return ev.evaluate(
        methods=["fixations", "grad-cam", "score-cam"],
        cases=("vit_flowers",),
        n=N,
        device="cpu",
        steps=4,
        randomisation_images=0,
    )


@pytest.fixture(scope="module")
def cases(one_thread):
    return {name: ev.load_case(name, RANDOMISATION_IMAGES) for name in ev.MODERN_CASES}


def by(rows, case, method):
    return next(r for r in rows if r["case"] == case and r["method"] == method)


def test_every_applicable_method_is_evaluated_on_every_modern_case(cases):
    for name, case in cases.items():
        runs = [r.method for r in ev.runs_for(case, None) if r.precision == "fp32"]
        assert set(runs) == {*RULES[name], ev.RANDOM}, name
    assert ev.load_case("vit_reid", 2).images.shape == (2, 3, 64, 32)


@pytest.mark.parametrize(
    "name,method", [(name, method) for name, methods in RULES.items() for method in methods]
)
def test_randomisation_separates_every_trained_model_from_its_randomised_copy(cases, name, method):
    """Cascading re-initialisation (top block first) decorrelates the maps: the trained
    model's maps are not its randomised copy's. A method blind to the weights stays at 1."""
    case = cases[name]
    run = ev.Run(method)
    check = ev.metrics.randomisation_check(
        case.model, case.images, lambda model, images: run.explain(case, model, images)
    )
    curve, final = check["mean"], float(check["final"].mean())
    assert len(curve) >= 5
    assert float(curve.mean()) < BOUND[name, method][0], (name, method, curve.tolist())
    assert final < BOUND[name, method][1], (name, method, curve.tolist())


def test_vit_flower_maps_put_more_mass_on_the_petals_than_random_maps(vit_rows):
    """Measured on these 12 held-out flowers (see ``FIXATIONS_MARGIN``): the best CAM method is
    Score-CAM (0.629 of the mass on the petals), fixations 0.250, random maps 0.136."""
    chance = by(vit_rows, "vit_flowers", ev.RANDOM)
    fixations = by(vit_rows, "vit_flowers", "fixations")["mass_in_mask"]
    cams = {m: by(vit_rows, "vit_flowers", m)["mass_in_mask"] for m in ("grad-cam", "score-cam")}
    assert abs(chance["mass_in_mask"] - chance["mask_area"]) < 0.05
    assert max(cams, key=cams.get) == "score-cam"  # the best CAM method on the ViT
    assert fixations > chance["mass_in_mask"] + FIXATIONS_MARGIN
    assert cams["score-cam"] > chance["mass_in_mask"] + CAM_MARGIN


def test_block_layers_of_the_zoo_vits():
    from famwidget import zoo

    assert ev.block_layers(zoo.vit_flower_net()) == [
        "blocks.0",
        "blocks.1.norm1",
        "blocks.1",
        "blocks.2.norm1",
        "blocks.2",
        "blocks.3.norm1",
        "blocks.3",
        "norm",
    ]


def test_attention_rule_is_restored_and_bad_names_are_explained():
    from famwidget.explainers import fixation_rules

    saved = fixation_rules.SDPA
    with ev.attention_rule("weight"):
        assert fixation_rules.SDPA is not saved and fixation_rules.SDPA.apply is ev._sdpa_by_weight
    assert fixation_rules.SDPA is saved
    with pytest.raises(RuntimeError), ev.attention_rule("weight"):
        raise RuntimeError("inside")
    assert fixation_rules.SDPA is saved
    with pytest.raises(ValueError, match="attention rule must be one of"), ev.attention_rule("x"):
        pass


def test_the_two_attention_rules_route_fixations_differently():
    """Same model, same images: the weight rule's points are not the value rule's."""
    import famwidget as fw

    case = ev.load_case("vit_flowers", 2)
    value = fw.explain(case.model, case.images, method="fixations").heatmap
    with ev.attention_rule("weight"):
        weight = fw.explain(case.model, case.images, method="fixations").heatmap
    assert value.shape == weight.shape == (2, 64, 64)
    assert not torch.allclose(value, weight)


def test_blocks_and_fixation_rules_from_the_command_line(tmp_path, capsys):
    code = ev.main(
        [
            "--cases",
            "--methods",
            "grad-cam",
            "-n",
            "2",
            "--steps",
            "2",
            "--randomisation-images",
            "0",
            "--blocks",
            "--fixation-rules",
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "famwidget evaluate: n=2" not in printed  # no main table asked for
    assert "layer=blocks.2.norm1" in printed and "attention=weight" in printed
    import json

    blocks = json.loads((tmp_path / "blocks.json").read_text())["rows"]
    assert [r["options"] for r in blocks if r["case"] == "vit_flowers"][:2] == [
        "layer=blocks.0",
        "layer=blocks.1.norm1",
    ]
    # vit_reid explains an embedding: grad-cam does not apply, only the random reference
    assert [r["method"] for r in blocks if r["case"] == "vit_reid"] == [ev.RANDOM]
    rules = json.loads((tmp_path / "fixation_rules.json").read_text())["rows"]
    assert [r["options"] for r in rules] == ["attention=value", "attention=weight", ""] * 2
