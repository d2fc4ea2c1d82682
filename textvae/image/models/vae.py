"""The image VAE (Kingma & Welling 2014), with an optional IAF posterior and an optional
autoregressive-flow prior, and the importance-weighted bound for evaluation.

Model:  p(x, z) = p(z) p(x|z),  q(z|x) from an encoder; ELBO = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)).
Per-example terms, (B,), in nats:
    rec = −log p(x|z) at one z ~ q(z|x)   (``likelihoods.py``: Bernoulli or discretized Gaussian)
    kl  = KL(q0(z|x) ‖ N(0, I)) in closed form when both are Gaussian (no flows), otherwise the
          one-sample estimate log q(z|x) − log p(z) at the same z.
``loss`` = mean(rec + β·kl) (β-VAE, Higgins et al. 2017); β never touches ``terms``. KL per
dimension is not a per-example term: it is ``posterior(x).kl_per_dim()`` (closed form, for q0).

IAF posterior (Kingma et al. 2016, ``textvae.flows.IAFStep``, Eq. 14): z0 ~ q0 = N(μ(x), σ²(x)),
z_t = σ_t ⊙ z_{t−1} + (1 − σ_t) ⊙ m_t with [m_t, s_t] = MADE(z_{t−1}, h(x)), and
    log q(z_T|x) = log q0(z0|x) − Σ_t Σ_d log σ_{t,d}.
``posterior(x)`` is the Gaussian q0: active units and mutual information are measured on q0
when a flow is on (the flow has no closed-form mean or density in z_T).

Autoregressive-flow prior ("AF prior", Chen et al. 2017, VLAE §3): a bijection ε = f(z),
ε ~ N(0, I), built from context-free ``IAFStep`` s applied in the density direction,
    ε_t = σ_t ⊙ ε_{t−1} + (1 − σ_t) ⊙ m_t,  [m_t, s_t] = MADE(ε_{t−1}),  ε_0 = z,
    log p(z) = log N(ε_T; 0, I) + Σ_t Σ_d log σ_{t,d}
in one parallel pass; sampling inverts each step dimension by dimension (D sequential passes).

Importance weights (Burda et al. 2015, Eq. 8): log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x)
with z_k ~ q(z|x), exact densities for the flow posterior and the flow prior, so
    log p(x) ≥ L_K = E[log (1/K) Σ_k w_k],  L_1 = ELBO ≤ L_K ≤ L_{K+1}.

Defaults: the one-stochastic-layer MNIST model of Burda et al. 2015 (encoder 784-200-200-2·50,
decoder 50-200-200-784, tanh, Bernoulli output), so that recipe is just ``type = "vae"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from textvae.distributions import DiagGaussian, standard_normal_log_prob
from textvae.errors import TextVAEError
from textvae.flows import IAFStep
from textvae.image.models.base import IMAGE_CONTEXT, LossTerms
from textvae.image.models.likelihoods import LikelihoodName, build_likelihood
from textvae.image.models.networks import Activation, ImageDecoder, ImageEncoder
from textvae.registry import register


def invert_iaf_step(step: IAFStep, output: Tensor, context: Tensor | None = None) -> Tensor:
    """The z with step(z, context)[0] == output, (…, B, D): D sequential MADE passes, pass d fixing
    z_d = (u_d − (1 − σ_d) m_d) / σ_d, where σ_d, m_d depend only on the already fixed z_<d."""
    target = output.flip(-1)  # undo the step's order reversal: target = σ ⊙ z + (1 − σ) ⊙ m
    latent_dim = target.shape[-1]
    position = torch.arange(latent_dim, device=target.device)
    z = torch.zeros_like(target)
    for d in range(latent_dim):
        shift, scale = step.made(z, context)  # (…, B, D) each
        gate = torch.sigmoid(scale[..., d] + step.forget_bias)
        z_d = (target[..., d] - (1 - gate) * shift[..., d]) / gate  # (…, B)
        z = torch.where(position == d, z_d.unsqueeze(-1), z)
    return z


class AutoregressiveFlowPrior(nn.Module):
    """p(z) through an autoregressive flow ε = f(z) to N(0, I) (Chen et al. 2017); see the module docstring."""

    def __init__(self, latent_dim: int, steps: int, hidden_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.steps = nn.ModuleList(IAFStep(latent_dim, 0, hidden_dim) for _ in range(steps))

    def to_noise(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """ε = f(z) and log|det ∂ε/∂z|: (…, B, D) and (…, B)."""
        log_det = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            z, step_log_det = step(z, None)
            log_det = log_det + step_log_det.sum(-1)
        return z, log_det

    def from_noise(self, noise: Tensor) -> Tensor:
        """z = f⁻¹(ε), (…, B, D): each step inverted dimension by dimension, last step first."""
        z = noise
        for step in reversed(self.steps):
            z = invert_iaf_step(step, z)
        return z

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) = log N(f(z); 0, I) + log|det ∂f/∂z|, (…, B)."""
        noise, log_det = self.to_noise(z)
        return standard_normal_log_prob(noise) + log_det


@register("image_model", "vae", context=IMAGE_CONTEXT)
class VAE(nn.Module):
    """A VAE for images; see the module docstring for the equations.

    ``hidden_dims`` / ``conv_channels`` / ``activation``: the encoder body and its mirrored decoder
    (``networks.py``; ``conv_channels = [32, 64]`` gives a small conv encoder/decoder).
    ``likelihood``: "bernoulli" (binarized data) or "discretized_gaussian" (8-bit grey levels; a
    probability mass over 256 bins, so bits/dim are comparable with the literature).
    ``iaf_steps``: IAF steps on the posterior (0: the Gaussian q0), MADE width ``iaf_hidden_dim``,
    conditioned on the encoder's last features h(x).
    ``prior_flow_steps``: autoregressive-flow steps in the prior (0: N(0, I)), MADE width
    ``prior_flow_hidden_dim``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int = 50,
        hidden_dims: tuple[int, ...] = (200, 200),
        conv_channels: tuple[int, ...] = (),
        activation: Activation = "tanh",
        likelihood: LikelihoodName = "bernoulli",
        beta: float = 1.0,
        iaf_steps: int = 0,
        iaf_hidden_dim: int = 200,
        prior_flow_steps: int = 0,
        prior_flow_hidden_dim: int = 200,
    ):
        super().__init__()
        if latent_dim < 1:
            raise TextVAEError(f"vae: latent_dim must be ≥ 1, got {latent_dim}")
        if beta < 0:
            raise TextVAEError(f"vae: beta must be ≥ 0, got {beta}")
        if iaf_steps < 0 or prior_flow_steps < 0:
            raise TextVAEError(f"vae: iaf_steps and prior_flow_steps must be ≥ 0, got {iaf_steps}, {prior_flow_steps}")
        if iaf_hidden_dim < 1 or prior_flow_hidden_dim < 1:
            raise TextVAEError("vae: iaf_hidden_dim and prior_flow_hidden_dim must be ≥ 1")
        if (iaf_steps or prior_flow_steps) and latent_dim < 2:
            raise TextVAEError("vae: flows need latent_dim ≥ 2 (an autoregressive flow over one dimension is affine)")
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.beta = beta
        self.likelihood = build_likelihood(likelihood)
        self.encoder = ImageEncoder(self.image_shape, tuple(hidden_dims), activation, tuple(conv_channels))
        self.posterior_head = nn.Linear(self.encoder.feature_dim, 2 * latent_dim)  # μ and log σ²
        self.iaf = nn.ModuleList(
            IAFStep(latent_dim, self.encoder.feature_dim, iaf_hidden_dim) for _ in range(iaf_steps)
        )
        self.prior_flow = AutoregressiveFlowPrior(latent_dim, prior_flow_steps, prior_flow_hidden_dim)
        output_channels = self.image_shape[0] * self.likelihood.params_per_channel
        self.decoder = ImageDecoder(
            latent_dim, self.image_shape, output_channels, tuple(hidden_dims), activation, tuple(conv_channels)
        )

    @property
    def gaussian_kl(self) -> bool:
        """Whether KL(q ‖ p) has a closed form: both q and p Gaussian (no flows)."""
        return len(self.iaf) == 0 and len(self.prior_flow.steps) == 0

    # --- inference ---------------------------------------------------------------------------
    def infer(self, x: Tensor) -> tuple[DiagGaussian, Tensor]:
        """q0(z|x) (B, D) and the encoder features h(x) (B, F) that condition the IAF."""
        features = self.encoder(x)  # (B, F)
        mean, logvar = self.posterior_head(features).chunk(2, dim=-1)  # (B, D) each
        return DiagGaussian(mean, logvar), features

    def posterior(self, x: Tensor) -> DiagGaussian:
        """The Gaussian q0(z|x), (B, D); with an IAF on, the distribution the flow starts from."""
        return self.infer(x)[0]

    def posterior_flow(self, z0: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """z_T = IAF(z0; h) and Σ_t Σ_d log σ_{t,d} = log|det ∂z_T/∂z0|: (…, B, D) and (…, B)."""
        z, log_det = z0, z0.new_zeros(z0.shape[:-1])
        for step in self.iaf:
            z, step_log_det = step(z, features)
            log_det = log_det + step_log_det.sum(-1)
        return z, log_det

    def sample_posterior(
        self, x: Tensor, num_samples: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, DiagGaussian]:
        """z ~ q(z|x) and log q(z|x): (B, D) and (B,), or (K, B, D) and (K, B); and q0."""
        q0, features = self.infer(x)
        z0 = q0.rsample(num_samples, generator=generator)
        z, log_det = self.posterior_flow(z0, features)
        return z, q0.log_prob(z0) - log_det, q0

    # --- generative model --------------------------------------------------------------------
    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z), (…, B): N(0, I), or the AF prior's exact density."""
        return self.prior_flow.log_prob(z)  # with no steps, f is the identity: log N(z; 0, I)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) per image: z (…, B, D) → (…, B)."""
        leading = z.shape[:-1]
        params = self.decoder(z.reshape(-1, self.latent_dim))  # (…·B, P·C, H, W)
        images = x.expand(*leading[:-1], *x.shape).reshape(-1, *x.shape[1:])  # (…·B, C, H, W)
        return self.likelihood.log_prob(params, images).view(leading)

    # --- the contract ------------------------------------------------------------------------
    def loss_terms(self, x: Tensor, step: int = 0) -> LossTerms:
        z, log_q, q0 = self.sample_posterior(x)  # (B, D), (B,)
        rec = -self.log_likelihood(x, z)  # (B,)
        kl = q0.kl_per_dim().sum(-1) if self.gaussian_kl else log_q - self.log_prior(z)  # (B,)
        return LossTerms(loss=(rec + self.beta * kl).mean(), terms={"rec": rec, "kl": kl})

    def log_importance_weights(self, x: Tensor, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x), z_k ~ q(z|x): (K, B), in nats."""
        z, log_q, _ = self.sample_posterior(x, num_samples, generator)  # (K, B, D), (K, B)
        return self.log_likelihood(x, z) + self.log_prior(z) - log_q

    def encode(self, x: Tensor) -> Tensor:
        """The posterior's centre in the decoder's latent space, (B, D): μ(x), pushed through the IAF."""
        q0, features = self.infer(x)
        return self.posterior_flow(q0.mean, features)[0]

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p(x|z), (B, C, H, W) in [0, 1]."""
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))  # (B, C, H, W)

    def sample_prior(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z), (N, D); with the AF prior D sequential passes per flow step."""
        like = self.posterior_head.weight  # the model's dtype and device
        noise = torch.randn((num, self.latent_dim), generator=generator, dtype=like.dtype, device=like.device)  # (N, D)
        return self.prior_flow.from_noise(noise)

    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        """Mean images of p(x|z) for z ~ p(z), (N, C, H, W) in [0, 1]."""
        return self.decode(self.sample_prior(num, generator))
