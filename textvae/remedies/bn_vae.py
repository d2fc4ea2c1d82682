"""BN-VAE (Zhu et al. 2020): batch normalization on the posterior mean keeps the KL away from 0.

μ' = γ · (μ − E_batch[μ]) / sqrt(Var_batch[μ] + ε) + β_d, with γ fixed and the shift β_d learned.
Since E_x[KL] ≥ Σ_d E_x[μ'_d²] / 2 ≥ D · γ² / 2 (Zhu et al. 2020, Eq. 6), the expected KL cannot
collapse below D·γ²/2 — as long as the batch variance of μ is large against BatchNorm's ε: for an
encoder whose means vary by less than ε the normalized means have a spread below γ, and so does the
bound. At evaluation the running batch statistics are used. The variance is untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from textvae.distributions import DiagGaussian
from textvae.errors import TextVAEError
from textvae.registry import register
from textvae.remedies.base import REMEDY_CONTEXT, Remedy


@register("remedy", "bn_vae", context=REMEDY_CONTEXT)
class BNVAE(Remedy):
    part_of_inference = True

    def __init__(self, latent_dim: int, gamma: float = 0.5, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if gamma <= 0:
            raise TextVAEError(f"bn_vae: gamma must be > 0, got {gamma}")
        self.gamma = gamma
        self.norm = nn.BatchNorm1d(latent_dim, eps=eps, affine=False, momentum=momentum)
        self.shift = nn.Parameter(torch.zeros(latent_dim))

    def transform_posterior(self, posterior: DiagGaussian) -> DiagGaussian:
        return DiagGaussian(self.gamma * self.norm(posterior.mean) + self.shift, posterior.logvar)
