"""Our own list of bad inputs, across fw.explain, Explorer, ReIDExplorer and explain_dataset.

Each one must give a famwidget error (raised by famwidget's own code, not a raw torch error
from deep inside a forward pass, and not a silent blank map) whose message names what was
wrong; the model comes back bit-identical (parameters, buffers, modes, flags, .grad, hooks).
"""

from __future__ import annotations

import pathlib
import traceback
from collections.abc import Callable

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

import famwidget as fw
from famwidget import targets

PACKAGE = pathlib.Path(fw.__file__).parent


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "training": [m.training for m in model.modules()],
        "flags": [(p.requires_grad, p.grad) for p in model.parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert after["hooks"] == before["hooks"] and after["training"] == before["training"]
    assert all(
        a[0] == b[0] and a[1] is b[1] for a, b in zip(after["flags"], before["flags"], strict=True)
    )


class Headless(nn.Module):
    """A backbone with no classes: conv → ReLU → conv → GAP (a feature vector)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )

    def forward(self, x):
        return self.body(x).mean(dim=(2, 3))


class Returns(nn.Module):
    """Wraps a model; its output becomes ``wrap(output)`` (a dict, a string, ...)."""

    def __init__(self, inner: nn.Module, wrap: Callable) -> None:
        super().__init__()
        self.inner = inner
        self.wrap = wrap

    def forward(self, x):
        return self.wrap(self.inner(x))


X = torch.rand(2, 3, 16, 16)


def nan_image() -> torch.Tensor:
    x = X.clone()
    x[1, 2, 3, 4] = float("nan")
    return x


def inf_image() -> torch.Tensor:
    x = X.clone()
    x[0, 0, 0, 0] = float("inf")
    return x


def in_inference_mode(m: nn.Module):
    with torch.inference_mode():
        return fw.explain(m, X)


def gallery_of_mixed_sizes(m: nn.Module):
    raw = [np.zeros((16, 16, 3), np.uint8), np.zeros((20, 16, 3), np.uint8)]
    return fw.Explorer(m, raw, preprocess=lambda a: torch.from_numpy(a).permute(2, 0, 1) / 255)


def explain_dataset(m: nn.Module, data, tmp: pathlib.Path, **kw):
    return fw.explain_dataset(m, data, out=tmp / "s.zarr", progress=False, **kw)


# (id, call(model, tmp_path), exception types, pattern the message must match)
# fmt: off
CASES = [
    # -- fw.explain: images
    ("2-d image", lambda m, t: fw.explain(m, X[0, 0]), ValueError, r"\(B,3,H,W\).*\(16, 16\)"),
    ("5-d images", lambda m, t: fw.explain(m, X[None]), ValueError, r"got shape \(1, 2, 3, 16"),
    ("empty batch", lambda m, t: fw.explain(m, X[:0]), ValueError, r"empty batch \(B=0\)"),
    ("zero-width", lambda m, t: fw.explain(m, X[..., :0]), ValueError, r"empty dimension"),
    ("uint8", lambda m, t: fw.explain(m, (X * 255).byte()), TypeError, r"floating.*uint8"),
    ("int64", lambda m, t: fw.explain(m, X.long()), TypeError, r"floating.*int64"),
    ("bool", lambda m, t: fw.explain(m, X > 0.5), TypeError, r"floating.*torch.bool"),
    ("complex", lambda m, t: fw.explain(m, X.to(torch.complex64)), TypeError, r"complex"),
    ("a list", lambda m, t: fw.explain(m, [X[0]]), TypeError, r"float tensor.*not list"),
    ("numpy", lambda m, t: fw.explain(m, X.numpy()), TypeError, r"not ndarray"),
    ("sparse", lambda m, t: fw.explain(m, X.to_sparse()), TypeError, r"dense.*to_dense"),
    ("NaN pixel", lambda m, t: fw.explain(m, nan_image()), ValueError, r"1 NaN.*image 1"),
    ("Inf pixel", lambda m, t: fw.explain(m, inf_image()), ValueError, r"1 Inf.*image 0"),
    ("1 channel", lambda m, t: fw.explain(m, X[:, :1]), ValueError, r"1 channels.*in_channels=3"),
    ("4 channels", lambda m, t: fw.explain(m, torch.rand(2, 4, 16, 16)), ValueError, r"4 chann"),
    ("meta images", lambda m, t: fw.explain(m, X.to("meta")), ValueError, r"meta device"),
    # -- fw.explain: method, layer, options
    ("unknown method", lambda m, t: fw.explain(m, X, "gradfam"), ValueError, r"gradfam.*grad-fam"),
    ("method not str", lambda m, t: fw.explain(m, X, 3), TypeError, r"method must be a string"),
    ("unknown layer", lambda m, t: fw.explain(m, X, layer="nope"), ValueError, r"nope"),
    ("layer not in model", lambda m, t: fw.explain(m, X, layer=nn.Conv2d(3, 3, 1)), ValueError,
     r"(?i)not a submodule|not part|not in"),
    ("layer of wrong type", lambda m, t: fw.explain(m, X, layer=3), TypeError, r"layer"),
    ("non-spatial layer", lambda m, t: fw.explain(m, X, layer="head"), ValueError, r"head"),
    ("unknown option", lambda m, t: fw.explain(m, X, colour=1), TypeError, r"colour"),
    ("bad precision", lambda m, t: fw.explain(m, X, precision="fp8"), ValueError, r"fp8"),
    ("bad layout", lambda m, t: fw.explain(m, X, layout="hwc"), ValueError, r"hwc"),
    ("negative batch", lambda m, t: fw.explain(m, X, "score-fam", batch_size=-1), ValueError,
     r"batch_size"),
    ("negative max_seconds", lambda m, t: fw.explain(m, X, "score-fam", max_seconds=-1),
     ValueError, r"max_seconds must be > 0"),
    # -- fw.explain: targets and the model
    ("class out of range", lambda m, t: fw.explain(m, X, target=targets.ClassLogit(99)),
     ValueError, r"99"),
    ("negative class", lambda m, t: fw.explain(m, X, target=targets.ClassLogit(-1)), ValueError,
     r"-1"),
    ("target is a str", lambda m, t: fw.explain(m, X, target="embedding"), TypeError, r"target"),
    ("similarity of wrong size", lambda m, t: fw.explain(
        m, X, target=targets.Similarity(torch.rand(5))), ValueError, r"5"),
    ("similarity on meta", lambda m, t: fw.explain(
        m, X, target=targets.Similarity(torch.rand(6, device="meta"))), ValueError, r"meta"),
    ("dimension out of range", lambda m, t: fw.explain(m, X, target=targets.Dimension(6)),
     ValueError, r"6"),
    ("callable target of wrong shape", lambda m, t: fw.explain(m, X, target=lambda out: out),
     ValueError, r"\(B,\)|one score per image|shape"),
    ("inference_mode", lambda m, t: in_inference_mode(m), ValueError, r"inference_mode"),
    ("no classes", lambda m, t: fw.explain(Headless(), X, "grad-cam"), ValueError,
     r"no classes"),
    ("model not a module", lambda m, t: fw.explain(lambda x: x, X), TypeError, r"nn.Module"),
    ("output a dict of two", lambda m, t: fw.explain(
        Returns(m, lambda y: {"a": y, "b": y}), X), ValueError, r"output_key"),
    ("output a string", lambda m, t: fw.explain(Returns(m, lambda y: "text"), X),
     (TypeError, ValueError), r"str"),
    # -- Explorer
    ("explorer labels", lambda m, t: fw.Explorer(m, X, labels=["a"]), ValueError,
     r"1 labels for 2 images"),
    ("explorer mixed sizes", lambda m, t: gallery_of_mixed_sizes(m), ValueError,
     r"different sizes.*image 0 the shape \(3, 16, 16\) and image 1 \(3, 20, 16\)"),
    ("explorer int images", lambda m, t: fw.Explorer(m, X.long()), TypeError, r"floating"),
    ("explorer method", lambda m, t: fw.Explorer(m, X, method="nope"), ValueError, r"nope"),
    ("explorer display", lambda m, t: fw.Explorer(m, X, display=np.zeros((2, 8, 8, 3))),
     ValueError, r"display must be uint8"),
    ("explorer cache_bytes", lambda m, t: fw.Explorer(m, X, cache_bytes=-1), ValueError,
     r"cache_bytes"),
    ("explorer negative alpha", lambda m, t: setattr(fw.Explorer(m, X), "alpha", -0.1),
     traitlets.TraitError, r"alpha must lie in \[0, 1\]"),
    ("explorer colormap", lambda m, t: setattr(fw.Explorer(m, X), "colormap", "rainbow"),
     traitlets.TraitError, r"rainbow.*jet"),
    ("explorer index", lambda m, t: fw.Explorer(m, X).select(2), IndexError, r"out of range"),
    ("explorer classes", lambda m, t: fw.Explorer(m, X, classes=["a", "b"]), ValueError,
     r"6 outputs but classes= names 2"),
    # -- an Explanation's overlay
    ("overlay alpha", lambda m, t: fw.explain(m, X[:1]).overlay(X[0], alpha=-0.5), ValueError,
     r"alpha"),
    ("overlay colormap", lambda m, t: fw.explain(m, X[:1]).overlay(X[0], cmap="nope"),
     ValueError, r"unknown colormap 'nope'"),
    # -- ReIDExplorer
    ("reid ids", lambda m, t: fw.ReIDExplorer(m, X[0], X, query_id=1, gallery_ids=[1]),
     ValueError, r"1 gallery ids for 2 images"),
    ("reid query rank", lambda m, t: fw.ReIDExplorer(m, X, X), ValueError,
     r"query must be one preprocessed image \(3,H,W\), got shape \(2, 3, 16, 16\)"),
    ("reid gallery int", lambda m, t: fw.ReIDExplorer(m, X[0], X.long()), TypeError,
     r"floating"),
    # -- explain_dataset
    ("dataset empty", lambda m, t: explain_dataset(m, X[:0], t), ValueError, r"empty|no entr"),
    ("dataset method", lambda m, t: explain_dataset(m, X, t, method="nope"), ValueError, r"nope"),
    ("dataset batch", lambda m, t: explain_dataset(m, X, t, batch_size=0), ValueError,
     r"batch_size"),
    ("dataset dtype", lambda m, t: explain_dataset(m, X, t, heatmap_dtype="int8"), ValueError,
     r"heatmap_dtype"),
    ("dataset on_error", lambda m, t: explain_dataset(m, X, t, on_error="ignore"), ValueError,
     r"on_error"),
    ("dataset NaN", lambda m, t: explain_dataset(m, nan_image(), t, on_error="stop"),
     Exception, r"NaN"),
]
# fmt: on


def raised_in_famwidget(error: BaseException) -> bool:
    """Whether famwidget's own code raised ``error`` (its innermost frame is in the package,
    or the error is traitlets' TraitError from a famwidget validator)."""
    frames = traceback.extract_tb(error.__traceback__)
    inner = pathlib.Path(frames[-1].filename)
    return PACKAGE in inner.parents or isinstance(error, traitlets.TraitError)


@pytest.mark.parametrize(("call", "kinds", "pattern"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_a_bad_input_gets_a_famwidget_error_naming_it(
    tiny_embedding, tmp_path, one_thread, call, kinds, pattern
):
    before = snapshot(tiny_embedding)
    with pytest.raises(kinds, match=pattern) as info:
        call(tiny_embedding, tmp_path)
    assert raised_in_famwidget(info.value), "".join(traceback.format_exception(info.value))
    assert_unchanged(tiny_embedding, before)


def test_there_are_more_than_25_bad_inputs():
    assert len(CASES) >= 25 and len({c[0] for c in CASES}) == len(CASES)


def test_a_model_in_train_mode_with_batchnorm_is_explained_in_eval_and_given_back(
    tiny_embedding,
):
    """Not an error: a model in train mode is explained in eval mode (BatchNorm uses its
    running statistics and does not update them) and comes back in train mode."""
    tiny_embedding.train()
    before = snapshot(tiny_embedding)
    got = fw.explain(tiny_embedding, X)
    assert_unchanged(tiny_embedding, before)
    assert tiny_embedding.training
    expected = fw.explain(tiny_embedding.eval(), X)
    assert torch.allclose(got.heatmap, expected.heatmap, atol=1e-6)
    assert got.heatmap.amax() > 0  # a real map, not a blank
