"""Latent-space and likelihood metrics for any VAE, from tensors, defined exactly as the papers define them.

This is textvae's public metrics API (``__all__``): it takes the posterior parameters (``means``,
``logvars``, (N, D)) or importance log-weights ((K, N)) of *any* model with a diagonal Gaussian
posterior and a N(0, I) prior, on whatever device they live, and imports nothing of textvae's
models. ``textvae eval`` computes its numbers with these functions.

- ``active_units`` (AU, with its threshold δ) and ``posterior_mean_variance``;
- ``kl_per_dimension``: the data mean of KL(q(z_d|x) ‖ N(0, 1)), (D,);
- ``mutual_info``: I(x; z) by both estimators, each with its Monte-Carlo standard error:
  ``batch_size=None`` is Li et al. 2019's (the aggregate posterior over the whole set), an integer
  He et al. 2019's (over consecutive minibatches of that size, averaged weighted by size);
- ``iw_nll``: the K-sample importance-weighted NLL, its standard error over the examples and its
  Monte-Carlo standard error; ``perplexity``.

Which numbers depend on how the evaluation batches are formed: only He et al.'s minibatch MI
(``mi_batch`` in ``textvae eval``), whose aggregate posterior is each batch's own. It grows with
the batch size (it can never exceed log(batch size)) and changes with which examples share a batch
(``textvae eval`` sorts the evaluated sentences by length and cuts them into ``eval.batch_size``
batches). AU, KL per dimension, Li et al.'s MI (bounded by log N) and IW-NLL are the same
however the examples are batched; IW-NLL and both MIs depend on the random draws (``generator``).

Units are nats. References:

- He et al. 2019, "Lagging Inference Networks and Posterior Collapse in VAEs"
  (github jxhe/vae-lagging-encoder): active units, minibatch mutual information, IW-NLL, PPL.
- Li et al. 2019, "A Surprisingly Effective Fix for Deep Latent Variable Modeling of Text"
  (github bohanli/vae-pretraining-encoder): mutual information over the whole evaluation set.
- Burda et al. 2015, "Importance Weighted Autoencoders": the K-sample bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from textvae.distributions import LOG_2PI, DiagGaussian

__all__ = [
    "AU_THRESHOLD",
    "Estimate",
    "IWEstimate",
    "active_units",
    "iw_log_likelihood",
    "iw_monte_carlo_se",
    "iw_nll",
    "kl_per_dimension",
    "mutual_info",
    "mutual_info_draws",
    "mutual_info_estimate",
    "mutual_info_full",
    "mutual_info_minibatch",
    "mutual_info_se",
    "perplexity",
    "posterior_mean_variance",
]

AU_THRESHOLD = 0.01  # δ of Burda et al. 2015, as used by He et al. 2019


@dataclass(frozen=True)
class Estimate:
    """A number and its standard error: ``value ± se`` (nats)."""

    value: float
    se: float


@dataclass(frozen=True)
class IWEstimate:
    """The importance-weighted NLL of a set: the mean over examples of −log p̂(x), its standard error
    over the examples (``se``) and the mean Monte-Carlo standard error of one example's K-sample
    estimate (``mc_se``), in nats; ``per_example`` is −log p̂(x) for each example, (N,)."""

    value: float
    se: float
    mc_se: float
    per_example: Tensor  # (N,)


def posterior_mean_variance(means: Tensor) -> Tensor:
    """Cov_x(E_q[z_d]) for each d: the unbiased variance over the data of the posterior means, (D,)."""
    if means.shape[0] > 1:
        return means.var(dim=0, unbiased=True)
    return torch.zeros(means.shape[1], dtype=means.dtype, device=means.device)


def active_units(means: Tensor, threshold: float = AU_THRESHOLD) -> int:
    """Number of dimensions d with Var_x(E_q(z|x)[z_d]) ≥ threshold; ``means`` is (N, D)."""
    return int((posterior_mean_variance(means) >= threshold).sum())


def kl_per_dimension(means: Tensor, logvars: Tensor) -> Tensor:
    """KL(q(z_d|x) ‖ N(0, 1)) for each dimension d, averaged over the N posteriors given: (D,) float64.
    The closed form, ½(μ² + σ² − log σ² − 1), is ``DiagGaussian.kl_per_dim``; its sum over d is the KL
    term of the ELBO, and a collapsed dimension has KL ≈ 0."""
    return DiagGaussian(means, logvars).kl_per_dim().double().mean(dim=0)  # (N, D) -> (D,)


def mutual_info(
    means: Tensor,
    logvars: Tensor,
    *,
    batch_size: int | None = None,
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> Estimate:
    """I(x; z) = E_x[−H(q(z|x))] − E_z[log q(z)] of N posteriors (N, D), with its Monte-Carlo standard error.

    ``batch_size`` None: Li et al. 2019, the aggregate posterior q(z) over all N (``mi_full``).
    An integer: He et al. 2019, q(z) over each run of ``batch_size`` consecutive rows, the estimates
    averaged weighted by batch size (``mi_batch``): it depends on the batch size and on which rows
    share a batch, so pass the rows in the order your evaluation batches them. ``samples`` z draws
    per posterior (1 is He et al.'s protocol); the draws come from ``generator``."""
    num = means.shape[0]
    if num == 0 or means.shape != logvars.shape or means.dim() != 2:
        raise ValueError(
            f"means and logvars must be (N, D) with N ≥ 1, got {tuple(means.shape)}, {tuple(logvars.shape)}"
        )
    terms: list[Tensor] = []
    if batch_size is None:
        value = mutual_info_estimate(means, logvars, generator, chunk=256, samples=samples, terms=terms)
        return Estimate(float(value), float(mutual_info_se(terms[0])))
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    total = torch.zeros((), dtype=torch.float64, device=means.device)
    for mean, logvar in zip(means.split(batch_size), logvars.split(batch_size), strict=True):
        total += mutual_info_estimate(mean, logvar, generator, samples=samples, terms=terms) * mean.shape[0]
    return Estimate(float(total / num), float(mutual_info_se(torch.cat(terms, dim=1))))


def mutual_info_draws(
    means: Tensor, logvars: Tensor, generator: torch.Generator | None = None, chunk: int | None = None, samples: int = 1
) -> tuple[Tensor, Tensor]:
    """The two parts of I(x; z) = E_x[−H(q(z|x))] − E_z[log q(z)] over N posteriors: −H(q(z|x_i)) (N,)
    and log q(z_si) (S, N) for S draws z_si ~ q(z|x_i), where q(z) = 1/N Σ_j q(z|x_j) over the same N.
    ``samples`` = 1 is He et al. 2019's protocol (one z per sentence). Chunked over the draws
    (``chunk`` rows, default N) so that memory is (chunk, N, D), not (S·N, N, D); the draws come from
    ``generator``, which must live on the posteriors' device."""
    num, latent_dim = means.shape
    chunk = num if chunk is None else chunk
    neg_entropy = -0.5 * latent_dim * LOG_2PI - 0.5 * (1 + logvars).sum(-1)  # (N,)
    eps = torch.randn((samples, num, latent_dim), generator=generator, dtype=means.dtype, device=means.device)
    z = (means + eps * torch.exp(0.5 * logvars)).reshape(-1, latent_dim)  # (S·N, D)
    pool_var = logvars.exp()  # (N, D)
    log_norm = 0.5 * (latent_dim * LOG_2PI + logvars.sum(-1))  # (N,)
    log_qz = []
    for z_chunk in z.split(chunk):
        dev = z_chunk.unsqueeze(1) - means.unsqueeze(0)  # (c, N, D)
        log_density = -0.5 * (dev**2 / pool_var.unsqueeze(0)).sum(-1) - log_norm.unsqueeze(0)  # (c, N)
        log_qz.append(torch.logsumexp(log_density, dim=1) - math.log(num))  # (c,)
    return neg_entropy, torch.cat(log_qz).view(samples, num)


def mutual_info_estimate(
    means: Tensor,
    logvars: Tensor,
    generator: torch.Generator | None = None,
    chunk: int | None = None,
    samples: int = 1,
    terms: list[Tensor] | None = None,
) -> Tensor:
    """I(x; z) = E_x[−H(q(z|x))] − E_z[log q(z)] over the N posteriors given, with ``samples`` draws
    z ~ q(z|x_i) each (``mutual_info_draws``); a 0-dim float64 tensor on their device (nothing is
    read back to the host). Each chunk's sum is taken in the posteriors' dtype and added in float64.
    When ``terms`` is a list, the per-draw terms −H(q(z|x_i)) − log q(z_si), (S, N) float64, are
    appended to it (``mutual_info_se`` turns them into the estimate's Monte-Carlo standard error)."""
    num = means.shape[0]
    chunk = num if chunk is None else chunk
    neg_entropy, log_qz = mutual_info_draws(means, logvars, generator, chunk, samples)
    log_qz_sum = torch.zeros((), dtype=torch.float64, device=means.device)
    for part in log_qz.view(-1).split(chunk):
        log_qz_sum += part.sum().double()
    if terms is not None:
        terms.append(neg_entropy.double() - log_qz.double())
    return (samples * neg_entropy.sum().double() - log_qz_sum) / (samples * num)


def mutual_info_se(terms: Tensor) -> Tensor:
    """Monte-Carlo standard error of the MI estimate from its per-draw terms (S, N): with S ≥ 2 draws
    per posterior, sqrt(Σ_i Var_s / S) / N from each posterior's spread over its draws; with S = 1,
    the spread over the N posteriors / sqrt(N), an upper bound (it also counts the real variation
    between sentences). Both ignore that q(z) is estimated from the same N posteriors."""
    samples, num = terms.shape
    if samples >= 2:
        return (terms.var(dim=0, unbiased=True) / samples).sum().sqrt() / num
    if num < 2:
        return torch.full((), float("nan"), dtype=terms.dtype, device=terms.device)
    return terms[0].std(unbiased=True) / math.sqrt(num)


def mutual_info_minibatch(means: Tensor, logvars: Tensor, generator: torch.Generator | None = None) -> float:
    """I(x; z) of He et al. 2019 on one minibatch: E_x[−H(q(z|x))] − E_z[log q(z)], where the
    aggregate posterior q(z) is taken over the minibatch itself. Average it over minibatches
    weighted by their size, as ``textvae.evaluation.evaluate`` does (with ``mutual_info_estimate``, on the device)."""
    return float(mutual_info_estimate(means, logvars, generator))


def mutual_info_full(
    means: Tensor,
    logvars: Tensor,
    generator: torch.Generator | None = None,
    chunk: int = 256,
    samples: int = 1,
    terms: list[Tensor] | None = None,
) -> float:
    """I(x; z) of Li et al. 2019: the aggregate posterior q(z) over the whole evaluation set."""
    return float(mutual_info_estimate(means, logvars, generator, chunk, samples, terms))


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


def iw_nll(log_weights: Tensor) -> IWEstimate:
    """The K-sample importance-weighted NLL (Burda et al. 2015) of N examples from their log-weights
    log w_k = log p(x, z_k) − log q(z_k|x), z_k ~ q(z|x): (K, N). −log (1/K Σ_k w_k) is an upper
    bound on −log p(x) that tightens as K grows; K = 1 gives the one-sample negative ELBO."""
    if log_weights.dim() != 2 or log_weights.shape[1] == 0:
        raise ValueError(f"log_weights must be (K, N) with N ≥ 1, got {tuple(log_weights.shape)}")
    per_example = -iw_log_likelihood(log_weights).double()  # (N,)
    num = per_example.shape[0]
    se = float(per_example.std(unbiased=True) / math.sqrt(num)) if num > 1 else float("nan")
    return IWEstimate(float(per_example.mean()), se, float(iw_monte_carlo_se(log_weights).mean()), per_example)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(Σ NLL / Σ tokens): a ratio of sums over the whole set, never a mean of batch PPLs."""
    return math.exp(total_nll / total_tokens)
