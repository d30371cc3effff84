"""The zoo: every model loads offline from safetensors, in eval mode, and reproduces its metric."""

from __future__ import annotations

import pytest
import torch

import famwidget as fw
from famwidget import zoo
from famwidget.zoo import heldout

TOLERANCE = 0.02  # the recorded metric was measured on the full held-out set; a subset may differ


@pytest.fixture(scope="module", autouse=True)
def no_network(request):
    """Loading the zoo must never reach for the network."""
    import socket

    original = socket.socket.connect

    def refuse(*args, **kwargs):
        raise AssertionError("the zoo tried to open a network connection")

    socket.socket.connect = refuse
    yield
    socket.socket.connect = original


@pytest.mark.parametrize("name", zoo.NAMES)
def test_loads_offline_in_eval_mode(name):
    model = zoo.load(name)
    assert not model.training and all(not m.training for m in model.modules())
    assert (zoo.WEIGHTS / f"{name}.safetensors").stat().st_size < 5_000_000
    info = model.info
    assert info["command"] == f"python -m famwidget.zoo.train {name}"
    assert info["metrics"] and info["train"]["seed"] >= 0


@pytest.mark.parametrize("variant,bar", [("single", 0.97), ("double", 0.93)])
def test_flower_net_accuracy_reproduces(variant, bar):
    model = zoo.flower_net(variant)
    test = heldout.flower_test(variant, n=1000)
    x = model.preprocess.batch(test.images)
    acc = heldout.accuracy(model, x, test.labels)
    recorded = model.info["metrics"]["accuracy"]
    assert acc >= bar and abs(acc - recorded) <= TOLERANCE
    assert len(model.info["classes"]) == (6 if variant == "single" else 12)


def test_reid_net_retrieval_reproduces():
    model = zoo.reid_net()
    test = heldout.person_split(train=False)
    metrics = heldout.retrieval(
        heldout.embed(model, model.preprocess.batch(test.images)), test.ids, test.cams
    )
    recorded = model.info["metrics"]
    assert metrics["rank1"] >= 0.90 and metrics["mAP"] >= 0.75
    assert abs(metrics["rank1"] - recorded["rank1"]) <= TOLERANCE
    assert abs(metrics["mAP"] - recorded["mAP"]) <= TOLERANCE


def test_vit_reid_net_retrieval_reproduces():
    """The transformer re-ID net: Rank-1 >= 85% on the 50 unseen identities, cross-camera, as
    recorded when it was trained; a small file; a convolutional stem, a class token read by a
    BatchNorm neck."""
    model = zoo.vit_reid_net()
    assert (zoo.WEIGHTS / "vit_reid_net.safetensors").stat().st_size < 3_000_000
    test = heldout.person_split(train=False)
    x = model.preprocess.batch(test.images)
    assert x.shape[-2:] == (64, 32)
    metrics = heldout.retrieval(heldout.embed(model, x), test.ids, test.cams)
    recorded = model.info["metrics"]
    assert metrics["rank1"] >= 0.85 and metrics["mAP"] >= 0.6
    assert abs(metrics["rank1"] - recorded["rank1"]) <= TOLERANCE
    assert abs(metrics["mAP"] - recorded["mAP"]) <= TOLERANCE
    assert model.info["train"]["precision"] == "fp32"
    assert model.cls_token.shape == (1, 1, 96) and len(model.blocks) == 4
    assert model.patch_embed.patch_size == 8 and model.num_prefix_tokens == 1
    assert type(model.patch_embed).__name__ == "ConvPatchEmbed"


def test_ssl_net_linear_probe_reproduces():
    model = zoo.ssl_net()
    train, test = fw.data.flowers(2000, seed=3), heldout.flower_test("single")
    acc = heldout.linear_probe(
        heldout.embed(model, model.preprocess.batch(train.images)),
        train.labels,
        heldout.embed(model, model.preprocess.batch(test.images)),
        test.labels,
    )
    assert acc >= 0.80 and abs(acc - model.info["metrics"]["linear_probe_accuracy"]) <= TOLERANCE


def test_retrieval_metrics_on_a_known_case():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    ids, cams = [0, 0, 1, 1], [0, 1, 0, 1]
    assert heldout.retrieval(f, ids, cams) == {"rank1": 1.0, "mAP": 1.0}
    # ids swapped: each query's match ranks 2nd or 3rd of 3 candidates → AP 1/2, 1/3, 1/2, 1/3
    swapped = heldout.retrieval(f, [0, 1, 1, 0], cams)
    assert swapped["rank1"] == 0.0 and swapped["mAP"] == pytest.approx(5 / 12)


def test_preprocess_round_trip():
    prep = zoo.Preprocess((4, 2))
    images = torch.randint(0, 256, (3, 4, 2, 3), dtype=torch.uint8).numpy()
    x = prep.batch(images)
    assert x.shape == (3, 3, 4, 2) and torch.equal(
        torch.from_numpy(prep.undo(x)), torch.from_numpy(images)
    )
    assert prep(images[0]).shape == (3, 4, 2)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown zoo model 'resnet'; available: flower_net"):
        zoo.load("resnet")
    with pytest.raises(ValueError, match="variant must be"):
        zoo.flower_net("triple")


MODERN = {"se_flower_net": zoo.se_flower_net, "vit_flower_net": zoo.vit_flower_net}


@pytest.mark.parametrize("name", sorted(MODERN))
def test_modern_flower_nets_accuracy_reproduces(name):
    model = MODERN[name]()
    assert (zoo.WEIGHTS / f"{name}.safetensors").stat().st_size < 3_000_000
    test = heldout.flower_test("single", n=1000)
    acc = heldout.accuracy(model, model.preprocess.batch(test.images), test.labels)
    recorded = model.info["metrics"]["accuracy"]
    assert acc >= 0.95 and abs(acc - recorded) <= TOLERANCE
    assert model.info["metrics"]["heldout"] == "flowers(1000, variant='single', seed=101)"


def test_modern_nets_have_their_parts():
    se, vit = zoo.se_flower_net(), zoo.vit_flower_net()
    kinds = {type(m).__name__ for m in se.modules()}
    assert {"SqueezeExcite", "MBConv", "SiLU", "BatchNorm2d"} <= kinds
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in se.modules())
    assert vit.cls_token.shape == (1, 1, 96) and len(vit.blocks) == 4
    assert vit.patch_embed.patch_size == 8 and vit.preprocess.size == (64, 64)


@pytest.mark.parametrize("name", sorted(MODERN))
@pytest.mark.parametrize("method", ["grad-fam", "grad-cam", "score-cam", "fixations"])
def test_methods_explain_the_modern_nets(name, method):
    model = MODERN[name]()
    test = fw.data.flowers(2, seed=11)
    x = model.preprocess.batch(test.images)
    options = {"max_channels": 8, "max_seconds": None} if method == "score-cam" else {}
    exp = fw.explain(model, x, method=method, **options)
    assert exp.heatmap.shape == (2, 64, 64) and torch.isfinite(exp.heatmap).all()
    assert exp.degenerate is None
    assert all(float(h.amax() - h.amin()) > 0 for h in exp.heatmap)
    if method != "fixations":
        assert exp.layout == ("tokens" if name == "vit_flower_net" else "nchw")
    if name == "vit_flower_net" and method != "fixations":
        assert exp.layer == "blocks.2"  # the class token's last block reads only its own token


@pytest.mark.parametrize("method", ["grad-fam", "score-fam", "fixations"])
def test_methods_explain_the_vit_reid_net(method):
    model = zoo.vit_reid_net()
    test = heldout.person_split(train=False)
    x = model.preprocess.batch(test.images[:2])
    options = {"max_channels": 8, "max_seconds": None} if method == "score-fam" else {}
    exp = fw.explain(model, x, method=method, **options)
    assert exp.heatmap.shape == (2, 64, 32) and torch.isfinite(exp.heatmap).all()
    assert exp.degenerate is None
    assert all(float(h.amax() - h.amin()) > 0 for h in exp.heatmap)
    if method != "fixations":
        assert exp.layout == "tokens" and exp.layer == "blocks.2"
