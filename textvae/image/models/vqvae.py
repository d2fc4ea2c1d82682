"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning"), stage 1: the autoencoder.

    x (B, C, H, W) ─► encoder ─► z_e (B, D, H/4, W/4) ─► nearest code e_k ─► decoder ─► logits (B, C, H, W)

Architecture (Sec. 4.1, at a CPU-friendly width): two strided 4×4 convolutions (stride 2), a 3×3
convolution and residual blocks (ReLU, 3×3 conv, ReLU, 1×1 conv); the decoder mirrors it with
transposed convolutions. A 28×28 image becomes a 7×7 map of codes.

Loss (Eq. 3), per example, then averaged over the batch:
    L = rec + ‖sg[z_e] − e‖² + β ‖z_e − sg[e]‖²,     β = ``commitment_weight`` (0.25 in the paper)
The codebook term is absent with ``codebook_update="ema"`` (Appendix A.1, see quantizer.py); the decoder's
gradient reaches the encoder straight through the quantization.

``rec`` is, per image, summed over pixels, with x̂ = sigmoid(decoder logits):
    reconstruction="bernoulli": −log p(x | z_q) = Σ BCE(x̂, x), in nats (x in [0, 1], exact for binary x)
    reconstruction="mse":        Σ (x̂ − x)², a squared error, not a likelihood

The paper's prior over codes is uniform during stage 1; a learned prior (gated PixelCNN over the codes,
stage 2) is the ``vqvae_prior`` model in pixelcnn.py, which is how this model gets ``sample``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.errors import TextVAEError
from textvae.image.models.base import IMAGE_CONTEXT, LossTerms
from textvae.image.models.quantizer import Quantized, VectorQuantizer
from textvae.registry import register


class ResidualStack(nn.Module):
    """``num_blocks`` × [x + conv1×1(ReLU(conv3×3(ReLU(x))))], then a ReLU; channels stay ``channels``."""

    def __init__(self, channels: int, hidden_channels: int, num_blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(channels, hidden_channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden_channels, channels, 1),
            )
            for _ in range(num_blocks)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return F.relu(x)


class ConvEncoder(nn.Module):
    """(B, in, H, W) → (B, out, H / 2^s, W / 2^s): s strided 4×4 convs, a 3×3 conv, residual blocks, a 1×1 conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_dim: int,
        residual_hidden_dim: int,
        num_residual_blocks: int,
        downsample_steps: int,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for step in range(downsample_steps):
            width = hidden_dim if step == downsample_steps - 1 else hidden_dim // 2
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.ReLU()]
            channels = width
        layers += [
            nn.Conv2d(channels, hidden_dim, 3, padding=1),
            ResidualStack(hidden_dim, residual_hidden_dim, num_residual_blocks),
            nn.Conv2d(hidden_dim, out_channels, 1),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ConvDecoder(nn.Module):
    """(B, in, h, w) → (B, out, h · 2^s, w · 2^s): a 3×3 conv, residual blocks, s transposed 4×4 convs."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_dim: int,
        residual_hidden_dim: int,
        num_residual_blocks: int,
        upsample_steps: int,
    ):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, hidden_dim, 3, padding=1),
            ResidualStack(hidden_dim, residual_hidden_dim, num_residual_blocks),
        ]
        channels = hidden_dim
        for step in range(upsample_steps):
            last = step == upsample_steps - 1
            width = out_channels if last else hidden_dim // 2
            layers.append(nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            channels = width
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def reconstruction_term(logits: Tensor, x: Tensor, kind: str) -> Tensor:
    """Per-image rec (B,) from decoder logits (B, C, H, W): Bernoulli NLL in nats, or the squared error."""
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)  # (B,)
    return (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)  # (B,)


def check_image_shape(image_shape: tuple[int, int, int], divisor: int, model: str) -> tuple[int, int, int]:
    """(C, H, W) with H and W multiples of ``divisor``, or a one-line error."""
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise TextVAEError(f"{model}: image_shape must be (C, H, W), got {tuple(image_shape)}")
    channels, height, width = (int(v) for v in image_shape)
    if height % divisor or width % divisor:
        raise TextVAEError(f"{model}: image height and width must be multiples of {divisor}, got {height}×{width}")
    return channels, height, width


def check_vq_settings(
    hidden_dim: int, residual_hidden_dim: int, num_residual_blocks: int, commitment_weight: float, reconstruction: str
) -> None:
    """The settings VQ-VAE and VQ-VAE-2 share, or a one-line error."""
    for name, value in (("hidden_dim", hidden_dim), ("residual_hidden_dim", residual_hidden_dim)):
        if value <= 0:
            raise TextVAEError(f"{name} must be positive, got {value}")
    if num_residual_blocks < 0 or commitment_weight < 0:
        raise TextVAEError("num_residual_blocks and commitment_weight must not be negative")
    if reconstruction not in ("bernoulli", "mse"):
        raise TextVAEError(f"reconstruction must be 'bernoulli' or 'mse', got {reconstruction!r}")


@register("image_model", "vqvae", context=IMAGE_CONTEXT)
class VQVAE(nn.Module):
    """VQ-VAE with K = ``num_codes`` codes of size D = ``code_dim`` on an (H/4, W/4) map.

    ``hidden_dim``, ``residual_hidden_dim``, ``num_residual_blocks``: encoder/decoder widths and depth;
    ``commitment_weight``: β; ``codebook_update``, ``ema_decay`` (γ), ``ema_epsilon`` (ε),
    ``dead_code_restart``, ``restart_unused_after``: the quantizer (quantizer.py); ``reconstruction``: rec.

    Terms (B,): ``rec`` (see the module docstring), ``commitment`` ‖z_e − sg[e]‖², and ``codebook``
    ‖sg[z_e] − e‖² when ``codebook_update="gradient"``. Stats: ``perplexity`` and ``codes_used`` of the
    batch's code usage. ``end_of_step`` restarts dead codes and returns ``codes_restarted``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden_dim: int = 128,
        residual_hidden_dim: int = 32,
        num_residual_blocks: int = 2,
        code_dim: int = 64,
        num_codes: int = 512,
        commitment_weight: float = 0.25,
        codebook_update: Literal["ema", "gradient"] = "ema",
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        dead_code_restart: bool = True,
        restart_unused_after: int = 20,
        reconstruction: Literal["bernoulli", "mse"] = "bernoulli",
    ):
        super().__init__()
        channels, height, width = check_image_shape(image_shape, 4, "vqvae")
        check_vq_settings(hidden_dim, residual_hidden_dim, num_residual_blocks, commitment_weight, reconstruction)
        self.image_shape = (channels, height, width)
        self.code_shape = (height // 4, width // 4)  # (h, w)
        self.num_codes = num_codes  # the range of code_indices
        self.commitment_weight = commitment_weight
        self.reconstruction = reconstruction
        blocks = (hidden_dim, residual_hidden_dim, num_residual_blocks, 2)
        self.encoder = ConvEncoder(channels, code_dim, *blocks)
        self.quantizer = VectorQuantizer(
            num_codes, code_dim, codebook_update, ema_decay, ema_epsilon, dead_code_restart, restart_unused_after
        )
        self.decoder = ConvDecoder(code_dim, channels, *blocks)

    def quantize(self, x: Tensor) -> tuple[Tensor, Quantized]:
        z_e = self.encoder(x)  # (B, D, h, w)
        return z_e, self.quantizer(z_e)

    def loss_terms(self, x: Tensor, step: int = 0) -> LossTerms:
        _, quantized = self.quantize(x)
        logits = self.decoder(quantized.straight_through)  # (B, C, H, W)
        terms = {"rec": reconstruction_term(logits, x, self.reconstruction), "commitment": quantized.commitment}
        per_example = terms["rec"] + self.commitment_weight * quantized.commitment  # (B,)
        if quantized.codebook is not None:
            terms["codebook"] = quantized.codebook
            per_example = per_example + quantized.codebook
        stats = {"perplexity": quantized.perplexity, "codes_used": float(quantized.codes_used)}
        return LossTerms(loss=per_example.mean(), terms=terms, stats=stats)

    def end_of_step(self, step: int) -> dict[str, float]:
        return {"codes_restarted": float(self.quantizer.restart_dead_codes())}

    @torch.no_grad()
    def code_indices(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) → codes (B, h, w), values in [0, num_codes)."""
        return self.quantizer.nearest_codes(self.encoder(x))

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """Codes (B, h, w) → images (B, C, H, W) in [0, 1] (the decoder's mean)."""
        return torch.sigmoid(self.decoder(self.quantizer.embed(codes)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_codes(self.code_indices(x))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The continuous encoder output z_e (B, D, h, w), a space to interpolate in."""
        return self.encoder(x)

    @torch.no_grad()
    def decode(self, z_e: Tensor) -> Tensor:
        """z_e (B, D, h, w) → images (B, C, H, W): quantized to the nearest codes first, as in training."""
        return self.decode_codes(self.quantizer.nearest_codes(z_e))
