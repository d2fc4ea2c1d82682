"""The worker processes of one machine for ``textvae ablate --jobs N``: one GPU each, MPS where they share.

``row_pool`` starts N spawned worker processes (``ProcessPoolExecutor``). Each takes the next device
of ``plan`` (``textvae.executors.devices``) from a queue as it starts and pins itself to it; when
several workers share one GPU the MPS control daemon runs for the whole block (one daemon serves
every GPU of a node; ``textvae.cuda.mps``). A worker ends by itself when the process that started it
is gone (a killed ``ablate``), and the row it trained resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from textvae.cuda.mps import MPSDaemon
from textvae.executors import devices


def _exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """End this worker when the process that started it is gone.

    A killed ``textvae ablate`` (SIGTERM, SIGKILL) cannot stop its workers itself; without this they
    would go on training, unseen, into the same run directories as the next ``ablate``."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(parent_pid: int, plan_queue) -> None:
    """Worker initializer: watch the parent, then pin this worker to the next device of the plan."""
    _exit_with_parent(parent_pid)
    if plan_queue is not None:
        devices.pin(plan_queue.get())


@contextlib.contextmanager
def row_pool(workers: int, plan: list[int], cuda: bool) -> Iterator[ProcessPoolExecutor]:
    """``workers`` worker processes pinned to the devices of ``plan`` (empty: not pinned), under MPS
    when two or more of them share a GPU (``cuda``: the rows run on CUDA)."""
    context = get_context("spawn")
    queue = None
    if plan:
        queue = context.SimpleQueue()
        for index in plan:
            queue.put(index)
    sharing = devices.workers_per_gpu(plan) if plan else workers
    with (
        MPSDaemon(cuda=cuda, jobs=sharing),
        ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(), queue)
        ) as pool,
    ):
        yield pool
