"""Which GPU each worker of ``textvae ablate --jobs N`` runs on.

With G visible CUDA devices (or the ``--gpus`` subset of them) the N workers are spread round-robin:
worker w gets device ``gpus[w mod G]``, so N = 8 on 4 GPUs puts two workers on each, and N > G
workers share a GPU (through MPS, ``textvae.executors.pool``). A worker is pinned by setting
``CUDA_VISIBLE_DEVICES`` before it first touches CUDA: inside it the device is ``cuda:0``, and no
context is ever made on another GPU. Indices are among the devices this process sees: when
``CUDA_VISIBLE_DEVICES`` is already set (a Slurm job), index i is its i-th entry.
"""

from __future__ import annotations

import os
from collections import Counter

from textvae.errors import TextVAEError

ENV = "CUDA_VISIBLE_DEVICES"
_pinned: int | None = None  # the device index this worker process was pinned to (None: not pinned)


def visible_gpu_count() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_gpus(text: str) -> list[int]:
    """``--gpus 0,2,3``: distinct device indices ≥ 0, in the order given."""
    try:
        gpus = [int(part) for part in text.split(",")]
    except ValueError:
        raise TextVAEError(f"--gpus {text}: expected device indices like 0,2,3") from None
    if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise TextVAEError(f"--gpus {text}: expected distinct device indices ≥ 0 like 0,2,3")
    return gpus


def plan_devices(workers: int, count: int, gpus: list[int] | None = None) -> list[int]:
    """The device of each of ``workers`` workers, round-robin over ``gpus`` (default: all ``count``
    visible devices); ``[]`` when there is no GPU and none was asked for (the workers run on the CPU)."""
    if gpus:
        missing = [g for g in gpus if g >= count]
        if missing:
            have = f"devices 0-{count - 1}" if count > 1 else ("device 0" if count == 1 else "no CUDA device")
            raise TextVAEError(f"--gpus: there is no GPU {missing[0]}; this machine has {have}")
    pool = gpus or list(range(count))
    return [pool[w % len(pool)] for w in range(workers)] if pool else []


def workers_per_gpu(plan: list[int]) -> int:
    """The most workers that share one GPU in ``plan`` (0 without GPUs)."""
    return max(Counter(plan).values(), default=0)


def pin(index: int) -> None:
    """Make device ``index`` (among this process's visible devices) the only one this process sees.
    Call it before CUDA is initialised (a fresh worker process)."""
    global _pinned
    visible = os.environ.get(ENV)
    entries = [e for e in visible.split(",") if e.strip()] if visible else None
    os.environ[ENV] = entries[index] if entries and index < len(entries) else str(index)
    _pinned = index


def pinned_gpu() -> int | None:
    """The device index this worker was pinned to by ``pin``, or None."""
    return _pinned
