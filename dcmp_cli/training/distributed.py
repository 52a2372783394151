"""Multi-process training set-up for PyTorch's launcher (``torchrun``).

``torchrun --nproc_per_node N -m dcmp_cli train …`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment (and ``--nnodes``/rendezvous
options for several machines). Each process then takes one device — ``cuda:LOCAL_RANK``
with the NCCL backend on GPUs, the CPU with Gloo otherwise — and the networks are
wrapped in DistributedDataParallel. Rank 0 alone logs and writes checkpoints. Started
without ``torchrun`` (or with one process) nothing of this is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dcmp_cli.core.device import DeviceError, resolve_device

#: How long processes wait for each other (data checks and validation run between steps).
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank among ``world_size`` processes, its device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device_spec: str = "auto") -> DistContext:
    """Chooses this process's device and, under a multi-process launch, joins the process group."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistContext(device=resolve_device(device_spec))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    requested = resolve_device(device_spec)
    if requested.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(
                "device",
                f"cuda:{local_rank}",
                f"process {rank} has LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible; start at most one process per GPU on each machine",
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif requested.type == "cpu":
        device, backend = requested, "gloo"
    else:
        raise DeviceError("device", requested.type, "multi-process training runs on CUDA (NCCL) or the CPU (Gloo)")
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=TIMEOUT)
    return DistContext(rank, world_size, local_rank, device, backend)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext, sync_batchnorm: bool = True) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``ctx.device``) in multi-process runs.

    On GPUs, batch norms become synchronised (the global batch's statistics) when
    ``sync_batchnorm``; Gloo has no synchronised batch norm, so on the CPU each process
    normalises its own share and DDP keeps rank 0's running statistics everywhere.
    """
    if not ctx.distributed:
        return model
    if sync_batchnorm and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sums ``tensor`` over all processes, in place; returns it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copies rank 0's buffers (batch-norm statistics) to every process."""
    if ctx.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
