"""Multi-process training on torch.distributed, as launched by ``torchrun``.

``torchrun --nproc_per_node=N -m textvae train RECIPE --out DIR`` starts N copies of the trainer;
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address, and
``setup`` joins the process group: gloo on CPU, NCCL on GPU (one GPU per process, ``LOCAL_RANK``).

How a run is split (see ``textvae.train``):
- ``train.batch_size`` is the *global* batch. Every rank builds the same length-bucketed batches
  (same seed, same epoch) and trains on its own slice of each, ``batch[rank::world_size]``: the
  slices of one batch have similar lengths, so bucketing keeps its effect on every rank.
- Each rank's loss is scaled by ``world_size · n_rank / n_global`` so that DistributedDataParallel's
  gradient average equals the gradient of the global batch's mean loss, even when the slices differ
  in size.
- Metrics are reduced as sums and counts (never as averages of per-rank averages); rank 0 alone
  writes checkpoints, ``metrics.jsonl`` and the log.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from textvae.evaluation.device import resolve_device

log = logging.getLogger(__name__)
CPU = torch.device("cpu")


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = CPU

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = Context()


def launched_world_size() -> int:
    """The number of processes torchrun started (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0, or the only process; usable before ``setup`` (reads torchrun's environment)."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_choice: str) -> Context:
    """Join the process group torchrun prepared (if any) and pick this process's device."""
    world_size = launched_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, "train.device", local_rank)
    if world_size == 1:
        return Context(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    context = Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
    if not context.is_main:
        logging.getLogger("textvae").setLevel(logging.WARNING)  # rank 0 alone reports progress
    log.info("distributed training: %d processes (%s), device %s", world_size, dist.get_backend(), device)
    return context


def teardown(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_process_first(context: Context) -> Iterator[None]:
    """Rank 0 runs the block first (building caches, writing files), the other ranks after it."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def sum_across(context: Context, values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over all ranks (float64)."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_comm_device(context))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_ranks_agree(context: Context, flag: bool) -> bool:
    """True when ``flag`` is true on every rank (one collective: every rank must call it)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([0.0 if flag else 1.0], device=_comm_device(context))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor) == 0.0


def gather_objects(context: Context, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (RNG states for checkpoints)."""
    if not context.enabled:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def rank_slice(context: Context, indices: list[int]) -> list[int]:
    """This rank's share of one global batch: every ``world_size``-th sentence from position ``rank``."""
    return indices[context.rank :: context.world_size] if context.enabled else indices


def _comm_device(context: Context) -> torch.device:
    return context.device if dist.get_backend() == "nccl" else CPU
