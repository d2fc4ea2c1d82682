"""The engine's stepper for graphed text training (``train.cuda_graphs``), and when to use it.

``GraphStepper`` fits the engine's seam (``textvae.engine.step.Stepper``): each ``step`` runs the
sync-free step (``textvae.cuda.sync_free_step``), captured per batch shape (``textvae.cuda.graph_cache``), and
returns at once, without asking the device whether the update was finite. The engine therefore
counts every batch as a step; ``settle`` — called whenever the engine is about to log, validate,
checkpoint or stop — reads the device counters (the one synchronisation) and corrects the host's
``Progress``: steps skipped since the last settle are taken back from ``progress.step`` and
counted as skipped, each logged as the host path logs them, and the run stops with the same error
when ``train.max_nonfinite_in_a_row`` skipped steps came in a row. The schedules never see the
difference: they read the device's step counter, which counts successful updates only.
The train record's sums live in the same device tensors (``engine.train_record.TrainWindow``).

``cuda_graphs_decision`` says whether a run uses graphs: ``train.cuda_graphs = "auto"`` turns them
on for a single-process CUDA run whose strategy runs the standard step and whose parts capture;
``true`` asks for them (a one-line error naming what prevents it), ``false`` never.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from textvae.cuda.graph_cache import Capture, GraphedStep
from textvae.cuda.sync_free_step import SyncFreeStep, text_loss_fn
from textvae.engine import distributed
from textvae.engine.step import SkipPolicy, StepOutcome
from textvae.errors import TextVAEError

log = logging.getLogger(__name__)


def graph_obstacles(device: torch.device, dist: distributed.Context, strategy, model: nn.Module) -> list[str]:
    """What keeps this run's step from being captured as a CUDA graph (empty: nothing)."""
    reasons = []
    if device.type != "cuda":
        reasons.append(f"the device is {device.type}, CUDA graphs need a CUDA device")
    if dist.enabled:
        reasons.append("torchrun (multi-process) training is not captured")
    if not getattr(strategy, "supports_cuda_graphs", False):
        reasons.append(f"strategy {type(strategy).__name__} decides on the host between its updates")
    encoder = getattr(model, "encoder", None)
    if getattr(encoder, "directions", 1) > 1 or getattr(getattr(encoder, "lstm", None), "dropout", 0) > 0:
        reasons.append("the LSTM encoder packs its sequences (bidirectional, or dropout between layers) on the host")
    return reasons


def cuda_graphs_decision(setting, device, dist, strategy, model) -> bool:
    """``train.cuda_graphs`` resolved for this run: "auto", True or False (see the module docstring)."""
    if setting is False:
        return False
    reasons = graph_obstacles(torch.device(device), dist, strategy, model)
    if setting is True and reasons:
        raise TextVAEError(f"train.cuda_graphs = true: {reasons[0]}")
    if reasons:
        log.info("training uncaptured (no CUDA graphs): %s", reasons[0])
    return not reasons


class GraphStepper:
    """The standard text step, sync-free and replayed from CUDA graphs; see the module docstring.

    With ``strategy`` and ``host_stepper``, a step for which ``strategy.needs_host_step`` is True
    (aggressive mode, autoencoder pretraining and the reset) is the strategy's own, on the host, and
    counted at once; the standard steps after that phase are graphed."""

    def __init__(
        self,
        model: nn.Module,
        optimizer,
        grad_clip: float | None,
        *,
        strategy=None,
        host_stepper=None,
        capture: Capture | None = None,
    ):
        self.sync_free = SyncFreeStep(model, optimizer, text_loss_fn(model), grad_clip=grad_clip)
        self.graphed = GraphedStep(self.sync_free, capture=capture)
        self.state = self.sync_free.state
        self.strategy, self.host_stepper = strategy, host_stepper
        self._next_step: int | None = None  # the host's step count the device counter was last aligned to
        self._steps_per_epoch: int | None = None
        self._skipped_seen = 0

    def step(self, batch, step: int) -> StepOutcome:
        """``batch``: a ``textvae.train.TextBatch``. Counted as an update until ``settle`` says otherwise."""
        if self.host_stepper is not None and self.strategy.needs_host_step(step):
            self._next_step = None  # the device's step counter is set again at the next graphed step
            return self.host_stepper.step(batch, step)
        if step != self._next_step:  # the first graphed step of this process (fresh, resumed, after a host phase)
            self.state.set_position(step=step)
        if batch.steps_per_epoch != self._steps_per_epoch:
            self._steps_per_epoch = batch.steps_per_epoch
            self.state.set_position(steps_per_epoch=batch.steps_per_epoch)
        self.graphed(batch.batch)
        self._next_step = step + 1
        return StepOutcome(True, None, len(batch.batch), batch.num_tokens)

    def settle(self, progress, skip: SkipPolicy) -> None:
        """Bring ``progress`` up to date with the device counters (one synchronisation)."""
        counts = self.state.read()
        new = counts.skipped - self._skipped_seen
        if new == 0:
            return
        self._skipped_seen = counts.skipped
        progress.step = self._next_step = counts.steps
        self.state.restart_longest_run()
        skip.record(progress, new, counts.skipped_in_a_row, counts.longest_skip_run)
