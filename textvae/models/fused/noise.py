"""Each fused row's random draws from its own generator, in the order and shapes of its unfused run.

An unfused training step draws, from the global generator: z's ε ~ N(0, I) (B, D); with word
dropout, u ~ U(0, 1) (B, T); the decoder's input dropout mask (B, T, E) and output dropout mask
(B, T, H) (``textvae.models.dropout.keep_mask``). Row r's generator starts from the global state
right after its unfused model was built (``seed_everything(seed)``, then the weights), so the fused
row sees the noise its unfused run sees, draw for draw, and the two train the same model up to float
rounding. A row costs one small draw per noise source per step (R host calls, not one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from textvae.models.dropout import keep_mask


@dataclass
class StepNoise:
    """One step's draws, stacked over rows: ε (R, B, D); masks (R, B, T, ·) as floats, or None."""

    eps: Tensor
    word_drop: Tensor | None  # (R, B, T) bool: input token replaced by unk
    keep_in: Tensor | None  # (R, B, T, E): mask / keep (input dropout)
    keep_out: Tensor | None  # (R, B, T, H)


class RowNoise:
    """Per-row generators; ``draw`` makes one step's noise for decoder inputs ``tokens`` (B, T)."""

    def __init__(self, states: list[Tensor], device: torch.device):
        self.generators = []
        for state in states:
            generator = torch.Generator(device=device)
            generator.set_state(state)
            self.generators.append(generator)

    def states(self) -> list[Tensor]:
        return [generator.get_state() for generator in self.generators]

    def draw(
        self,
        tokens: Tensor,
        latent_dim: int,
        dims: tuple[int, int],
        dropout: tuple[float, float],
        keep_prob: list[float | None],
        protected: Tensor,
        dtype: torch.dtype,
        pretraining: list[bool] | None = None,
    ) -> StepNoise:
        """``dims`` = (E, H), ``dropout`` = (p_in, p_out), ``keep_prob``: each row's word-dropout k or None;
        ``pretraining``: rows in pretrain + reset's autoencoder phase (z = the mean: no ε, no word dropout)."""
        batch, steps = tokens.shape
        device = tokens.device
        eps, drops, masks_in, masks_out = [], [], [], []
        pretraining = pretraining or [False] * len(self.generators)
        for generator, keep, deterministic in zip(self.generators, keep_prob, pretraining, strict=True):
            if deterministic:  # PretrainThenReset: reconstruction_nll at the posterior mean
                eps.append(torch.zeros((batch, latent_dim), dtype=dtype, device=device))
                keep = None
            else:
                eps.append(torch.randn((batch, latent_dim), generator=generator, dtype=dtype, device=device))
            if keep is not None:  # WordDropout.decoder_inputs
                drop = torch.rand(tokens.shape, generator=generator, device=device) >= keep
                drops.append(drop & ~torch.isin(tokens, protected))
            else:
                drops.append(torch.zeros_like(tokens, dtype=torch.bool))
            for p, dim, out in ((dropout[0], dims[0], masks_in), (dropout[1], dims[1], masks_out)):
                if 0 < p < 1:  # textvae.models.dropout.dropout: mask · (1 / keep)
                    mask = keep_mask((batch, steps, dim), 1.0 - p, device, generator)
                    out.append(mask.to(dtype) * (1.0 / (1.0 - p)))
                elif p >= 1:  # x · 0, nothing drawn
                    out.append(torch.zeros((batch, steps, dim), dtype=dtype, device=device))
        any_drop = any(k is not None for k in keep_prob)
        return StepNoise(
            torch.stack(eps),
            torch.stack(drops) if any_drop else None,
            torch.stack(masks_in) if masks_in else None,
            torch.stack(masks_out) if masks_out else None,
        )
