"""The command line's ``--model``, ``--data`` and ``--target`` specifications.

- model: ``zoo:reid_net`` (or a bare zoo name), ``torchvision:resnet18`` (random weights: nothing
  is downloaded; add ``--weights FILE``), or ``package.module:factory`` (called with no
  arguments); ``--weights`` loads a state dict without pickle (``.safetensors``, or
  ``torch.load(weights_only=True)``).
- data: ``flowers:500`` / ``flowers-double:500`` / ``persons:200`` (the shipped synthetic sets),
  a folder of images, or a ``.pt`` file holding a tensor ``(N,3,H,W)`` or a dict with ``images``
  (and optionally ``labels``, ``names``), read with ``weights_only=True``.
- target: ``embedding``, ``predicted``, ``class:C``, ``dimension:D`` (default: the method's).
"""

from __future__ import annotations

import importlib
import pathlib
from typing import Any

import torch
from torch import nn

from .sources import TensorSource


def load_model(spec: str, weights: str | None = None) -> tuple[nn.Module, str]:
    """The model named by ``spec`` and a sentence on where its weights came from."""
    from .. import zoo

    kind, _, name = spec.partition(":")
    if not name and spec in zoo.NAMES:
        kind, name = "zoo", spec
    if kind == "zoo":
        if name not in zoo.NAMES:
            raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(zoo.NAMES)}")
        model, note = zoo.load(name), f"zoo:{name} with its shipped weights"
    elif kind == "torchvision":
        import torchvision

        try:
            model = torchvision.models.get_model(name, weights=None)
        except ValueError:
            known = ", ".join(sorted(torchvision.models.list_models())[:12])
            raise ValueError(f"unknown torchvision model {name!r}; e.g. {known}, ...") from None
        note = f"torchvision:{name} with RANDOM weights (nothing is downloaded; pass --weights)"
    elif name and ("." in kind or kind.isidentifier()):
        try:
            factory = getattr(importlib.import_module(kind), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import {spec!r} as package.module:factory ({e})") from None
        model, note = factory(), f"{spec}()"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{spec}() returned {type(model).__name__}, not an nn.Module")
    else:
        raise ValueError(
            f"model spec {spec!r} not understood; use zoo:NAME ({', '.join(zoo.NAMES)}), "
            "torchvision:NAME or package.module:factory"
        )
    if weights:
        model.load_state_dict(load_weights(weights))
        note = f"{spec} with the weights in {weights}"
    return model.eval(), note


def load_weights(path: str | pathlib.Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file, never unpickling code."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise ValueError(f"weights file {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    state = safe_torch_load(p)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{str(p)!r} does not hold a state dict (got {type(state).__name__})")
    return state


def safe_torch_load(path: pathlib.Path) -> Any:
    """``torch.load(path, weights_only=True)``: tensors, dicts, lists and numbers only; a file
    holding any other Python object (a pickle whose ``__reduce__`` would run code) is refused
    before anything in it runs, with a ``ValueError`` that says so."""
    import pickle
    import re

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        first = f"it refers to {found.group(1)}" if found else "not a tensor file"
        raise ValueError(
            f"{str(path)!r} holds Python objects other than tensors ({first}); famwidget never "
            "unpickles code from a file. Save tensors only: torch.save(model.state_dict(), "
            "path) or safetensors.torch.save_file(state_dict, 'weights.safetensors')"
        ) from None


def load_data(spec: str) -> Any:
    """What ``spec`` names, as data that ``explain_dataset`` accepts."""
    from .. import data

    kind, _, count = spec.partition(":")
    if kind in ("flowers", "flowers-double", "persons") and count:
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{spec!r}: the count after ':' must be a positive integer")
        n = int(count)
        if kind == "persons":
            per_id = 4
            return data.persons(max(1, -(-n // per_id)), per_id).subset(slice(0, n))
        return data.flowers(n, "double" if kind == "flowers-double" else "single")
    p = pathlib.Path(spec)
    if p.is_dir():
        return p
    if p.is_file() and p.suffix in (".pt", ".pth"):
        obj = safe_torch_load(p)
        if isinstance(obj, torch.Tensor):
            return TensorSource(obj)
        if isinstance(obj, dict) and isinstance(obj.get("images"), torch.Tensor):
            names = obj.get("names")
            return TensorSource(obj["images"], obj.get("labels"), list(names) if names else None)
        raise ValueError(f"{spec!r} must hold a float tensor (N,3,H,W) or a dict with 'images'")
    raise ValueError(
        f"data spec {spec!r} not understood; use flowers:N, flowers-double:N, persons:N, a "
        "folder of images, or a .pt file with a tensor (N,3,H,W)"
    )


def parse_target(spec: str | None) -> Any:
    """``None``/``embedding``/``predicted``/``class:C``/``dimension:D`` → a ``fw.targets`` one."""
    from .. import targets

    if spec is None or spec == "default":
        return None
    kind, _, arg = spec.partition(":")
    if kind == "embedding" and not arg:
        return targets.Embedding()
    if kind == "predicted" and not arg:
        return targets.Predicted()
    if kind in ("class", "dimension") and arg.lstrip("-").isdigit():
        return targets.ClassLogit(int(arg)) if kind == "class" else targets.Dimension(int(arg))
    raise ValueError(
        f"target {spec!r} not understood; use embedding, predicted, class:C or dimension:D"
    )
