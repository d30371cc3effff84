"""Wrapped models (torch.compile, DataParallel, DDP) and ModelOutput/dataclass outputs give the
same maps as the plain model."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch
import torch.distributed as dist
from torch import nn

import famwidget as fw


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 3, 16, 16)


def same_maps(a: fw.Explanation, b: fw.Explanation) -> None:
    assert a.layer.split(".")[-1] == b.layer.split(".")[-1]  # the same layer, named in the model
    assert torch.allclose(a.heatmap, b.heatmap, atol=1e-6)
    assert a.heatmap.std() > 0.05


@pytest.mark.parametrize("method", ["grad-fam", "grad-cam", "score-cam"])
def test_torch_compile_is_explained_through_the_original_module(x, method):
    model = net()
    compiled = torch.compile(model)
    plain = fw.explain(model, x, method=method, layer="3")
    for name in ("3", "_orig_mod.3"):
        same_maps(plain, fw.explain(compiled, x, method=method, layer=name))
    same_maps(fw.explain(model, x, method=method), fw.explain(compiled, x, method=method))
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_data_parallel_and_nested_wrappers(x):
    model = net()
    plain = fw.explain(model, x, layer="3")
    wrapped = nn.DataParallel(model)
    for name in ("3", "module.3"):
        same_maps(plain, fw.explain(wrapped, x, layer=name))
    same_maps(plain, fw.explain(torch.compile(wrapped), x, layer="_orig_mod.module.3"))
    same_maps(plain, fw.explain(wrapped, x, layer=model[3]))


def test_distributed_data_parallel(x, tmp_path):
    if not dist.is_available():
        pytest.fail("torch.distributed is not available in this build")
    store = f"file://{tmp_path / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        model = net()
        plain = fw.explain(model, x, method="grad-cam", layer="3")
        ddp = nn.parallel.DistributedDataParallel(model)
        same_maps(plain, fw.explain(ddp, x, method="grad-cam", layer="module.3"))
    finally:
        dist.destroy_process_group()


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class ModelOutput(collections.OrderedDict):
    """What HuggingFace models return: a mapping of the fields that are set."""


class Returning(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.body, self.kind = net(), kind

    def forward(self, x: torch.Tensor):
        logits = self.body(x)
        if self.kind == "dataclass":
            return Output(logits=logits)
        if self.kind == "dataclass2":
            return Output(logits=logits, hidden=logits * 2)
        return ModelOutput(logits=logits, pooled=logits.abs())


@pytest.mark.parametrize("method", ["grad-cam", "score-fam"])
def test_model_output_and_dataclass_outputs(x, method):
    plain = fw.explain(net(), x, method=method, layer="3")
    same_maps(plain, fw.explain(Returning("dataclass"), x, method=method, layer="body.3"))
    hf = Returning("model-output")
    same_maps(plain, fw.explain(hf, x, method=method, layer="body.3", output_key="logits"))
    with pytest.raises(ValueError, match=r"keys \['logits', 'pooled'\]; pass output_key="):
        fw.explain(hf, x, method=method, layer="body.3")
    two = Returning("dataclass2")
    same_maps(plain, fw.explain(two, x, method=method, layer="body.3", output_key="logits"))
