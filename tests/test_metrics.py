"""The metrics against cases where the answer is known."""

import math

import numpy as np
import torch

from textvae import metrics
from textvae.data.batching import Batch
from textvae.distributions import DiagGaussian, standard_normal_log_prob
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.evaluation.importance import importance_log_weights
from textvae.models.vae import Inference
from textvae.objective import elbo_terms


def test_iw_nll_with_one_sample_equals_the_one_sample_negative_elbo(tiny_vae, batch):
    out = tiny_vae(batch, generator=torch.Generator().manual_seed(7))
    one_sample_neg_elbo = out.rec + out.posterior.log_prob(out.z) - standard_normal_log_prob(out.z)
    log_weights = importance_log_weights(
        tiny_vae, batch, tiny_vae.infer(batch), 1, 1, torch.Generator().manual_seed(7)
    )  # same generator state: the same z
    torch.testing.assert_close(-metrics.iw_log_likelihood(log_weights), one_sample_neg_elbo)


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(W z + b, s² I): log p(x) = log N(x; b, W Wᵀ + s² I) is exact."""

    has_latent = True

    def __init__(self, weight, bias, noise_std):
        self.weight, self.bias, self.noise_std = weight, bias, noise_std

    def sample_latent(self, inference, num_samples, generator):
        z = inference.posterior.rsample(num_samples, generator=generator)
        return z, inference.posterior.log_prob_per_dim(z)

    def log_likelihood(self, batch, z):  # z (K, B, D) → (K, B); batch.tokens holds x (B, X)
        mean = z @ self.weight.T + self.bias  # (K, B, X)
        return torch.distributions.Normal(mean, self.noise_std).log_prob(batch.tokens).sum(-1)

    def exact_log_marginal(self, x):
        cov = self.weight @ self.weight.T + self.noise_std**2 * torch.eye(len(self.bias))
        return torch.distributions.MultivariateNormal(self.bias, cov).log_prob(x)


def _linear_gaussian_case():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    model = LinearGaussian(weight, bias, noise_std=0.8)
    z_true = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    x = z_true @ weight.T + bias + 0.8 * torch.randn(6, 5, generator=generator, dtype=torch.float64)
    # a deliberately imperfect posterior: the prior, widened a little (so the bound is loose at K = 1)
    posterior = DiagGaussian(torch.zeros(6, 3, dtype=torch.float64), torch.full((6, 3), 0.3, dtype=torch.float64))
    batch = Batch(tokens=x, lengths=torch.ones(6), indices=torch.arange(6))
    return model, Inference(posterior, context=torch.zeros(6, 0)), batch


def test_iw_nll_converges_to_the_exact_log_likelihood():
    model, inference, batch = _linear_gaussian_case()
    exact = model.exact_log_marginal(batch.tokens)
    generator = torch.Generator().manual_seed(1)
    log_weights = importance_log_weights(model, batch, inference, 20_000, 1_000, generator)
    estimate = metrics.iw_log_likelihood(log_weights)
    standard_error = metrics.iw_monte_carlo_se(log_weights)
    assert torch.all((estimate - exact).abs() < 5 * standard_error + 1e-3), (estimate, exact)


def test_iw_bound_tightens_as_k_grows():
    model, inference, batch = _linear_gaussian_case()
    exact = model.exact_log_marginal(batch.tokens)
    generator = torch.Generator().manual_seed(2)
    gaps = []
    for k in (1, 10, 100):
        repeats = [
            metrics.iw_log_likelihood(importance_log_weights(model, batch, inference, k, k, generator))
            for _ in range(200)
        ]
        gaps.append(float((exact - torch.stack(repeats).mean(0)).mean()))
    assert gaps[0] > gaps[1] > gaps[2] > -0.05, gaps  # a lower bound on average, tighter with K


def test_active_units_counts_exactly_the_varying_dimensions():
    generator = torch.Generator().manual_seed(0)
    means = 1e-3 * torch.randn(500, 4, generator=generator)  # variance 1e-6: inactive
    means[:, 1] = torch.randn(500, generator=generator)  # variance ≈ 1
    means[:, 3] = 0.2 * torch.randn(500, generator=generator)  # variance ≈ 0.04 ≥ 0.01
    assert metrics.active_units(means) == 2
    means[:, 3] = 0.05 * torch.randn(500, generator=generator)  # variance ≈ 0.0025 < 0.01
    assert metrics.active_units(means) == 1


def test_mutual_information_estimators_on_a_gaussian_channel():
    # x ~ N(0, 1), q(z|x) = N(x, 0.5²) in each of 2 independent dimensions: I = 2 · ½ log(1 + 1/0.25)
    generator = torch.Generator().manual_seed(0)
    n = 3000
    means = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    logvars = torch.full((n, 2), math.log(0.25), dtype=torch.float64)
    expected = 2 * 0.5 * math.log(1 + 1 / 0.25)
    full = metrics.mutual_info_full(means, logvars, torch.Generator().manual_seed(1))
    minibatch = metrics.mutual_info_minibatch(means, logvars, torch.Generator().manual_seed(1))
    assert abs(full - expected) < 0.06, (full, expected)
    assert abs(minibatch - expected) < 0.06, (minibatch, expected)
    # no information when the posterior ignores x (zero up to the one-sample Monte-Carlo noise, s.e. ≈ 0.018)
    collapsed = metrics.mutual_info_full(torch.zeros(n, 2), torch.zeros(n, 2), torch.Generator().manual_seed(1))
    assert abs(collapsed) < 0.1


def test_mutual_information_reaches_log_batch_size_for_separated_posteriors():
    # perfectly separated posteriors: I(x; z) = log N for an aggregate over N points (averaged over draws)
    means = torch.arange(8, dtype=torch.float64).unsqueeze(1) * 100.0
    logvars = torch.zeros(8, 1, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    values = [metrics.mutual_info_minibatch(means, logvars, generator) for _ in range(2000)]
    assert abs(np.mean(values) - math.log(8)) < 0.05


def test_perplexity_is_a_ratio_of_sums_over_unequal_batches(vocab):
    from tests.conftest import tiny_lm_spec
    from textvae.data.corpus import EncodedSplit
    from textvae.models import build_model

    torch.manual_seed(0)
    spec = tiny_lm_spec()
    spec["decoder"]["weight_init_range"] = 1.0  # far from uniform, so sentences differ in NLL per token
    tiny_lm = build_model(spec, vocab).eval()

    rows = [[1, 4, 5, 6, 7, 8, 9, 10, 4, 2], [1, 5, 2], [1, 6, 7, 2]]  # lengths 10, 3, 4
    split = EncodedSplit("test", {"ids": rows}, np.array([len(r) for r in rows]), 0, 0)
    split.rows = lambda indices: [rows[i] for i in indices]
    result = evaluate(tiny_lm, split, vocab.pad_id, EvalSettings(batch_size=2, progress_bar=False)).metrics
    with torch.no_grad():
        per_sentence = [float(-tiny_lm.log_likelihood(_single(r, vocab))[0]) for r in rows]
    tokens = [len(r) - 1 for r in rows]
    assert result["num_tokens"] == sum(tokens) == 14
    assert math.isclose(result["ppl"], math.exp(sum(per_sentence) / sum(tokens)), rel_tol=1e-5)
    assert math.isclose(result["nll"], sum(per_sentence) / 3, rel_tol=1e-5)
    # the mean of batch perplexities (batches of 2 sorted by length) would be a different number
    batch_ppls = [math.exp((per_sentence[1] + per_sentence[2]) / 5), math.exp(per_sentence[0] / 9)]
    assert not math.isclose(result["ppl"], sum(batch_ppls) / 2, rel_tol=1e-3)


def _single(row, vocab):
    from textvae.data.batching import collate

    return collate([row], [0], vocab.pad_id)


def test_elbo_terms_are_honest_per_example(tiny_vae, batch):
    out = tiny_vae(batch, generator=torch.Generator().manual_seed(0))
    terms = elbo_terms(out)
    assert terms.rec.shape == terms.kl.shape == (3,)
    assert terms.kl_per_dim.shape == (3, 4)
    torch.testing.assert_close(terms.kl, terms.kl_per_dim.sum(-1))
    assert terms.num_tokens.tolist() == [6, 3, 2]  # words + EOS, not BOS


def test_mi_standard_error_matches_the_spread_of_the_estimate_over_draws():
    # identical posteriors (a collapsed encoder): I(x; z) = 0, every estimate is Monte-Carlo noise
    from textvae.metrics import mutual_info_estimate, mutual_info_se

    means, logvars = torch.zeros(40, 3, dtype=torch.float64), torch.zeros(40, 3, dtype=torch.float64)
    spreads = {}
    for samples in (1, 8):
        estimates, errors = [], []
        for seed in range(200):
            terms = []
            generator = torch.Generator().manual_seed(seed)
            estimates.append(float(mutual_info_estimate(means, logvars, generator, samples=samples, terms=terms)))
            assert terms[0].shape == (samples, 40)
            assert abs(float(terms[0].mean()) - estimates[-1]) < 1e-9  # the estimate is the terms' mean
            errors.append(float(mutual_info_se(terms[0])))
        spread = spreads[samples] = torch.tensor(estimates).std().item()
        assert abs(sum(estimates) / len(estimates)) < 3 * spread / len(estimates) ** 0.5  # unbiased around 0
        assert 0.8 < (sum(errors) / len(errors)) / spread < 1.25, samples
        assert sum(abs(e) <= 2 * s for e, s in zip(estimates, errors, strict=True)) >= 0.9 * len(estimates)
    assert spreads[8] < 0.5 * spreads[1]  # 8 draws per sentence: about 1/sqrt(8) of the noise


def test_mi_with_one_draw_keeps_he_et_al_s_protocol_and_its_random_stream():
    from textvae.metrics import mutual_info_estimate

    generator = torch.Generator().manual_seed(3)
    means, logvars = torch.randn(9, 4, generator=generator), torch.randn(9, 4, generator=generator) * 0.1 - 1
    one = mutual_info_estimate(means, logvars, torch.Generator().manual_seed(0))
    eps = torch.randn(means.shape, generator=torch.Generator().manual_seed(0))  # the draw of the old code
    z = means + eps * torch.exp(0.5 * logvars)
    pool = torch.distributions.Normal(means.unsqueeze(0), torch.exp(0.5 * logvars).unsqueeze(0))
    log_qz = torch.logsumexp(pool.log_prob(z.unsqueeze(1)).sum(-1), dim=1) - math.log(9)
    entropy = torch.distributions.Normal(means, torch.exp(0.5 * logvars)).entropy().sum(-1)
    assert abs(float(one) - float((-entropy - log_qz).mean())) < 1e-5
