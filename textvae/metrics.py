"""Latent-space and likelihood metrics, defined exactly as the papers define them.

Units are nats. References:
- He et al. 2019, "Lagging Inference Networks and Posterior Collapse in VAEs"
  (github jxhe/vae-lagging-encoder): active units, minibatch mutual information, IW-NLL, PPL.
- Li et al. 2019, "A Surprisingly Effective Fix for Deep Latent Variable Modeling of Text"
  (github bohanli/vae-pretraining-encoder): mutual information over the whole evaluation set.
- Burda et al. 2015, "Importance Weighted Autoencoders": the K-sample bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from textvae.distributions import LOG_2PI

AU_THRESHOLD = 0.01  # δ of Burda et al. 2015, as used by He et al. 2019


def posterior_mean_variance(means: Tensor) -> Tensor:
    """Cov_x(E_q[z_d]) for each d: the unbiased variance over the data of the posterior means, (D,)."""
    return means.var(dim=0, unbiased=True) if means.shape[0] > 1 else torch.zeros(means.shape[1])


def active_units(means: Tensor, threshold: float = AU_THRESHOLD) -> int:
    """Number of dimensions d with Var_x(E_q(z|x)[z_d]) ≥ threshold; ``means`` is (N, D)."""
    return int((posterior_mean_variance(means) >= threshold).sum())


def _mutual_info(
    sample_means: Tensor, sample_logvars: Tensor, pool_means: Tensor, pool_logvars: Tensor, generator, chunk: int
) -> tuple[float, float]:
    """Σ over x_i of (−H[q(z|x_i)]) and Σ_i log q(z_i), with z_i ~ q(z|x_i) and the aggregate
    posterior q(z) = 1/N Σ_j q(z|x_j) over the pool (N = pool size). Chunked over the samples so
    memory is (chunk, N, D), not (N, N, D)."""
    latent_dim = sample_means.shape[1]
    neg_entropy = (-0.5 * latent_dim * LOG_2PI - 0.5 * (1 + sample_logvars).sum(-1)).sum()
    eps = torch.randn(sample_means.shape, generator=generator, dtype=sample_means.dtype)
    z = sample_means + eps * torch.exp(0.5 * sample_logvars)  # (M, D)
    pool_var = pool_logvars.exp()  # (N, D)
    log_norm = 0.5 * (latent_dim * LOG_2PI + pool_logvars.sum(-1))  # (N,)
    log_qz_sum = 0.0
    for z_chunk in z.split(chunk):
        dev = z_chunk.unsqueeze(1) - pool_means.unsqueeze(0)  # (c, N, D)
        log_density = -0.5 * (dev**2 / pool_var.unsqueeze(0)).sum(-1) - log_norm.unsqueeze(0)  # (c, N)
        log_qz = torch.logsumexp(log_density, dim=1) - math.log(pool_means.shape[0])  # (c,)
        log_qz_sum += float(log_qz.sum())
    return float(neg_entropy), log_qz_sum


def mutual_info_minibatch(means: Tensor, logvars: Tensor, generator: torch.Generator | None = None) -> float:
    """I(x; z) of He et al. 2019 on one minibatch: E_x[−H(q(z|x))] − E_z[log q(z)], where the
    aggregate posterior q(z) is taken over the minibatch itself. Average it over minibatches
    weighted by their size, as ``textvae.evaluate`` does."""
    neg_entropy, log_qz = _mutual_info(means, logvars, means, logvars, generator, chunk=means.shape[0])
    return (neg_entropy - log_qz) / means.shape[0]


def mutual_info_full(
    means: Tensor, logvars: Tensor, generator: torch.Generator | None = None, chunk: int = 256
) -> float:
    """I(x; z) of Li et al. 2019: the aggregate posterior q(z) over the whole evaluation set."""
    neg_entropy, log_qz = _mutual_info(means, logvars, means, logvars, generator, chunk)
    return (neg_entropy - log_qz) / means.shape[0]


def iw_log_likelihood(log_weights: Tensor) -> Tensor:
    """log (1/K Σ_k w_k) per sentence from log w_k = log p(x, z_k) − log q(z_k|x); (K, B) → (B,)."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def iw_monte_carlo_se(log_weights: Tensor) -> Tensor:
    """Delta-method standard error of the K-sample estimate log(mean w), per sentence, (B,):
    sd(w) / (sqrt(K) · mean(w)), computed on weights scaled by their maximum."""
    num_samples = log_weights.shape[0]
    if num_samples < 2:
        return torch.full(log_weights.shape[1:], float("nan"))
    scaled = torch.exp(log_weights - log_weights.max(dim=0).values)  # (K, B), in (0, 1]
    return scaled.std(dim=0, unbiased=True) / (math.sqrt(num_samples) * scaled.mean(dim=0))


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(Σ NLL / Σ tokens): a ratio of sums over the whole set, never a mean of batch PPLs."""
    return math.exp(total_nll / total_tokens)
