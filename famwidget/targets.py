"""Targets: what an explanation explains, turned into one number per image.

A target is bound to the model's output on the clean images (``bind``), which fixes what must stay
fixed (the predicted class, the clean feature vector). The bound target then gives

- ``scalar(output) -> (B,)``: a differentiable number per image, for gradient methods;
- ``score(output, index) -> (N,)``: the score of N masked copies whose source images are
  ``index`` (N,), for the Score-* methods.

Model outputs may be a vector batch ``(B,D)``, a feature map ``(B,C,h,w)`` (a backbone without
head: its global average pool is the feature vector), or a tuple/list/dict, a dataclass or a
HuggingFace-style ``ModelOutput`` of those (``output_key`` says which element is the feature;
default: the first of a tuple, the only non-None field of a mapping or dataclass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

OutputKey = int | str | None


def feature_vector(output: object, key: OutputKey = None) -> Tensor:
    """The feature vector ``(B,D)`` in a model output (see the module docstring).

    Mappings (dicts, HuggingFace ``ModelOutput``) and dataclasses are read by key: their fields
    that are not ``None``; ``output_key`` names one, and may be left out when there is only one.
    """
    if dataclasses.is_dataclass(output) and not isinstance(output, (type, Mapping)):
        output = {
            f.name: getattr(output, f.name)
            for f in dataclasses.fields(output)
            if getattr(output, f.name) is not None
        }
    if isinstance(output, Mapping):
        if key is None:
            if len(output) != 1:
                raise ValueError(
                    f"the model returns a dict with keys {sorted(map(str, output))}; "
                    "pass output_key= to say which one is the feature"
                )
            key = next(iter(output))
        if key not in output:
            raise ValueError(f"output_key {key!r} is not in the model output; keys: {list(output)}")
        output = output[key]
    elif isinstance(output, (tuple, list)):
        index = 0 if key is None else key
        if not isinstance(index, int) or not -len(output) <= index < len(output):
            raise ValueError(
                f"output_key {key!r} does not index the model's {len(output)}-element output"
            )
        output = output[index]
    if not isinstance(output, Tensor):
        raise TypeError(f"the model output is {type(output).__name__}; a tensor is needed")
    if output.dim() == 0:
        raise ValueError(
            "the model output (or its selected element) is a single number, not a feature batch "
            "(B,D) or (B,C,h,w); pass output_key= to pick the feature element"
        )
    if output.dim() == 4:
        return output.mean(dim=(2, 3))
    if output.dim() == 2:
        return output
    if output.dim() == 1:
        return output[:, None]
    return output.flatten(1)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of ``(N,D)`` batches that does not depend on their scale.

    Each row is first divided by its largest magnitude, so features of size 1e-13 (a scaled or
    badly initialised last layer) give the same cosine as at size 1, where
    ``F.cosine_similarity``'s epsilon would dominate. A zero row has cosine 0.
    """

    def unit(t: Tensor) -> Tensor:
        peak = t.abs().amax(dim=1, keepdim=True)
        return t / torch.where(peak > 0, peak, torch.ones_like(peak))

    return F.cosine_similarity(unit(a), unit(b), dim=1, eps=1e-12)


def _check_scores(values: Tensor, n: int, what: str) -> Tensor:
    if not isinstance(values, Tensor) or values.shape != (n,):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"{what} must return a tensor of shape ({n},), got {shape}")
    return values


class Bound:
    """A target fixed on the clean output of a batch. Subclasses define scalar and score."""

    def __init__(self, key: OutputKey) -> None:
        self.key = key

    def features(self, output: object) -> Tensor:
        """The feature vector ``(B,D)``, upcast to float32 (float64 stays float64)."""
        f = feature_vector(output, self.key)
        return f.to(torch.promote_types(f.dtype, torch.float32))

    def scalar(self, output: object) -> Tensor:
        raise NotImplementedError

    def score(self, output: object, index: Tensor) -> Tensor:
        raise NotImplementedError

    def probability(self, output: object, index: Tensor) -> Tensor:
        """Softmax probability ``(N,)`` of the bound class for N copies of images ``index``.

        Only class targets (``Predicted()``, ``ClassLogit(c)``) have one: the original Score-CAM
        weighs each masked copy by it.
        """
        raise TypeError(
            "only a class target has a class probability; score='probability' (the Score-CAM "
            "paper's convention) needs Predicted() or ClassLogit(c)"
        )


class Target:
    """Base class. ``kind`` is "embedding" (explains a feature vector) or "class"."""

    kind = "embedding"

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _EmbeddingBound(Bound):
    def __init__(self, output: object, key: OutputKey) -> None:
        super().__init__(key)
        self.reference = self.features(output).detach()

    def scalar(self, output: object) -> Tensor:
        return self.features(output).norm(dim=1)

    def score(self, output: object, index: Tensor) -> Tensor:
        return cosine(self.features(output), self.reference[index])


class Embedding(Target):
    """The feature vector itself: ``||f(x)||`` for gradients, ``cos(f(x'), f(x))`` for masked ones.

    Gradients of ``||f||``, ``½||f||²`` and ``f·stopgrad(f)`` point the same way per image, and
    Grad-FAM normalises each map, so the choice of ``||f||`` loses nothing. (``cos(f(x),
    stopgrad(f(x)))`` would be wrong: its gradient vanishes at ``x``.)
    """

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        return _EmbeddingBound(output, key)


class _ClassBound(Bound):
    def __init__(self, classes: Tensor, key: OutputKey) -> None:
        super().__init__(key)
        self.classes = classes

    def scalar(self, output: object) -> Tensor:
        logits = self.features(output)
        return logits.gather(1, self.classes[:, None].to(logits.device))[:, 0]

    def score(self, output: object, index: Tensor) -> Tensor:
        logits = self.features(output)
        return logits.gather(1, self.classes.to(logits.device)[index][:, None])[:, 0]

    def probability(self, output: object, index: Tensor) -> Tensor:
        probs = self.features(output).softmax(dim=1)
        return probs.gather(1, self.classes.to(probs.device)[index][:, None])[:, 0]


class Predicted(Target):
    """The logit of the class the model predicts for each clean image."""

    kind = "class"

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        return _ClassBound(feature_vector(output, key).argmax(dim=1).detach(), key)


class ClassLogit(Target):
    """The logit of class ``c``: one int for the whole batch, or one class per image."""

    kind = "class"

    def __init__(self, c: int | Sequence[int] | Tensor) -> None:
        self.c = c

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        logits = feature_vector(output, key)
        batch, n_classes = logits.shape
        classes = torch.as_tensor(self.c, dtype=torch.long, device=logits.device).flatten()
        if classes.numel() == 1:
            classes = classes.expand(batch)
        if classes.numel() != batch:
            raise ValueError(
                f"ClassLogit got {classes.numel()} classes for a batch of {batch} images; "
                "give one int for all images or exactly one per image"
            )
        if bool(((classes < 0) | (classes >= n_classes)).any()):
            raise ValueError(f"ClassLogit classes must be in 0..{n_classes - 1}, got {self.c}")
        return _ClassBound(classes, key)

    def __repr__(self) -> str:
        c = self.c.tolist() if isinstance(self.c, Tensor) else self.c
        return f"ClassLogit({c})"


class _SimilarityBound(Bound):
    def __init__(self, reference: Tensor, key: OutputKey) -> None:
        super().__init__(key)
        self.reference = reference

    def scalar(self, output: object) -> Tensor:
        f = self.features(output)
        return cosine(f, self.reference.to(f).expand_as(f))

    def score(self, output: object, index: Tensor) -> Tensor:
        f = self.features(output)
        return cosine(f, self.reference.to(f)[index])


class Similarity(Target):
    """``cos(f(x), reference)``: why an image matches another (query vs gallery).

    ``reference`` is an embedding ``(D,)`` shared by the batch, or ``(B,D)`` one per image;
    ``name`` says what it is in captions (``Similarity(query)``).
    """

    def __init__(self, reference: Tensor, name: str | None = None) -> None:
        if not isinstance(reference, Tensor):
            raise TypeError("Similarity(reference) needs a tensor embedding (D,) or (B,D)")
        if reference.device.type == "meta":
            raise ValueError(
                "Similarity(reference) is on the meta device (a shape, no values); give the "
                "reference embedding's values, e.g. computed by the model on 'cpu'"
            )
        self.reference = reference.detach()
        self.name = name

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        f = feature_vector(output, key)
        ref = self.reference.float()
        if ref.dim() == 1:
            ref = ref[None]
        if ref.dim() != 2 or ref.shape[1] != f.shape[1] or ref.shape[0] not in (1, f.shape[0]):
            raise ValueError(
                f"Similarity reference has shape {tuple(self.reference.shape)}; the model's "
                f"features are {tuple(f.shape)}, so (D,)=({f.shape[1]},) or (B,D) is accepted"
            )
        return _SimilarityBound(ref.expand(f.shape[0], -1).to(f.device), key)

    def __repr__(self) -> str:
        return f"Similarity({self.name or f'<{tuple(self.reference.shape)}>'})"


class _DimensionBound(Bound):
    def __init__(self, d: int, key: OutputKey) -> None:
        super().__init__(key)
        self.d = d

    def scalar(self, output: object) -> Tensor:
        return self.features(output)[:, self.d]

    def score(self, output: object, index: Tensor) -> Tensor:
        return self.features(output)[:, self.d]


class Dimension(Target):
    """One embedding dimension ``f(x)[:, d]``."""

    def __init__(self, d: int) -> None:
        self.d = int(d)

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        width = feature_vector(output, key).shape[1]
        if not -width <= self.d < width:
            raise ValueError(f"Dimension({self.d}) is outside the {width}-dimensional feature")
        return _DimensionBound(self.d, key)

    def __repr__(self) -> str:
        return f"Dimension({self.d})"


class _CustomBound(Bound):
    def __init__(self, fn: Callable[[object], Tensor], key: OutputKey) -> None:
        super().__init__(key)
        self.fn = fn

    def scalar(self, output: object) -> Tensor:
        return self._call(output)

    def score(self, output: object, index: Tensor) -> Tensor:
        return self._call(output)

    def _call(self, output: object) -> Tensor:
        n = feature_vector(output, self.key).shape[0]
        return _check_scores(self.fn(output), n, "a callable target").float()


class Custom(Target):
    """Any callable ``output -> (B,)``; it receives the raw model output."""

    def __init__(self, fn: Callable[[object], Tensor]) -> None:
        self.fn = fn

    def bind(self, output: object, key: OutputKey = None) -> Bound:
        return _CustomBound(self.fn, key)

    def __repr__(self) -> str:
        return f"Custom({getattr(self.fn, '__name__', type(self.fn).__name__)})"


def as_target(target: object, default: Target | None) -> Target | None:
    """``None`` → ``default``; a :class:`Target` as is; a callable → :class:`Custom`."""
    if target is None:
        return default
    if isinstance(target, Target):
        return target
    if isinstance(target, type) and issubclass(target, Target):
        raise TypeError(f"target must be an instance such as {target.__name__}(), not the class")
    if callable(target):
        return Custom(target)
    raise TypeError(
        "target must be None, a famwidget.targets object (Embedding(), Predicted(), "
        "ClassLogit(c), Similarity(ref), Dimension(d)) or a callable output -> (B,), "
        f"not {type(target).__name__}"
    )
