"""The graph engine: op kinds on hand-built modules, unwrapping, and the recorded forward pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from famwidget.explainers.graph import (
    ACTIVATIONS,
    KINDS,
    NORMS,
    op_kind,
    record_forward,
    signal_nodes,
    trace,
    unwrap,
)


def kinds_of(model: nn.Module) -> dict[str, str]:
    """``{node name: kind}`` of every node of the traced ``model``."""
    gm = trace(model, "test")
    return {n.name: op_kind(gm, n) for n in gm.graph.nodes}


class Gated(nn.Module):
    """A squeeze-excitation gate, a layer scale, a constant scale and a quotient of signals."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Conv2d(4, 4, 1)
        self.gamma = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x):
        gate = torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
        y = x * gate
        y = y * self.gamma
        y = 0.5 * y
        y = y / 3.0
        z = y / y.norm(dim=1, keepdim=True)
        return -z


def test_gates_and_scales():
    k = kinds_of(Gated())
    assert k["mean"] == "pool_avg"
    assert k["fc"] == "conv"
    assert k["sigmoid"] == "activation"
    assert k["mul"] == "gate"  # x * gate: two image-dependent tensors
    assert k["mul_1"] == "scale"  # a parameter
    assert k["mul_2"] == "scale"  # a number
    assert k["truediv"] == "scale"
    assert k["truediv_1"] == "gate"  # y / ||y||
    assert k["neg"] == "scale"
    assert k["x"] == "other" and k["output"] == "identity"


class Shapes(nn.Module):
    """Reshapes, a channel shuffle, split/chunk, cat/stack, getitem of both sorts, shape reads."""

    def forward(self, x):
        b, c, h, w = x.shape
        y = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().flatten(1, 2)
        left, right = y.chunk(2, dim=1)
        parts = torch.split(right, 1, dim=1)
        z = torch.cat([left, parts[0], parts[1]], dim=1)
        z = torch.stack([z, z], dim=1).sum(1)
        z = z.permute(0, 2, 3, 1)[:, None]
        z = z[:, 0, 1:]
        size = x.size(-1)
        return F.interpolate(z.permute(0, 3, 1, 2), size=(size, size)) + x


def test_reshape_split_cat_and_shape_reads():
    k = kinds_of(Shapes())
    assert k["getattr_1"] == "shape" and k["getitem"] == "shape"  # b, c, h, w = x.shape
    assert k["floordiv"] == "shape" and k["size"] == "shape"
    assert k["view"] == "reshape" and k["transpose"] == "reshape"
    assert k["contiguous"] == "identity" and k["flatten"] == "reshape"
    assert k["chunk"] == "split" and k["getitem_4"] == "split"  # left
    assert k["split"] == "split" and k["getitem_6"] == "split"  # parts[0]
    assert k["cat"] == "cat" and k["stack"] == "cat" and k["sum_1"] == "pool_avg"
    assert k["permute"] == "reshape"
    assert k["getitem_8"] == "reshape"  # [:, None] only adds an axis
    assert k["getitem_9"] == "split"  # [:, 0, 1:] selects a part
    assert k["interpolate"] == "resize"
    assert k["add"] == "add"


class Attention(nn.Module):
    """A hand-written attention, a softmax head, and a MultiheadAttention."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, 8)
        q, kk, v = self.qkv(tokens).chunk(3, dim=-1)
        a = (q @ kk.transpose(-2, -1)).softmax(dim=-1)
        t = F.dropout(a, 0.0) @ v
        t = F.scaled_dot_product_attention(t, t, t)
        t, _ = self.mha(t, t, t)
        t = self.norm(t) @ self.weight
        return torch.softmax(t.mean(1), dim=-1)


def test_attention_kinds():
    k = kinds_of(Attention())
    assert k["qkv"] == "linear"
    assert k["matmul"] == "attention"  # q @ k^T
    assert k["softmax"] == "attention"  # feeds a product of two signals (through dropout)
    assert k["dropout"] == "identity"
    assert k["matmul_1"] == "attention"
    assert k["scaled_dot_product_attention"] == "attention"
    assert k["mha"] == "attention" and k["getitem_3"] == "split"
    assert k["norm"] == "norm"
    assert k["matmul_2"] == "linear"  # by a parameter
    assert k["softmax_1"] == "activation"  # a classifier's softmax


class LayerNorm2d(nn.Module):
    """Stands for timm's LayerNorm2d (matched by its class name), kept as a leaf below."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Modules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 4, 3, groups=1, dilation=2),
            nn.BatchNorm2d(4),
            nn.Hardswish(),
            nn.ConvTranspose2d(4, 4, 2, stride=2),
            nn.GroupNorm(2, 4),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.AvgPool2d(2),
            nn.Dropout(0.1),
            nn.Identity(),
            nn.ChannelShuffle(2),
            nn.Upsample(scale_factor=2),
            LayerNorm2d(4),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 2),
        )

    def forward(self, x):
        return self.layers(x)


class LeafTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return isinstance(m, LayerNorm2d) or super().is_leaf_module(m, name)


def test_module_kinds():
    model = Modules()
    gm = fx.GraphModule(model, LeafTracer().trace(model))
    kinds = [op_kind(gm, n) for n in gm.graph.nodes if n.op == "call_module"]
    assert kinds == [
        "conv", "norm", "activation", "conv_transpose", "norm", "activation", "pool_max",
        "pool_avg", "identity", "identity", "reshape", "resize", "norm", "pool_avg", "reshape",
        "linear",
    ]  # fmt: skip
    assert set(kinds) <= set(KINDS)


def test_tables_hold_the_common_modules():
    for m in (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish,
              nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus):  # fmt: skip
        assert issubclass(m, ACTIVATIONS)
    for m in (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d):
        assert issubclass(m, NORMS)


def test_kind_is_resolved_once_per_node():
    gm = trace(Gated(), "test")
    node = next(n for n in gm.graph.nodes if n.name == "mul")
    assert op_kind(gm, node) == "gate"
    node.meta["fw_kind"] = "cached"
    assert op_kind(gm, node) == "cached"


def test_shape_reads_are_not_signals():
    class Token(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls = nn.Parameter(torch.zeros(1, 1, 3))

        def forward(self, x):
            t = x.flatten(2).transpose(1, 2)
            return torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)

    gm = trace(Token(), "test")
    signal = {n.name for n in signal_nodes(gm)}
    assert {"x", "flatten", "transpose", "cat"} <= signal
    assert "expand" not in signal and "getitem" not in signal


# ----------------------------------------------------------------------------- wrappers


def test_unwrap_data_parallel_and_compile():
    inner = nn.Sequential(nn.Conv2d(3, 2, 1))
    assert unwrap(nn.DataParallel(inner)) is inner
    assert unwrap(nn.DataParallel(nn.DataParallel(inner))) is inner
    assert unwrap(torch.compile(inner)) is inner
    assert unwrap(inner) is inner
    assert trace(nn.DataParallel(inner), "test") is trace(inner, "test")


# ----------------------------------------------------------------------------- recorded forward


class InPlace(nn.Module):
    """Every input of ``conv2`` and ``add`` is later overwritten in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(1, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.conv1(x)
        b = self.conv2(a)
        s = a + b
        a = a + 1.0
        a.mul_(2.0)  # overwrites add_1's output
        b.add_(1.0)  # overwrites conv2's output, an input of add
        s = self.relu(s)  # overwrites add's output in place
        return s + a


def test_recorded_inputs_survive_in_place_ops():
    model = InPlace()
    with torch.no_grad():
        model.conv1.weight.fill_(-1.0)
        model.conv2.weight.fill_(3.0)
    x = torch.tensor([[[[1.0, -2.0]]]])
    gm = trace(model, "test")
    names = {"conv2", "add", "relu", "add_1", "mul_", "add_"}
    with torch.no_grad():
        rec = record_forward(gm, x, lambda n: n.name in names)
    by_name = {n.name: n for n in rec.records}
    assert set(by_name) == names
    a = -x
    assert torch.equal(rec.records[by_name["conv2"]][0][0], a)
    assert torch.equal(rec.records[by_name["add_1"]][0][0], a)
    assert torch.equal(rec.records[by_name["mul_"]][0][0], a + 1)
    assert torch.equal(rec.records[by_name["add_"]][0][0], 3 * a)
    assert torch.equal(rec.records[by_name["relu"]][0][0], a + 3 * a)  # before the ReLU
    assert torch.equal(rec.records[by_name["add"]][0][1], 3 * a)
    assert torch.equal(rec.output, model(x.clone()))
    assert rec.shapes[by_name["conv2"]] == (1, 1, 1, 2)


def test_record_until_a_node():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    gm = trace(model, "test")
    stop = next(n for n in gm.graph.nodes if n.name == "_1")
    x = torch.randn(2, 3, 2, 2)
    with torch.no_grad():
        rec = record_forward(gm, x, (), stop=stop)
        assert torch.equal(rec.output, model[1](model[0](x)))
    assert not rec.records and "_3" not in {n.name for n in rec.shapes}


def test_kinds_cover_a_torchvision_model_with_no_other():
    import torchvision

    model = torchvision.models.mobilenet_v3_small(weights=None)
    gm = trace(model, "test")
    signal = signal_nodes(gm)
    kinds = {op_kind(gm, n) for n in gm.graph.nodes if n in signal and n.op != "placeholder"}
    assert "gate" in kinds and "other" not in kinds


# ----------------------------------------------------------------------------- trace errors


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return -self.conv(x)


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("this model needs two inputs")


def test_a_branching_submodule_is_kept_whole_and_named():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), Branchy(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    gm = trace(model, "test")
    assert gm.__dict__["_fw_leaves"] == {"1": "its forward branches on tensor values"}
    assert any(n.op == "call_module" and n.target == "1" for n in gm.graph.nodes)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(gm(x), model(x))
    from famwidget.explainers.fixations import check_supported

    reason = check_supported(model, x)
    assert "module '1' (Branchy)" in reason and "branches on tensor values" in reason


def test_trace_errors_say_the_real_reason():
    with pytest.raises(ValueError, match="branches on tensor values"):
        trace(Branchy(), "CNN Fixations")
    with pytest.raises(ValueError, match="raised RuntimeError: this model needs two inputs") as e:
        trace(Raises(), "CNN Fixations")
    assert "branches" not in str(e.value)
