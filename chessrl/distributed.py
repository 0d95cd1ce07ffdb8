"""Data-parallel training with torch.distributed: process groups, DDP, metric reduction.

``torchrun --nproc_per_node=N -m chessrl run CONFIG`` starts N ranks. Each rank plays its own
roots with its own seed and its own engine pool; DDP all-reduces gradients; metrics are
averaged over ranks so every rank's controllers take the same decisions; rank 0 alone logs,
checkpoints and reports. Without torchrun (no ``WORLD_SIZE``), everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collectives' tensors live (cuda for nccl)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: torch.device) -> Dist:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    comm = torch.device("cuda", local) if device.type == "cuda" else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local, comm)


def device_for(d: Dist, device: torch.device) -> torch.device:
    return torch.device("cuda", d.local_rank) if device.type == "cuda" else device


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_metrics(d: Dist, metrics: dict[str, float]) -> dict[str, float]:
    """Average every metric over ranks (same keys on every rank, in sorted order)."""
    if not d.enabled:
        return metrics
    keys = sorted(metrics)
    if broadcast(d, keys) != keys:
        raise RuntimeError("ranks logged different metric keys; they must run identical configs")
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    t /= d.world
    return dict(zip(keys, t.cpu().tolist()))


def all_true(d: Dist, flag: bool) -> bool:
    if not d.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_true(d: Dist, flag: bool) -> bool:
    if not d.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_int(d: Dist, value: int) -> int:
    """The largest of every rank's ``value``."""
    if not d.enabled:
        return value
    t = torch.tensor([value], device=d.device, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process of the run went away
    (gloo's closed or reset connection, NCCL's errors, torch's DistError)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return (
        isinstance(exc, RuntimeError)
        and any(
            s in text
            for s in ("Connection closed by peer", "Connection reset by peer", "NCCL error")
        )
        or ("gloo" in text and "pair.cc" in text)
    )


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def close(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
