import math

import torch
from torch.distributions import Normal, kl_divergence

from textvae.distributions import DiagGaussian, standard_normal_log_prob


def _posterior(seed: int = 0) -> DiagGaussian:
    generator = torch.Generator().manual_seed(seed)
    mean = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    logvar = torch.randn(3, 4, generator=generator, dtype=torch.float64) * 0.7
    return DiagGaussian(mean, logvar)


def test_kl_per_dim_matches_torch_distributions():
    q = _posterior()
    expected = kl_divergence(Normal(q.mean, q.std), Normal(torch.zeros_like(q.mean), torch.ones_like(q.mean)))
    torch.testing.assert_close(q.kl_per_dim(), expected)
    assert q.kl_per_dim().shape == (3, 4)


def test_kl_matches_monte_carlo_within_standard_error():
    q = _posterior(seed=1)
    generator = torch.Generator().manual_seed(2)
    z = q.rsample(200_000, generator=generator)  # (K, B, D)
    samples = q.log_prob(z) - standard_normal_log_prob(z)  # (K, B): log q − log p
    estimate = samples.mean(0)
    standard_error = samples.std(0) / math.sqrt(samples.shape[0])
    closed_form = q.kl_per_dim().sum(-1)
    assert torch.all((estimate - closed_form).abs() < 5 * standard_error)


def test_log_prob_and_entropy_match_torch_distributions():
    q = _posterior(seed=3)
    z = q.rsample(5, generator=torch.Generator().manual_seed(4))  # (5, 3, 4)
    reference = Normal(q.mean, q.std)
    torch.testing.assert_close(q.log_prob(z), reference.log_prob(z).sum(-1))
    torch.testing.assert_close(q.entropy(), reference.entropy().sum(-1))
    torch.testing.assert_close(standard_normal_log_prob(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_rsample_shapes_and_reparameterized_gradient():
    mean = torch.zeros(3, 4, requires_grad=True)
    q = DiagGaussian(mean, torch.zeros(3, 4))
    assert q.rsample().shape == (3, 4)
    assert q.rsample(7).shape == (7, 3, 4)
    q.rsample().sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones(3, 4))
