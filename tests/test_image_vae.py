"""Image VAE: the Burda et al. default, loss falling on real MNIST, closed-form KL vs Monte Carlo, β
only in the loss, the IW bound (≥ ELBO, rising with K, exact with flows: against quadrature in 2-D),
IAF and AF-prior log-determinants vs autograd, the AF prior a normalized density that sampling
inverts, and the discretized Gaussian a normalized probability mass."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from tests.test_image_autoencoders import MNIST_SHAPE, mnist_images
from textvae import registry
from textvae.distributions import standard_normal_log_prob
from textvae.errors import TextVAEError
from textvae.image.models.likelihoods import BernoulliLikelihood, DiscretizedGaussianLikelihood
from textvae.metrics import iw_log_likelihood, iw_monte_carlo_se

SMALL_SHAPE = (1, 4, 5)
TINY = {"latent_dim": 4, "hidden_dims": [32]}


def build(image_shape=MNIST_SHAPE, **params):
    torch.manual_seed(0)
    return registry.build("image_model", {"type": "vae", **params}, image_shape=image_shape)


def binarized(count: int) -> torch.Tensor:
    return (mnist_images(count) > 0.5).float()


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def scale_parameters(module: nn.Module, factor: float) -> None:
    """Make a freshly initialized flow far from the identity, so the checks are not vacuous."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(factor)


def train(model, x: torch.Tensor, steps: int, lr: float = 1e-2):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        loss = model.loss_terms(x, step=step).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_the_default_is_the_burda_one_layer_mnist_model():
    model = build()
    shapes = lambda module: [tuple(m.weight.shape) for m in module.modules() if isinstance(m, nn.Linear)]  # noqa: E731
    assert shapes(model.encoder) == [(200, 784), (200, 200)]
    assert tuple(model.posterior_head.weight.shape) == (100, 200)  # μ and log σ² of 50 dimensions
    assert shapes(model.decoder) == [(200, 50), (200, 200), (784, 200)]
    for body in (model.encoder, model.decoder):
        assert sum(isinstance(m, nn.Tanh) for m in body.modules()) == 2
    assert isinstance(model.likelihood, BernoulliLikelihood)
    assert model.gaussian_kl
    out = model.loss_terms(binarized(3))
    assert set(out.terms) == {"rec", "kl"}  # no (B, D) kl_per_dim among the per-example terms
    assert all(value.shape == (3,) for value in out.terms.values())


SPECS = {
    "bernoulli": (TINY, binarized),
    "discretized_gaussian": ({**TINY, "likelihood": "discretized_gaussian"}, mnist_images),
    "conv": ({"latent_dim": 4, "hidden_dims": [16], "conv_channels": [4, 8]}, binarized),
    "iaf": ({**TINY, "iaf_steps": 2, "iaf_hidden_dim": 16}, binarized),
    "af_prior": ({**TINY, "prior_flow_steps": 2, "prior_flow_hidden_dim": 16}, binarized),
    "iaf_and_af_prior": (
        {**TINY, "iaf_steps": 1, "iaf_hidden_dim": 16, "prior_flow_steps": 1, "prior_flow_hidden_dim": 16},
        binarized,
    ),
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_adam_steps_on_one_batch_lower_the_loss(name):
    params, data = SPECS[name]
    model = build(**params)
    x = data(32)

    def objective() -> float:
        torch.manual_seed(123)  # the same z draws before and after
        with torch.no_grad():
            return model.loss_terms(x).loss.item()

    before = objective()
    train(model, x, steps=25)
    after = objective()
    assert after < 0.8 * before, (before, after)
    model.eval()
    with torch.no_grad():
        samples = model.sample(3, generator())
        images = model.reconstruct(x[:3])
        q0 = model.posterior(x[:3])
    for batch in (samples, images):
        assert batch.shape == (3, *MNIST_SHAPE) and batch.min() >= 0 and batch.max() <= 1
    assert q0.mean.shape == q0.logvar.shape == (3, 4)


def test_closed_form_kl_equals_a_monte_carlo_estimate():
    model = build(SMALL_SHAPE, latent_dim=3, hidden_dims=[5])
    scale_parameters(model.posterior_head, 4.0)  # means and variances far from the prior's
    x = torch.rand(2, *SMALL_SHAPE)
    kl = model.loss_terms(x).terms["kl"]
    q0 = model.posterior(x)
    z = q0.rsample(200_000, generator=generator())  # (K, B, D)
    log_ratio = q0.log_prob(z) - standard_normal_log_prob(z)  # (K, B)
    standard_error = log_ratio.std(0) / math.sqrt(z.shape[0])
    assert kl.min() > 0.5  # not a trivial zero
    assert ((kl - log_ratio.mean(0)).abs() < 4 * standard_error).all()
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(q0.mean, q0.std), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    assert torch.allclose(kl, reference, rtol=1e-5)


@pytest.mark.parametrize("flows", [{}, {"iaf_steps": 1, "iaf_hidden_dim": 6, "prior_flow_steps": 1}])
def test_beta_changes_only_the_loss(flows):
    x = binarized(4)
    outputs = {}
    for beta in (1.0, 3.0):
        model = build(**TINY, **flows, beta=beta)
        torch.manual_seed(5)
        outputs[beta] = model.loss_terms(x)
    plain, weighted = outputs[1.0], outputs[3.0]
    for name in ("rec", "kl"):
        assert torch.equal(plain.terms[name], weighted.terms[name])
    assert torch.allclose(plain.loss, (plain.terms["rec"] + plain.terms["kl"]).mean())
    assert torch.allclose(weighted.loss, (plain.terms["rec"] + 3.0 * plain.terms["kl"]).mean())
    assert not torch.allclose(plain.loss, weighted.loss)


def test_iw_bound_is_above_the_elbo_and_rises_with_k():
    x = binarized(32)
    model = train(build(**TINY), x, steps=40).eval()
    with torch.no_grad():
        log_weights = model.log_importance_weights(x, 400, generator())  # (K, B)
        torch.manual_seed(9)
        elbo_from_terms = torch.stack([-sum(model.loss_terms(x).terms.values()) for _ in range(50)])  # (50, B)
    assert log_weights.shape == (400, 32)
    elbo = log_weights.mean(0)  # L_1: E_q[log w], (B,)
    # the one-sample ELBO of the training terms (closed-form KL) and E_q[log w] estimate the same bound
    gap = elbo_from_terms.mean() - elbo.mean()
    tolerance = 4 * math.sqrt(elbo_from_terms.mean(1).var() / 50 + log_weights.mean(1).var() / 400)
    assert abs(gap) < tolerance, (gap, tolerance)
    bounds = []
    for k in (1, 4, 20, 100):
        groups = log_weights.view(400 // k, k, 32)  # disjoint groups of k samples
        bounds.append(torch.stack([iw_log_likelihood(group) for group in groups]).mean())
    assert bounds[0] == pytest.approx(elbo.mean().item(), rel=1e-5)
    assert all(a < b for a, b in itertools.pairwise(bounds)), bounds
    assert bounds[-1] - bounds[0] > 1.0  # nats: the bound tightens visibly on a briefly trained model


def test_iaf_log_det_equals_the_autograd_jacobian():
    model = build(SMALL_SHAPE, latent_dim=3, hidden_dims=[5], iaf_steps=2, iaf_hidden_dim=7)
    scale_parameters(model.iaf, 3.0)
    x = torch.rand(2, *SMALL_SHAPE)
    _, features = model.infer(x)  # (B, F)
    z0 = torch.randn(2, 3)
    _, log_det = model.posterior_flow(z0, features)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v, b=b: model.posterior_flow(v.unsqueeze(0), features[b : b + 1])[0].squeeze(0), z0[b]
        )  # (D, D)
        assert torch.allclose(log_det[b], torch.linalg.slogdet(jac).logabsdet, atol=1e-5)
    assert log_det.abs().min() > 0.1  # a real volume change
    z_many, log_det_many = model.posterior_flow(torch.randn(6, 2, 3), features)  # K samples per image
    assert z_many.shape == (6, 2, 3) and log_det_many.shape == (6, 2)


def grid_2d(limit: float, points: int) -> tuple[torch.Tensor, float]:
    """A square grid over [−limit, limit]², (points², 2) in float64, and the cell area."""
    axis = torch.linspace(-limit, limit, points, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    return zz, float(axis[1] - axis[0]) ** 2


def test_af_prior_is_a_normalized_density_that_sampling_inverts():
    model = build(SMALL_SHAPE, latent_dim=2, hidden_dims=[5], prior_flow_steps=2, prior_flow_hidden_dim=8).double()
    prior = model.prior_flow  # as initialized: already far from N(0, I), with light enough tails for the grid
    # the inverse (D sequential passes per step) and the forward pass round-trip
    noise = torch.randn(7, 2, dtype=torch.float64)
    z = prior.from_noise(noise)
    assert torch.allclose(prior.to_noise(z)[0], noise, atol=1e-9)
    assert torch.allclose(prior.from_noise(prior.to_noise(noise)[0]), noise, atol=1e-9)
    # log|det ∂ε/∂z| against autograd
    for point in z:
        jac = torch.autograd.functional.jacobian(lambda v: prior.to_noise(v.unsqueeze(0))[0].squeeze(0), point)
        assert torch.allclose(prior.to_noise(point.unsqueeze(0))[1], torch.linalg.slogdet(jac).logabsdet)
    # ∫ p(z) dz = 1 on a grid, and p is not just N(0, I)
    with torch.no_grad():
        zz, cell = grid_2d(limit=14.0, points=701)
        log_density = model.log_prior(zz)  # (N,)
        density = log_density.exp() * cell
        assert density.sum().item() == pytest.approx(1.0, abs=1e-4)
        assert (log_density - standard_normal_log_prob(zz)).abs()[(zz.abs() < 3).all(1)].max() > 1.0
        # samples follow the density: first and second moments against the grid's
        samples = model.sample_prior(20_000, generator(3).manual_seed(3)).double()  # (N, 2)
        grid_mean = (density[:, None] * zz).sum(0)
        grid_square = (density[:, None] * zz**2).sum(0)
    sample_mean, sample_square = samples.mean(0), (samples**2).mean(0)
    assert ((sample_mean - grid_mean).abs() < 4 * samples.std(0) / math.sqrt(20_000)).all()
    assert ((sample_square - grid_square).abs() < 4 * (samples**2).std(0) / math.sqrt(20_000)).all()


def test_iw_estimate_is_exact_with_a_flow_posterior_and_a_flow_prior():
    """With exact densities E_q[w] = p(x): the K-sample estimate converges to log p(x) computed by
    quadrature over a 2-D latent space; a missing or wrong log-determinant would be off by far more."""
    shape = (1, 2, 2)
    model = build(
        shape, latent_dim=2, hidden_dims=[6], iaf_steps=2, iaf_hidden_dim=8, prior_flow_steps=2, prior_flow_hidden_dim=8
    ).double()
    # flows as initialized (scaled up, their gates shrink space so much that q0's samples miss part of
    # the posterior: heavy-tailed weights); a sharper decoder; a wide q0 keeps the weights' variance finite
    scale_parameters(model.decoder, 2.0)
    with torch.no_grad():
        model.posterior_head.bias[2:] += math.log(16.0)
    x = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [1.0, 0.0]]]], dtype=torch.float64)
    with torch.no_grad():
        zz, cell = grid_2d(limit=16.0, points=801)
        joint = model.log_likelihood(x, zz[:, None, :].expand(-1, 2, -1)) + model.log_prior(zz)[:, None]  # (N, B)
        exact = torch.logsumexp(joint, dim=0) + math.log(cell)  # log p(x), (B,)
        log_weights = model.log_importance_weights(x, 100_000, generator(1))  # (K, B)
        q0, features = model.infer(x)
        _, iaf_log_det = model.posterior_flow(q0.rsample(1000, generator(2)), features)
        _, prior_log_det = model.prior_flow.to_noise(torch.randn(1000, 2, dtype=torch.float64))
    estimate, standard_error = iw_log_likelihood(log_weights), iw_monte_carlo_se(log_weights)
    assert ((estimate - exact).abs() < 4 * standard_error + 1e-3).all(), (estimate, exact, standard_error)
    assert iaf_log_det.abs().mean() > 50 * standard_error.max()  # the test can see a log-det mistake
    assert prior_log_det.abs().mean() > 50 * standard_error.max()


def test_discretized_gaussian_is_a_normalized_probability_mass():
    likelihood = DiscretizedGaussianLikelihood()
    levels = torch.arange(256, dtype=torch.float64) / 255
    x = levels.view(256, 1, 1, 1)  # every grey level once
    for mean in (-0.3, 0.0, 0.2, 0.5, 1.0, 1.4):
        for log_scale in (-9.0, -5.0, -2.0, 0.0, 3.0):
            params = torch.tensor([mean, log_scale], dtype=torch.float64).view(1, 2, 1, 1).expand(256, -1, -1, -1)
            log_mass = likelihood.log_prob(params, x)  # (256,)
            assert torch.logsumexp(log_mass, 0).item() == pytest.approx(0.0, abs=1e-9)
            scale = math.exp(log_scale)
            upper = torch.special.ndtr((levels[1:-1] + 0.5 / 255 - mean) / scale)
            lower = torch.special.ndtr((levels[1:-1] - 0.5 / 255 - mean) / scale)
            direct = upper - lower  # Φ(b) − Φ(a) where it does not cancel badly
            ok = direct > 1e-8
            assert torch.allclose(log_mass[1:-1][ok], direct[ok].log(), rtol=1e-6)
            expected_mean = (log_mass.exp() * levels).sum()
            assert likelihood.mean(params[:1]).item() == pytest.approx(expected_mean.item(), abs=1e-9)
    # samples follow the mass
    params = torch.tensor([0.3, math.log(0.01)]).view(1, 2, 1, 1).expand(40_000, -1, -1, -1)
    samples = likelihood.sample(params, generator(4))  # (N, 1, 1, 1)
    frequencies = torch.bincount((samples.flatten() * 255).round().long(), minlength=256).double() / 40_000
    mass = likelihood.log_prob(params[:1].double().expand(256, -1, -1, -1), x).exp()
    assert ((frequencies - mass).abs() <= 4 * (mass * (1 - mass) / 40_000).sqrt() + 1e-4).all()
    # float32 stays finite, with finite gradients, far into the tails
    raw = torch.cat([torch.randn(64, 1, 3, 3) * 5, torch.rand(64, 1, 3, 3) * 16 - 12], dim=1).requires_grad_()
    images = torch.randint(0, 256, (64, 1, 3, 3)).float() / 255
    log_prob = likelihood.log_prob(raw, images)
    log_prob.sum().backward()
    assert torch.isfinite(log_prob).all() and torch.isfinite(raw.grad).all()


def test_bernoulli_log_prob_matches_torch():
    logits = torch.randn(3, 1, 4, 5)
    x = torch.randint(0, 2, (3, 1, 4, 5)).float()
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum((1, 2, 3))
    assert torch.allclose(BernoulliLikelihood().log_prob(logits, x), expected)


def test_posterior_is_q0_and_encode_applies_the_flow():
    x = binarized(3)
    plain, flow = build(**TINY), build(**TINY, iaf_steps=1, iaf_hidden_dim=8)
    assert torch.equal(plain.encode(x), plain.posterior(x).mean)
    q0, features = flow.infer(x)
    assert torch.equal(flow.posterior(x).mean, q0.mean)
    assert torch.allclose(flow.encode(x), flow.posterior_flow(q0.mean, features)[0])
    assert not torch.allclose(flow.encode(x), q0.mean)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"latent_dim": 1, "iaf_steps": 1}, "flows need latent_dim ≥ 2"),
        ({"latent_dim": 1, "prior_flow_steps": 2}, "flows need latent_dim ≥ 2"),
        ({"latent_dim": 0}, "latent_dim must be ≥ 1"),
        ({"beta": -0.5}, "beta must be ≥ 0"),
        ({"iaf_steps": -1}, "iaf_steps and prior_flow_steps must be ≥ 0"),
        ({"iaf_hidden_dim": 0, "iaf_steps": 1}, "iaf_hidden_dim"),
        ({"likelihood": "gaussian"}, "is not one of"),
        ({"conv_channels": [4, 4, 4]}, "divisible by 8"),
        ({"hidden_dims": [200, 0]}, "hidden_dims"),
    ],
)
def test_bad_values_are_one_line_errors(params, message):
    with pytest.raises(TextVAEError, match=message) as info:
        build(**params)
    assert "\n" not in str(info.value)
