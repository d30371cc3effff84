"""The model comes back exactly as it went in: every method of ``fw.methods()``, the deconvnet,
the Interpreter (vebi), the tap and the widget, on success and on every error path.

One user model carries every kind of state a call could leave changed: modules in train mode
(BatchNorm statistics would move on a train-mode forward) beside one in eval mode, a frozen
weight, a stale ``.grad``, forward / pre-forward / full-backward hooks on modules, a tensor hook
on a parameter, and global module hooks. :func:`snapshot` records all of it (parameters and
buffers by identity and value) plus ``torch.is_grad_enabled()``; each case asserts that the
call did what it should (a map, or the error it names) and that the snapshot is identical.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

import famwidget as fw
from famwidget.tap import Tap, preserved

GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)
MODULE_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


class Net(nn.Module):
    """conv → BN → ReLU → conv (tapped "features.3") → ReLU → GAP → Linear(4): a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flat(self.pool(self.features(x))))


class Fuse:
    """A user's forward hook on ``features.3`` that raises on forward number ``after + 1``:
    a forward pass that fails half way through the network (after the tapped layer ran)."""

    def __init__(self) -> None:
        self.after: int | None = None
        self.calls = 0

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.calls += 1
        if self.after is not None and self.calls > self.after:
            raise RuntimeError("boom half way")

    def arm(self, after: int | None) -> None:
        self.after, self.calls = after, 0


def user_model() -> tuple[Net, Fuse]:
    """A model as a user hands it over, with every kind of state set (see the module doc)."""
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
        model.features[1].num_batches_tracked.fill_(7)
    model.train()
    model.head.eval()  # mixed modes: each flag must come back, not one for all
    model.features[0].weight.requires_grad_(False)
    model.head.weight.grad = torch.full_like(model.head.weight, 0.25)
    fuse = Fuse()
    model.features[3].register_forward_hook(fuse)
    model.features[0].register_forward_pre_hook(lambda m, i: None)
    model.head.register_full_backward_hook(lambda m, gi, go: None)
    model.head.bias.register_hook(lambda g: None)
    return model, fuse


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a call could change on ``model`` and on torch's global state."""
    state = model.state_dict(keep_vars=True)
    return {
        "grad_enabled": torch.is_grad_enabled(),
        "global_hooks": {k: dict(getattr(nn.modules.module, k)) for k in GLOBAL_HOOKS},
        "module_hooks": [[dict(getattr(m, k)) for k in MODULE_HOOKS] for m in model.modules()],
        "tensor_hooks": [dict(p._backward_hooks or {}) for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "grad_values": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "objects": {k: v for k, v in state.items()},  # the very tensors (parameters, buffers)
        "values": {k: v.detach().clone() for k, v in state.items()},
    }


def assert_same(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert after["grad_enabled"] == before["grad_enabled"], "torch.is_grad_enabled() changed"
    assert after["global_hooks"] == before["global_hooks"], "global module hooks changed"
    assert after["module_hooks"] == before["module_hooks"], "a module's hooks changed"
    assert after["tensor_hooks"] == before["tensor_hooks"], "a parameter's tensor hooks changed"
    assert after["modes"] == before["modes"], "a module's training flag changed"
    assert after["flags"] == before["flags"], "a parameter's requires_grad changed"
    assert all(a is b for a, b in zip(after["grads"], before["grads"], strict=True)), (
        "a parameter's .grad was replaced or set"
    )
    for a, b in zip(after["grads"], before["grad_values"], strict=True):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), ".grad changed"
    assert after["objects"].keys() == before["objects"].keys()
    replaced = [k for k, v in after["objects"].items() if v is not before["objects"][k]]
    assert replaced == [], f"parameters or buffers replaced: {replaced}"
    changed = [k for k, v in after["values"].items() if not torch.equal(v, before["values"][k])]
    assert changed == [], f"parameters or buffers changed (BatchNorm statistics?): {changed}"


MUTATIONS: dict[str, Callable[[Net], Any]] = {
    "a BatchNorm statistic": lambda m: m.features[1].running_mean.add_(0.1),
    "a BatchNorm counter": lambda m: m.features[1].num_batches_tracked.add_(1),
    "a buffer replaced": lambda m: setattr(
        m.features[1], "running_var", m.features[1].running_var.clone()
    ),
    "a weight": lambda m: m.features[3].weight.data.mul_(2),
    "a training flag": lambda m: m.head.train(),
    "requires_grad": lambda m: m.features[0].weight.requires_grad_(True),
    "a new .grad": lambda m: setattr(m.features[3].weight, "grad", torch.zeros(12, 8, 3, 3)),
    "a .grad accumulated": lambda m: m.head.weight.grad.add_(1),
    "a forward hook left": lambda m: m.features[2].register_forward_hook(lambda *a: None),
    "a backward hook removed": lambda m: m.head._backward_hooks.clear(),
    "a tensor hook left": lambda m: m.features[3].bias.register_hook(lambda g: None),
    "a global hook left": lambda m: nn.modules.module.register_module_forward_hook(lambda *a: None),
    "grad mode": lambda m: torch.set_grad_enabled(False),
}


@pytest.mark.parametrize("change", list(MUTATIONS))
def test_the_snapshot_sees_every_kind_of_change(change):
    """The check below is not vacuous: each change a call could leave behind fails it."""
    model, _ = user_model()
    before = snapshot(model)
    handle = MUTATIONS[change](model)
    try:
        with pytest.raises(AssertionError):
            assert_same(model, before)
    finally:
        torch.set_grad_enabled(True)
        if isinstance(handle, torch.utils.hooks.RemovableHandle):
            handle.remove()


@pytest.fixture
def global_hooks() -> Iterator[list[nn.Module]]:
    """Global module hooks, as a profiler or a user's debugging tool installs them."""
    seen: list[nn.Module] = []
    handles = [
        nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(m)),
        nn.modules.module.register_module_forward_pre_hook(lambda m, i: None),
    ]
    yield seen
    for h in handles:
        h.remove()


@pytest.fixture(scope="module")
def interpreter(one_thread) -> fw.Interpreter:
    """A vebi Interpreter fitted on a clean copy of the user model (its fit is a case below)."""
    model, _ = user_model()
    return fw.Interpreter(model, tau=5).fit(*labelled(16))


def images(n: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, 16, 16)


def labelled(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images whose class 0..3 is the brightness of their top half (the lasso converges
    in about a second; on pure noise it can take a minute)."""
    y = torch.arange(n) % 4
    x = images(n)
    x[:, :, :8] *= (y / 3).view(n, 1, 1, 1)
    return x, y


def cancel(done: int, total: int, partial: Any) -> None:
    raise KeyboardInterrupt("cancelled by the user")  # what the widget's cancel button raises


WITH_LAYER = {"grad-fam", "grad-cam", "score-fam", "score-cam"}
SCORED = {"score-fam", "score-cam"}  # they take on_progress and run several forwards
FAM = {"grad-fam", "score-fam"}

#: case → (what it needs from the method, the error it raises or None)
CASES: dict[str, tuple[Callable[[str], bool], tuple[type[BaseException], str] | None]] = {
    "ok": (lambda m: True, None),
    "ok-under-no-grad": (lambda m: True, None),
    "bad-layer": (lambda m: m in WITH_LAYER, (ValueError, "not a submodule of the model")),
    "layer-on-whole-network-method": (
        lambda m: m not in WITH_LAYER,
        (ValueError, "takes no layer="),
    ),
    "bad-target": (lambda m: True, (ValueError, "99")),
    "nan-input": (lambda m: True, (ValueError, "non-finite")),
    "bad-option": (lambda m: True, (TypeError, "no option")),
    "raises-in-first-forward": (lambda m: True, (RuntimeError, "boom half way")),
    "raises-in-a-later-forward": (lambda m: m in SCORED, (RuntimeError, "boom half way")),
    "cancelled": (lambda m: m in SCORED, (KeyboardInterrupt, "cancelled")),
}
PARAMS = [
    pytest.param(method, case, id=f"{method}-{case}")
    for method in fw.methods()
    for case, (applies, _) in CASES.items()
    if applies(method)
]


def test_every_method_is_covered():
    """A method added to fw.methods() later is in the matrix below without editing it."""
    covered = {method for method, _ in (p.values for p in PARAMS)}
    assert covered == set(fw.methods())
    assert len(PARAMS) >= 6 * 7


@pytest.mark.parametrize(("method", "case"), PARAMS)
def test_explain_leaves_the_model_exactly_as_found(
    method, case, interpreter, global_hooks, one_thread
):
    model, fuse = user_model()
    if method == "vebi":  # the fitted interpreter explains this very model
        interpreter.model = model
    x = images()
    options: dict[str, Any] = {"interpreter": interpreter} if method == "vebi" else {}
    layer = "features.3" if method in WITH_LAYER else None
    target = None
    if case == "bad-layer":
        layer = "features.9"
    elif case == "layer-on-whole-network-method":
        layer = "features.3"
    elif case == "bad-target":
        target = fw.targets.Dimension(99) if method in FAM else fw.targets.ClassLogit(99)
    elif case == "nan-input":
        x[1, 0, 2, 3] = float("nan")
    elif case == "bad-option":
        options["no_such_option"] = 1
    elif case == "raises-in-first-forward":
        fuse.arm(0)
    elif case == "raises-in-a-later-forward":
        fuse.arm(1)  # the plain forward passes, a masked batch raises
        options["batch_size"] = 2
    elif case == "cancelled":
        options.update(on_progress=cancel, batch_size=2)
    before = snapshot(model)
    calls_before = len(global_hooks)
    _, error = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate-map warnings of a random model
        if case == "ok-under-no-grad":
            with torch.no_grad():
                inside = snapshot(model)
                exp = fw.explain(model, x, method, layer=layer, target=target, **options)
                assert_same(model, inside)
        elif error is None:
            exp = fw.explain(model, x, method, layer=layer, target=target, **options)
        else:
            kind, match = error
            with pytest.raises(kind, match=match):
                fw.explain(model, x, method, layer=layer, target=target, **options)
    assert_same(model, before)
    if error is None:
        assert exp.heatmap.shape == (3, 16, 16) and bool(torch.isfinite(exp.heatmap).all())
        assert len(global_hooks) > calls_before, "the user's global hook saw the forward"
    if case.startswith("raises"):
        assert fuse.calls > (fuse.after or 0), "the user's hook ran and raised"


def test_the_interpreter_fit_and_its_errors_leave_the_model(global_hooks, one_thread):
    model, fuse = user_model()
    x, y = labelled(12)
    before = snapshot(model)
    interp = fw.Interpreter(model, tau=5).fit(x, y)
    assert_same(model, before)
    assert any(interp.relevant_features(c) for c in range(4))
    with pytest.raises(ValueError, match="not in the fitted labels"):
        interp.explain(x[:2], target=9)
    assert_same(model, before)
    fuse.arm(0)
    with pytest.raises(RuntimeError, match="boom half way"):
        fw.Interpreter(model, tau=5).fit(x, y)
    assert_same(model, before)
    with pytest.raises(RuntimeError, match="boom half way"):
        interp.average_visualizations(0, x, y)
    assert_same(model, before)


DECONV_CASES = {
    "ok": None,
    "bad-layer": (ValueError, "not a submodule"),
    "bad-channel": (ValueError, "channel"),
    "bad-relu-rule": (ValueError, "relu"),
    "raises-half-way": (RuntimeError, "boom half way"),
}


@pytest.mark.parametrize("case", list(DECONV_CASES))
def test_deconvnet_leaves_the_model_exactly_as_found(case, global_hooks, one_thread):
    model, fuse = user_model()
    x = images()
    args: dict[str, Any] = {"layer": "features.3", "channel": 2}
    if case == "bad-layer":
        args["layer"] = "features.9"
    elif case == "bad-channel":
        args["channel"] = 12  # features.3 has 12 channels: 0..11
    elif case == "bad-relu-rule":
        args["relu"] = "leaky"
    elif case == "raises-half-way":
        fuse.arm(0)
    before = snapshot(model)
    error = DECONV_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if error is None:
            maps = fw.deconvnet(model, x, **args)
            assert maps.shape == (3, 16, 16) and float(maps.amax()) > 0
        else:
            with pytest.raises(error[0], match=error[1]):
                fw.deconvnet(model, x, **args)
    assert_same(model, before)


def test_the_tap_and_preserved_leave_the_model_also_when_the_body_raises(global_hooks):
    model, fuse = user_model()
    x = images()
    before = snapshot(model)
    with preserved(model), Tap(model.features[3]) as tap:
        model(x)
        assert tap.maps().shape == (3, 12, 8, 8)
    assert_same(model, before)
    fuse.arm(0)
    tap = Tap(model.features[3])
    with pytest.raises(RuntimeError, match="boom"), preserved(model), tap, torch.no_grad():
        model(x)  # no_grad inside the body is undone by its own exit
    assert_same(model, before)


def test_the_widget_leaves_the_model_exactly_as_found(global_hooks, one_thread):
    model, fuse = user_model()
    x = images()
    before = snapshot(model)
    explorer = fw.Explorer(model, x, layer="features.3", methods=["grad-fam", "score-fam"])
    try:
        explorer.select(1)
        assert explorer.explanation is not None and explorer.explanation.method == "grad-fam"
        fuse.arm(0)
        explorer.method = "score-fam"
        with pytest.raises(RuntimeError, match="boom half way"):
            explorer.select(2)  # the forward raises: the widget shows the error
        assert explorer.state == "error" and "boom half way" in explorer.error
    finally:
        explorer.close()
    assert_same(model, before)
