"""Train the zoo: ``python -m famwidget.zoo.train NAME [NAME ...]`` (or ``all``).

Deterministic for a seed on a given machine; minutes on a 2-core CPU (bf16 autocast and
channels_last, about 2.5x faster than fp32 here). Prints the held-out metrics and writes
``famwidget/zoo/weights/NAME.safetensors`` with the metrics and the command in its metadata.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import flowers
from . import NAMES, WEIGHTS, build
from .heldout import accuracy, embed, flower_test, linear_probe, person_split, retrieval
from .nets import ProjectionHead


def augment(
    x: Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.85, 1.0),
    shift: float = 0.1,
    flip: bool = True,
) -> Tensor:
    """Random flip, zoom and shift of a batch ``(B,3,H,W)``, one affine warp per image."""
    b = x.shape[0]
    s = torch.empty(b).uniform_(*scale, generator=gen)
    sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    tx, ty = (torch.rand(2, b, generator=gen) * 2 - 1) * shift
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = s * sign, s
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


def batches(n: int, size: int, gen: torch.Generator) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=gen)
    for i in range(0, n - size + 1, size):
        yield order[i : i + size]


def fit(
    model: nn.Module,
    params,
    steps: int,
    lr: float,
    step: Callable[[int], Tensor],
    bf16: bool = True,
) -> None:
    """AdamW with a cosine schedule; ``step(i)`` returns the loss of batch ``i``.

    ``bf16``: autocast to bfloat16 (faster for the plain CNNs; measured 7x *slower* for the
    transformer and the depthwise/SE CNN on this CPU, which train in fp32).
    """
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    start = time.perf_counter()
    for i in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = step(i)
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        sched.step()
        if i % max(1, steps // 10) == 0 or i == steps - 1:
            seconds = time.perf_counter() - start
            print(f"  step {i + 1}/{steps}  loss {float(loss.detach()):.4f}  {seconds:.0f}s")
    model.eval()


def channels_last(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.channels_last)


def train_flower(
    variant: str,
    n: int,
    epochs: int,
    seed: int,
    name: str | None = None,
    lr: float = 4e-3,
    fast_cnn: bool = True,
) -> tuple[nn.Module, dict]:
    """``fast_cnn``: bf16 autocast and channels_last (the plain CNNs); else fp32, contiguous."""
    name = name or ("flower_net" if variant == "single" else "flower_net_double")
    model, prep = build(name)
    layout = torch.channels_last if fast_cnn else torch.contiguous_format
    model.to(memory_format=layout)
    data = flowers(n, variant=variant, seed=seed)
    x, y = prep.batch(data.images), torch.as_tensor(data.labels)
    gen = torch.Generator().manual_seed(seed)
    size = 64
    plan = [idx for _ in range(epochs) for idx in batches(len(x), size, gen)]

    def step(i: int) -> Tensor:
        xb = augment(x[plan[i]], gen).contiguous(memory_format=layout)
        return F.cross_entropy(model(xb), y[plan[i]], label_smoothing=0.05)

    fit(model, model.parameters(), len(plan), lr, step, bf16=fast_cnn)
    test = flower_test(variant)
    metrics = {
        "accuracy": accuracy(model, prep.batch(test.images), test.labels),
        "heldout": f"flowers(1000, variant={variant!r}, seed={test_seed(variant)})",
    }
    return model, {
        "metrics": metrics,
        "classes": data.classes,
        "train": {"n": n, "epochs": epochs, "seed": seed},
    }


def train_modern_flower(name: str, epochs: int, seed: int, lr: float) -> tuple[nn.Module, dict]:
    """The SE CNN and the ViT: fp32 on one thread (measured on the shared 2-core CPU: 0.75 s a
    batch of 64 against 5 s with bf16 autocast and 8-17 s with two contended threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, info = train_flower("single", 4000, epochs, seed, name=name, lr=lr, fast_cnn=False)
    finally:
        torch.set_num_threads(threads)
    info["train"].update(precision="fp32", threads=1, lr=lr)
    return model, info


def test_seed(variant: str) -> int:
    from .heldout import FLOWER_TEST_SEED

    return FLOWER_TEST_SEED[variant]


def batch_hard_triplet(f: Tensor, ids: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss on embeddings ``(B,D)`` (Hermans et al.)."""
    d = torch.cdist(f.float(), f.float())
    same = ids[:, None] == ids[None, :]
    hardest_pos = (d * same).amax(1)
    hardest_neg = (d + same * 1e6).amin(1)
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def pk_batches(ids: np.ndarray, p: int, k: int, gen: torch.Generator) -> Iterator[Tensor]:
    """Batches of ``p`` identities x ``k`` images each (identity-balanced, for triplet loss)."""
    by_id = {i: np.flatnonzero(ids == i) for i in np.unique(ids)}
    order = torch.randperm(len(by_id), generator=gen).tolist()
    keys = list(by_id)
    for start in range(0, len(order) - p + 1, p):
        chosen = []
        for j in order[start : start + p]:
            pool = by_id[keys[j]]
            pick = torch.randperm(len(pool), generator=gen)[:k].numpy()
            chosen.extend(pool[pick].tolist())
        yield torch.as_tensor(chosen)


def train_reid(
    epochs: int, seed: int, name: str = "reid_net", lr: float = 3e-3
) -> tuple[nn.Module, dict]:
    """Identity (cross-entropy on the neck) + batch-hard triplet (on the pooled feature) loss.

    ``reid_net``: bf16 autocast, channels_last; ``vit_reid_net``: fp32 on one thread (as the
    other transformer, see :func:`train_modern_flower`), its class token is the pooled feature.
    """
    model, prep = build(name)
    modern = name != "reid_net"
    if modern:
        pool = model.pooled
        layout = torch.contiguous_format
    else:
        channels_last(model)
        layout = torch.channels_last

        def pool(xb: Tensor) -> Tensor:
            return model.features(xb).mean((2, 3))

    split = person_split(train=True)
    x, ids = prep.batch(split.images), torch.as_tensor(split.ids)
    classifier = nn.Linear(model.embedding.num_features, int(ids.max()) + 1, bias=False)
    gen = torch.Generator().manual_seed(seed)
    plan = [b for _ in range(epochs) for b in pk_batches(split.ids, 16, 4, gen)]

    def step(i: int) -> Tensor:
        idx = plan[i]
        xb = augment(x[idx], gen, scale=(0.9, 1.0), shift=0.08)
        xb = xb * torch.empty(len(idx), 1, 1, 1).uniform_(0.8, 1.2, generator=gen)
        pooled = pool(xb.contiguous(memory_format=layout))
        neck = model.embedding(pooled)
        ce = F.cross_entropy(classifier(neck), ids[idx], label_smoothing=0.1)
        return ce + batch_hard_triplet(pooled, ids[idx])

    params = list(model.parameters()) + list(classifier.parameters())
    threads = torch.get_num_threads()
    if modern:
        torch.set_num_threads(1)
    try:
        fit(model, params, len(plan), lr, step, bf16=not modern)
    finally:
        torch.set_num_threads(threads)
    test = person_split(train=False)
    metrics = retrieval(embed(model, prep.batch(test.images)), test.ids, test.cams)
    metrics["heldout"] = "50 unseen identities x 12 images, cross-camera queries"
    train = {"epochs": epochs, "seed": seed}
    if modern:
        train.update(precision="fp32", threads=1, lr=lr)
    return model, {"metrics": metrics, "train": train}


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.2) -> Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy over 2B views."""
    z = torch.cat([z1, z2]).float()
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, targets)


def train_ssl(n: int, epochs: int, seed: int) -> tuple[nn.Module, dict]:
    model, prep = build("ssl_net")
    channels_last(model)
    head = ProjectionHead(model.dim)
    data = flowers(n, variant="single", seed=seed)  # labels are never used
    x = prep.batch(data.images)
    gen = torch.Generator().manual_seed(seed)
    plan = [idx for _ in range(epochs) for idx in batches(len(x), 128, gen)]

    def view(xb: Tensor) -> Tensor:
        v = augment(xb, gen, scale=(0.5, 1.0), shift=0.3)
        gain = torch.empty(len(xb), 1, 1, 1).uniform_(0.7, 1.3, generator=gen)
        noise = torch.randn(v.shape, generator=gen) * 0.1
        return (v * gain + noise).contiguous(memory_format=torch.channels_last)

    def step(i: int) -> Tensor:
        xb = x[plan[i]]
        return nt_xent(head(model(view(xb))), head(model(view(xb))))

    fit(model, list(model.parameters()) + list(head.parameters()), len(plan), 3e-3, step)
    probe_train, probe_test = flowers(2000, seed=3), flower_test("single")
    acc = linear_probe(
        embed(model, prep.batch(probe_train.images)),
        probe_train.labels,
        embed(model, prep.batch(probe_test.images)),
        probe_test.labels,
    )
    metrics = {
        "linear_probe_accuracy": acc,
        "heldout": "linear probe fit on flowers(2000, seed=3), tested on flowers(1000, seed=101)",
    }
    return model, {"metrics": metrics, "train": {"n": n, "epochs": epochs, "seed": seed}}


RECIPES: dict[str, Callable[[], tuple[nn.Module, dict]]] = {
    "flower_net": lambda: train_flower("single", 4000, 4, seed=1),
    "flower_net_double": lambda: train_flower("double", 6000, 5, seed=2),
    "reid_net": lambda: train_reid(40, seed=3),
    "ssl_net": lambda: train_ssl(3000, 12, seed=4),
    "se_flower_net": lambda: train_modern_flower("se_flower_net", 4, seed=5, lr=4e-3),
    "vit_flower_net": lambda: train_modern_flower("vit_flower_net", 8, seed=6, lr=1e-3),
    "vit_reid_net": lambda: train_reid(150, seed=8, name="vit_reid_net", lr=3e-3),
}


def save(name: str, model: nn.Module, info: dict) -> None:
    from safetensors.torch import save_file

    info = {**info, "command": f"python -m famwidget.zoo.train {name}", "torch": torch.__version__}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    path = WEIGHTS / f"{name}.safetensors"
    save_file(state, str(path), metadata={k: json.dumps(v) for k, v in info.items()})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m famwidget.zoo.train", description=__doc__)
    parser.add_argument("names", nargs="+", help=f"{', '.join(NAMES)} or all")
    args = parser.parse_args(argv)
    names = list(NAMES) if args.names == ["all"] else args.names
    for name in names:
        if name not in RECIPES:
            parser.error(f"unknown model {name!r}; choose from {', '.join(NAMES)} or all")
    for name in names:
        torch.manual_seed(0)
        start = time.perf_counter()
        print(f"training {name}")
        model, info = RECIPES[name]()
        model = model.to(memory_format=torch.contiguous_format)
        minutes = (time.perf_counter() - start) / 60
        info["train"]["minutes"] = round(minutes, 1)
        print(f"{name}: held-out {json.dumps(info['metrics'])}  ({minutes:.1f} min)")
        save(name, model, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
