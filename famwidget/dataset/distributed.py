"""Running under ``torchrun``: which rank this is, its shard, barriers and small reductions.

``torchrun --nproc-per-node N -m famwidget explain ...`` (and several nodes, by torchrun's own
``--nnodes/--node-rank/--rdzv-*`` options) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`world` then joins the process group with NCCL when CUDA is there and gloo on CPUs.
Outside torchrun it is a world of one and every call here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """``rank`` of ``size`` processes (``local_rank`` on this node); ``size == 1`` alone."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """The device this rank's model should be on: its own GPU, or the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")


def world() -> World:
    """The current world; joins the process group (once) when started by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _local_rank(), dist.get_backend())
    if size <= 1:
        return World()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    local = _local_rank()
    if backend == "nccl":
        torch.cuda.set_device(local % torch.cuda.device_count())
    seconds = int(os.environ.get("FAMWIDGET_DIST_TIMEOUT", "7200"))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    return World(dist.get_rank(), dist.get_world_size(), local, backend)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def barrier(w: World) -> None:
    """Wait for every rank (nothing to wait for alone)."""
    if w.size > 1:
        dist.barrier()


def sum_all(w: World, values: list[float]) -> list[float]:
    """The element-wise sum of ``values`` over the ranks."""
    if w.size == 1:
        return list(values)
    device = w.device if w.backend == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def max_all(w: World, value: float) -> float:
    """The largest ``value`` over the ranks."""
    if w.size == 1:
        return value
    device = w.device if w.backend == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def shard(n_chunks: int, rank: int, size: int) -> range:
    """Rank ``rank``'s contiguous block of chunk indices: disjoint, covering, no padding.

    The first ``n_chunks % size`` ranks take one chunk more; a rank may get none.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank must be in [0, {size}), got {rank}")
    base, extra = divmod(n_chunks, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))
