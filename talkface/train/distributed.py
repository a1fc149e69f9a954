"""Multi-process data parallelism under ``torchrun`` (DistributedDataParallel), and a one-process no-op.

``torchrun --nproc-per-node N -m talkface train ...`` starts N processes with ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK`` in their environment. Every rank draws the same shuffled order (same seed) and takes
its own slice of each global batch; DDP averages gradients, and ``shard_batch``'s weights make that
average equal the single-process mean over the global batch, also for a short last batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from talkface.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job.

    Attributes:
        rank / world_size / local_rank: as torchrun sets them (0 / 1 / 0 for a plain run).
        device: the torch device this rank trains on (``cuda:LOCAL_RANK`` under DDP on CUDA).
        owns_group: True when ``init_distributed`` created the process group (and must destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and reports progress."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as e:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; launch with torchrun") from e


def init_distributed(device: str) -> DistContext:
    """Join the torchrun job when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on CUDA), else a one-process context.

    Args:
        device: the resolved device (``cpu``, ``cuda``, ``cuda:K``); under DDP on CUDA each rank uses
            ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: torchrun variables missing or inconsistent.
    """
    world = env_world_size()
    if world <= 1:
        return DistContext(device=device)
    import torch
    import torch.distributed as dist

    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"WORLD_SIZE={world} but RANK/LOCAL_RANK are missing or invalid ({e}); "
                          "launch with `torchrun --nproc-per-node N -m talkface train ...`") from e
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device, owns_group=owns)


def shutdown(ctx: DistContext) -> None:
    """Destroy the process group this context created."""
    if ctx.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def check_batch_size(batch_size: int, ctx: DistContext) -> None:
    """The global batch must split evenly over the ranks.

    Raises:
        ConfigError: ``batch_size % world_size != 0``.
    """
    if batch_size % ctx.world_size:
        raise ConfigError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                          f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")


def shard_batch(items: Sequence[T], rank: int, world_size: int) -> tuple[list[T], float]:
    """This rank's contiguous slice of a global batch and the weight of its mean loss.

    The weight ``n_rank * world / n`` makes DDP's gradient average equal the mean over the whole
    batch even when the slices differ in size. A rank whose slice is empty (a last batch smaller than
    the world) still runs one clip, with weight 0, so that every rank joins the gradient all-reduce.

    Returns:
        (items of this rank, loss weight).
    """
    n = len(items)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    size = base + (1 if rank < extra else 0)
    if size == 0:
        return [items[0]], 0.0
    return list(items[start:start + size]), size * world_size / n


def wrap_model(model: Any, ctx: DistContext) -> Any:
    """``DistributedDataParallel(model)`` under DDP (unused parameters allowed: layerdrop, masked
    spectrogram embedding), else the model itself."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def sum_across(value: float, ctx: DistContext) -> float:
    """Sum of a Python number over all ranks (the value itself in a one-process run)."""
    if not ctx.enabled:
        return value
    import torch
    import torch.distributed as dist

    device = ctx.device if ctx.device.startswith("cuda") else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a one-process run)."""
    if ctx.enabled:
        import torch.distributed as dist

        if ctx.device.startswith("cuda"):
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()
