import torch

from tests.conftest import tiny_vae_spec
from textvae import metrics
from textvae.distributions import standard_normal_log_prob
from textvae.evaluation.importance import importance_log_weights
from textvae.flows import IAFStep
from textvae.models import build_model
from textvae.objective import elbo_terms
from textvae.remedies.iaf import IAFPosterior


def _jacobian(function, z):
    return torch.autograd.functional.jacobian(function, z)


def test_iaf_step_log_det_matches_the_autograd_jacobian_which_is_triangular():
    torch.manual_seed(0)
    step = IAFStep(latent_dim=4, context_dim=3, hidden_dim=9).double()
    for param in step.parameters():
        torch.nn.init.normal_(param, std=0.7)
    context = torch.randn(1, 3, dtype=torch.float64)
    z = torch.randn(1, 4, dtype=torch.float64)
    jacobian = _jacobian(lambda v: step(v.unsqueeze(0), context)[0].flip(-1)[0], z[0])  # in the input order
    assert torch.allclose(jacobian, torch.tril(jacobian))  # output d depends on inputs ≤ d only
    _, log_det = step(z, context)
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    assert sign > 0
    torch.testing.assert_close(log_det.sum(), log_abs_det)


def test_stacked_iaf_log_det_matches_autograd():
    torch.manual_seed(1)
    flow = IAFPosterior(latent_dim=4, context_dim=3, steps=3, hidden_dim=8).double()
    for param in flow.parameters():
        torch.nn.init.normal_(param, std=0.5)
    context = torch.randn(1, 3, dtype=torch.float64)
    z = torch.randn(1, 4, dtype=torch.float64)
    jacobian = _jacobian(lambda v: flow.posterior_sample(v.unsqueeze(0), context)[0][0], z[0])
    _, log_det = flow.posterior_sample(z, context)
    torch.testing.assert_close(log_det.sum(), torch.linalg.slogdet(jacobian)[1])


def test_vae_with_iaf_reports_a_monte_carlo_kl_and_exact_iw_weights(vocab, batch):
    torch.manual_seed(0)
    model = build_model(tiny_vae_spec(), vocab, [{"type": "iaf", "steps": 2, "hidden_dim": 8}]).eval()
    out = model(batch, generator=torch.Generator().manual_seed(3))
    terms = elbo_terms(out)
    assert out.log_q_per_dim is not None
    torch.testing.assert_close(terms.kl, terms.kl_per_dim.sum(-1))
    torch.testing.assert_close(terms.kl, out.log_q_per_dim.sum(-1) - standard_normal_log_prob(out.z))
    # K = 1 importance weight = the one-sample negative ELBO, through the flow
    log_weights = importance_log_weights(model, batch, model.infer(batch), 1, 1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(-metrics.iw_log_likelihood(log_weights), terms.rec + terms.kl)


def test_iaf_needs_two_dimensions():
    import pytest

    from textvae.errors import TextVAEError

    with pytest.raises(TextVAEError, match="latent_dim ≥ 2"):
        IAFPosterior(latent_dim=1, context_dim=3)
