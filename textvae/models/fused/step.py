"""One fused training step: every row's forward pass, its own objective, its own update.

The rows' losses are summed before the backward pass: row r's weights get exactly ∂loss_r/∂θ_r,
since nothing in the fused model mixes rows. A row whose loss is not finite is skipped (its weights
and optimizer state unchanged, ``FusedOptimizer.step``), the other rows train on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from textvae.data.batching import Batch
from textvae.models.fused.noise import RowNoise
from textvae.models.fused.optimizer import FusedOptimizer
from textvae.models.fused.remedies import RowObjective
from textvae.models.fused.vae import FusedOutput, FusedVAE


@dataclass
class FusedStepResult:
    out: FusedOutput  # every row's honest terms (rec, KL) of the batch
    loss: Tensor  # (R,) each row's objective
    updated: Tensor  # (R,) bool: the row's weights changed


def fused_train_step(
    model: FusedVAE,
    optimizer: FusedOptimizer,
    objective: RowObjective,
    noise: RowNoise,
    batch: Batch,
    steps: list[int],
    steps_per_epoch: int,
    active: Tensor | None = None,
) -> FusedStepResult:
    """Train every row on ``batch``; ``steps``: each row's optimizer steps so far (its schedules' t)."""
    model.train()
    dtype = model.output.weight.dtype
    keep = [row.keep_prob for row in model.remedies]
    drawn = noise.draw(batch.decoder_inputs, model.latent_dim, model.dims, model.dropout, keep, model.protected, dtype)
    out = model(batch, drawn, active)
    objective.set_step(steps, steps_per_epoch)
    loss = objective.loss(out.rec, out.kl_per_dim, out.bow)  # (R,)
    optimizer.zero_grad()
    loss.sum().backward()
    rows_on = torch.isfinite(loss)
    if active is not None:
        rows_on = rows_on & active
    updated = optimizer.step(rows_on)
    return FusedStepResult(out, loss.detach(), updated)
