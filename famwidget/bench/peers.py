"""``famwidget bench --peers``: famwidget beside pytorch-grad-cam and TorchCAM on identical work.

Every case fixes a model, a layer, a batch of images and a target; each tool explains it with its
own public API (famwidget: ``fw.explain``; pytorch-grad-cam: ``GradCAM/ScoreCAM(model,
target_layers)`` with callable targets; TorchCAM: ``torchcam.methods.GradCAM/ScoreCAM(model,
target_layer)`` with ``class_idx`` or ``targets``), in one process, round-robin (one call of every
tool per round, so background load hits them alike), after a warm-up, and the table gives:

- seconds per call (median of the rounds) and the spread of the rounds ``(max - min) / median``;
- the ratio to famwidget (``> 1``: famwidget is faster);
- peak memory of one call: the rise of the resident set (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``) in a fresh subprocess per case and tool on the CPU, or
  ``torch.cuda.max_memory_allocated`` above the memory in use on CUDA;
- map agreement: the Pearson correlation of each peer's maps with famwidget's, resized to the
  input size (bilinear), the lowest over the batch.

Targets are the same for all three: a class logit (Grad-CAM / Score-CAM; the predicted class,
computed once beforehand), ``||f(x)||`` for Grad-FAM and ``cos(f(x_k), f(x))`` for Score-FAM,
given to the peers as their custom callable targets. Score-FAM uses the peers' weight rule here
(``weights="softmax"``, famwidget's default for embeddings is ``"relu-baseline"``) so that the
work and the maps are the same; famwidget runs with its default ``precision="auto"``; the peers
run with their default batch sizes (pytorch-grad-cam 16, TorchCAM 32). A peer that is not
installed gets "not installed" in its cells (``pip install famwidget[peers]``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import print_table, seconds, synchronize

TOOLS = ("famwidget", "pytorch-grad-cam", "torchcam")
MODULES = {"pytorch-grad-cam": "pytorch_grad_cam", "torchcam": "torchcam"}
IMPORTS = {"famwidget": "famwidget.api", "pytorch-grad-cam": "pytorch_grad_cam",
           "torchcam": "torchcam.methods"}  # fmt: skip
METHODS = ("grad-fam", "grad-cam", "score-fam", "score-cam")
MODELS = ("resnet18", "resnet50", "reid_net", "tiny")


@dataclass(frozen=True)
class Case:
    """One comparison: ``method`` on ``model`` with ``batch`` images (``size`` for ResNets)."""

    method: str
    model: str
    batch: int

    @property
    def name(self) -> str:
        return f"{self.method}/{self.model}/b{self.batch}"

    @classmethod
    def parse(cls, text: str) -> Case:
        """``"score-fam/resnet18/b8"`` → Case; a clear error for anything else."""
        parts = text.strip().split("/")
        ok = len(parts) == 3 and parts[0] in METHODS and parts[1] in MODELS
        if not ok or not parts[2].startswith("b") or not parts[2][1:].isdigit():
            raise ValueError(
                f"a case is METHOD/MODEL/bBATCH with METHOD in {list(METHODS)} and MODEL in "
                f"{list(MODELS)}, e.g. score-fam/resnet18/b1; got {text!r}"
            )
        case = cls(parts[0], parts[1], int(parts[2][1:]))
        if case.batch < 1:
            raise ValueError(f"the batch of a case must be >= 1, got {text!r}")
        if case.model == "reid_net" and case.method.endswith("-cam"):
            raise ValueError("reid_net has no classes: use grad-fam or score-fam with it")
        return case


def all_cases() -> list[Case]:
    """Every case the issue asks for: 4 methods x ResNet-18/50 x batch 1/8, and the re-ID net."""
    cases = [
        Case(m, model, b) for model in ("resnet18", "resnet50") for b in (1, 8) for m in METHODS
    ]
    return [*cases, Case("grad-fam", "reid_net", 8), Case("score-fam", "reid_net", 8)]


def default_cases(device: str) -> list[Case]:
    """All cases on CUDA. On a CPU every gradient case, and the masked-forward cases whose peer
    calls take at most a few minutes each: Score-FAM and Score-CAM on ResNet-18 at batch 1,
    Score-FAM on ResNet-18 at batch 8, on ResNet-50 at batch 1 and on the re-ID net (Score-CAM
    costs what Score-FAM costs; ``--cases`` runs any of the others). Cheapest first."""
    if torch.device(device).type == "cuda":
        return all_cases()
    grads = [c for c in all_cases() if c.method.startswith("grad")]
    scores = [Case("score-fam", "reid_net", 8), Case("score-fam", "resnet18", 1),
              Case("score-cam", "resnet18", 1), Case("score-fam", "resnet18", 8),
              Case("score-fam", "resnet50", 1)]  # fmt: skip
    return grads + scores


QUICK_CASES = [Case("grad-fam", "reid_net", 1), Case("score-fam", "reid_net", 1)]


# -- the work: model, images, layer, target ----------------------------------------------------


class TinyNet(nn.Module):
    """A small CNN for tests: ``(B,3,32,32)`` → ``(B,10)``; ``features``: 16 channels, 8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclass
class Work:
    """What every tool gets: ``model`` (eval), ``images`` ``(B,3,H,W)``, the layer, the target.

    ``classes`` ``(B,)`` is the predicted class (class methods) and ``reference`` ``(B,D)`` the
    clean embedding (Score-FAM's cosine target); ``None`` where the method does not need it.
    """

    case: Case
    model: nn.Module
    images: Tensor
    layer: str
    classes: Tensor | None
    reference: Tensor | None

    @property
    def module(self) -> nn.Module:
        return dict(self.model.named_modules())[self.layer]


def build_work(case: Case, device: str | torch.device) -> Work:
    """The same work in every process (seeded): the model on ``device``, images, layer, target."""
    from .scorefam import blob_image, structured_images

    torch.manual_seed(0)
    embedding = case.method.endswith("-fam")
    if case.model in ("resnet18", "resnet50"):
        import torchvision

        model = getattr(torchvision.models, case.model)(weights=None)
        if embedding:  # the backbone as an embedding net: the pooled 512/2048-d features
            model.fc = nn.Identity()
        images, layer = structured_images(case.batch, 224), "layer4"
    elif case.model == "tiny":
        model = TinyNet()
        images = torch.stack([blob_image(32, seed=i) for i in range(case.batch)]) * 2 - 1
        layer = "features"
    else:
        from ..demo import reid_demo

        demo = reid_demo(max(case.batch, 2))
        model, images, layer = demo.model, demo.gallery[: case.batch], "features"
    model = model.eval().to(device)
    images = images.to(device)
    with torch.no_grad():
        output = model(images).float()
    classes = None if embedding else output.argmax(dim=1)
    reference = output if case.method == "score-fam" else None
    return Work(case, model, images, layer, classes, reference)


class NormTarget:
    """``||f||`` of one output row: the Grad-FAM target as a peer's callable target."""

    def __call__(self, output: Tensor) -> Tensor:
        return output.float().norm()


class CosineTarget:
    """``cos(f, reference)`` of one output row: the Score-FAM target as a peer's target."""

    def __init__(self, reference: Tensor) -> None:
        self.reference = reference.float().flatten()

    def __call__(self, output: Tensor) -> Tensor:
        return F.cosine_similarity(output.float().flatten(), self.reference, dim=0, eps=1e-12)


def peer_targets(work: Work) -> list[Callable[[Tensor], Tensor]]:
    """One callable per image, over that image's output row (both peers' target convention)."""
    if work.classes is not None:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        return [ClassifierOutputTarget(int(c)) for c in work.classes]
    if work.reference is not None:
        return [CosineTarget(r) for r in work.reference]
    return [NormTarget() for _ in range(len(work.images))]


def torchcam_targets(work: Work) -> list[Callable[[Tensor], Tensor]]:
    """TorchCAM's ``targets``: the same callables as the other peer, with no import of it."""
    if work.reference is not None:
        return [CosineTarget(r) for r in work.reference]
    return [NormTarget() for _ in range(len(work.images))]


# -- one call of each tool: maps (B,H,W) float32 on the CPU --------------------------------------


def famwidget_call(work: Work, images: Tensor) -> Tensor:
    from ..api import explain
    from ..targets import ClassLogit, Embedding

    target = Embedding() if work.classes is None else ClassLogit(work.classes[: len(images)])
    options: dict = {"weights": "softmax"} if work.case.method == "score-fam" else {}
    if work.case.method.startswith("score"):
        options["max_seconds"] = None  # a benchmark: no cost refusal
    exp = explain(work.model, images, work.case.method, layer=work.layer, target=target, **options)
    return exp.heatmap.float().cpu()


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """pytorch-grad-cam's ScoreCAM prints a tqdm bar per image; it is switched off meanwhile."""
    from types import SimpleNamespace

    from pytorch_grad_cam import score_cam

    saved = score_cam.tqdm
    score_cam.tqdm = SimpleNamespace(tqdm=lambda iterable, **_: iterable)
    try:
        yield
    finally:
        score_cam.tqdm = saved


def grad_cam_call(work: Work, images: Tensor) -> Tensor:
    """pytorch-grad-cam: ``GradCAM`` / ``ScoreCAM(model, target_layers=[module])``."""
    from pytorch_grad_cam import GradCAM, ScoreCAM

    kind = GradCAM if work.case.method.startswith("grad") else ScoreCAM
    targets = peer_targets(work)[: len(images)]
    with _quiet_progress_bars(), kind(model=work.model, target_layers=[work.module]) as extractor:
        maps = extractor(input_tensor=images, targets=targets)
    return torch.from_numpy(maps).float()


def torchcam_call(work: Work, images: Tensor) -> Tensor:
    """TorchCAM: ``GradCAM`` / ``ScoreCAM(model, target_layer=name)``, hooks, one forward."""
    from torchcam.methods import GradCAM, ScoreCAM

    grad = work.case.method.startswith("grad")
    n = len(images)
    select: dict[str, Any] = (
        {"class_idx": [int(c) for c in work.classes[:n]]}
        if work.classes is not None
        else {"targets": torchcam_targets(work)[:n]}
    )
    kind = GradCAM if grad else ScoreCAM
    with kind(work.model, target_layer=work.layer) as extractor:
        if grad:
            with torch.enable_grad():
                scores = work.model(images)
                maps = extractor(scores=scores, **select)[0]
        else:
            with torch.no_grad():
                work.model(images)
            maps = extractor(**select)[0]
    return resized(maps.detach().float(), tuple(images.shape[-2:])).cpu()


CALLS: dict[str, Callable[[Work, Tensor], Tensor]] = {
    "famwidget": famwidget_call,
    "pytorch-grad-cam": grad_cam_call,
    "torchcam": torchcam_call,
}


def installed(tool: str) -> bool:
    """Whether ``tool`` can be imported here (famwidget always can)."""
    module = MODULES.get(tool)
    return module is None or importlib.util.find_spec(module) is not None


def resized(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """``(B,h,w)`` → ``(B,*size)`` bilinear (``align_corners=False``), float32."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps.float()[:, None], size=size, mode="bilinear")[:, 0]


def pearson(a: Tensor, b: Tensor) -> float:
    """The lowest per-image Pearson correlation of ``(B,H,W)`` maps (NaN: a constant map)."""
    b = resized(b, tuple(a.shape[-2:]))
    values = [
        float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]).double())[0, 1])
        for x, y in zip(a, b, strict=True)
    ]
    return min(values)


# -- peak memory -----------------------------------------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rise_mb(call: Callable[[], object], device: torch.device) -> float:
    """Peak memory of ``call()`` above what was in use before it, in MB.

    CUDA: ``max_memory_allocated``; CPU: the resident set's high-water mark, reset first through
    ``/proc/self/clear_refs`` (Linux), so that only this call's peak counts.
    """
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    call()
    return (_rss_kb("VmHWM") - before) / 1024


def memory_probe(case: Case, tool: str, device: str) -> float:
    """One call of ``tool`` on ``case`` in this process after one plain forward: the MB rise."""
    work = build_work(case, device)
    importlib.import_module(IMPORTS[tool])  # its import (cv2, ...) is not the call's memory
    with torch.no_grad():
        work.model(work.images)  # nor torch's own one-time set-up
    return peak_rise_mb(lambda: CALLS[tool](work, work.images), torch.device(device))


def measure_memory(case: Case, tool: str, device: str) -> float | str:
    """``memory_probe`` in a fresh subprocess on the CPU (in this process on CUDA)."""
    if torch.device(device).type == "cuda":
        return memory_probe(case, tool, device)
    command = [sys.executable, "-m", "famwidget.bench.peers", "--memory-probe", case.name,
               tool, device]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr else done.returncode}"
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rise_mb"])


# -- the comparison --------------------------------------------------------------------------


@dataclass
class Result:
    """One tool on one case; ``status`` is "ok", "not installed" or "failed: ...".

    ``seconds`` are the timed rounds; ``agreement`` the lowest Pearson r to famwidget's maps.
    """

    case: str
    tool: str
    status: str
    seconds: list[float]
    median: float | None = None
    spread: float | None = None
    ratio: float | None = None
    memory_mb: float | str | None = None
    agreement: float | None = None


def compare(
    case: Case,
    device: str,
    repeats: int = 3,
    memory: bool = True,
    tools: Sequence[str] = TOOLS,
) -> list[Result]:
    """Run ``case`` with every tool: a warm-up call each, then ``repeats`` round-robin rounds."""
    dev = torch.device(device)
    work = build_work(case, device)
    present = [t for t in tools if installed(t)]
    results = {
        t: Result(case.name, t, "ok" if t in present else "not installed", []) for t in tools
    }
    maps: dict[str, Tensor] = {}
    warm = work.images[:1] if case.method.startswith("score") else work.images
    for tool in present:
        try:
            CALLS[tool](work, warm)
        except Exception as error:  # a peer that cannot run this case says why in its cell
            results[tool].status = f"failed: {type(error).__name__}: {error}"[:120]
    running = [t for t in present if results[t].status == "ok"]
    for _ in range(repeats):
        for tool in running:
            box: list[Tensor] = []
            results[tool].seconds.append(
                seconds(lambda t=tool, b=box: b.append(CALLS[t](work, work.images)), dev)
            )
            maps[tool] = box[0]
    for tool in running:
        r = results[tool]
        r.median = statistics.median(r.seconds)
        r.spread = (max(r.seconds) - min(r.seconds)) / r.median if r.median > 0 else 0.0
        if "famwidget" in maps:
            r.agreement = pearson(maps["famwidget"], maps[tool])
    base = results.get("famwidget")
    for tool in running:
        if base is not None and base.median:
            results[tool].ratio = results[tool].median / base.median
        if memory:
            results[tool].memory_mb = measure_memory(case, tool, device)
    return [results[t] for t in tools]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.cuda.get_device_name()
    for tool, module in MODULES.items():
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            info[tool] = version({"pytorch-grad-cam": "grad-cam"}.get(tool, tool))
        if not installed(tool):
            info[tool] = "not installed"
        del module
    return info


def cell_seconds(r: Result) -> str:
    if r.median is None:
        return r.status
    text = f"{r.median:.3g} s ±{100 * (r.spread or 0):.0f}%"
    return text if r.tool == "famwidget" else f"{text} ({r.ratio:.2f}x)"


def cell_memory(r: Result) -> str:
    if r.memory_mb is None:
        return "-" if r.median is not None else r.status
    return r.memory_mb if isinstance(r.memory_mb, str) else f"{r.memory_mb:.0f}"


def rows_for(results: Sequence[Result]) -> list[list[str]]:
    """Table rows: one per case (seconds and ratio per tool, memory, agreement)."""
    by_case: dict[str, dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.tool] = r
    rows = []
    for name, found in by_case.items():
        tools = [found[t] for t in TOOLS if t in found]
        agree = [
            "-" if r.agreement is None else f"{r.agreement:.4f}"
            for r in tools
            if r.tool != "famwidget"
        ]
        rows.append([
            name,
            *(cell_seconds(r) for r in tools),
            " / ".join(cell_memory(r) for r in tools),
            " / ".join(agree),
        ])  # fmt: skip
    return rows


def headers_for(tools: Sequence[str], memory_unit: str) -> list[str]:
    peers = [t for t in tools if t != "famwidget"]
    return [
        "case",
        *tools,
        f"peak {memory_unit} rise (MB, {' / '.join(tools)})",
        f"Pearson r to famwidget ({' / '.join(peers)})",
    ]


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_peers(
    cases: Sequence[Case],
    device: str,
    repeats: int = 3,
    memory: bool = True,
    out: pathlib.Path | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Compare every case; print the table; save ``peers.md`` / ``peers.json`` under ``out``."""
    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    results: list[Result] = []
    loads: list[float] = []
    for case in cases:
        before = os.getloadavg()[0]
        start = time.perf_counter()
        found = compare(case, device, repeats, memory)
        results += found
        loads += [before, os.getloadavg()[0]]
        cells = ", ".join(f"{r.tool} {cell_seconds(r)}" for r in found)
        print(f"{case.name}: {cells}  [{time.perf_counter() - start:.0f} s]", flush=True)
        save(results, loads, info, device, repeats, command, out, final=False)
    return save(results, loads, info, device, repeats, command, out, final=True)


def save(
    results: Sequence[Result],
    loads: Sequence[float],
    info: dict[str, Any],
    device: str,
    repeats: int,
    command: str,
    out: pathlib.Path | None,
    final: bool,
) -> dict[str, Any]:
    """Write the table so far (after every case: a long run that is stopped keeps its rows);
    ``final`` also prints it."""
    unit = "CUDA allocated" if torch.device(device).type == "cuda" else "RSS"
    headers = headers_for(TOOLS, unit)
    rows = rows_for(results)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    low, high = (min(loads), max(loads)) if loads else (0.0, 0.0)
    noise = (
        f"noise: load average {low:.1f}-{high:.1f} on {info['cores']} cores during the run; "
        f"± is (max - min) / median of {repeats} rounds"
    )
    report = {"date": stamp, "command": command, "device": device, "machine": info,
              "repeats": repeats, "load_average": [low, high],
              "results": [asdict(r) for r in results]}  # fmt: skip
    if final:
        print()
        print_table(headers, rows)
        print(noise)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        text = f"{stamp}, `{command}`, {info['cpu']}, {info.get('cuda', device)}\n\n"
        (out / "peers.md").write_text(text + markdown(headers, rows) + "\n" + noise + "\n")
        (out / "peers.json").write_text(json.dumps(report, indent=1))
        if final:
            print(f"wrote {out / 'peers.md'} and {out / 'peers.json'}")
    return report


def run(args: argparse.Namespace) -> None:
    """``famwidget bench --peers [--quick] [--device D] [--cases A,B] [--repeats N]``."""
    if getattr(args, "cases", None):
        cases = [Case.parse(c) for c in args.cases.split(",")]
    else:
        cases = QUICK_CASES if args.quick else default_cases(args.device)
    repeats = getattr(args, "repeats", None) or (1 if args.quick else 3)
    out = pathlib.Path(getattr(args, "out", None) or "bench-output")
    memory = not getattr(args, "no_memory", False)
    command = getattr(args, "command_line", "famwidget bench --peers")
    run_peers(cases, args.device, repeats, memory, out, command)


def _main(argv: Sequence[str]) -> int:
    """``python -m famwidget.bench.peers --memory-probe CASE TOOL DEVICE``: one JSON line."""
    if len(argv) != 4 or argv[0] != "--memory-probe":
        print("usage: python -m famwidget.bench.peers --memory-probe CASE TOOL DEVICE "
              "(famwidget bench --peers runs the comparison)", file=sys.stderr)  # fmt: skip
        return 2
    rise = memory_probe(Case.parse(argv[1]), argv[2], argv[3])
    print(json.dumps({"rise_mb": rise}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
