"""ablate --jobs N on a machine with several GPUs: the workers spread round-robin, pinned one GPU each.

No GPU is needed: the device count is faked and a worker's pinning is read back from inside it (its
``CUDA_VISIBLE_DEVICES``). This module imports nothing heavy: the pool's spawned workers import it.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from textvae.errors import TextVAEError
from textvae.executors import devices
from textvae.executors.devices import parse_gpus, plan_devices, workers_per_gpu
from textvae.executors.pool import row_pool


def test_the_plan_goes_round_robin_over_the_gpus():
    assert plan_devices(8, 4) == [0, 1, 2, 3, 0, 1, 2, 3]
    assert plan_devices(3, 4, [1, 3]) == [1, 3, 1]
    assert plan_devices(2, 1) == [0, 0] and workers_per_gpu([0, 0]) == 2
    assert plan_devices(4, 0) == [] and workers_per_gpu([]) == 0  # no GPU: the workers are not pinned
    assert plan_devices(0, 2, [1]) == []


@pytest.mark.parametrize(
    ("count", "gpus", "message"),
    [
        (4, [1, 4], "there is no GPU 4; this machine has devices 0-3"),
        (1, [1], "there is no GPU 1; this machine has device 0"),
        (0, [0], "there is no GPU 0; this machine has no CUDA device"),
    ],
)
def test_a_gpu_that_does_not_exist_is_an_error(count, gpus, message):
    with pytest.raises(TextVAEError, match=message):
        plan_devices(2, count, gpus)


@pytest.mark.parametrize("text", ["1,x", "-1", "1,1", ""])
def test_bad_gpu_lists_are_errors(text):
    with pytest.raises(TextVAEError, match="--gpus"):
        parse_gpus(text)


def test_pinning_maps_an_index_to_the_devices_this_process_sees(monkeypatch):
    monkeypatch.setattr(devices, "_pinned", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6,7")  # a Slurm job's allocation
    devices.pin(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6" and devices.pinned_gpu() == 1
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    devices.pin(3)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and devices.pinned_gpu() == 3


def where_am_i(barrier: str, workers: int) -> tuple[int, int | None, str | None]:
    """A pool task: wait until every worker holds one task (so no worker runs two), then report this
    worker's process id, the GPU it was pinned to and what CUDA would see in it."""
    Path(barrier, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(barrier)) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid(), devices.pinned_gpu(), os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize(
    ("workers", "gpus", "expected"),
    [(8, None, {0: 2, 1: 2, 2: 2, 3: 2}), (4, [1, 3], {1: 2, 3: 2})],
)
def test_workers_land_on_the_planned_gpus(tmp_path, monkeypatch, workers, gpus, expected):
    """A faked count of 4 GPUs: ``--jobs 8`` puts two workers on each of devices 0-3; ``--gpus 1,3``
    (with ``--jobs 4``) only on those two."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = plan_devices(workers, 4, gpus)
    with row_pool(workers, plan, cuda=False) as pool:
        reports = list(pool.map(where_am_i, [str(tmp_path)] * workers, [workers] * workers))
    assert len({pid for pid, _, _ in reports}) == workers  # one task per worker
    assert Counter(gpu for _, gpu, _ in reports) == expected
    assert all(visible == str(gpu) for _, gpu, visible in reports)
