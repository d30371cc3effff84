"""The ``torch.fx`` graph engine of the gradient-free methods (fixations, deconvnet, vebi).

- :func:`trace`: one traced graph per model, cached while its modules and tensors stay the same;
  wrappers (``nn.DataParallel``, ``DistributedDataParallel``, ``torch.compile``) are traced
  through the module they wrap (:func:`unwrap`).
- :func:`op_kind`: the one vocabulary of op kinds, resolved once per node (see :data:`KINDS`).
- :func:`signal_nodes`: the nodes whose values depend on the images' values.
- :func:`record_forward`: the single recorded forward pass: the traced graph run node by node,
  the inputs of the chosen nodes kept as their op saw them (copied before an in-place op
  overwrites them).
- :func:`describe`: one way to name a node in error messages.
"""

from __future__ import annotations

import inspect
import math
import operator
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# ----------------------------------------------------------------------------- wrappers and trace


def unwrap(model: nn.Module) -> nn.Module:
    """The module a wrapper runs: ``nn.DataParallel`` / ``DistributedDataParallel``
    (``.module``) and ``torch.compile``'s ``OptimizedModule`` (``._orig_mod``), nested ones too;
    any other module is returned as it is."""
    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
            getattr(model, "_orig_mod", None), nn.Module
        ):
            model = model._orig_mod
        else:
            break
    return model


def trace(model: nn.Module, method: str) -> fx.GraphModule:
    """``torch.fx.symbolic_trace(unwrap(model))``, cached; ``method`` names the caller in errors.

    Where a submodule cannot be traced (its forward branches on tensor values, or raises on
    fx's proxies), it is kept whole as a leaf and tracing tries again (at most 8 times); the
    leaves and why are in ``traced.__dict__["_fw_leaves"]`` (``{name: reason}``), and the
    methods name them when they need to look inside. Where the model itself cannot be traced,
    the error says why: its forward raised (that exception's message), or it branches on
    tensor values (the only case where that hint is given), naming the innermost module.
    """
    model = unwrap(model)
    key = _fingerprint(model)
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    names = {id(m): name for name, m in model.named_modules()}
    leaves: dict[str, str] = {}
    while True:
        try:
            traced = fx.GraphModule(model, _LeafTracer(set(leaves)).trace(model))
            break
        except Exception as error:
            where = _failing_module(error, names)
            if where and where not in leaves and len(leaves) < 8:
                leaves[where] = _reason(error)
                continue
            raise ValueError(_trace_message(method, model, where, error)) from error
    traced.__dict__["_fw_leaves"] = leaves
    _TRACES[model] = (key, traced)
    return traced


class _LeafTracer(fx.Tracer):
    """fx's tracer, keeping the named modules whole."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return qualified_name in self.leaves or super().is_leaf_module(m, qualified_name)


def _failing_module(error: BaseException, names: dict[int, str]) -> str | None:
    """The qualified name of the innermost submodule whose forward was running at ``error``
    (None for the model itself or when none was)."""
    found = None
    tb = error.__traceback__
    while tb is not None:
        me = tb.tb_frame.f_locals.get("self")
        if (
            isinstance(me, nn.Module)
            and id(me) in names
            and tb.tb_frame.f_code.co_name == "forward"
        ):
            found = names[id(me)]
        tb = tb.tb_next
    return found or None


def _branches(error: BaseException) -> bool:
    """Whether fx failed on data-dependent control flow (``if x.sum() > 0``)."""
    return isinstance(error, fx.proxy.TraceError) and "control flow" in str(error)


def _iterates(error: BaseException) -> bool:
    """Whether fx failed on iterating over (or ``len`` of) a traced value."""
    text = str(error)
    return isinstance(error, (fx.proxy.TraceError, RuntimeError)) and (
        "iterated" in text or "'len' is not supported" in text
    )


def _reason(error: BaseException) -> str:
    if _branches(error):
        return "its forward branches on tensor values"
    if _iterates(error):
        return "its forward iterates over a tensor or takes its len()"
    return f"its forward raised {type(error).__name__}: {error}"


def _trace_message(method: str, model: nn.Module, where: str | None, error: BaseException) -> str:
    inside = f" in module {where!r}" if where else ""
    head = (
        f"{method} follows the model's graph, and torch.fx could not trace {type(model).__name__}"
    )
    if _branches(error):
        return (
            f"{head}: its forward branches on tensor values{inside} ({error}); wrap such parts "
            "in a leaf module or explain a traceable sub-model"
        )
    if _iterates(error):
        return (
            f"{head}: its forward iterates over a tensor or takes its len(){inside}; fx "
            f"cannot follow that ({type(error).__name__})"
        )
    return f"{head}: the forward raised {type(error).__name__}{inside}: {error}"


def _fingerprint(model: nn.Module) -> tuple:
    modules = tuple((name, id(m), m.training) for name, m in model.named_modules())
    tensors = tuple(id(t) for t in model.parameters()) + tuple(id(t) for t in model.buffers())
    return (type(model).forward, modules, tensors)


def describe(module: fx.GraphModule, node: fx.Node) -> str:
    """``"module 'layer1.0.relu' (ReLU)"`` or ``"torch.mul in module 'features.3' (...)"``."""
    if node.op == "call_module":
        return f"module {node.target!r} ({type(module.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        what = f"method Tensor.{node.target}"
    else:
        target = node.target
        what = f"{getattr(target, '__module__', None) or ''}.{getattr(target, '__name__', target)}"
        what = what.lstrip(".")
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, kind = list(stack.values())[-1]
        name = getattr(kind, "__name__", str(kind))
        return f"{what} in module {path!r} ({name})"
    return f"{what} in the model's forward"


# ----------------------------------------------------------------------------- the kinds

KINDS = (
    "conv", "conv_transpose", "linear", "activation", "norm", "pool_max", "pool_avg", "reshape",
    "split", "cat", "add", "gate", "scale", "attention", "resize", "identity", "shape", "other",
)  # fmt: skip
"""Every value :func:`op_kind` returns. What maps to each kind:

- ``conv``: ``nn.Conv1d/2d/3d`` (grouped, depthwise, dilated), ``F.conv1d/2d/3d``.
- ``conv_transpose``: ``nn.ConvTranspose1d/2d/3d``, ``F.conv_transpose1d/2d/3d``.
- ``linear``: ``nn.Linear``, ``F.linear``, ``nn.Bilinear`` is not; ``matmul`` / ``@`` /
  ``bmm`` / ``einsum`` / ``addmm`` with one image-dependent operand (the other a parameter).
- ``activation``: the modules of :data:`ACTIVATIONS`, their functions and tensor methods
  (``relu``, ``gelu``, ``sigmoid``, ``clamp``, ...), elementwise ``abs``/``exp``/``sqrt``/``pow``
  by a number, and a softmax that is not inside an attention (monotone in its own entry).
- ``norm``: :data:`NORMS` (matched by class), classes named in :data:`NORM_CLASS_NAMES`
  (timm's ``LayerNorm2d``, ``RmsNorm``, ``BatchNormAct2d``, ...), ``F.layer_norm``,
  ``F.batch_norm``, ``F.group_norm``, ``F.instance_norm``, ``F.rms_norm``, ``F.normalize``,
  ``F.local_response_norm``.
- ``pool_max``: ``nn.MaxPool*``, ``nn.AdaptiveMaxPool*``, their functions, ``amax``.
- ``pool_avg``: ``nn.AvgPool*``, ``nn.AdaptiveAvgPool*``, their functions, ``mean`` / ``sum``.
- ``reshape`` (exact index bookkeeping, nothing computed): ``view``, ``reshape``, ``flatten``,
  ``unflatten``, ``permute``, ``transpose``, ``movedim``, ``squeeze``/``unsqueeze``,
  ``expand``/``repeat``, ``roll``, ``nn.Flatten``, ``nn.Unflatten``, ``nn.ChannelShuffle``,
  ``nn.PixelShuffle``/``PixelUnshuffle``, padding (``F.pad``, ``nn.ZeroPad2d``, ...), and a
  ``getitem`` whose index only adds axes (``x[:, None]``, ``x[...]``).
- ``split``: ``chunk``, ``split``, ``unbind``, ``tensor_split``, ``narrow``, ``select``,
  ``getitem`` of their result (or of any op that returns several tensors, e.g. the
  ``(output, weights)`` of ``nn.MultiheadAttention``) and a ``getitem`` that selects a part of
  a tensor (``x[:, 0]``, ``x[:, 1:]``).
- ``cat``: ``torch.cat`` / ``concat`` / ``concatenate``, ``torch.stack``.
- ``add``: ``+``, ``-``, ``+=``, ``-=``, ``torch.add`` / ``sub``, ``Tensor.add`` / ``sub``
  (and their in-place forms), ``rsub``.
- ``gate``: ``*`` / ``torch.mul`` / ``Tensor.mul`` of two image-dependent tensors (a
  squeeze-excitation gate ``x * sigmoid(fc(pool(x)))``, a GLU-style product) and ``/`` of two
  image-dependent tensors (``x / x.norm(...)``).
- ``scale``: ``*`` or ``/`` by a number, a parameter or a buffer (ConvNeXt's layer scale), ``-x``.
- ``attention``: ``nn.MultiheadAttention``, ``F.scaled_dot_product_attention``,
  ``F.multi_head_attention_forward``, torchvision's ``shifted_window_attention``, ``matmul`` /
  ``@`` / ``bmm`` / ``einsum`` of two image-dependent tensors, and a softmax whose result feeds
  such a product.
- ``resize``: ``nn.Upsample``, ``nn.UpsamplingNearest2d`` / ``UpsamplingBilinear2d``,
  ``F.interpolate``, ``F.upsample*``.
- ``identity``: dropout (``nn.Dropout*``, ``F.dropout*``, ``DropPath``, ``stochastic_depth``),
  ``nn.Identity``, ``clone``, ``contiguous``, ``detach``, ``to`` / ``float`` / ``half`` /
  ``type_as`` casts, and the graph's output node.
- ``shape``: ``size()``, ``dim()``, ``.shape``, ``numel()``, ``getattr`` reads, and anything
  computed from those alone: values that describe a tensor, not image content.
- ``other``: everything else (placeholders and ``get_attr`` nodes included).
"""

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.LeakyReLU,
    nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardtanh,
    nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Hardshrink, nn.Softshrink,
)  # fmt: skip
"""Elementwise activation modules (kind ``activation``)."""

NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)  # fmt: skip
"""Normalisation modules (kind ``norm``): BatchNorm1d/2d/3d (SyncBatchNorm too), LayerNorm
(torchvision's ``LayerNorm2d`` is a subclass), GroupNorm, InstanceNorm, LocalResponseNorm,
RMSNorm."""

NORM_CLASS_NAMES = frozenset({
    "LayerNorm2d", "LayerNorm", "LayerNormAct", "LayerNormAct2d", "RmsNorm", "RmsNorm2d",
    "RMSNorm", "SimpleNorm", "SimpleNorm2d", "BatchNormAct2d", "SyncBatchNormAct",
    "GroupNormAct", "GroupNorm1", "GroupNorm1Act", "FrozenBatchNorm2d", "FrozenBatchNormAct2d",
})  # fmt: skip
"""Norm modules of other libraries (timm, torchvision.ops), matched by class name when fx keeps
them as leaves."""

_IDENTITY_CLASS_NAMES = frozenset({"DropPath", "StochasticDepth", "DropBlock2d", "Identity"})


def _have(owner: object, *names: str) -> set:
    return {getattr(owner, n) for n in names if hasattr(owner, n)}


_MODULE_KINDS: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv"),
    ((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), "conv_transpose"),
    ((nn.Linear,), "linear"),
    (ACTIVATIONS, "activation"),
    (NORMS, "norm"),
    ((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
      nn.AdaptiveMaxPool3d), "pool_max"),
    ((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
      nn.AdaptiveAvgPool3d), "pool_avg"),
    ((nn.Flatten, nn.Unflatten, nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle,
      nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
      nn.modules.padding._ReplicationPadNd, nn.ZeroPad2d), "reshape"),
    ((nn.Upsample,), "resize"),
    ((nn.modules.dropout._DropoutNd, nn.Identity), "identity"),
    ((nn.MultiheadAttention,), "attention"),
    ((nn.Softmax, nn.Softmax2d, nn.LogSoftmax), "softmax"),
)  # fmt: skip

_SOFTMAX_FUNCTIONS = _have(F, "softmax", "log_softmax") | _have(torch, "softmax", "log_softmax")
_SOFTMAX_METHODS = {"softmax", "log_softmax"}
_PRODUCTS = _have(torch, "matmul", "bmm", "einsum", "mm", "baddbmm", "addmm") | {operator.matmul}
_PRODUCT_METHODS = {"matmul", "bmm", "mm", "__matmul__", "baddbmm", "addmm"}
_MULS = {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__", "__rmul__"}
_DIVS = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_",
         "true_divide", "__truediv__"}  # fmt: skip
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement", "stride", "is_contiguous"}
_ADD_METHODS = {"add", "add_", "sub", "sub_", "__add__", "__radd__", "__sub__", "__rsub__", "rsub"}
_ACTIVATION_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min",
    "clamp_min_", "clamp_max", "clamp_max_", "clip", "clip_", "abs", "exp", "log", "sqrt",
    "rsqrt", "square", "pow", "hardtanh_",
}  # fmt: skip
_RESHAPE_METHODS = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "movedim", "moveaxis",
    "swapaxes", "squeeze", "unsqueeze", "view_as", "reshape_as", "expand", "expand_as",
    "repeat", "tile", "roll",
}  # fmt: skip
_SPLIT_METHODS = {
    "chunk",
    "split",
    "unbind",
    "tensor_split",
    "narrow",
    "select",
    "split_with_sizes",
}
_IDENTITY_METHODS = {
    "contiguous", "clone", "detach", "to", "float", "half", "double", "bfloat16", "type",
    "type_as", "cpu", "cuda",
}  # fmt: skip
_POOL_METHODS = {"mean": "pool_avg", "sum": "pool_avg", "amax": "pool_max"}

_FUNCTION_KINDS: dict[Any, str] = {
    **dict.fromkeys(_have(F, "conv1d", "conv2d", "conv3d") | _have(torch, "conv2d"), "conv"),
    **dict.fromkeys(_have(F, "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
                    "conv_transpose"),
    **dict.fromkeys(_have(F, "linear"), "linear"),
    **dict.fromkeys(
        _have(F, "relu", "relu_", "relu6", "gelu", "silu", "hardswish", "hardsigmoid", "mish",
              "leaky_relu", "leaky_relu_", "prelu", "rrelu", "elu", "elu_", "selu", "celu",
              "sigmoid", "tanh", "softplus", "hardtanh", "hardtanh_", "softsign", "tanhshrink",
              "logsigmoid", "threshold", "hardshrink", "softshrink")
        | _have(torch, "relu", "relu_", "sigmoid", "tanh", "clamp", "clip", "clamp_min",
                "clamp_max", "abs", "exp", "log", "sqrt", "rsqrt", "square", "pow", "selu",
                "celu", "prelu")
        | {operator.pow, operator.abs},
        "activation"),
    **dict.fromkeys(
        _have(F, "layer_norm", "batch_norm", "group_norm", "instance_norm", "rms_norm",
              "normalize", "local_response_norm"),
        "norm"),
    **dict.fromkeys(
        _have(F, "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d",
              "adaptive_max_pool2d", "adaptive_max_pool3d") | _have(torch, "amax", "max_pool2d"),
        "pool_max"),
    **dict.fromkeys(
        _have(F, "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
              "adaptive_avg_pool2d", "adaptive_avg_pool3d")
        | _have(torch, "mean", "sum", "avg_pool1d"),
        "pool_avg"),
    **dict.fromkeys(
        _have(torch, "flatten", "reshape", "permute", "transpose", "movedim", "moveaxis",
              "swapaxes", "squeeze", "unsqueeze", "roll", "tile", "unflatten",
              "channel_shuffle", "pixel_shuffle", "pixel_unshuffle")
        | _have(F, "pad", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle"),
        "reshape"),
    **dict.fromkeys(
        _have(torch, "chunk", "split", "unbind", "tensor_split", "narrow", "select"), "split"),
    **dict.fromkeys(_have(torch, "cat", "concat", "concatenate", "stack"), "cat"),
    **dict.fromkeys(
        _have(torch, "add", "sub", "subtract", "rsub")
        | {operator.add, operator.iadd, operator.sub, operator.isub},
        "add"),
    **dict.fromkeys({operator.neg, torch.neg}, "scale"),
    **dict.fromkeys(
        _have(F, "scaled_dot_product_attention", "multi_head_attention_forward"), "attention"),
    **dict.fromkeys(
        _have(F, "interpolate", "upsample", "upsample_nearest", "upsample_bilinear"), "resize"),
    **dict.fromkeys(
        _have(F, "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
              "feature_alpha_dropout") | _have(torch, "clone", "detach"),
        "identity"),
    len: "shape",
}  # fmt: skip
_ATTRIBUTE_KINDS = {"T": "reshape", "mT": "reshape", "data": "identity"}
_FUNCTION_NAMES = {
    "shifted_window_attention": "attention",
    "stochastic_depth": "identity",
    "drop_path": "identity",
    "_patch_merging_pad": "reshape",
    "channel_shuffle": "reshape",
}


def signal_nodes(graph_module: fx.GraphModule) -> set[fx.Node]:
    """The nodes whose value depends on the values of the first placeholder (the images).

    Shape reads (``x.shape``, ``x.size(0)``) break the dependence: a class token expanded to
    ``x.shape[0]`` rows is not image content. Cached on ``graph_module``.
    """
    cached = graph_module.__dict__.get("_fw_signal")
    if cached is not None:
        return cached
    nodes = list(graph_module.graph.nodes)
    first = next((n for n in nodes if n.op == "placeholder"), None)
    found = {first} if first is not None else set()
    shapes: set[fx.Node] = set()
    for node in nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        inputs = node.all_input_nodes
        if _constructs(node):
            continue
        if any(n in found for n in inputs):
            (shapes if _reads_shape(node) else found).add(node)
        elif any(n in shapes for n in inputs) and _size_arithmetic(node):
            shapes.add(node)
    graph_module.__dict__["_fw_signal"] = found
    graph_module.__dict__["_fw_shape"] = shapes
    return found


_CONSTRUCTORS = {
    "new_zeros", "new_ones", "new_full", "new_empty", "new_tensor", "zeros_like", "ones_like",
    "empty_like", "full_like", "rand_like", "randn_like",
}  # fmt: skip


def _constructs(node: fx.Node) -> bool:
    """``x.new_zeros(...)``, ``torch.zeros_like(x)``: a tensor made from ``x``'s shape only."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return node.op in ("call_method", "call_function") and name in _CONSTRUCTORS


_SHAPE_ATTRIBUTES = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "layout"}


def _reads_shape(node: fx.Node) -> bool:
    """``x.size()``, ``x.dim()``, ``x.shape``, ``len(x)``: a value that describes a tensor."""
    if node.op == "call_method":
        return node.target in _SHAPE_METHODS
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRIBUTES
    return node.op == "call_function" and node.target is len


def _size_arithmetic(node: fx.Node) -> bool:
    """Python arithmetic or indexing on sizes (``x.shape[0] // 2``)."""
    return node.op == "call_function" and (
        getattr(node.target, "__module__", None) in ("_operator", "operator")
        or node.target in (getattr, len, int, math.prod)
    )


def op_kind(graph_module: fx.GraphModule, node: fx.Node) -> str:
    """The kind of ``node``: one of :data:`KINDS` (see there for what maps to each). Resolved
    once per node and cached in ``node.meta["fw_kind"]``."""
    kind = node.meta.get("fw_kind")
    if kind is None:
        kind = _resolve(graph_module, node)
        node.meta["fw_kind"] = kind
    return kind


def _resolve(gm: fx.GraphModule, node: fx.Node) -> str:
    signal = signal_nodes(gm)
    if node.op == "output":
        return "identity"
    if node.op in ("placeholder", "get_attr"):
        return "other"
    if node in gm.__dict__["_fw_shape"]:
        return "shape"
    if node.op == "call_module":
        sub = gm.get_submodule(node.target)
        kind = next((k for types, k in _MODULE_KINDS if isinstance(sub, types)), None)
        if kind is None:
            name = type(sub).__name__
            if name in NORM_CLASS_NAMES:
                kind = "norm"
            elif name in _IDENTITY_CLASS_NAMES:
                kind = "identity"
            else:
                return "other"
        return _softmax_kind(gm, node, signal) if kind == "softmax" else kind
    target = node.target
    if node.op == "call_method":
        if target in _SOFTMAX_METHODS:
            return _softmax_kind(gm, node, signal)
        if target in _PRODUCT_METHODS:
            return _product_kind(node, signal)
        if target in _MULS or target in _DIVS:
            return _mul_kind(node, signal)
        if target in _ADD_METHODS:
            return "add"
        if target == "neg":
            return "scale"
        for table, kind in (
            (_ACTIVATION_METHODS, "activation"),
            (_RESHAPE_METHODS, "reshape"),
            (_SPLIT_METHODS, "split"),
            (_IDENTITY_METHODS, "identity"),
            (_SHAPE_METHODS, "shape"),
        ):
            if target in table:
                return kind
        return _POOL_METHODS.get(target, "other")
    if node.op != "call_function":
        return "other"
    if target is operator.getitem:
        return _getitem_kind(gm, node)
    if target is getattr:
        return _ATTRIBUTE_KINDS.get(node.args[1] if len(node.args) > 1 else None, "other")
    if target in _SOFTMAX_FUNCTIONS:
        return _softmax_kind(gm, node, signal)
    if target in _PRODUCTS:
        return _product_kind(node, signal)
    if target in _MULS or target in _DIVS:
        return _mul_kind(node, signal)
    try:
        kind = _FUNCTION_KINDS.get(target)
    except TypeError:  # an unhashable target
        kind = None
    if kind is None:
        kind = _FUNCTION_NAMES.get(getattr(target, "__name__", ""), "other")
    return kind


def _tensor_operands(node: fx.Node, signal: set[fx.Node]) -> list[fx.Node]:
    """The image-dependent arguments of ``node``, each occurrence (``x @ x`` has two)."""
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if n in signal else None)
    return found


def _mul_kind(node: fx.Node, signal: set[fx.Node]) -> str:
    """``gate`` for a product / quotient of two image-dependent tensors, else ``scale``."""
    return "gate" if len(_tensor_operands(node, signal)) >= 2 else "scale"


def _product_kind(node: fx.Node, signal: set[fx.Node]) -> str:
    """``attention`` for a matrix product of two image-dependent tensors, else ``linear``."""
    return "attention" if len(_tensor_operands(node, signal)) >= 2 else "linear"


_PASSING = {"identity", "reshape", "scale"}


def _softmax_kind(gm: fx.GraphModule, node: fx.Node, signal: set[fx.Node]) -> str:
    """``attention`` when the softmax's result (through dropout, casts, views) is multiplied
    with another image-dependent tensor, else ``activation``."""
    todo, seen = list(node.users), set()
    while todo:
        user = todo.pop()
        if user in seen:
            continue
        seen.add(user)
        if user.op in ("call_function", "call_method") and (
            user.target in _PRODUCTS or user.target in _PRODUCT_METHODS
        ):
            if len(_tensor_operands(user, signal)) >= 2:
                return "attention"
        elif op_kind(gm, user) in _PASSING:
            todo.extend(user.users)
    return "activation"


def _getitem_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """``getitem``: of an op with several results → ``split``; an index that only adds axes →
    ``reshape``; an index with integers or partial slices → ``split``; a tensor index
    (advanced indexing) → ``other``."""
    source, index = node.args[0], node.args[1]
    if isinstance(source, fx.Node) and (
        op_kind(gm, source) == "split" or _returns_several(gm, source)
    ):
        return "split"
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (fx.Node, list, Tensor)) for i in items):
        return "other"
    if all(i is None or i is Ellipsis or i == slice(None) for i in items):
        return "reshape"
    return "split"


def _returns_several(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.MultiheadAttention)
    return node.op == "call_method" and node.target in ("max", "min", "sort", "topk")


# ----------------------------------------------------------------------------- functions


class _ConcreteProxy(fx.Proxy):
    def __len__(self) -> int:
        return len(self.tracer.real[self.node])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.tracer.create_proxy("call_function", operator.setitem, (self, key, value), {})


class _ConcreteTracer(fx.Tracer):
    """Traces a function while running it on real values: sizes, ``len`` and branches on them
    take their real values (the graph holds for inputs of these shapes)."""

    def __init__(self, inputs: dict[str, Any]) -> None:
        super().__init__(autowrap_functions=())
        self.inputs = inputs
        self.real: dict[fx.Node, Any] = {}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def create_proxy(self, kind: str, target: Any, args: Any, kwargs: Any, *rest: Any, **more: Any):
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **more)
        if kind == "placeholder":
            value = self.inputs[target]
        else:
            a = fx.node.map_aggregate(args, self._real)
            k = fx.node.map_aggregate(kwargs, self._real)
            if kind == "call_function":
                value = target(*a, **k)
            elif kind == "call_method":
                value = getattr(a[0], target)(*a[1:], **k)
            else:
                value = None
        self.real[proxy.node] = value
        return proxy

    def _real(self, v: Any) -> Any:
        return self.real[v.node] if isinstance(v, fx.Proxy) else v

    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(self.real[obj.node])

    def iter(self, obj: fx.Proxy) -> Any:
        return iter([obj[i] for i in range(len(self.real[obj.node]))])


def trace_function(
    fn: Callable[..., Any], args: tuple, kwargs: dict
) -> tuple[fx.GraphModule, list[Tensor]]:
    """A graph of ``fn(*args, **kwargs)`` (a function ``torch.fx.wrap`` kept whole, e.g.
    torchvision's ``shifted_window_attention``) whose placeholders are its tensor arguments.

    Non-tensor arguments are fixed, and sizes read inside take their values from ``args``, so
    the graph holds for inputs of these shapes. Returns the graph and the tensor arguments in
    placeholder order.
    """
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    tensors = {k: v for k, v in bound.arguments.items() if isinstance(v, Tensor)}
    fixed = {k: v for k, v in bound.arguments.items() if k not in tensors}
    names = list(tensors)
    passed = ", ".join(f"{n}={n}" for n in names)
    source = f"def traced({', '.join(names)}):\n    return fn({passed}, **fixed)\n"
    scope: dict[str, Any] = {"fn": fn, "fixed": fixed}
    exec(source, scope)  # a function with one named parameter per tensor argument
    tracer = _ConcreteTracer({n: t.clone() for n, t in tensors.items()})
    graph = tracer.trace(scope["traced"])
    return fx.GraphModule(nn.Module(), graph), list(tensors.values())


# ----------------------------------------------------------------------------- recorded forward


@dataclass
class Recording:
    """One recorded forward pass of a traced model.

    Attributes:
        records: for each kept node, the ``(args, kwargs)`` its op was called with, tensors as
            they were at that moment (copied if a later in-place op overwrote them).
        shapes: the output shape of every node that produced a tensor.
        output: the graph's output (or the value of ``stop``).
    """

    records: dict[fx.Node, tuple[tuple, dict]] = field(default_factory=dict)
    shapes: dict[fx.Node, torch.Size] = field(default_factory=dict)
    output: Any = None

    def arg(self, node: fx.Node, index: int, name: str, default: Any = None) -> Any:
        """The recorded value of argument ``index`` (positional) or ``name`` (keyword)."""
        args, kwargs = self.records[node]
        if len(args) > index:
            return args[index]
        return kwargs.get(name, default)


def record_forward(
    graph_module: fx.GraphModule,
    inputs: Tensor | tuple[Any, ...],
    keep: Callable[[fx.Node], bool] | Iterable[fx.Node] = (),
    stop: fx.Node | None = None,
) -> Recording:
    """Run ``graph_module`` node by node on ``inputs`` and record the inputs of kept nodes.

    Args:
        graph_module: a traced model (:func:`trace`).
        inputs: the value of the first placeholder ``(B,C,H,W)``, or one value per
            placeholder (missing trailing ones take their defaults).
        keep: which nodes' ``(args, kwargs)`` to record: a predicate or a collection of nodes.
        stop: run only what ``stop`` needs and return its value as ``output``.

    In-place ops (``ReLU(inplace=True)``, ``x += y``, ``x.add_``) still run in place, as in the
    model; a recorded tensor they are about to overwrite is copied first (copy on write), so
    every record holds the value its op saw. Values no later node needs are freed as the walk
    goes. Gradients are whatever the caller's mode says (wrap in ``torch.no_grad()``).
    """
    if callable(keep):
        wanted: Callable[[fx.Node], bool] = keep
    else:
        kept = set(keep)
        wanted = kept.__contains__
    values = inputs if isinstance(inputs, tuple) else (inputs,)
    nodes = list(graph_module.graph.nodes)
    if stop is not None:
        needed = ancestors(stop)
        nodes = [n for n in nodes if n in needed]
    last_use = _last_uses(nodes)
    mutating = in_place_nodes(graph_module)
    recording = Recording()
    holders: dict[int, list[fx.Node]] = {}
    env: dict[fx.Node, Any] = {}
    placeholder = 0
    for node in nodes:
        if node.op == "placeholder":
            env[node] = _placeholder_value(node, values, placeholder)
            if isinstance(env[node], Tensor):
                recording.shapes[node] = env[node].shape
            placeholder += 1
            continue
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "output":
            recording.output = args[0]
            break
        first = args[0] if args else None
        mutated = first if node in mutating and isinstance(first, Tensor) else None
        if mutated is not None:
            _protect(recording, holders, mutated)
        if wanted(node):
            seen = (mutated.clone(), *args[1:]) if mutated is not None else args
            recording.records[node] = (seen, kwargs)
            _hold(holders, node, (seen, kwargs))
        result = _execute(graph_module, node, args, kwargs)
        if isinstance(result, Tensor):
            recording.shapes[node] = result.shape
        env[node] = result
        for done in last_use.get(node, ()):
            if done is not stop:
                env.pop(done, None)
    if stop is not None:
        recording.output = env[stop]
    return recording


def _placeholder_value(node: fx.Node, values: tuple, index: int) -> Any:
    if index < len(values):
        return values[index]
    if node.args:
        return node.args[0]
    raise ValueError(f"the traced model needs input {node.target!r}, which was not given")


def _execute(gm: fx.GraphModule, node: fx.Node, args: Any, kwargs: Any) -> Any:
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "get_attr":
        value: Any = gm
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value
    raise ValueError(f"cannot run graph node {node.op} {node.name!r}")


def ancestors(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node it depends on."""
    seen: set[fx.Node] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


def _last_uses(nodes: list[fx.Node]) -> dict[fx.Node, list[fx.Node]]:
    """For each node, the values whose last use (among ``nodes``) it is."""
    last: dict[fx.Node, fx.Node] = {}
    for node in nodes:
        for used in node.all_input_nodes:
            last[used] = node
    freed: dict[fx.Node, list[fx.Node]] = {}
    for used, node in last.items():
        freed.setdefault(node, []).append(used)
    return freed


def _storage(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _hold(holders: dict[int, list[fx.Node]], node: fx.Node, record: Any) -> None:
    def hold(v: Any) -> Any:
        if isinstance(v, Tensor):
            holders.setdefault(_storage(v), []).append(node)
        return v

    fx.node.map_aggregate(record, hold)


def _protect(recording: Recording, holders: dict[int, list[fx.Node]], tensor: Tensor) -> None:
    """Copy every recorded tensor that shares ``tensor``'s storage (it is about to change)."""
    ptr = _storage(tensor)

    def copy(v: Any) -> Any:
        return v.clone() if isinstance(v, Tensor) and _storage(v) == ptr else v

    for n in holders.pop(ptr, []):
        args, kwargs = recording.records[n]
        recording.records[n] = (
            fx.node.map_aggregate(args, copy),
            fx.node.map_aggregate(kwargs, copy),
        )


_IN_PLACE_OPERATORS = {
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
    operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
}  # fmt: skip


def in_place_nodes(graph_module: fx.GraphModule) -> set[fx.Node]:
    """The nodes that overwrite their first argument (found once per traced model)."""
    found = graph_module.__dict__.get("_fw_in_place")
    if found is None:
        found = {n for n in graph_module.graph.nodes if _in_place(graph_module, n)}
        graph_module.__dict__["_fw_in_place"] = found
    return found


def _in_place(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` overwrites its first argument."""
    if node.op == "call_module":
        return getattr(gm.get_submodule(node.target), "inplace", False) is True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("__")
    if node.op != "call_function":
        return False
    if node.target in _IN_PLACE_OPERATORS:
        return True
    name = getattr(node.target, "__name__", "")
    if name.endswith("_") and not name.startswith("__"):
        return True
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return node.kwargs.get("inplace") is True
    return bound.arguments.get("inplace") is True
