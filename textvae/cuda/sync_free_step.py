"""A training step with no host synchronisation: the step a CUDA graph can capture (``graph_cache``).

One call of ``SyncFreeStep`` does what ``textvae.strategies``' standard step does — forward, the
honest terms (``elbo_terms``), the remedies' objective (``training_objective``), backward, gradient
clipping to norm c, the optimizer update — but it never asks the device for a number:

- the loss and the gradient are checked on the device: ok = isfinite(loss) ∧ isfinite(‖g‖₂). When
  not ok, the fused optimizer kernel is told so (``found_inf``, the flag ``torch.amp.GradScaler``
  uses) and returns without touching the parameters or its state (Adam's step count goes up and
  back down): the update is skipped, as ``strategies.apply_update`` skips it;
- clipping is s = min(1, c / (‖g‖₂ + 10⁻⁶)) as a device tensor: folded into the learning rate for
  plain SGD (lr·s, computed in float64 like the host's fold), applied to the gradients otherwise
  (``clip_grads_with_norm_``, the same kernel as the host path);
- the step counter t (successful updates), the epoch length, the learning rate of every parameter
  group, the skip counters and the train record's running sums (``train_record.SUM_NAMES``: loss,
  rec, KL, sentences, tokens, the gradient norms before clipping) are device
  tensors updated in place (``StepState``); KL annealing reads t as a tensor
  (``KLAnnealing.weight_tensor``), so one captured step serves the whole run;
- the host reads the counters and sums only when it asks (``StepState.read``: at log intervals).

The optimizer runs with its fused kernel and a tensor learning rate for the duration of the step
(``_sync_free_groups``); between steps its parameter groups hold plain floats again, so the
learning-rate scheduler, the metrics log and checkpoints see what they always saw. A changed float
(ReduceLROnPlateau's halving) is written into the device tensor before the next step
(``StepState.sync_lr``, a fill when the value changed, never a read).

Same weights as the host-synchronised step, from the same seeds, on a CPU (``tests/test_graph_step.py``):
bit for bit with Adam (fused, as ``textvae.engine.state.make_optimizer`` builds it) and with plain SGD with
or without clipping. Two differences, both at the edge of float32: (1) a gradient whose elements are
finite but whose squared norm overflows float32 (‖g‖ > 3.4·10³⁸) is skipped here, where the host
path applied a zero (clipped) update; (2) when the clipping scale is within one float32 rounding of
1, the host decided "no clip" in float64 and ``clip_grads_with_norm_`` decides in float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from textvae.engine.train_record import SUM_NAMES, grad_norms, norm_sums, part_parameters, term_sums
from textvae.objective import elbo_terms
from textvae.remedies.base import training_objective
from textvae.strategies import lr_scaling_is_clipping

# (batch, state) → (loss to minimize, this batch's (len(TERM_SUMS),) float64 sums: ``train_record.term_sums``)
LossFn = Callable[[object, "StepState"], tuple[Tensor, Tensor]]


@dataclass
class StepCounts:
    """What the host reads from a ``StepState`` (one synchronisation)."""

    steps: int  # successful optimizer updates so far (the step counter t)
    skipped: int  # steps skipped since the state was created (non-finite loss or gradient)
    skipped_in_a_row: int  # the current run of skipped steps
    longest_skip_run: int  # the longest run of skipped steps since ``restart_longest_run``
    sums: dict[str, float]  # SUM_NAMES → sum over the successful steps since the last ``reset_sums``


class StepState:
    """The device tensors a sync-free step reads and updates in place.

    ``step`` and ``steps_per_epoch`` are 0-dim float64 (schedules compute in float64, as the host
    does with Python floats); the learning rates are float64 on a CPU and float32 on a GPU (what
    the fused CUDA kernels read); the skip counters int64; ``sums`` (len(SUM_NAMES),) float64.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, step: int = 0, steps_per_epoch: int = 1):
        self.device = torch.device(device)
        lr_dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        float64 = {"dtype": torch.float64, "device": self.device}
        self.step = torch.tensor(float(step), **float64)
        self.steps_per_epoch = torch.tensor(float(steps_per_epoch), **float64)
        self.optimizer = optimizer
        self._host_lr = [float(group["lr"]) for group in optimizer.param_groups]
        self.base_lr = [torch.tensor(lr, **float64) for lr in self._host_lr]  # the scheduler's value
        self.step_lr = [torch.tensor(lr, dtype=lr_dtype, device=self.device) for lr in self._host_lr]  # × clip
        self.found_inf = torch.zeros((), dtype=torch.float32, device=self.device)  # 1.0: skip this update
        counter = {"dtype": torch.int64, "device": self.device}
        self.skipped = torch.zeros((), **counter)
        self.skipped_in_a_row = torch.zeros((), **counter)
        self.longest_skip_run = torch.zeros((), **counter)
        self.sums = torch.zeros(len(SUM_NAMES), **float64)

    def set_position(self, *, step: int | None = None, steps_per_epoch: int | None = None) -> None:
        """Host values written into the device tensors (at the start, on resume, at an epoch's start)."""
        if step is not None:
            self.step.fill_(float(step))
        if steps_per_epoch is not None:
            self.steps_per_epoch.fill_(float(steps_per_epoch))

    def sync_lr(self) -> None:
        """Copy a learning rate the host changed (the scheduler) into the device tensor; no read."""
        for i, group in enumerate(self.optimizer.param_groups):
            lr = float(group["lr"])
            if lr != self._host_lr[i]:
                self._host_lr[i] = lr
                self.base_lr[i].fill_(lr)

    def record(self, ok: Tensor, step_sums: Tensor) -> None:
        """Count one step on the device: t += ok; the skip counters; sums += ok · this batch's sums."""
        skipped = (~ok).to(torch.int64)
        self.step.add_(ok.to(torch.float64))
        self.skipped.add_(skipped)
        self.skipped_in_a_row.add_(1).mul_(skipped)
        torch.maximum(self.longest_skip_run, self.skipped_in_a_row, out=self.longest_skip_run)
        self.sums.add_(torch.where(ok, step_sums, torch.zeros_like(step_sums)))

    def read(self) -> StepCounts:
        """The counters and sums as Python numbers: the one synchronisation, at log intervals."""
        ints = torch.stack([self.step.to(torch.int64), self.skipped, self.skipped_in_a_row, self.longest_skip_run])
        steps, skipped, in_a_row, longest = ints.tolist()
        return StepCounts(steps, skipped, in_a_row, longest, dict(zip(SUM_NAMES, self.sums.tolist(), strict=True)))

    def restart_longest_run(self) -> None:
        """The longest run of skipped steps starts again from the current run (after a ``read``)."""
        self.longest_skip_run.copy_(self.skipped_in_a_row)

    def reset_sums(self) -> None:
        self.sums.zero_()


@contextmanager
def _sync_free_groups(optimizer: torch.optim.Optimizer, state: StepState):
    """For the block: every group uses its fused kernel with the device learning rate, and the
    optimizer reads ``state.found_inf``; the groups' previous entries are restored after it.

    Inside a CUDA graph capture, groups that have the ``capturable`` flag (Adam) get it too: Adam
    refuses to be captured without it (its fused kernel is the same either way)."""
    keys = ("lr", "fused", "foreach", "capturable")
    saved = [{key: group[key] for key in keys if key in group} for group in optimizer.param_groups]
    capturing = state.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    for group, lr in zip(optimizer.param_groups, state.step_lr, strict=True):
        group.update(lr=lr, fused=True, foreach=False)
        if capturing and "capturable" in group:
            group["capturable"] = True
    optimizer.found_inf = state.found_inf
    try:
        yield
    finally:
        del optimizer.found_inf
        for group, entries in zip(optimizer.param_groups, saved, strict=True):
            group.update(entries)


class SyncFreeStep:
    """forward → objective → backward → clip → update, with no host synchronisation.

    ``loss_fn(batch, state)`` gives the loss to minimize and the batch's sums (``text_loss_fn``
    for a text model); ``grad_clip`` is c (None: no clipping, finiteness still checked on the norm).
    Calling the object runs one step; everything it reports lands in ``self.state``.
    ``run`` is the part a CUDA graph captures (``graph_cache.GraphedStep``): it allocates nothing
    that must outlive it, reads its inputs from ``batch`` and writes only into tensors that exist
    before it (parameters, gradients, optimizer state, ``state``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        *,
        grad_clip: float | None,
        step: int = 0,
        steps_per_epoch: int = 1,
    ):
        self.model, self.optimizer, self.loss_fn, self.grad_clip = model, optimizer, loss_fn, grad_clip
        device = next(model.parameters()).device
        self.state = StepState(optimizer, device, step=step, steps_per_epoch=steps_per_epoch)
        self.fold_clip = lr_scaling_is_clipping(optimizer)
        self.parts = part_parameters(model)  # the encoder's and decoder's parameters, for their norms

    def __call__(self, batch) -> None:
        self.state.sync_lr()
        self.run(batch)

    def run(self, batch) -> None:
        """One step on ``batch``; also the body a CUDA graph captures."""
        # gradients are zeroed, not dropped, so that they keep their memory from one step to the next
        # (a captured step writes into the same tensors at every replay); 0 + g is g bit for bit
        self.optimizer.zero_grad(set_to_none=False)
        loss, step_sums = self.loss_fn(batch, self.state)
        loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # 0-dim, the grads' dtype
        norms = norm_sums(grad_norms(self.parts, norm), step_sums)  # before clipping, on the device
        ok = torch.isfinite(loss.detach()) & torch.isfinite(norm)
        self.state.found_inf.copy_((~ok).to(torch.float32))
        self._clip(params, norm)
        with _sync_free_groups(self.optimizer, self.state):
            self.optimizer.step()
        self.state.record(ok, torch.cat([step_sums, norms]))

    def _clip(self, params: Sequence[nn.Parameter], norm: Tensor) -> None:
        """s = min(1, c / (‖g‖ + 10⁻⁶)): into each group's step lr (plain SGD) or onto the gradients."""
        state = self.state
        if self.fold_clip and self.grad_clip is not None:
            # float64, as the host computes c / (float(‖g‖) + 1e-6) and lr·s in Python
            scale = torch.clamp(self.grad_clip / (norm.to(torch.float64) + 1e-6), max=1.0)
            for base, step_lr in zip(state.base_lr, state.step_lr, strict=True):
                step_lr.copy_(base * scale)
            return
        for base, step_lr in zip(state.base_lr, state.step_lr, strict=True):
            step_lr.copy_(base)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, norm)


def text_loss_fn(model: nn.Module, forward: nn.Module | None = None) -> LossFn:
    """The standard text step's objective: the remedies' loss on the honest terms of one batch.

    ``forward`` is what to call for a forward pass (default: the model). The sums are the train
    record's (``textvae.engine.train_record.term_sums``): rec + KL, rec, KL, sentences, target tokens.
    """

    def loss_fn(batch, state: StepState) -> tuple[Tensor, Tensor]:
        out = (forward or model)(batch)
        terms = elbo_terms(out)
        objective = training_objective(
            model.remedies, out, terms, batch, step=state.step, steps_per_epoch=state.steps_per_epoch
        )
        sentences = torch.full_like(state.step, float(terms.rec.shape[0]))  # (,) float64
        return objective.loss(), term_sums(terms.rec, terms.kl, sentences, terms.num_tokens.sum())

    return loss_fn
