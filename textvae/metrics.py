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
    if means.shape[0] > 1:
        return means.var(dim=0, unbiased=True)
    return torch.zeros(means.shape[1], dtype=means.dtype, device=means.device)


def active_units(means: Tensor, threshold: float = AU_THRESHOLD) -> int:
    """Number of dimensions d with Var_x(E_q(z|x)[z_d]) ≥ threshold; ``means`` is (N, D)."""
    return int((posterior_mean_variance(means) >= threshold).sum())


def mutual_info_estimate(
    means: Tensor, logvars: Tensor, generator: torch.Generator | None = None, chunk: int | None = None
) -> Tensor:
    """I(x; z) = E_x[−H(q(z|x))] − E_z[log q(z)] over the N posteriors given, with one z_i ~ q(z|x_i)
    each and the aggregate posterior q(z) = 1/N Σ_j q(z|x_j) over the same N; a 0-dim float64
    tensor on their device (nothing is read back to the host). Chunked over the samples (``chunk``
    rows, default all N) so that memory is (chunk, N, D), not (N, N, D). The draw comes from
    ``generator``, which must live on the posteriors' device."""
    num, latent_dim = means.shape
    chunk = num if chunk is None else chunk
    neg_entropy = (-0.5 * latent_dim * LOG_2PI - 0.5 * (1 + logvars).sum(-1)).sum()
    eps = torch.randn(means.shape, generator=generator, dtype=means.dtype, device=means.device)
    z = means + eps * torch.exp(0.5 * logvars)  # (N, D)
    pool_var = logvars.exp()  # (N, D)
    log_norm = 0.5 * (latent_dim * LOG_2PI + logvars.sum(-1))  # (N,)
    log_qz_sum = torch.zeros((), dtype=torch.float64, device=means.device)
    for z_chunk in z.split(chunk):
        dev = z_chunk.unsqueeze(1) - means.unsqueeze(0)  # (c, N, D)
        log_density = -0.5 * (dev**2 / pool_var.unsqueeze(0)).sum(-1) - log_norm.unsqueeze(0)  # (c, N)
        log_qz = torch.logsumexp(log_density, dim=1) - math.log(num)  # (c,)
        log_qz_sum += log_qz.sum().double()  # each chunk's sum in the posterior's dtype, added in float64
    return (neg_entropy.double() - log_qz_sum) / num


def mutual_info_minibatch(means: Tensor, logvars: Tensor, generator: torch.Generator | None = None) -> float:
    """I(x; z) of He et al. 2019 on one minibatch: E_x[−H(q(z|x))] − E_z[log q(z)], where the
    aggregate posterior q(z) is taken over the minibatch itself. Average it over minibatches
    weighted by their size, as ``textvae.evaluate`` does (with ``mutual_info_estimate``, on the device)."""
    return float(mutual_info_estimate(means, logvars, generator))


def mutual_info_full(
    means: Tensor, logvars: Tensor, generator: torch.Generator | None = None, chunk: int = 256
) -> float:
    """I(x; z) of Li et al. 2019: the aggregate posterior q(z) over the whole evaluation set."""
    return float(mutual_info_estimate(means, logvars, generator, chunk))


def iw_log_likelihood(log_weights: Tensor) -> Tensor:
    """log (1/K Σ_k w_k) per sentence from log w_k = log p(x, z_k) − log q(z_k|x); (K, B) → (B,)."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def iw_monte_carlo_se(log_weights: Tensor) -> Tensor:
    """Delta-method standard error of the K-sample estimate log(mean w), per sentence, (B,):
    sd(w) / (sqrt(K) · mean(w)), computed on weights scaled by their maximum."""
    num_samples = log_weights.shape[0]
    if num_samples < 2:
        return torch.full(log_weights.shape[1:], float("nan"), device=log_weights.device)
    scaled = torch.exp(log_weights - log_weights.max(dim=0).values)  # (K, B), in (0, 1]
    return scaled.std(dim=0, unbiased=True) / (math.sqrt(num_samples) * scaled.mean(dim=0))


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(Σ NLL / Σ tokens): a ratio of sums over the whole set, never a mean of batch PPLs."""
    return math.exp(total_nll / total_tokens)
