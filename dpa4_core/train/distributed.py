"""Data-parallel training: one process per device, the same global batch split across ranks.

Launch with ``torchrun --nproc_per_node K dpa4 train ...`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``). :func:`init_from_env` joins the process group (gloo on CPU, NCCL on
GPUs) and returns a :class:`DistContext`; without those variables it returns a single-process context whose
methods are no-ops, so the trainer's loop is the same in both cases.

Equivalence with one process: every rank draws the same global batch (same seed), :meth:`DistContext.shard`
gives each rank a contiguous slice, and :meth:`DistContext.all_reduce_gradients` averages the gradients. When
the loss is a mean over frames (and atoms) and the shards hold equal numbers of frames and atoms, the averaged
gradient is exactly the one-process gradient of the global batch; otherwise it is the usual DDP approximation
(each shard weighted equally).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

IndicesT = TypeVar("IndicesT", Sequence, torch.Tensor)


class ShardError(ValueError):
    """A global batch that cannot be split across the ranks (fewer frames than processes)."""


@dataclass
class DistContext:
    """Rank information and the collectives the trainer needs.

    Attributes:
        rank: this process's index, 0..world_size-1.
        world_size: number of processes (1 when not launched by torchrun).
        local_rank: index on this node (selects the GPU).
        device: the device this rank trains on.
        backend: ``"gloo"``, ``"nccl"`` or None (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and plots."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, indices: IndicesT) -> IndicesT:
        """This rank's contiguous slice of the global batch ``indices`` (sizes differ by at most one).

        Raises:
            ShardError: fewer indices than ranks (a rank would get an empty batch).
        """
        if not self.distributed:
            return indices
        n = len(indices)
        if n < self.world_size:
            raise ShardError(
                f"global batch of {n} frame(s) cannot be split across {self.world_size} ranks; "
                f"use a batch size >= {self.world_size}"
            )
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        stop = start + base + (1 if self.rank < extra else 0)
        return indices[start:stop]

    def all_reduce_gradients(self, model: nn.Module) -> None:
        """Average ``p.grad`` over ranks in place (one flat all-reduce per dtype).

        A parameter without a gradient on this rank joins with zeros so that every rank sends the same
        buffers (otherwise the collective would hang or mix tensors); its gradient is then set.
        """
        if not self.distributed:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= self.world_size
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
                offset += n

    def all_reduce_mean(self, value: torch.Tensor | float) -> torch.Tensor | float:
        """Mean of ``value`` over ranks (for logging the global loss); returns the same kind it was given."""
        if not self.distributed:
            return value
        tensor = torch.as_tensor(value, dtype=torch.float64, device=self.device).clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= self.world_size
        return tensor if isinstance(value, torch.Tensor) else float(tensor)

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
        if self.distributed:
            dist.barrier()

    def broadcast_parameters(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (in place: identities are kept)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def close(self) -> None:
        """Leave the process group (call once at the end of a torchrun script)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def init_from_env(backend: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment, or return a single-process context.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available, gloo otherwise.

    Returns:
        A :class:`DistContext`. Calling it again in the same process reuses the existing group.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1 and not dist.is_initialized():
        return DistContext()
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} but this torch build has no torch.distributed")
    local_rank = _env_int("LOCAL_RANK", 0)
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
        logger.info("joined %s process group: rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
    backend = dist.get_backend()
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return DistContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device, backend=backend
    )
