"""The sync-free training step (``textvae.cuda.sync_free_step``) captured as CUDA graphs, one per batch shape.

A CUDA graph replays a recorded sequence of kernels with the same tensor addresses and shapes, so
a captured step needs static inputs: each batch shape gets its own graph and its own input
buffers, into which every batch of that shape is copied before the replay. PTB batches hold
sentences of one length (``bucketed_batches``), so the shapes are (batch size, length) pairs; a
shape is stepped eagerly ``warmup_steps`` times (real steps, on a side stream, as the PyTorch notes
on whole-network capture ask) before it is captured, so rare shapes (an epoch's last short batch)
never cost a capture. At most ``max_graphs`` graphs are kept, the least recently used dropped
first (PTB's training split makes 60 batch shapes an epoch at batch size 32, so the default 256
leaves room for longer corpora; a graph kept costs host memory only, its device memory being the
shared pool's); all share one memory pool (``torch.cuda.graph_pool_handle``): a step's temporaries are dead
when it ends, and everything that lives from one step to the next (parameters, gradients,
optimizer state, the step's device counters) is allocated outside the graphs.

Randomness (dropout, word dropout, z ~ q) comes from the default CUDA generator, which is
graph-safe: every replay draws fresh numbers, reproducible from the run's seed. A resumed run
builds a new ``GraphedStep`` and captures again. When a capture fails (a model part that reads a
number back, e.g. the bidirectional encoder's packed sequences), the error is logged once and the
run goes on with the same step, uncaptured.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from textvae.cuda.sync_free_step import SyncFreeStep

log = logging.getLogger(__name__)

# (the step's body, its static batch) → a function that replays the captured step
Capture = Callable[[Callable[[object], None], object], Callable[[], None]]


def batch_tensors(batch) -> list[Tensor]:
    """The tensors of a batch: a tensor, a dataclass of tensors (``Batch``) or a tuple/list of them."""
    if isinstance(batch, Tensor):
        return [batch]
    if dataclasses.is_dataclass(batch):
        return [getattr(batch, f.name) for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), Tensor)]
    if isinstance(batch, tuple | list):
        return [t for item in batch for t in batch_tensors(item)]
    raise TypeError(f"a batch of type {type(batch).__name__} has no tensors to capture")


def batch_key(batch) -> tuple:
    """What a graph is specialised to: the batch's type and every tensor's shape, dtype and device."""
    return (type(batch).__name__, *((tuple(t.shape), t.dtype, t.device) for t in batch_tensors(batch)))


def _clone_batch(batch):
    """A batch of the same structure whose tensors are fresh copies (the static inputs of a graph)."""
    if isinstance(batch, Tensor):
        return batch.clone()
    if dataclasses.is_dataclass(batch):
        tensors = {f.name: getattr(batch, f.name).clone() for f in dataclasses.fields(batch)}
        return dataclasses.replace(batch, **{k: v for k, v in tensors.items() if isinstance(v, Tensor)})
    return type(batch)(_clone_batch(item) for item in batch)


def cuda_capture() -> Capture:
    """The real capture: ``torch.cuda.graph`` into one memory pool shared by every graph it captures
    (``torch.cuda.graph_pool_handle``); each capture returns its graph's replay."""
    pool = torch.cuda.graph_pool_handle()

    def capture(run: Callable[[object], None], static_batch) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            run(static_batch)
        return graph.replay

    return capture


class GraphedStep:
    """A ``SyncFreeStep`` replayed from CUDA graphs keyed by batch shape (LRU, at most ``max_graphs``).

    ``capture`` defaults to ``cuda_capture`` (on a CUDA device); tests inject a fake one to check the
    keying, the warm-up count, the bound and the fallback on a CPU.
    """

    def __init__(
        self, step: SyncFreeStep, *, max_graphs: int = 256, warmup_steps: int = 2, capture: Capture | None = None
    ):
        self.step = step
        self.max_graphs, self.warmup_steps = max_graphs, warmup_steps
        self.device = step.state.device
        self.capture = cuda_capture() if capture is None else capture
        self.graphs: OrderedDict[tuple, tuple[object, Callable[[], None]]] = OrderedDict()
        self.eager_steps: dict[tuple, int] = {}  # uncaptured steps per shape
        self.captures = self.replays = 0
        self.failure: str | None = None  # the first capture error; no more captures after it
        self._side_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @property
    def state(self):
        return self.step.state

    def __call__(self, batch) -> None:
        self.step.state.sync_lr()
        key = batch_key(batch)
        entry = self.graphs.get(key)
        if entry is not None:
            self.graphs.move_to_end(key)
            self._replay(entry, batch)
            return
        seen = self.eager_steps.get(key, 0)
        if self.failure is not None or seen < self.warmup_steps:
            self.eager_steps[key] = seen + 1
            self._eager(batch)
            return
        static = _clone_batch(batch)
        try:
            replay = self.capture(self.step.run, static)
        except Exception as error:  # any capture error: log it, train uncaptured
            self.failure = f"{type(error).__name__}: {error}"
            log.warning("CUDA graph capture failed, training goes on without graphs: %s", self.failure)
            self._eager(batch)
            return
        self.captures += 1
        self.graphs[key] = (static, replay)
        if len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        self._replay(self.graphs[key], batch)

    def _replay(self, entry, batch) -> None:
        static, replay = entry
        for target, source in zip(batch_tensors(static), batch_tensors(batch), strict=True):
            target.copy_(source, non_blocking=True)
        replay()
        self.replays += 1

    def _eager(self, batch) -> None:
        """The step uncaptured; on a GPU on a side stream (warm-up before capture, as PyTorch asks)."""
        if self._side_stream is None:
            self.step.run(batch)
            return
        self._side_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side_stream):
            self.step.run(batch)
        torch.cuda.current_stream(self.device).wait_stream(self._side_stream)
