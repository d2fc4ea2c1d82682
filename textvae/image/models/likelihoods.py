"""Per-pixel output distributions p(x|z): log p(x|z) per image, the mean image, samples.

A decoder emits ``params_per_channel`` maps per image channel, (B, P·C, H, W); a likelihood reads
them. Log-probabilities are summed over pixels and channels, (B,), in nats.

- ``bernoulli``: p(x|z) = Π_i μ_i^{x_i} (1 − μ_i)^{1−x_i}, μ = sigmoid(logits). A normalized
  probability only for binarized data; on grey levels in [0, 1] it is the binary cross-entropy,
  not a density, and its "NLL" is not comparable with published numbers.
- ``discretized_gaussian``: for 8-bit grey levels x ∈ {0, 1/255, …, 1} (``ToTensor`` scaling), the
  probability of the bin each value stands for under N(μ, σ²) (the discretization of Salimans et
  al. 2017 with a Gaussian in place of the logistic):
      P(x) = Φ((x + 1/510 − μ)/σ) − Φ((x − 1/510 − μ)/σ),
  the first bin extended to −∞ and the last to +∞, so the 256 probabilities sum to 1. It is a
  probability mass, so −log P(x) / (C·H·W · ln 2) is the discrete bits/dim that the literature
  reports (no dequantization correction needed).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from textvae.errors import TextVAEError

LikelihoodName = Literal["bernoulli", "discretized_gaussian"]

NUM_LEVELS = 256  # 8-bit grey levels
MIN_LOG_SCALE = -9.0  # σ ≥ e^−9 ≈ 1.2e−4, a 32nd of a bin: the bin's mass is already 1 to float32
# precision, and the floor bounds the standardized distances (x − μ)/σ and their gradients


class BernoulliLikelihood:
    """Independent Bernoulli pixels; ``params`` are logits (B, C, H, W)."""

    params_per_channel = 1

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x|z) = −Σ_i BCE(logit_i, x_i), (B,)."""
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)  # (B, C, H, W)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)  # (B, C, H, W)


def _log_normal_interval(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Φ(upper) − Φ(lower)) for lower < upper, computed on the side of the mode where it is
    stable: for lower > 0 it uses Φ(u) − Φ(l) = Φ(−l) − Φ(−u)."""
    flip = lower > 0
    lower, upper = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    log_upper = torch.special.log_ndtr(upper)
    return log_upper + torch.log(-torch.expm1(torch.special.log_ndtr(lower) - log_upper))


class DiscretizedGaussianLikelihood:
    """N(μ, σ²) discretized to 256 grey levels; ``params`` are (B, 2C, H, W): μ, then log σ.

    μ is unconstrained (the edge bins reach ±∞, so μ < 0 puts mass on black); log σ is floored at
    ``MIN_LOG_SCALE``.
    """

    params_per_channel = 2

    @staticmethod
    def _split(params: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_scale = params.chunk(2, dim=1)  # (B, C, H, W) each
        return mean, log_scale.clamp(min=MIN_LOG_SCALE)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log P(x) summed over pixels, (B,); x must lie on the grid {k/255}.

        Computed in float64: the float32 gradient of ``torch.special.log_ndtr`` is wrong below about
        −1e3 and inf/NaN below about −1e4 standard deviations, distances a sharp σ reaches easily."""
        mean, log_scale = (part.double() for part in self._split(params))
        x = x.double()
        inv_scale = torch.exp(-log_scale)
        half_bin = 0.5 / (NUM_LEVELS - 1)
        lower = (x - half_bin - mean) * inv_scale  # (B, C, H, W)
        upper = (x + half_bin - mean) * inv_scale
        first_bin = torch.special.log_ndtr(upper)  # P(y < 1/510)
        last_bin = torch.special.log_ndtr(-lower)  # P(y ≥ 1 − 1/510)
        middle = _log_normal_interval(lower, upper)
        log_mass = torch.where(x < half_bin, first_bin, torch.where(x > 1 - half_bin, last_bin, middle))
        return log_mass.flatten(1).sum(-1).to(params.dtype)

    def mean(self, params: Tensor) -> Tensor:
        """E[x] = Σ_k (k/255) P(k) = (1/255) Σ_{k=1}^{255} P(x ≥ k/255), (B, C, H, W)."""
        mean, log_scale = self._split(params)
        inner_edges = (torch.arange(1, NUM_LEVELS, dtype=mean.dtype, device=mean.device) - 0.5) / (NUM_LEVELS - 1)
        tail = torch.special.ndtr(
            (mean.unsqueeze(-1) - inner_edges) / log_scale.exp().unsqueeze(-1)
        )  # (B, C, H, W, 255)
        return tail.sum(-1) / (NUM_LEVELS - 1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y ~ N(μ, σ²) rounded to the nearest grey level and clipped to [0, 1]: exactly P above."""
        mean, log_scale = self._split(params)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        levels = torch.round((mean + log_scale.exp() * noise) * (NUM_LEVELS - 1)).clamp(0, NUM_LEVELS - 1)
        return levels / (NUM_LEVELS - 1)  # (B, C, H, W)


PixelLikelihood = BernoulliLikelihood | DiscretizedGaussianLikelihood

_LIKELIHOODS: dict[str, type] = {
    "bernoulli": BernoulliLikelihood,
    "discretized_gaussian": DiscretizedGaussianLikelihood,
}


def build_likelihood(name: str) -> PixelLikelihood:
    if name not in _LIKELIHOODS:
        raise TextVAEError(f"unknown likelihood {name!r}; choose one of: {', '.join(_LIKELIHOODS)}")
    return _LIKELIHOODS[name]()
