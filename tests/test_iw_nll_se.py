"""Which IW-NLL standard error answers which question: iw_nll_mean_mc_se predicts the spread of the
mean over the same sentences with other importance draws; the mean per-sentence s.e. over √N does not."""

import math

import torch

from textvae.evaluation.evaluate import _VaeSums


def test_the_mean_monte_carlo_se_predicts_the_spread_over_draws_on_fixed_sentences():
    """N sentences whose log weights have different spreads (σ_i), K draws each, R repeats of the
    whole evaluation with fresh draws: the sd of the mean IW-NLL over the repeats matches
    √(Σ se_i²) / N, while mean(se_i) / √N falls short of it (Jensen: the sentences' s.e.s differ)."""
    generator = torch.Generator().manual_seed(0)
    n, k, repeats = 40, 100, 300
    sigma = torch.linspace(0.05, 1.0, n)  # (N,) per-sentence spread of log w
    offset = torch.linspace(-80.0, -20.0, n)  # (N,) each sentence's own level: irrelevant to the draws
    means, predicted, naive = [], [], []
    for _ in range(repeats):
        log_weights = offset + sigma * torch.randn(k, n, generator=generator)  # (K, N)
        sums = _VaeSums(latent_dim=4, device=torch.device("cpu"))
        sums.add_iw(log_weights)
        totals, _, _ = sums.read()
        means.append(totals["iw_nll"] / n)
        predicted.append(math.sqrt(totals["mc_var"]) / n)
        naive.append(totals["mc_se"] / n / math.sqrt(n))
    spread = torch.tensor(means, dtype=torch.float64).std().item()
    mean_predicted, mean_naive = sum(predicted) / repeats, sum(naive) / repeats
    # the sd of an sd estimate from R draws has relative s.e. about 1 / √(2R) ≈ 0.04: 4 of them
    assert abs(spread / mean_predicted - 1) < 0.17, (spread, mean_predicted)
    assert mean_naive < 0.9 * mean_predicted and spread / mean_naive > 1.1
