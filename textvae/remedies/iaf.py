"""IAF posterior (Kingma et al. 2016): a diagonal Gaussian made richer by inverse autoregressive flow.

z0 ~ q0(z|x) = N(μ, σ²) from the encoder, then ``steps`` IAF steps conditioned on the encoder's
summary h (``textvae.flows.IAFStep``). log q(z_T|x) = log q0(z0|x) − Σ_t log|det ∂z_t/∂z_{t−1}|,
so the KL becomes a one-sample Monte-Carlo estimate log q(z_T|x) − log p(z_T) and IW-NLL uses
the flow density exactly. AU and MI are measured on q0 (the flow has no closed-form mean).
"""

from __future__ import annotations

from torch import Tensor, nn

from textvae.errors import TextVAEError
from textvae.flows import IAFStep
from textvae.registry import register
from textvae.remedies.base import REMEDY_CONTEXT, Remedy


@register("remedy", "iaf", context=REMEDY_CONTEXT)
class IAFPosterior(Remedy):
    part_of_inference = True
    is_posterior_flow = True

    def __init__(self, latent_dim: int, context_dim: int, steps: int = 2, hidden_dim: int = 64):
        super().__init__()
        if steps < 1 or hidden_dim < 1:
            raise TextVAEError(f"iaf: steps and hidden_dim must be ≥ 1, got {steps} and {hidden_dim}")
        if latent_dim < 2:
            raise TextVAEError("iaf: needs latent_dim ≥ 2 (an autoregressive flow over one dimension is affine)")
        self.steps = nn.ModuleList(IAFStep(latent_dim, context_dim, hidden_dim) for _ in range(steps))

    def posterior_sample(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        log_det = z.new_zeros(z.shape)
        for step in self.steps:
            z, step_log_det = step(z, context)
            log_det = step_log_det + log_det.flip(-1)  # keep per-dimension sums aligned with the new order
        return z, log_det
