"""One fused training step: every row's forward pass, its own objective, its own update.

The rows' losses are summed before the backward pass: row r's weights get exactly ∂loss_r/∂θ_r,
since nothing in the fused model mixes rows. A row whose loss is not finite is skipped (its weights
and optimizer state unchanged, ``FusedOptimizer.step``), the other rows train on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from textvae.data.batching import Batch
from textvae.models.fused.noise import RowNoise
from textvae.models.fused.optimizer import FusedOptimizer
from textvae.models.fused.remedies import RowObjective
from textvae.models.fused.vae import FusedOutput, FusedVAE
from textvae.strategies import PretrainThenReset

log = logging.getLogger(__name__)


@dataclass
class FusedStepResult:
    out: FusedOutput  # every row's honest terms (rec, KL) of the batch
    loss: Tensor  # (R,) each row's objective
    updated: Tensor  # (R,) bool: the row's weights changed


class RowPhases:
    """Pretrain + reset (Li et al. 2019, ``textvae.strategies.PretrainThenReset``) per row: the first
    ``pretrain_steps`` steps of a row are a deterministic autoencoder's (z = the posterior mean,
    objective = reconstruction only); at its first step after them its decoder slice is drawn afresh,
    from the row's own generator as its unfused run draws it, and that slice's optimizer state is
    dropped. ``strategies``: each row's strategy object (its ``reset_done`` is kept there, and saved
    with the row's checkpoints); ``row_models``: each row's unfused model (its decoder is what is redrawn)."""

    def __init__(self, strategies: list, row_models: list[nn.Module]):
        self.strategies, self.row_models = strategies, row_models

    def before_step(self, model: FusedVAE, optimizer: FusedOptimizer, noise: RowNoise, steps: list[int]) -> list[bool]:
        """Reset the rows whose pretraining just ended; returns which rows are still pretraining."""
        pretraining = []
        for row, (strategy, step) in enumerate(zip(self.strategies, steps, strict=True)):
            if not isinstance(strategy, PretrainThenReset):
                pretraining.append(False)
                continue
            if step >= strategy.pretrain_steps and not strategy.reset_done:
                self.reset(model, optimizer, noise, row)
                strategy.reset_done = True
                log.info("row %d, step %d: autoencoder pretraining done, decoder re-initialized", row, step)
            pretraining.append(step < strategy.pretrain_steps)
        return pretraining

    def reset(self, model: FusedVAE, optimizer: FusedOptimizer, noise: RowNoise, row: int) -> None:
        decoder = self.row_models[row].decoder
        device = decoder.output.weight.device
        generator = noise.generators[row]
        if device.type == "cuda":
            get, put = (lambda: torch.cuda.get_rng_state(device)), (lambda s: torch.cuda.set_rng_state(s, device))
        else:
            get, put = torch.get_rng_state, torch.set_rng_state
        saved = get()
        put(generator.get_state())  # decoder.reinitialize() draws from the device's global generator
        try:
            decoder.reinitialize()
            generator.set_state(get())
        finally:
            put(saved)
        fresh = self.row_models[row].state_dict()
        fused = dict(model.named_parameters())
        index = {name: i for i, name in enumerate(fused)}
        dropped = []
        with torch.no_grad():
            for fused_name, name in model.names[row].items():
                if name.startswith("decoder.") and fused_name in fused:
                    fused[fused_name][row].copy_(fresh[name])
                    dropped.append(index[fused_name])
        optimizer.drop_state(row, dropped)


def fused_train_step(
    model: FusedVAE,
    optimizer: FusedOptimizer,
    objective: RowObjective,
    noise: RowNoise,
    batch: Batch,
    steps: list[int],
    steps_per_epoch: int,
    active: Tensor | None = None,
    phases: RowPhases | None = None,
) -> FusedStepResult:
    """Train every row on ``batch``; ``steps``: each row's optimizer steps so far (its schedules' t)."""
    model.train()
    dtype = model.output.weight.dtype
    pretraining = phases.before_step(model, optimizer, noise, steps) if phases is not None else None
    keep = [row.keep_prob for row in model.remedies]
    inputs = batch.decoder_inputs
    drawn = noise.draw(inputs, model.latent_dim, model.dims, model.dropout, keep, model.protected, dtype, pretraining)
    out = model(batch, drawn, active)
    objective.set_step(steps, steps_per_epoch)
    mask = torch.tensor(pretraining, device=out.rec.device) if pretraining and any(pretraining) else None
    loss = objective.loss(out.rec, out.kl_per_dim, out.bow, mask)  # (R,)
    optimizer.zero_grad()
    loss.sum().backward()
    rows_on = torch.isfinite(loss)
    if active is not None:
        rows_on = rows_on & active
    updated = optimizer.step(rows_on)
    return FusedStepResult(out, loss.detach(), updated)
