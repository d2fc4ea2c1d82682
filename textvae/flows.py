"""Autoregressive flow pieces: MADE (Germain et al. 2015) and the IAF step (Kingma et al. 2016).

An IAF step maps z to z' with an autoregressive network conditioned on a context h:
    [m, s] = MADE(z, h),  σ = sigmoid(s + forget_bias),  z' = σ ⊙ z + (1 − σ) ⊙ m     (Eq. 14)
Output d depends only on z_<d (and h), so ∂z'/∂z is triangular with diagonal σ and
    log |det ∂z'/∂z| = Σ_d log σ_d.
The log-determinant is returned per dimension, (…, B, D), so a KL can be split per dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """z (…, B, D), context (B, C) → two outputs (…, B, D) each, output d a function of z_<d and h.

    Degrees follow Germain et al. 2015: inputs 1..D, hidden units cycle through 1..D−1, an output
    of degree d sees hidden units of degree < d.
    """

    def __init__(self, latent_dim: int, context_dim: int, hidden_dim: int):
        super().__init__()
        in_degree = torch.arange(1, latent_dim + 1)  # (D,)
        hidden_degree = torch.arange(hidden_dim) % max(latent_dim - 1, 1) + 1  # (H,)
        self.input_layer = MaskedLinear(latent_dim, hidden_dim, hidden_degree[:, None] >= in_degree[None, :])
        self.context_layer = nn.Linear(context_dim, hidden_dim, bias=False) if context_dim > 0 else None
        self.hidden_layer = MaskedLinear(hidden_dim, hidden_dim, hidden_degree[:, None] >= hidden_degree[None, :])
        output_mask = in_degree[:, None] > hidden_degree[None, :]  # (D, H)
        self.shift_layer = MaskedLinear(hidden_dim, latent_dim, output_mask)
        self.scale_layer = MaskedLinear(hidden_dim, latent_dim, output_mask)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.input_layer(z)  # (…, B, H)
        if self.context_layer is not None:
            hidden = hidden + self.context_layer(context)  # context (B, C) broadcasts over leading dims
        hidden = F.elu(self.hidden_layer(F.elu(hidden)))
        return self.shift_layer(hidden), self.scale_layer(hidden)


class IAFStep(nn.Module):
    """One inverse autoregressive flow step (Kingma et al. 2016, Eq. 14), then a reversal of the order."""

    def __init__(self, latent_dim: int, context_dim: int, hidden_dim: int, forget_bias: float = 1.0):
        super().__init__()
        self.made = MADE(latent_dim, context_dim, hidden_dim)
        self.forget_bias = forget_bias

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """z (…, B, D) → z' (…, B, D) and log|∂z'_d/∂z_d| per dimension (…, B, D), in z' order."""
        shift, scale = self.made(z, context)
        gate = torch.sigmoid(scale + self.forget_bias)
        z_new = gate * z + (1 - gate) * shift
        log_det = F.logsigmoid(scale + self.forget_bias)
        return z_new.flip(-1), log_det.flip(-1)  # reversed, so the next step conditions the other way
