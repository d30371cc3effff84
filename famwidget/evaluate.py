"""``famwidget evaluate``: every method against ground truth, on the shipped models and data.

    python -m famwidget.evaluate                 # flowers + reid, every method, default n
    python -m famwidget.evaluate --choices       # also Score-FAM's [choice] options on reid
    python -m famwidget.evaluate --cases flowers reid ssl -n 16 --methods grad-fam fixations
    python -m famwidget.evaluate --cases se_flowers vit_flowers vit_reid   # the modern models

Cases (held-out data the zoo never trained on, exact masks of the parts that decide the label):

- ``flowers``: ``flower_net`` on held-out flowers; methods explain ``Predicted()``; the
  model-based metrics score ``Probability(Predicted())``; mask = the petals.
- ``reid``: ``reid_net`` on unseen identities; methods explain ``Embedding()``; metrics score
  ``cos(f(x'), f(x))``; mask = the identity parts (shirt, shoes, bag, hat).
- ``ssl``: ``ssl_net`` (SimCLR, no labels) on held-out flowers; ``Embedding()``; mask = petals.
- ``se_flowers``, ``vit_flowers``: ``se_flower_net`` (squeeze-excitation MBConv CNN) and
  ``vit_flower_net`` (vision transformer, class token) as ``flowers``.
- ``vit_reid``: ``vit_reid_net`` (vision transformer, class-token embedding) as ``reid``.

The cases are rows of ``CASE_TABLE`` (model, data, what is explained); ``MODERN_CASES`` are the
transformer and SE ones. On the classifier cases vebi's Interpreter is fitted first (240 training
flowers, ``tau=5``) and explains the predicted class; its randomisation check keeps the fitted
channels and re-initialises the model under them.

Rows are case x method (each method of ``fw.methods()`` whose default target is of the case's
kind, so the CAM methods on the classifier and the FAM methods on the embeddings; methods that
choose their own target, like fixations, on every case), all in fp32, plus a bf16 row where the
method's ``precision="auto"`` picks bf16 (Score-*, on CPUs with native bf16), plus a
``(random)`` row: smooth random maps, the chance level of every column. Columns:

=================== ==========================================================================
deletion, insertion AUC of the normalised score while pixels are removed / revealed by
                    decreasing heat (16 steps, blurred baseline); lower / higher is better
drop, increase      average drop (fraction) and share of increased scores for ``x * heatmap``
                    (increase: classes only; a cosine cannot exceed the clean 1). Both favour
                    diffuse maps, which keep more of the image: read them beside ``(random)``
pointing            share of images whose hottest point is on the mask (no tolerance)
mass                mean share of the map's mass on the mask (``mask area``: chance level)
random corr         mean Spearman correlation of the maps with those after cascading
                    randomisation of the blocks, top first (mean over the stages, on the
                    first ``randomisation_images`` images); lower is better
s/image             wall time of ``fw.explain`` per image (batches of ``batch`` images)
peak MB             peak memory of those calls above the start (see ``metrics.measure``)
=================== ==========================================================================

The table is printed and saved (atomically) as ``evaluation.json`` and ``evaluation.csv``
under ``out`` (``choices.json`` / ``choices.csv`` with ``--choices``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import inspect
import io
import json
import math
import os
import pathlib
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import metrics
from .api import explain, method_info, methods
from .maps import minmax, upsample
from .targets import Embedding, Predicted, Target


@dataclass(frozen=True)
class CaseSpec:
    """A row of the case table: the zoo model, the held-out data, and what is explained.

    ``data``: ``"flowers"`` (held-out flowers, mask = petals) or ``"persons"`` (unseen
    identities, mask = shirt, shoes, bag, hat); ``kind``: ``"class"`` (explain ``Predicted()``,
    score its probability) or ``"embedding"`` (explain ``Embedding()``, score the cosine).
    """

    model: str
    data: str
    kind: str


CASE_TABLE: dict[str, CaseSpec] = {
    "flowers": CaseSpec("flower_net", "flowers", "class"),
    "reid": CaseSpec("reid_net", "persons", "embedding"),
    "ssl": CaseSpec("ssl_net", "flowers", "embedding"),
    "se_flowers": CaseSpec("se_flower_net", "flowers", "class"),
    "vit_flowers": CaseSpec("vit_flower_net", "flowers", "class"),
    "vit_reid": CaseSpec("vit_reid_net", "persons", "embedding"),
}
CASES = tuple(CASE_TABLE)
DEFAULT_CASES = ("flowers", "reid")
MODERN_CASES = ("se_flowers", "vit_flowers", "vit_reid")
INTERPRETER_FIT = {"n": 240, "seed": 5, "tau": 5.0}
"""vebi's Interpreter: fitted on ``flowers(n, seed=seed)`` (training data) with ``tau``."""
DEFAULT_N = 64
RANDOMISATION_IMAGES = 16
"""Images of each row that the (repeated) randomisation check explains."""

COLUMNS = (
    "case",
    "method",
    "precision",
    "options",
    "n",
    "deletion_auc",
    "insertion_auc",
    "avg_drop",
    "avg_increase",
    "pointing_game",
    "mass_in_mask",
    "mask_area",
    "randomisation_corr",
    "s_per_image",
    "peak_mb",
)
HEADERS = {
    "deletion_auc": "deletion",
    "insertion_auc": "insertion",
    "avg_drop": "drop",
    "avg_increase": "increase",
    "pointing_game": "pointing",
    "mass_in_mask": "mass",
    "mask_area": "mask area",
    "randomisation_corr": "random corr",
    "s_per_image": "s/image",
    "peak_mb": "peak MB",
}
CHOICES: dict[str, tuple[str, ...]] = {
    "weights": ("softmax", "raw", "relu-baseline"),
    "masking": ("multiply", "blur"),
}
"""Score-FAM's [choice] options compared by ``--choices`` (on the reid case)."""


@dataclass(frozen=True)
class Case:
    """One evaluation case: a model, n held-out images with masks, and what is explained.

    ``images`` ``(n,3,H,W)`` preprocessed on the device; ``masks`` ``(n,H,W)`` bool;
    ``display`` ``(n,H,W,3)`` uint8; ``target`` is what the methods explain, ``score`` what the
    model-based metrics measure; ``kind`` is ``"class"`` or ``"embedding"``.
    """

    name: str
    model: nn.Module
    images: Tensor
    masks: Tensor
    display: np.ndarray
    target: Target
    score: Target
    kind: str
    labels: list[str] = field(default_factory=list)
    fitted: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def interpreter(self, model: nn.Module | None = None) -> Any:
        """vebi's :class:`~famwidget.Interpreter` of the case's model, fitted once (see
        ``INTERPRETER_FIT``); for another ``model`` (a randomised copy) the same fitted
        channels read from that model."""
        if "interpreter" not in self.fitted:
            from .data import flowers
            from .explainers.interpretation import Interpreter

            train = flowers(INTERPRETER_FIT["n"], seed=INTERPRETER_FIT["seed"])
            x = self.model.preprocess.batch(train.images).to(self.images.device)
            interp = Interpreter(self.model, tau=INTERPRETER_FIT["tau"])
            self.fitted["interpreter"] = interp.fit(x, torch.as_tensor(train.labels))
        interp = self.fitted["interpreter"]
        if model is None or model is interp.model:
            return interp
        other = copy.copy(interp)
        other.model = model
        return other


def load_case(name: str, n: int = DEFAULT_N, device: str | torch.device = "cpu") -> Case:
    """The evaluation case ``name`` (one of ``CASES``, a row of ``CASE_TABLE``) with ``n``
    held-out images."""
    from . import zoo
    from .zoo import heldout

    spec = CASE_TABLE.get(name)
    if spec is None:
        raise ValueError(f"unknown case {name!r}; available: {', '.join(CASES)}")
    if spec.data == "flowers":
        ds = heldout.flower_test("single", n)
        images, masks = ds.images, ds.masks
        labels = [ds.classes[i] for i in ds.labels]
    else:
        split = heldout.person_split(train=False)
        pick = np.linspace(0, len(split.images) - 1, n).round().astype(int)
        images, masks = split.images[pick], split.masks[pick]
        labels = [f"id {i} cam {c}" for i, c in zip(split.ids[pick], split.cams[pick], strict=True)]
    model = zoo.load(spec.model, device=device)
    if spec.kind == "class":
        target: Target = Predicted()
        score: Target = metrics.Probability(target)
    else:
        target = score = Embedding()
    x = model.preprocess.batch(images).to(device)
    m = torch.from_numpy(np.ascontiguousarray(masks)).to(device)
    return Case(name, model, x, m, images, target, score, spec.kind, labels)


SUPPLIED = {"interpreter": "class"}
"""What the evaluation supplies to methods that need it, and for which case kind."""


def applicable(method: str, kind: str) -> bool:
    """Whether ``method``'s default target is of ``kind`` (a method that chooses its own
    target, such as fixations, applies to every case; vebi, which needs a fitted Interpreter,
    to the classifiers, where the case fits one)."""
    info = method_info(method)
    if info.requires:
        return all(SUPPLIED.get(need) == kind for need in info.requires)
    return info.default_target is None or info.default_target().kind == kind


@dataclass(frozen=True)
class Run:
    """One row to compute: a method, its precision and options (``method="(random)"``:
    smooth random maps, the chance level)."""

    method: str
    precision: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)

    def explain(self, case: Case, model: nn.Module, images: Tensor) -> Tensor:
        """Heatmaps ``(B,H,W)`` of ``images`` for ``model`` (the case's or a randomised copy)."""
        if self.method == RANDOM:
            return random_maps(images, seed=0)
        if "interpreter" in method_info(self.method).requires:
            options = {"interpreter": case.interpreter(model), **self.options}
            exp = explain(model, images, method=self.method, **options)
            return exp.heatmap.detach().float()
        options = dict(self.options)
        if "max_seconds" in inspect.signature(method_info(self.method).function).parameters:
            options.setdefault("max_seconds", None)  # a deliberate long run: no cost refusal
        exp = explain(
            model,
            images,
            method=self.method,
            target=case.target,
            precision=self.precision,
            **options,
        )
        return exp.heatmap.detach().float()

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.options.items())


RANDOM = "(random)"


def random_maps(images: Tensor, seed: int = 0, cells: int = 7) -> Tensor:
    """Smooth random heatmaps ``(B,H,W)``: uniform noise on a ``cells`` grid, upsampled, minmax."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(len(images), cells, cells, generator=generator).to(images.device)
    return minmax(upsample(noise, images.shape[-2:]))


def runs_for(case: Case, names: Sequence[str] | None) -> list[Run]:
    """The rows of ``case``: every applicable method in fp32, a bf16 row where ``precision=
    "auto"`` picks bf16, and the random reference."""
    runs = []
    for name in names if names is not None else methods():
        if not applicable(name, case.kind):
            continue
        runs.append(Run(name))
        auto = method_info(name).auto_precision
        if auto is not None and auto(case.model, case.images[:1]) == "bf16":
            runs.append(Run(name, "bf16"))
    return [*runs, Run(RANDOM)]


def timed_maps(run: Run, case: Case, batch: int) -> tuple[Tensor, float, float | None]:
    """Heatmaps ``(n,H,W)`` of the whole case in batches: ``(maps, s/image, peak MB)``."""
    maps, seconds, peak = [], 0.0, None
    for start in range(0, len(case.images), batch):
        chunk = case.images[start : start + batch]
        with metrics.measure(chunk.device) as usage:
            maps.append(run.explain(case, case.model, chunk))
        seconds += usage.seconds
        if usage.peak_bytes is not None:
            peak = max(peak or 0.0, usage.peak_bytes / 2**20)
    return torch.cat(maps), seconds / len(case.images), peak


def evaluate_run(
    run: Run,
    case: Case,
    *,
    steps: int = 16,
    baseline: str = "blur",
    batch: int = 16,
    randomisation_images: int = RANDOMISATION_IMAGES,
) -> dict[str, Any]:
    """One row of the table: every metric of ``run`` on ``case``, means over the images.

    The row also has ``<column>_sem`` (standard error of the mean over the images) and
    ``per_image`` (the values behind the means, for paired comparisons of two rows) for the
    per-image metrics, and ``randomisation_curve`` (mean correlation after each stage).
    ``avg_increase`` is None for embedding cases: a cosine to the clean features never
    exceeds the clean score 1, so an increase cannot happen.
    """
    maps, per_image, peak = timed_maps(run, case, batch)
    deletion, insertion = metrics.deletion_insertion(
        case.model, case.images, maps, case.score, steps=steps, baseline=baseline
    )
    drop, increase = metrics.average_drop_increase(case.model, case.images, maps, case.score)
    values = {
        "deletion_auc": deletion,
        "insertion_auc": insertion,
        "avg_drop": drop,
        "avg_increase": increase if case.kind == "class" else None,
        "pointing_game": metrics.pointing_game(maps, case.masks),
        "mass_in_mask": metrics.mass_in_mask(maps, case.masks),
        "mask_area": case.masks.flatten(1).float().mean(1),
    }
    timed = run.method != RANDOM
    row: dict[str, Any] = {
        "case": case.name,
        "method": run.method,
        "precision": run.precision if timed else "",
        "options": run.label(),
        "n": len(case.images),
        **{k: None if v is None else _mean(v) for k, v in values.items()},
        "randomisation_corr": None,
        "s_per_image": per_image if timed else None,
        "peak_mb": peak if timed else None,
    }
    row.update({f"{k}_sem": _sem(v) for k, v in values.items() if v is not None})
    row["per_image"] = {k: v.float().tolist() for k, v in values.items() if v is not None}
    if timed and randomisation_images > 0:
        check = metrics.randomisation_check(
            case.model,
            case.images[:randomisation_images],
            lambda model, images: run.explain(case, model, images),
        )
        row["randomisation_corr"] = _mean(check["mean"])
        row["randomisation_curve"] = dict(zip(check["layers"], check["mean"].tolist(), strict=True))
    return row


def _mean(values: Tensor) -> float:
    return float(values.float().nanmean())


def _sem(values: Tensor) -> float:
    """Standard error of the mean of ``(n,)`` values (NaNs left out; 0 for one value)."""
    v = values.float()
    v = v[~v.isnan()]
    return float(v.std() / math.sqrt(len(v))) if len(v) > 1 else 0.0


@dataclass(frozen=True)
class Settings:
    """How every row is measured (see :func:`evaluate_run`)."""

    steps: int = 16
    baseline: str = "blur"
    batch: int = 16
    randomisation_images: int = RANDOMISATION_IMAGES

    def __post_init__(self) -> None:
        if self.baseline not in metrics.BASELINES:
            raise ValueError(f"baseline must be one of {list(metrics.BASELINES)}")
        if self.steps < 1 or self.batch < 1 or self.randomisation_images < 0:
            raise ValueError("steps and batch must be >= 1, randomisation_images >= 0")


def evaluate(
    methods: Sequence[str] | None = None,
    cases: Sequence[str] = DEFAULT_CASES,
    n: int = DEFAULT_N,
    device: str | torch.device | None = None,
    out: str | pathlib.Path | None = None,
    *,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Evaluate ``methods`` (default: every applicable one) on ``cases``; a list of rows.

    Each row is a dict with the keys ``COLUMNS`` (plus the extras of :func:`evaluate_run`).
    ``device=None``: CUDA when available. ``out``: a folder where ``evaluation.json`` and
    ``evaluation.csv`` are written (nothing when None). ``log`` gets one line per finished row.
    ``settings``: ``steps``, ``baseline``, ``batch``, ``randomisation_images`` (:class:`Settings`).
    """
    device = _device(device)
    how = Settings(**settings)
    rows = []
    for name in cases:
        case = load_case(name, n, device)
        rows += evaluate_runs(case, runs_for(case, methods), how, log)
    if out is not None:
        save(rows, out, "evaluation", _describe(how, device, n))
    return rows


def evaluate_choices(
    case: str = "reid",
    n: int = DEFAULT_N,
    device: str | torch.device | None = None,
    out: str | pathlib.Path | None = None,
    *,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Score-FAM with every combination of ``CHOICES`` on ``case`` (fp32), then Grad-FAM for
    reference; rows and arguments as :func:`evaluate`, saved as ``choices.json`` /
    ``choices.csv`` under ``out``."""
    device = _device(device)
    how = Settings(**settings)
    runs = [
        Run("score-fam", "fp32", {"weights": weights, "masking": masking})
        for weights in CHOICES["weights"]
        for masking in CHOICES["masking"]
    ]
    rows = evaluate_runs(load_case(case, n, device), [*runs, Run("grad-fam")], how, log)
    if out is not None:
        save(rows, out, "choices", _describe(how, device, n))
    return rows


BLOCK_CASES = ("vit_flowers", "vit_reid")


def block_layers(model: nn.Module) -> list[str]:
    """Every transformer block's output and the same tokens after the LayerNorm that reads
    them next (the next block's ``norm1``; the final ``norm`` after the last block), in order:
    ``["blocks.0", "blocks.1.norm1", "blocks.1", ..., "blocks.3", "norm"]`` for the zoo ViTs."""
    blocks = [f"blocks.{n}" for n, _ in model.blocks.named_children()]
    after = [f"{b}.norm1" for b in blocks[1:]] + ["norm"]
    return [name for pair in zip(blocks, after, strict=True) for name in pair]


def evaluate_blocks(
    cases: Sequence[str] = BLOCK_CASES,
    n: int = DEFAULT_N,
    device: str | torch.device | None = None,
    out: str | pathlib.Path | None = None,
    *,
    methods: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """The FAM/CAM methods (those that take ``layer=``, applicable to the case) on every layer
    of :func:`block_layers` of the transformer ``cases``, fp32, then the random reference; the
    rows' ``options`` name the layer. Saved as ``blocks.json`` / ``blocks.csv`` under ``out``.
    This is how ``layout.default_layer_name``'s choice was measured (randomisation check off:
    ``randomisation_images=0`` unless given)."""
    device = _device(device)
    how = Settings(**{"randomisation_images": 0, **settings})
    rows = []
    for name in cases:
        case = load_case(name, n, device)
        names = [
            m
            for m in (methods if methods is not None else _methods())
            if method_info(m).needs_layer and applicable(m, case.kind)
        ]
        layers = block_layers(case.model)
        runs = [Run(m, "fp32", {"layer": layer}) for m in names for layer in layers]
        rows += evaluate_runs(case, [*runs, Run(RANDOM)], how, log)
    if out is not None:
        save(rows, out, "blocks", _describe(how, device, n))
    return rows


def _methods() -> list[str]:
    return list(methods())


ATTENTION_RULES = ("value", "weight")
"""The attention rules of CNN Fixations compared by ``--fixation-rules``: ``value`` (the rule
``fixations`` follows: the token ``j`` with the largest ``s * a_ij * v_jd``) and ``weight``
(the token with the largest attention weight ``a_ij``, whatever its value)."""


@contextlib.contextmanager
def attention_rule(name: str):
    """Within the block, CNN Fixations routes ``scaled_dot_product_attention`` by rule
    ``name`` (one of ``ATTENTION_RULES``); a measurement tool, restored on exit."""
    if name not in ATTENTION_RULES:
        raise ValueError(f"attention rule must be one of {ATTENTION_RULES}, not {name!r}")
    from .explainers import fixation_rules as rules

    saved = rules.SDPA
    if name == "weight":
        rules.SDPA = type(saved)(saved.name, _sdpa_by_weight, saved.sources, needs_values=True)
    try:
        yield
    finally:
        rules.SDPA = saved


def _sdpa_by_weight(walk: Any, node: Any, points: Tensor) -> list:
    """The ``weight`` rule: each point ``(…, i, d)`` moves to the value ``(…, j, d)`` of the
    token ``j`` with the largest attention weight ``a_ij`` (no mask, not causal, as the zoo)."""
    from .explainers.fixation_walk import ravel, sign_of, with_sign

    q, k, v = (walk.arg(node, i, key) for i, key in enumerate(("query", "key", "value")))
    value = node.args[2] if len(node.args) > 2 else node.kwargs.get("value")
    if walk.arg(node, 3, "attn_mask") is not None or walk.arg(node, 5, "is_causal", False):
        raise ValueError("the weight rule is measured on unmasked attention only")
    scale = walk.arg(node, 6, "scale") or 1 / math.sqrt(q.shape[-1])
    a = ((q.float() @ k.float().transpose(-2, -1)) * scale).softmax(dim=-1)
    coords = points[:, :-1]
    row = ravel(coords[:, :-2], a.shape[:-2])
    j = a.reshape(-1, a.shape[-2], a.shape[-1])[row, coords[:, -2]].argmax(dim=1)
    out = coords.clone()
    out[:, -2] = j
    return [(value, with_sign(out, sign_of(v[tuple(out.T)])))]


def evaluate_fixation_rules(
    cases: Sequence[str] = BLOCK_CASES,
    n: int = DEFAULT_N,
    device: str | torch.device | None = None,
    out: str | pathlib.Path | None = None,
    *,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """CNN Fixations with each of ``ATTENTION_RULES`` on the transformer ``cases`` (options
    ``attention=<rule>``), then the random reference; saved as ``fixation_rules.json`` /
    ``.csv`` under ``out``."""
    device = _device(device)
    how = Settings(**settings)
    rows = []
    for name in cases:
        case = load_case(name, n, device)
        for rule in ATTENTION_RULES:
            with attention_rule(rule):
                row = evaluate_runs(case, [Run("fixations")], how, log)[0]
            row["options"] = f"attention={rule}"
            rows.append(row)
        rows += evaluate_runs(case, [Run(RANDOM)], how, log)
    if out is not None:
        save(rows, out, "fixation_rules", _describe(how, device, n))
    return rows


def evaluate_runs(
    case: Case, runs: Sequence[Run], how: Settings, log: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """The rows of ``runs`` on ``case``, one :func:`evaluate_run` each (under torchrun each
    rank scores a shard and the rows are reduced: ``famwidget.dataset.sharded``)."""
    from .dataset.sharded import evaluate_row

    rows = []
    for run in runs:
        rows.append(
            evaluate_row(
                evaluate_run,
                run,
                case,
                steps=how.steps,
                baseline=how.baseline,
                batch=how.batch,
                randomisation_images=how.randomisation_images,
            )
        )
        if log is not None:
            log(_progress(rows[-1]))
    return rows


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _progress(row: dict[str, Any]) -> str:
    what = " ".join(str(row[k]) for k in ("case", "method", "precision", "options") if row[k])
    return f"  done: {what}"


def _describe(how: Settings, device: torch.device, n: int) -> dict[str, Any]:
    """The settings saved beside the rows."""
    return {
        "n": n,
        **asdict(how),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "memory": _memory_note(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _memory_note(device: torch.device) -> str:
    with metrics.measure(device) as usage:
        pass
    return usage.what


# ----------------------------------------------------------------------------- output


def format_value(key: str, value: Any) -> str:
    """A table cell: fractions with 3 decimals, times with 4 significant digits, '-' for None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "s_per_image":
        return f"{value:.4g}"
    if key == "peak_mb":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], title: str = "") -> str:
    """The rows as a fixed-width text table (columns without any value are left out)."""
    keys = [k for k in COLUMNS if any(r.get(k) not in (None, "") for r in rows)]
    cells = [[HEADERS.get(k, k) for k in keys]]
    cells += [[format_value(k, r.get(k)) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    numeric = [k not in ("case", "method", "precision", "options") for k in keys]

    def line(row: list[str]) -> str:
        aligned = zip(row, widths, numeric, strict=True)
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in aligned).rstrip()

    lines = [title] if title else []
    lines += [line(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [line(row) for row in cells[1:]]
    return "\n".join(lines)


def save(
    rows: Sequence[dict[str, Any]],
    out: str | pathlib.Path,
    stem: str,
    settings: dict[str, Any] | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``out/stem.json`` (settings + rows) and ``out/stem.csv`` (the columns), atomically."""
    folder = pathlib.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"settings": settings or {}, "columns": list(COLUMNS), "rows": list(rows)}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r.get(k) for k in COLUMNS} for r in rows)
    json_path, csv_path = folder / f"{stem}.json", folder / f"{stem}.csv"
    write_atomic(json_path, json.dumps(payload, indent=1) + "\n")
    write_atomic(csv_path, text.getvalue())
    return json_path, csv_path


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="famwidget evaluate",
        description="Evaluate the explanation methods against ground truth on the shipped "
        "models and data: print a table and save it as JSON and CSV.",
    )
    p.add_argument("--methods", nargs="+", default=None, help="default: every applicable one")
    p.add_argument(
        "--cases",
        nargs="*",
        default=list(DEFAULT_CASES),
        choices=CASES,
        help="the main table's cases (none given: only the comparisons asked for)",
    )
    p.add_argument("-n", type=int, default=DEFAULT_N, help="held-out images per case")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("evaluation-output"))
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    p.add_argument("--baseline", default="blur", choices=metrics.BASELINES)
    p.add_argument("--batch", type=int, default=16, help="images per fw.explain call")
    p.add_argument(
        "--randomisation-images",
        type=int,
        default=RANDOMISATION_IMAGES,
        help="images per row in the randomisation check (0: skip it)",
    )
    p.add_argument(
        "--choices", action="store_true", help="also compare Score-FAM's options on reid"
    )
    p.add_argument(
        "--blocks",
        action="store_true",
        help="also compare the FAM/CAM methods on every transformer block, before and after "
        f"its norm, on {' and '.join(BLOCK_CASES)}",
    )
    p.add_argument(
        "--fixation-rules",
        action="store_true",
        help=f"also compare the attention rules of fixations on {' and '.join(BLOCK_CASES)}",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``famwidget evaluate [options]``: print the table(s), save them under ``--out``."""
    args = parser().parse_args(argv)
    if args.n < 1:
        raise SystemExit("famwidget evaluate: -n must be >= 1")
    common = dict(
        n=args.n,
        device=args.device,
        out=args.out,
        steps=args.steps,
        baseline=args.baseline,
        batch=args.batch,
        randomisation_images=args.randomisation_images,
        log=lambda s: print(s, flush=True),
    )
    start = time.perf_counter()
    if args.cases:
        rows = evaluate(args.methods, args.cases, **common)
        print()
        print(format_table(rows, f"famwidget evaluate: n={args.n} images per case"))
    if args.choices:
        choices = evaluate_choices("reid", **common)
        print()
        print(format_table(choices, "Score-FAM [choice] options on reid (fp32)"))
    if args.blocks:
        blocks = evaluate_blocks(BLOCK_CASES, methods=args.methods, **common)
        print()
        print(format_table(blocks, "FAM/CAM methods on each transformer block (fp32)"))
    if args.fixation_rules:
        rules = evaluate_fixation_rules(BLOCK_CASES, **common)
        print()
        print(format_table(rules, "CNN Fixations' attention rules (fp32)"))
    print(f"\nsaved under {args.out.resolve()} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
