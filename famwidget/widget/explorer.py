"""``fw.Explorer``: a gallery of images; click one to explain it; blend and inspect in the browser.

The widget only sees Explanations (from ``fw.explain``) and hands the browser the wire format
(``wire.py``). What an exported notebook must show lives in synced traits; requests, progress and
partial maps travel as custom messages. Explanations run in one worker thread, newest request wins.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import io
import logging
import pathlib
import time
import traceback as tb
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets as t
from torch import Tensor, nn

from ..api import check_images, default_layer, explain, method_info, methods, model_device
from ..explanation import Explanation, to_uint8_rgb
from ..inputs import stack_images
from ..tap import preserved, resolve_layer, spatial_layers
from ..targets import Target
from . import compare, wire
from .cache import DEFAULT_CACHE_BYTES, ExplanationCache
from .map_panel import MapPanel
from .thumbnails import Thumbnails
from .worker import Stale, Worker

STATIC = pathlib.Path(__file__).parent / "static"
#: the colormaps the frontend draws (js/colormap_stops.js)
COLORMAPS = ("jet", "turbo", "viridis", "inferno", "gray")
log = logging.getLogger("famwidget.widget")


def bundle() -> str:
    """The frontend bundle (built from ``js/`` by ``npm run build``)."""
    path = STATIC / "widget.js"
    if not path.exists():
        raise FileNotFoundError(
            f"the widget's JavaScript bundle {path} is missing; build it with `npm run build` "
            "(or `make setup`) from the famwidget source tree"
        )
    return path.read_text(encoding="utf-8")


class Explorer(MapPanel, anywidget.AnyWidget):
    """Gallery + heatmap viewer for one model.

    Args:
        model: any ``nn.Module``; it is explained in eval mode and always restored.
        images: a float tensor ``(B,3,H,W)`` already preprocessed, or a sequence of raw images
            (PIL / ``(H,W,3)`` arrays) together with ``preprocess`` (raw image → ``(3,H,W)``).
        labels: optional captions source: class names or ids, one per image.
        layer: the explained layer (name, module or ``None`` for the last 4-D layer).
        method: the first method shown; the picker offers ``methods`` (default: all that apply).
        preprocess: callable turning one raw image into a ``(3,H,W)`` float tensor.
        target: passed to ``fw.explain`` (``None``: each method's default).
        display: optional ``(B,H,W,3)`` uint8 images to show instead of the inputs.
        methods: the methods the picker offers.
        interpreter: a fitted ``fw.Interpreter``; adds the method "vebi", whose channels are
            the three most relevant features of the predicted class.
        classes: class names of a classifier: each thumbnail then shows the predicted class and
            its probability, marked as a match or a miss when ``labels`` are those names.
        cache_bytes: bytes of explanations kept for instant re-display (default 16 MiB,
            ``cache.DEFAULT_CACHE_BYTES``), least recently used first out; activations are
            kept in float16 (``cache.py``).
        map: the embedding map panel (``map_panel.py``): ``None`` = on for embedding models
            (no class output) with at least 20 images.
        **options: passed to ``fw.explain`` (method options).
    """

    _esm = t.Unicode("").tag(sync=True)

    thumbs = t.Bytes(b"").tag(sync=True)
    gallery = t.Dict().tag(sync=True)
    selected = t.Int(-1).tag(sync=True)
    image = t.Bytes(b"").tag(sync=True)
    heatmap = t.Bytes(b"").tag(sync=True)
    view = t.Dict().tag(sync=True)
    channels = t.Bytes(b"").tag(sync=True)
    points = t.Bytes(b"").tag(sync=True)
    channel_info = t.Dict().tag(sync=True)
    state = t.Unicode("idle").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    traceback = t.Unicode("").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    alpha = t.Float(0.5).tag(sync=True)
    colormap = t.Unicode("jet").tag(sync=True)
    threshold = t.Float(0.0).tag(sync=True)
    side_by_side = t.Bool(False).tag(sync=True)
    method = t.Unicode("grad-fam").tag(sync=True)
    methods = t.List(t.Unicode()).tag(sync=True)
    method_notes = t.Dict().tag(sync=True)
    """Methods not offered, each with the reason (the picker shows them disabled)."""
    layer = t.Unicode("").tag(sync=True)
    layers = t.List(t.Unicode()).tag(sync=True)

    @t.validate("colormap")
    def _valid_colormap(self, proposal: dict) -> str:
        if proposal["value"] not in COLORMAPS:
            raise t.TraitError(
                f"colormap {proposal['value']!r} is not one the widget draws; use one of "
                f"{', '.join(COLORMAPS)}"
            )
        return proposal["value"]

    @t.validate("alpha", "threshold")
    def _valid_fraction(self, proposal: dict) -> float:
        value = proposal["value"]
        if not 0.0 <= value <= 1.0:
            name = proposal["trait"].name
            raise t.TraitError(f"{name} must lie in [0, 1] (0 = none, 1 = full), not {value}")
        return value

    stream_interval = 0.25
    """Seconds between two streamed partial maps at least (the first and the last are always
    sent). The browser's work on each map competes with the explanation for the cores when they
    run on one machine: in JupyterLab on 2 cores a Score-FAM click took 1.24x the time of
    ``fw.explain`` in a cell at 0.05 s (about 16 maps a second), 1.00x at 0.25 s, 0.90x with no
    partial maps (``famwidget bench --only widget``, the "Score-FAM in JupyterLab" table)."""

    def __init__(
        self,
        model: nn.Module,
        images: Tensor | Sequence[Any],
        labels: Sequence[Any] | None = None,
        layer: str | nn.Module | None = None,
        method: str = "grad-fam",
        preprocess: Callable[[Any], Tensor] | None = None,
        target: Target | Callable | None = None,
        display: np.ndarray | None = None,
        methods: Sequence[str] | None = None,
        interpreter: Any = None,
        classes: Sequence[str] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        map: bool | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        tensors, shown = _inputs(images, preprocess, display)
        self._model = model
        self._inputs = tensors.to(model_device(model))
        self._shown = shown
        self._target = target
        self._options = options
        self._cache = ExplanationCache(cache_bytes)
        self._explanation: Explanation | None = None
        self._pending: Future | None = None
        self._click: str | None = None  # the id of the newest click the page sent (see _request)
        self._interpreter = interpreter
        offered, notes = (
            (list(methods), {})
            if methods is not None
            else _default_methods(method, model, self._inputs, layer, interpreter)
        )
        if interpreter is not None and "vebi" not in offered:
            offered.append("vebi")
        for name in [*offered, method]:
            if name == "vebi":
                if interpreter is None:
                    raise ValueError("method 'vebi' needs interpreter=, a fitted fw.Interpreter")
                continue
            method_info(name)  # unknown names fail here, with the list of valid ones
        layer_name, self._layer_modules = self._layers(layer)
        captions = _captions(labels, len(tensors))
        marks: list[str] = []
        if classes is not None:
            predicted, probability, width = _predict(model, self._inputs, options.get("output_key"))
            if width != len(classes):
                raise ValueError(
                    f"the model has {width} outputs but classes= names {len(classes)}; "
                    "give one name per output"
                )
            names = [classes[int(c)] for c in predicted]
            if labels is not None:
                marks = [
                    "match" if cap == name else "miss"
                    for cap, name in zip(captions, names, strict=True)
                ]
            captions = [
                f"{name} {float(p):.2f}" if labels is None else f"{cap} → {name} {float(p):.2f}"
                for cap, name, p in zip(captions, names, probability, strict=True)
            ]
        self._thumbs = Thumbnails(shown)  # large galleries: in pages on demand
        thumb_bytes, info = self._thumbs.opening()
        info["image"] = [int(shown.shape[1]), int(shown.shape[2])]  # the view's size (H, W)
        if classes is not None:
            info["scores"] = [round(float(p), 4) for p in probability]
        super().__init__(
            _esm=bundle(),
            thumbs=thumb_bytes,
            gallery={**info, "captions": captions, "marks": marks},
            methods=offered if method in offered else [method, *offered],
            method_notes=notes,
            method=method,
            layers=list(self._layer_modules),
            layer=layer_name,
        )
        self._captions = captions
        self._worker = Worker()
        self.on_msg(self._on_message)
        self.observe(self._on_choice, names=["method", "layer"])
        self._map_setup(map)

    # -- public API ---------------------------------------------------------------------------

    @property
    def explanation(self) -> Explanation | None:
        """The Explanation on screen (one image), or ``None`` before the first click."""
        return self._explanation

    def select(self, index: int, wait: bool = True) -> Explanation | None:
        """Explain image ``index``, as a click on its thumbnail does; waits by default."""
        if not -len(self._inputs) <= index < len(self._inputs):
            raise IndexError(f"image {index} is out of range: the gallery has {len(self._inputs)}")
        future = self._request(index % len(self._inputs))
        if wait:
            future.result()
            return self._explanation
        return None

    def to_html(
        self,
        path: str | pathlib.Path,
        methods: Sequence[str] | None = None,
        title: str = "famwidget",
        note: str = "",
    ) -> pathlib.Path:
        """Write a standalone page: the widget with every thumbnail's explanation precomputed.

        The page needs no kernel and no network: blending, colormaps, channel inspection and
        clicks on thumbnails all run in the browser. ``methods`` (default: the current one)
        are the methods whose explanations are embedded.
        """
        from .standalone import write_page

        chosen = list(methods or [self.method])
        return write_page(self, pathlib.Path(path), chosen, title=title, note=note)

    def compare(self, index: int | None = None, wait: bool = True) -> dict[str, Any] | None:
        """Explain image ``index`` (default: the selected one) with every offered method, as
        the compare button does (``compare.py``); waits by default and returns the answer."""
        index = self.selected if index is None else index
        future = compare.request(self, index)
        return future.result() if wait and future is not None else None

    def wait(self, timeout: float | None = None) -> Explanation | None:
        """Block until the newest request (a click, a method change) has been answered."""
        pending = self._pending
        if pending is not None:
            with contextlib.suppress(Stale, CancelledError):  # superseded by a newer request
                pending.result(timeout)
            if self._pending is not pending:
                return self.wait(timeout)
        return self._explanation

    def cancel(self) -> None:
        """Stop the explanation being computed (what the Cancel button does).

        Long methods (Score-FAM, Score-CAM) stop between two batches of masked copies; the
        image stays on screen with no map, and a later click explains it again.
        """
        with self._worker.lock:
            if self.state != "computing":
                return
            self._pending = self._worker.submit(lambda stale: None)  # the running job is stale
            with self.hold_sync():
                self.view = {**self.view, "pending": False, "cancelled": self.method}
                self.state = "idle"
                self.progress = 0.0
            self._announce()

    def close(self) -> None:
        worker = getattr(self, "_worker", None)
        if worker is not None and not worker.closed:
            worker.close()
            self.on_msg(self._on_message, remove=True)  # no handler is left behind
            self.unobserve(self._on_choice, names=["method", "layer"])
        super().close()

    # -- computing explanations ------------------------------------------------------------

    def _layers(self, layer: str | nn.Module | None) -> tuple[str, dict[str, nn.Module]]:
        """The chosen layer's name and the layers offered by the picker (coarse ones first)."""
        with preserved(self._model):  # one probing pass finds the default and the choices
            names = spatial_layers(self._model, self._inputs[:1])
        if layer is not None:
            chosen = resolve_layer(self._model, layer)[0]
        elif names:
            chosen = default_layer(self._model, self._inputs[:1])[0]  # as fw.explain's None
        else:
            raise ValueError(
                "the model has no submodule whose output famwidget can read as channels on a "
                "spatial grid ((B,C,h,w), channels-last or tokens); pass layer="
            )
        offered = [n for n in names if n.count(".") <= 1] or names
        if chosen not in offered:
            offered.append(chosen)
        modules = dict(self._model.named_modules())
        return chosen, {n: modules[n] for n in offered}

    def _key(self, index: int) -> tuple:
        """What identifies an explanation on screen (and in the cache)."""
        return (index, self.method, self.layer)

    def _variants(self) -> list[tuple]:
        """The values of the key's extra parts (after index, method, layer) a page embeds."""
        return [()]

    def _request(self, index: int, click: str | None = None) -> Future:
        """Make image ``index`` the newest request; its result alone may reach the screen.

        Under the worker's lock: the request supersedes every earlier one, then the screen
        shows the cached view, or the new image with no heatmap yet (so a partial map of the
        new image is never drawn over the old one). ``click`` is the page's id of the click
        (``js/work.js``); every view carries the newest one as ``view["request"]``, so the
        page ignores a view made before its newest click reached the kernel.
        """
        self._worker.check_open()  # after close(): Closed, with nothing changed on screen
        key = self._key(index)
        with self._worker.lock:
            if click is not None:
                self._click = click
            if key in self._cache:
                self._pending = self._worker.submit(lambda stale: None)
                self._show(*self._cache[key])
                return self._pending
            self._pending = self._worker.submit(lambda stale: self._run(key, stale))
            with self.hold_sync():
                for name, value in self._placeholder(index).items():
                    setattr(self, name, value)
                self.selected = index
                self.state = "computing"
                self.error = ""
                self.traceback = ""
                self.progress = 0.0
        return self._pending

    def _placeholder(self, index: int) -> dict[str, Any]:
        """The traits of image ``index`` while it is being explained (no heatmap yet)."""
        rgb = self._shown[index]
        view = {
            "h": int(rgb.shape[0]),
            "w": int(rgb.shape[1]),
            "index": index,
            "label": self._label(index),
            "method": self.method,
            "layer": self.layer,
            "pending": True,
            "caption": f"{self._captions[index]} · {self.method} …",
            "request": self._click,
        }
        empty = {"heatmap": b"", "channels": b"", "channel_info": {}, "points": b""}
        return {"image": wire.encode_image(rgb), "view": view, **empty}

    def _run(self, key: tuple, stale: Callable[[], bool]) -> None:
        try:
            payload, explanation = self._explained(key, stale)
        except Stale:
            return
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            trace = "".join(tb.format_exception(error))
            log.error("explaining image %s with %s failed:\n%s", key[0], key[1], trace)

            def show_error() -> None:
                self._explanation = None
                with self.hold_sync():
                    self.view = {**self.view, "pending": False, "failed": key[1]}
                    self.error = message
                    self.traceback = trace
                    self.state = "error"
                    self.progress = 0.0
                self._announce()

            self._worker.publish(stale, show_error)
            raise
        self._worker.publish(stale, lambda: self._show(payload, explanation))

    def _explained(
        self, key: tuple, stale: Callable[[], bool] = lambda: False, stream: bool = True
    ) -> tuple[dict[str, Any], Explanation]:
        """The traits and the Explanation for ``key``, computed once and cached."""
        if key in self._cache:
            return self._cache[key]
        value = self._build(key, stale, stream)
        self._cache[key] = value  # bounded: it may be dropped at once, the caller has it
        return value

    def _build(
        self, key: tuple, stale: Callable[[], bool], stream: bool = True
    ) -> tuple[dict[str, Any], Explanation]:
        index, method, layer = key[:3]
        explanation = self._explain_one(
            index, self._inputs[index], method, layer, self._target, stale, stream
        )
        caption = f"{self._captions[index]} · {_describe(explanation)}"
        payload = self._view(index, self._shown[index], explanation, caption)
        return payload, explanation

    def _explain_one(
        self,
        index: int,
        image: Tensor,
        method: str,
        layer: str,
        target: Any,
        stale: Callable[[], bool],
        stream: bool | Callable[[dict, list], None] = True,
    ) -> Explanation:
        """Explain one image ``(3,H,W)``; long methods stream partial maps to the browser,
        labelled with ``index`` (the view they belong to), or to ``stream`` when it is a
        callable ``(content, buffers)`` (the compare view's progress)."""
        options = dict(self._options)
        if method == "vebi":  # the interpretation method: its three features are the channels
            options, target = {"interpreter": self._interpreter}, None
        info = method_info(method)
        if stream and "on_progress" in inspect.signature(info.function).parameters:
            last = [-float("inf")]  # the first partial map is always sent

            def on_progress(done: int, total: int, partial: Explanation | None) -> None:
                now = time.monotonic()
                if now - last[0] < self.stream_interval and done < total:
                    if stale():
                        raise Stale
                    return  # streamed often enough: skip this partial map
                last[0] = now
                content = {
                    "type": "partial" if partial is not None else "progress",
                    "index": index,
                    "progress": done / max(total, 1),
                }
                buffers = [wire.encode_heatmap(partial.heatmap[0])] if partial is not None else []
                sink = stream if callable(stream) else self.send
                if not self._worker.publish(stale, lambda: sink(content, buffers)):
                    raise Stale

            options["on_progress"] = on_progress
        kwargs: dict[str, Any] = {"target": target, **options}
        if info.needs_layer:
            kwargs["layer"] = self._layer_modules.get(layer, layer)
        return explain(self._model, image[None], method, **kwargs).cpu()

    def _view(
        self, index: int, rgb: np.ndarray, explanation: Explanation, caption: str
    ) -> dict[str, Any]:
        """The synced traits that put ``explanation`` over ``rgb`` ``(H,W,3)`` on screen."""
        names = ids = None
        if explanation.features is not None:  # interpretation: named features of several layers
            found = explanation.features[0]
            k = 0 if explanation.weights is None else explanation.weights.shape[1]
            names = [f"{layer}:{channel}" for layer, channel, _ in found] + ["-"] * (k - len(found))
            ids = [channel for _, channel, _ in found] + [-1] * (k - len(found))
        channel_bytes, channel_info = wire.encode_channels(
            None if explanation.activations is None else explanation.activations[0],
            None if explanation.weights is None else explanation.weights[0],
            ids=ids,
            names=names,
        )
        score = None if explanation.scores is None else float(explanation.scores[0])
        heat = explanation.heatmap[0]
        size = (int(rgb.shape[0]), int(rgb.shape[1]))
        points = None if explanation.points is None else explanation.points[0]
        if points is not None and tuple(heat.shape) != size:
            scale = torch.tensor([size[0] / heat.shape[0], size[1] / heat.shape[1]])
            points = (points.float() * scale).long().clamp_max(torch.tensor(size) - 1)
        return {
            "image": wire.encode_image(rgb),
            "heatmap": wire.encode_heatmap(wire.resize_map(heat, size)),
            "view": {
                "h": int(rgb.shape[0]),
                "w": int(rgb.shape[1]),
                "index": index,
                "label": self._label(index),
                "method": explanation.method,
                "layer": explanation.layer,
                "target": explanation.target,
                "score": score,
                "caption": caption,
            },
            "channels": channel_bytes,
            "channel_info": channel_info,
            "points": wire.encode_points(points),
        }

    def _show(self, payload: dict[str, Any], explanation: Explanation) -> None:
        self._explanation = explanation
        self._explanation_index = payload["view"]["index"]
        binary = sum(len(v) for v in payload.values() if isinstance(v, bytes))
        if binary > wire.MESSAGE_LIMIT:
            # Too large for one message: the picture first (with no heatmap yet), then the rest.
            first = {k: v for k, v in payload.items() if k in ("image", "view", "pair_image")}
            with self.hold_sync():
                for name, value in {**self._placeholder(first["view"]["index"]), **first}.items():
                    setattr(self, name, value)
        with self.hold_sync():
            for name, value in payload.items():
                setattr(self, name, value)
            self.view = {**self.view, "request": self._click}  # the click it answers
            self.selected = payload["view"]["index"]
            self.progress = 1.0
            self.error = ""
            self.traceback = ""
            self.state = "ready"
        self._announce()

    def _announce(self) -> None:
        """Tell the browser to show the state: it marks "computing" itself at a click, and an
        unchanged trait (a click on the image already on screen) sends no change event."""
        self.send({"type": "state"})

    def _label(self, index: int) -> str:
        """What the caption calls image ``index`` (its thumbnail's caption)."""
        return self._captions[index]

    def _on_message(self, widget: Any, content: Any, buffers: list) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "cancel":
            self.cancel()
            return
        if kind == "pair" and self._map_message(content):
            return
        if kind in ("thumbs", "compare", "compare-cancel"):
            self._on_view_request(kind, content)
            return
        n = len(self._inputs)
        if kind == "select":
            index = content.get("index")
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < n:
                click = content.get("request")
                self._request(index, click if isinstance(click, str) and len(click) <= 64 else None)
                return
            problem = (
                f"{{'type': 'select', 'index': i}} needs an int i in 0..{n - 1}, got {index!r}"
            )
        else:
            problem = (
                f"unknown message {str(content)[:80]!r}; the kernel accepts "
                "{'type': 'select', 'index': i}, {'type': 'cancel'}, {'type': 'thumbs', "
                "'page': p}, {'type': 'compare', 'index': i} and {'type': 'compare-cancel'}"
            )
        self._refuse_message(problem)

    def _on_view_request(self, kind: str, content: dict) -> None:
        """A page of thumbnails (answered at once, binary), a comparison, or its cancel."""
        try:
            if kind == "thumbs":
                answer, data = self._thumbs.page(content.get("page"))
                self.send(answer, [data])
            elif kind == "compare":
                compare.request(self, content.get("index"))
            else:
                compare.cancel(self)
        except ValueError as error:
            self._refuse_message(str(error))

    def _refuse_message(self, problem: str) -> None:
        """A malformed message from the page: say so in ``.fw-error``; nothing else changes."""
        with self._worker.lock:
            with self.hold_sync():
                self.error = f"ignored a message from the page: {problem}"
                self.state = "error"
            self._announce()

    def _on_choice(self, change: dict) -> None:
        if self.selected >= 0:
            self._request(self.selected)

    # -- kernel-free views -------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle_ = super()._repr_mimebundle_(**kwargs)
        if self._explanation is None:
            return bundle_
        data, metadata = bundle_ if isinstance(bundle_, tuple) else (bundle_, {})
        data = dict(data or {})
        data["image/png"] = self.png()
        return (data, metadata) if isinstance(bundle_, tuple) else data

    def png(self) -> str:
        """The current view (image with heatmap blended) as base64 PNG text."""
        if self._explanation is None:
            raise ValueError("nothing is explained yet: click a thumbnail or call select(i)")
        picture = self._explanation.overlay(
            self._shown[self._explanation_index], alpha=self.alpha, cmap=self.colormap
        )
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    @classmethod
    def from_store(cls, path: Any, model: nn.Module, data: Any = None, **kwargs: Any) -> Explorer:
        """Browse a store of ``fw.explain_dataset`` of any size, read lazily: its stored maps
        show with no recomputing (``famwidget.dataset.browse``: ``entries=``, ``limit=``,
        other Explorer options)."""
        from ..dataset.browse import explorer_from_store

        return explorer_from_store(cls, path, model, data, **kwargs)


def _predict(model: nn.Module, x: Tensor, key: Any) -> tuple[Tensor, Tensor, int]:
    """Predicted class ``(B,)``, its softmax probability ``(B,)`` and the number of classes."""
    from ..targets import feature_vector

    with preserved(model), torch.inference_mode():
        logits = torch.cat(
            [feature_vector(model(x[i : i + 64]), key) for i in range(0, len(x), 64)]
        )
    probability, predicted = logits.float().softmax(dim=1).max(dim=1)
    return predicted.cpu(), probability.cpu(), logits.shape[1]


def _describe(explanation: Explanation) -> str:
    """``grad-fam @ layer4 · target Embedding() = 12.3``: what a caption says of a map."""
    text = f"{explanation.method} @ {explanation.layer} · target {explanation.target}"
    if explanation.scores is not None:
        text += f" = {float(explanation.scores[0]):.3g}"
    return text


def _default_methods(
    first: str,
    model: nn.Module | None = None,
    images: Tensor | None = None,
    layer: str | nn.Module | None = None,
    interpreter: Any = None,
) -> tuple[list[str], dict[str, str]]:
    """The methods the picker offers, and why each left out is missing (``method_notes``).

    With a model and images, only those that apply (:func:`famwidget.applicable
    .available_methods`: CAM methods need a class output, fixations every graph rule, vebi an
    interpreter); the caller adds ``first`` (and ``vebi`` with an interpreter).
    """
    preferred = ["grad-fam", "score-fam", "grad-cam", "score-cam", "fixations"]
    available = methods()
    if model is None or images is None:
        return [m for m in preferred if m in available] or [first], {}
    from ..applicable import available_methods

    reasons = available_methods(model, images, layer, interpreter=interpreter)
    notes = {m: r for m, r in reasons.items() if r is not None and m != first}
    offered = [m for m in preferred if m in available and m not in notes]
    return offered or [first], notes


def _captions(labels: Sequence[Any] | None, n: int) -> list[str]:
    if labels is None:
        return [f"#{i}" for i in range(n)]
    values = labels.tolist() if isinstance(labels, (Tensor, np.ndarray)) else list(labels)
    if len(values) != n:
        raise ValueError(f"got {len(values)} labels for {n} images; give one label per image")
    return [str(v) for v in values]


def _inputs(
    images: Tensor | Sequence[Any], preprocess: Callable | None, display: np.ndarray | None
) -> tuple[Tensor, np.ndarray]:
    """The model inputs ``(B,3,H,W)`` and the images shown ``(B,H,W,3)`` uint8."""
    if isinstance(images, Tensor) and preprocess is None:
        tensors = check_images(images).detach()
        raw = None
    else:
        if preprocess is None:
            raise TypeError(
                "images that are not a preprocessed (B,3,H,W) tensor need preprocess=, a callable "
                "turning one image into a (3,H,W) float tensor"
            )
        raw = list(images)
        if not raw:
            raise ValueError("images is empty: the gallery needs at least one image")
        tensors = check_images(stack_images([preprocess(im) for im in raw]))
    H, W = tensors.shape[-2:]
    if display is not None:
        shown = np.asarray(display)
        if shown.dtype != np.uint8 or shown.shape != (len(tensors), H, W, 3):
            raise ValueError(
                f"display must be uint8 (B,H,W,3) = ({len(tensors)},{H},{W},3), got "
                f"{shown.dtype} {shown.shape}"
            )
    elif raw is not None:
        shown = np.stack([_resized(to_uint8_rgb(im), H, W) for im in raw])
    else:
        # Inputs in [0,1] are shown as they are; normalised ones are rescaled per image.
        scaled = tensors.float().cpu()
        if scaled.min() < 0 or scaled.max() > 1:
            lo = scaled.amin(dim=(1, 2, 3), keepdim=True)
            hi = scaled.amax(dim=(1, 2, 3), keepdim=True)
            scaled = (scaled - lo) / (hi - lo).clamp_min(1e-12)
        if tensors.shape[1] == 1:
            scaled = scaled.expand(-1, 3, -1, -1)
        shown = (scaled[:, :3].permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    h, w = wire.fit_side(int(H), int(W))
    if (h, w) != (H, W):  # very large inputs are shown smaller (each message stays < 1 MB)
        shown = np.stack([_resized(np.ascontiguousarray(im), h, w) for im in shown])
    return tensors, np.ascontiguousarray(shown)


def _resized(rgb: np.ndarray, H: int, W: int) -> np.ndarray:
    if rgb.shape[:2] == (H, W):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((W, H), Image.BILINEAR))
