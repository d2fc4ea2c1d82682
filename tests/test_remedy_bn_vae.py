import torch

from textvae.distributions import DiagGaussian
from textvae.remedies.bn_vae import BNVAE


def test_batch_statistics_of_the_normalized_mean_and_the_kl_floor():
    torch.manual_seed(0)
    remedy = BNVAE(latent_dim=4, gamma=0.6)
    with torch.no_grad():
        remedy.shift.copy_(torch.tensor([0.0, 0.5, -1.0, 0.2]))
    posterior = DiagGaussian(3.0 + 5.0 * torch.randn(512, 4), torch.full((512, 4), -8.0))  # nearly collapsed
    out = remedy.transform_posterior(posterior)
    torch.testing.assert_close(out.mean.mean(0), remedy.shift.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mean.std(0, unbiased=False), torch.full((4,), 0.6), atol=1e-3, rtol=0)
    assert torch.equal(out.logvar, posterior.logvar)
    assert float(out.kl_per_dim().sum(-1).mean()) >= 4 * 0.6**2 / 2  # Zhu et al. 2020, Eq. 6
    # at evaluation the running statistics are used, so one sentence alone is normalized the same way
    remedy.eval()
    single = remedy.transform_posterior(posterior[:1])
    assert single.mean.shape == (1, 4)


def test_shift_is_learned_and_gamma_is_fixed():
    remedy = BNVAE(latent_dim=3, gamma=0.5)
    assert [name for name, _ in remedy.named_parameters()] == ["shift"]
