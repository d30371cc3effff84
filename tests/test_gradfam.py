"""Grad-FAM and Grad-CAM: exact identities and hand-built networks with known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import famwidget as fw
from famwidget.maps import cam, minmax
from famwidget.targets import ClassLogit, Dimension, Embedding, Predicted


def test_grad_fam_is_weighted_sum_of_per_dimension_grad_cams(tiny_embedding, images):
    """Grad-FAM of ½||f||² = sum_d f_d * (per-dimension Grad-CAM), summed before the ReLU."""
    fam = fw.explain(tiny_embedding, images, "grad-fam", layer="body")
    with torch.no_grad():
        f = tiny_embedding.eval()(images)
    weights = torch.zeros_like(fam.weights)
    for d in range(f.shape[1]):
        per_dim = fw.explain(tiny_embedding, images, "grad-cam", layer="body", target=Dimension(d))
        weights += f[:, d : d + 1] * per_dim.weights
    combined = cam(fam.activations, weights, (16, 16))
    assert torch.allclose(fam.heatmap, combined, atol=1e-5)
    assert fam.heatmap.amax(dim=(1, 2)).min() == 1.0


class KnownNet(nn.Module):
    """1x1 identity conv (the layer), global average pool, identity linear: logit_c = mean(x_c)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2)[:, :, None, None])
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_grad_cam_on_hand_built_network():
    """alpha = (1/64, 0) for class 0, so the map is minmax(ReLU(x_0)), exactly."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8)
    exp = fw.explain(KnownNet(), x, "grad-cam", layer="conv", target=ClassLogit(0))
    assert torch.allclose(exp.weights, torch.tensor([[1 / 64, 0.0]]), atol=1e-7)
    assert torch.allclose(exp.heatmap[0], minmax(torch.relu(x[0, 0])), atol=1e-6)
    other = fw.explain(KnownNet(), x, "grad-cam", layer="conv", target=ClassLogit(1))
    assert torch.allclose(other.heatmap[0], minmax(torch.relu(x[0, 1])), atol=1e-6)


def test_predicted_target_picks_the_argmax_class():
    x = torch.zeros(1, 2, 8, 8)
    x[0, 1, 2:4, 2:4] = 5.0  # class 1 wins
    exp = fw.explain(KnownNet(), x, "grad-cam", layer="conv")
    assert exp.target == "Predicted()"
    assert exp.heatmap[0, 2:4, 2:4].min() == 1.0 and exp.heatmap[0].sum() == 4.0


def test_grad_cam_matches_direct_computation_on_resnet():
    """Grad-CAM at layer4 of a random ResNet-18 equals the formula written out with autograd."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    exp = fw.explain(model, x, "grad-cam", layer="layer4", target=ClassLogit([3, 7]))
    store = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: store.update(a=o))
    out = model(x)
    handle.remove()
    score = out[0, 3] + out[1, 7]
    (g,) = torch.autograd.grad(score, store["a"])
    alpha = g.mean(dim=(2, 3))
    m = torch.relu((alpha[:, :, None, None] * store["a"]).sum(1, keepdim=True))
    m = F.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(exp.heatmap, minmax(m.detach()), atol=1e-5)


@pytest.mark.parametrize("method", ["grad-fam", "grad-cam"])
def test_batch_of_one_and_five_agree(tiny_embedding, images, method):
    batch = fw.explain(tiny_embedding, images, method)
    for i in range(len(images)):
        single = fw.explain(tiny_embedding, images[i], method)
        assert torch.allclose(single.heatmap[0], batch.heatmap[i], atol=1e-5)
        assert torch.allclose(single.weights[0], batch.weights[i], atol=1e-6)


def test_explanation_record_fields(tiny_embedding, images):
    exp = fw.explain(tiny_embedding, images)
    assert exp.method == "grad-fam" and exp.layer == "body" and exp.target == "Embedding()"
    assert exp.heatmap.dtype == torch.float32 and exp.heatmap.shape == (5, 16, 16)
    assert exp.heatmap.min() >= 0.0 and exp.heatmap.max() <= 1.0
    assert exp.activations.shape == (5, 12, 8, 8) and exp.weights.shape == (5, 12)
    with torch.no_grad():
        norms = tiny_embedding.eval()(images).norm(dim=1)
    assert torch.allclose(exp.scores, norms, atol=1e-5)


def test_bf16_autocast_maps_are_float32_and_close(tiny_embedding, images):
    fp32 = fw.explain(tiny_embedding, images)
    bf16 = fw.explain(tiny_embedding, images, precision="bf16")
    assert bf16.heatmap.dtype == torch.float32
    corr = torch.corrcoef(torch.stack([fp32.heatmap.flatten(), bf16.heatmap.flatten()]))[0, 1]
    assert corr > 0.95


def test_default_targets():
    assert isinstance(fw.api.method_info("grad-fam").default_target(), Embedding)
    assert isinstance(fw.api.method_info("grad-cam").default_target(), Predicted)


def test_cuda_matches_cpu(tiny_embedding, images):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (runs on the GPU machine)")
    cpu = fw.explain(tiny_embedding, images)
    gpu = fw.explain(tiny_embedding.cuda(), images)
    assert gpu.heatmap.device.type == "cuda"
    assert torch.allclose(cpu.heatmap, gpu.heatmap.cpu(), atol=1e-4)


def _recorded(model: nn.Module) -> dict[str, bool]:
    """Forward hooks noting whether each top-level piece of ``model`` ran with autograd on."""
    seen: dict[str, bool] = {}
    for name, module in model.named_children():
        module.register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, torch.is_grad_enabled())
        )
    return seen


def test_gradients_are_recorded_from_the_layer_on_only(images):
    """Nothing before the layer joins the graph; the map equals the fully recorded one."""
    from famwidget.explainers.gradfam import _gradients

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 6),
    ).eval()  # fmt: skip
    seen = _recorded(model)
    leaf = _gradients(model, images, model[2], Embedding(), None, None, None, True)
    assert seen == {"0": False, "1": False, "2": False, "3": True, "4": True, "5": True,
                    "6": True}  # fmt: skip
    full = _gradients(model, images, model[2], Embedding(), None, None, None, False)
    assert all(seen.values())
    for a, b in zip(leaf[:3], full[:3], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    exp = fw.explain(model, images, "grad-fam", layer="2")
    assert torch.allclose(exp.weights, full[1].mean(dim=(2, 3)), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


class Pair(tuple):
    """A tuple subclass the tap cannot rebuild."""


class Boxed(nn.Module):
    """A conv whose output comes in a container: the map first, then its channel means."""

    def __init__(self, container: type) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 12, 3, padding=1)
        self.container = container

    def forward(self, x):
        out = self.conv(x)
        return self.container((out, out.mean(dim=(2, 3))))


class BoxedNet(nn.Module):
    def __init__(self, container: type) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Boxed(container)
        self.head = nn.Linear(12, 6)

    def forward(self, x):
        return self.head(self.block(self.stem(x))[0].relu().mean(dim=(2, 3)))


@pytest.mark.parametrize("container", [tuple, list, Pair])
def test_layer_returning_a_container_gives_the_same_map(images, container, monkeypatch):
    """A tuple or list output is rebuilt around the leaf; any other container falls back to
    recording the whole forward; the map is the conv's own either way."""
    from famwidget.explainers import gradfam

    model = BoxedNet(container).eval()
    runs: list[bool] = []
    original = gradfam._gradients

    def spy(*args):
        runs.append(args[-1])
        return original(*args)

    monkeypatch.setattr(gradfam, "_gradients", spy)
    exp = fw.explain(model, images, "grad-fam", layer="block")
    assert runs == ([True, False] if container is Pair else [True])
    ref = fw.explain(model, images, "grad-fam", layer="block.conv")
    assert torch.allclose(exp.heatmap, ref.heatmap, atol=1e-6)
    assert torch.allclose(exp.weights, ref.weights, atol=1e-6)
    assert exp.weights.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
