"""Checks of what the caller passes in: images, the model's device and dtype, class targets.

:func:`prepare_images` is what ``fw.explain`` runs on its ``images``; it refuses what would give
a raw torch error or a silently wrong map, and converts what can be converted without surprise:

- not a tensor, not ``(B,C,H,W)``/``(C,H,W)``, integer dtypes, an empty batch: refused
  (:func:`check_images`);
- images or model on the ``meta`` device (shapes, no values): refused;
- NaN / Inf values: refused, with how many and where the first one is;
- a channel count the model's first convolution does not take: refused before the forward;
- a floating dtype other than the model's parameters' (float64 or float16 images for a float32
  model, float32 images for a half model): converted to the parameters' dtype (float64 → float32
  rounds to float32 precision, which is what the model computes in anyway);
- another device than the model's: moved to the model's device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .targets import Target


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (``None`` for a model with none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def check_images(images: Any) -> Tensor:
    """``(B,C,H,W)`` or ``(C,H,W)`` float tensor → ``(B,C,H,W)``; anything else: a clear error."""
    if not isinstance(images, Tensor):
        raise TypeError(
            f"images must be a float tensor (B,3,H,W) or (3,H,W), already preprocessed for the "
            f"model, not {type(images).__name__}; use the model's preprocess on PIL/NumPy images"
        )
    if images.layout != torch.strided:
        raise TypeError(
            f"images must be a dense tensor, got layout {images.layout}; use images.to_dense()"
        )
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"images must be (B,3,H,W) or (3,H,W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a floating tensor (preprocessed), got {images.dtype}; "
            "convert uint8 images with the model's preprocess or images.float() / 255"
        )
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B=0)")
    if 0 in images.shape[1:]:
        raise ValueError(
            f"images have an empty dimension, shape {tuple(images.shape)}; every image needs "
            "C >= 1 channels and H, W >= 1 pixels"
        )
    return images


def prepare_images(images: Any, model: nn.Module) -> Tensor:
    """The images ``(B,C,H,W)`` ready for ``model``: checked, on its device, in its dtype.

    Raises ``TypeError``/``ValueError`` naming what was wrong and what is accepted (see the
    module docstring for the full list of checks and conversions).
    """
    images = check_images(images)
    device = model_device(model)
    if device.type == "meta":
        raise ValueError(
            "the model's parameters are on the meta device (shapes only, no weights loaded); "
            "load its weights first, e.g. model.to_empty(device='cpu') then "
            "model.load_state_dict(...), and explain the loaded model"
        )
    if images.device.type == "meta":
        raise ValueError(
            "images are on the meta device (shapes only, no pixel values); famwidget needs real "
            f"values: create or load them on the model's device ({device}) or on 'cpu'"
        )
    check_finite(images)
    check_channels(images, model)
    dtype = model_dtype(model)
    if dtype is not None and images.dtype != dtype:
        images = images.to(dtype)  # documented: the model's parameter dtype wins
    return images.to(device)


def check_finite(images: Tensor) -> None:
    """Refuse NaN / Inf in ``images`` ``(B,C,H,W)``, naming how many and where the first is."""
    bad = ~torch.isfinite(images)
    if not bool(bad.any()):
        return
    count = int(bad.sum())
    nans = int(torch.isnan(images).sum())
    per_image = bad.flatten(1).any(dim=1)
    b, c, y, x = (int(v) for v in bad.nonzero()[0])
    value = float(images[b, c, y, x])
    raise ValueError(
        f"images contain {count} non-finite value(s) ({nans} NaN, {count - nans} Inf) in "
        f"{int(per_image.sum())} of {images.shape[0]} image(s); the first is {value} at image "
        f"{b}, channel {c}, pixel (y={y}, x={x}). Every method needs finite pixels: fix the "
        "preprocessing (a division by a zero std?) or replace them, e.g. torch.nan_to_num(images)"
    )


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``nn.Conv2d`` in registration order (a CNN's stem, a ViT's patch embedding)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and not isinstance(
            module.weight, nn.parameter.UninitializedParameter
        ):
            return name, module
    return None


def check_channels(images: Tensor, model: nn.Module) -> None:
    """Refuse images whose channel count the model's first convolution does not take.

    The first ``Conv2d`` in registration order is checked; when it disagrees, a forward pass of
    one image up to the first convolution that actually runs confirms it (a model may convert
    channels itself before its stem), so a mismatch is reported only when it is real.
    """
    found = first_conv(model)
    if found is None or found[1].in_channels == images.shape[1]:
        return
    executed = _first_executed_conv(model, images[:1])
    if executed is None:
        return
    name, conv, seen = executed
    if seen != conv.in_channels:
        raise ValueError(
            f"images have {images.shape[1]} channels {tuple(images.shape)}, but the model's "
            f"first convolution {name!r} takes in_channels={conv.in_channels}; give "
            f"(B,{conv.in_channels},H,W) images (e.g. grayscale.expand(-1, 3, -1, -1) for 1 "
            "channel, rgba[:, :3] to drop an alpha channel)"
        )


class _Reached(Exception):
    pass


def _first_executed_conv(model: nn.Module, example: Tensor) -> tuple[str, nn.Conv2d, int] | None:
    """``(name, conv, channels of its input)`` of the first Conv2d that runs on ``example``."""
    from .tap import preserved

    reached: list[tuple[str, nn.Conv2d, int]] = []
    handles = []

    def hook(name: str):
        def stop(module: nn.Conv2d, inputs: tuple) -> None:
            x = inputs[0] if inputs else None
            if isinstance(x, Tensor) and x.dim() >= 3:
                reached.append((name, module, int(x.shape[-3])))
                raise _Reached

        return stop

    device = model_device(model)
    example = example.to(device=device, dtype=model_dtype(model) or example.dtype)
    with preserved(model):
        try:
            for name, module in model.named_modules():
                if isinstance(module, nn.Conv2d):
                    handles.append(module.register_forward_pre_hook(hook(name)))
            with torch.no_grad():
                model(example)
        except _Reached:
            pass
        except Exception:  # the model fails before any conv: its own error will say why
            return None
        finally:
            for h in handles:
                h.remove()
    return reached[0] if reached else None


def has_classes(model: nn.Module) -> bool:
    """Whether ``model`` outputs class logits, as far as its structure says.

    Yes when it says so (``num_classes`` > 0, a non-empty ``classes`` / ``class_names``), or
    when its last module with parameters (registration order) is an ``nn.Linear`` head (every
    torchvision classifier, ``fw.zoo.flower_net``). No when ``num_classes == 0`` (timm's
    headless models) or when the output comes from anything else (a pooled backbone, a
    BatchNorm "neck" of a re-ID net, ``fc = nn.Identity()``).
    """
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool):
        return n > 0
    for attribute in ("classes", "class_names"):
        names = getattr(model, attribute, None)
        if isinstance(names, (list, tuple, dict)) and len(names) > 0:
            return True
    last = None
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = module
    return isinstance(last, (nn.Linear, nn.Bilinear))


def check_class_target(model: nn.Module, target: Target | None, method: str) -> None:
    """Refuse a class target (``Predicted()``, ``ClassLogit(c)``) on a model with no classes."""
    if getattr(target, "kind", None) != "class" or has_classes(model):
        return
    kind = "grad-fam" if method.startswith("grad") else "score-fam"
    raise ValueError(
        f"{method} with {target!r} explains a class logit, but this model has no classes: its "
        "output is not produced by a final nn.Linear classifier (and it has no num_classes / "
        f"classes attribute), so its output is a feature vector. Use method={kind!r} with "
        "target=fw.targets.Embedding() (or Similarity/Dimension); if the model does output "
        "class logits, set model.num_classes = <number of classes>"
    )


def check_gradients(method: str) -> None:
    """Refuse a gradient method inside ``torch.inference_mode()`` (``no_grad`` is handled:
    the methods switch gradients on themselves, which inference mode does not allow)."""
    if torch.is_inference_mode_enabled():
        raise ValueError(
            f"{method} needs gradients, but gradients are switched off around the call: "
            "torch.inference_mode(); call fw.explain outside it, or use method='score-fam' / "
            "'score-cam' / 'fixations', which need no gradients"
        )


def stack_images(images: list[Any], what: str = "preprocess") -> Tensor:
    """``[(C,H,W), ...]`` (what ``preprocess`` returned for each raw image) → ``(B,C,H,W)``;
    refuses a non-tensor or images of different sizes, naming the first that differs."""
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(
                f"{what} must return a (3,H,W) float tensor per image; for image {i} it "
                f"returned {type(image).__name__}"
            )
    first = tuple(images[0].shape) if images else ()
    for i, image in enumerate(images):
        if tuple(image.shape) != first:
            raise ValueError(
                f"images of different sizes in one gallery: {what} gave image 0 the shape "
                f"{first} and image {i} {tuple(image.shape)}; every image needs the same size: "
                "resize them in preprocess (e.g. torchvision.transforms.Resize((H, W)))"
            )
    return torch.stack(images)
