"""textvae.metrics as a public API: every name in __all__ works from tensors alone, and the
estimators agree with the definitions (and with what textvae eval computes)."""

import math

import pytest
import torch

from textvae import metrics
from textvae.distributions import DiagGaussian


def test_all_names_the_public_functions_and_they_exist():
    assert len(set(metrics.__all__)) == len(metrics.__all__)
    for name in metrics.__all__:
        assert hasattr(metrics, name), name
    assert {"active_units", "kl_per_dimension", "mutual_info", "iw_nll", "AU_THRESHOLD"} <= set(metrics.__all__)


def test_kl_per_dimension_is_the_data_mean_of_the_closed_form_and_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    means, logvars = torch.randn(7, 4, generator=generator), torch.randn(7, 4, generator=generator)
    kl = metrics.kl_per_dimension(means, logvars)
    assert kl.shape == (4,) and kl.dtype == torch.float64
    torch.testing.assert_close(kl, DiagGaussian(means, logvars).kl_per_dim().double().mean(0))
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(means, (0.5 * logvars).exp()), torch.distributions.Normal(0.0, 1.0)
    ).mean(0)
    torch.testing.assert_close(kl, reference.double())


def test_active_units_counts_the_dimensions_whose_posterior_mean_varies_by_at_least_the_threshold():
    means = torch.zeros(50, 4)
    means[:, 1] = torch.linspace(-1, 1, 50)  # variance ≈ 0.35
    means[:, 3] = torch.linspace(-0.05, 0.05, 50)  # variance ≈ 0.0009
    assert metrics.active_units(means) == 1
    assert metrics.active_units(means, threshold=0.0005) == 2


def test_mutual_info_by_both_estimators_and_how_the_minibatch_one_depends_on_the_batches():
    """Posteriors far apart and sharp: each z is told apart from every other x, so I(x; z) reaches its
    ceiling, log N over the whole set and log B over a minibatch of B, up to the Monte-Carlo noise of
    log q(z|x) at one draw (½(Σ_d ε_d² − D) per draw: the standard error says how much)."""
    num, latent_dim = 64, 3
    means = torch.randn(num, latent_dim, generator=torch.Generator().manual_seed(1)) * 100
    logvars = torch.full((num, latent_dim), -10.0)
    full = metrics.mutual_info(means, logvars, samples=8, generator=torch.Generator().manual_seed(2))
    expected_se = 0.5 * math.sqrt(2 * latent_dim / 8) / math.sqrt(num)  # sd of ½ χ²_D over 8 draws, per x
    assert full.se == pytest.approx(expected_se, rel=0.3)
    assert abs(full.value - math.log(num)) < 4 * full.se
    for batch_size in (4, 16):
        batched = metrics.mutual_info(
            means, logvars, batch_size=batch_size, samples=8, generator=torch.Generator().manual_seed(2)
        )
        assert abs(batched.value - math.log(batch_size)) < 4 * batched.se and batched.se < 0.1

    # collapsed posteriors (all q(z|x) = N(0, I)): I(x; z) = 0 up to Monte-Carlo noise, within a few s.e.
    collapsed = metrics.mutual_info(torch.zeros(num, 2), torch.zeros(num, 2), batch_size=16, samples=4)
    assert abs(collapsed.value) < 4 * collapsed.se

    # the minibatch estimate is the size-weighted mean of the per-batch estimates, same draws
    means, logvars = torch.randn(10, 2), torch.randn(10, 2) * 0.1
    batched = metrics.mutual_info(means, logvars, batch_size=4, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    parts = [
        metrics.mutual_info_estimate(m, v, generator) * len(m)
        for m, v in zip(means.split(4), logvars.split(4), strict=True)
    ]
    assert batched.value == pytest.approx(float(sum(parts) / 10), rel=1e-12)


def test_iw_nll_with_its_standard_errors():
    log_weights = torch.randn(5, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64) - 30
    estimate = metrics.iw_nll(log_weights)
    per_example = -(torch.logsumexp(log_weights, 0) - math.log(5))
    torch.testing.assert_close(estimate.per_example, per_example)
    assert estimate.value == pytest.approx(float(per_example.mean()))
    assert estimate.se == pytest.approx(float(per_example.std() / math.sqrt(8)))
    assert estimate.mc_se == pytest.approx(float(metrics.iw_monte_carlo_se(log_weights).mean()))
    one = metrics.iw_nll(log_weights[:1])  # K = 1: the one-sample negative ELBO, no Monte-Carlo s.e.
    torch.testing.assert_close(one.per_example, -log_weights[0])
    assert math.isnan(one.mc_se)
    with pytest.raises(ValueError, match=r"\(K, N\)"):
        metrics.iw_nll(torch.zeros(3))
