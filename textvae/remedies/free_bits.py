"""Free bits: the KL term is not pushed below a threshold λ (nats), so z keeps some information.

Modes (each *replaces* the objective's KL term; annealing and β still multiply its weight):

- ``dimension`` (Kingma et al. 2016, Eq. 15): Σ_d max(λ, E_batch[KL_d]). A dimension whose
  batch-averaged KL is below λ contributes the constant λ, hence no gradient.
- ``total``: max(λ, E_batch[KL]) on the whole KL (KL thresholding).
- ``dimension_mask`` (the target-KL variant of Li et al. 2019): Σ_d 1[E_batch[KL_d] > λ] · KL_d,
  i.e. a dimension below λ is left out of the objective (zero loss and zero gradient).

The objective works on per-example terms whose batch mean is the quantity above: example b
contributes KL_bd for a dimension that is above the threshold and λ (or 0) for one below.
"""

from __future__ import annotations

from typing import Literal

import torch

from textvae.errors import TextVAEError
from textvae.objective import ElboTerms, Objective
from textvae.registry import register
from textvae.remedies.base import REMEDY_CONTEXT, Remedy


@register("remedy", "free_bits", context=REMEDY_CONTEXT)
class FreeBits(Remedy):
    def __init__(self, threshold: float, mode: Literal["dimension", "total", "dimension_mask"] = "dimension"):
        super().__init__()
        if threshold < 0:
            raise TextVAEError(f"free_bits: threshold must be ≥ 0, got {threshold}")
        self.threshold, self.mode = threshold, mode

    def clamped_kl(self, kl_per_dim: torch.Tensor) -> torch.Tensor:
        """The per-example KL term (B,) that replaces the honest one in the objective."""
        if self.mode == "total":
            kl = kl_per_dim.sum(-1)  # (B,)
            return torch.where(kl.mean() > self.threshold, kl, torch.full_like(kl, self.threshold))
        above = kl_per_dim.mean(0, keepdim=True) > self.threshold  # (1, D)
        floor = 0.0 if self.mode == "dimension_mask" else self.threshold
        return torch.where(above, kl_per_dim, torch.full_like(kl_per_dim, floor)).sum(-1)  # (B,)

    def adjust(self, objective: Objective, terms: ElboTerms, *, step: int, steps_per_epoch: int) -> Objective:
        objective.terms["kl"] = self.clamped_kl(terms.kl_per_dim)
        return objective
