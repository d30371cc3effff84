"""Held-out data and metrics of the zoo: what the quality bars are measured on.

The held-out sets are fixed by their seeds and never overlap the training data: flowers use
other seeds; pedestrians use identities that the re-ID net never saw in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..data import flowers, persons

#: persons(PERSON_IDS, PERSON_PER_ID, seed=PERSON_SEED): the first TRAIN_IDS identities train
PERSON_IDS, PERSON_PER_ID, PERSON_SEED, TRAIN_IDS = 150, 12, 7, 100
FLOWER_TEST_SEED = {"single": 101, "double": 102}


@dataclass(frozen=True)
class ReIDSplit:
    images: np.ndarray  # (N,H,W,3) uint8
    ids: np.ndarray  # (N,)
    cams: np.ndarray  # (N,)
    masks: np.ndarray  # (N,H,W) identity parts


def person_split(train: bool) -> ReIDSplit:
    """The training identities (``train=True``) or the unseen test identities."""
    ds = persons(PERSON_IDS, PERSON_PER_ID, seed=PERSON_SEED)
    keep = ds.labels < TRAIN_IDS if train else ds.labels >= TRAIN_IDS
    return ReIDSplit(ds.images[keep], ds.labels[keep], ds.cams[keep], ds.masks[keep])


def flower_test(variant: str = "single", n: int = 1000):
    return flowers(n, variant=variant, seed=FLOWER_TEST_SEED[variant])


@torch.inference_mode()
def embed(model: nn.Module, x: Tensor, batch: int = 256) -> Tensor:
    """Model outputs ``(N,D)`` for inputs ``(N,3,H,W)``, in batches, in eval mode."""
    model.eval()
    return torch.cat([model(x[i : i + batch]).float() for i in range(0, len(x), batch)])


def accuracy(model: nn.Module, x: Tensor, labels: np.ndarray) -> float:
    return float((embed(model, x).argmax(1).numpy() == labels).mean())


def retrieval(features: Tensor, ids: np.ndarray, cams: np.ndarray) -> dict[str, float]:
    """Rank-1 and mAP with every image as a query against the others (cosine similarity).

    As in Market-1501: gallery images of the same identity *and* camera as the query are left
    out, so a match must be found across cameras.
    """
    f = torch.nn.functional.normalize(features.float(), dim=1)
    sim = (f @ f.T).numpy()
    ids_t, cams_t = np.asarray(ids), np.asarray(cams)
    rank1, aps = [], []
    for q in range(len(f)):
        valid = ~((ids_t == ids_t[q]) & (cams_t == cams_t[q]))
        match = (ids_t == ids_t[q])[valid]
        if not match.any():
            continue
        order = np.argsort(-sim[q][valid], kind="stable")
        hits = match[order]
        rank1.append(float(hits[0]))
        positions = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, len(positions) + 1) / positions)))
    return {"rank1": float(np.mean(rank1)), "mAP": float(np.mean(aps))}


def linear_probe(
    train_x: Tensor, train_y: np.ndarray, test_x: Tensor, test_y: np.ndarray, steps: int = 300
) -> float:
    """Accuracy of a softmax classifier trained on frozen features (deterministic, full batch)."""
    torch.manual_seed(0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    y = torch.as_tensor(train_y)
    head = nn.Linear(a.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(a), y).backward()
            opt.step()
    with torch.no_grad():
        return float((head(b).argmax(1).numpy() == test_y).mean())
