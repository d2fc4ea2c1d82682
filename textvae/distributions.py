"""The diagonal Gaussian posterior q(z|x) = N(mean, diag(exp(logvar))) and the N(0, I) prior."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


class DiagGaussian:
    """A batch of diagonal Gaussians; ``mean`` and ``logvar`` are (B, D)."""

    def __init__(self, mean: Tensor, logvar: Tensor):
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ in shape")
        self.mean = mean
        self.logvar = logvar

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, num_samples: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterized samples: (B, D), or (K, B, D) when ``num_samples`` is K."""
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        eps = torch.randn(shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + eps * self.std

    def log_prob_per_dim(self, z: Tensor) -> Tensor:
        """log q(z_d|x) for each dimension; z is (..., B, D), the result too."""
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mean) ** 2 / self.logvar.exp())

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over D; z is (..., B, D), the result (..., B)."""
        return self.log_prob_per_dim(z).sum(-1)

    def kl_per_dim(self) -> Tensor:
        """Closed-form KL(q(z|x) || N(0, I)) for each dimension, (B, D), in nats."""
        return 0.5 * (self.mean**2 + self.logvar.exp() - self.logvar - 1.0)

    def entropy(self) -> Tensor:
        """H[q(z|x)] summed over D, (B,)."""
        return 0.5 * (LOG_2PI + 1.0 + self.logvar).sum(-1)

    def __getitem__(self, index) -> DiagGaussian:
        return DiagGaussian(self.mean[index], self.logvar[index])


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return (-0.5 * (LOG_2PI + z**2)).sum(-1)
