"""VQ-VAE-2 (Razavi et al. 2019, "Generating Diverse High-Fidelity Images with VQ-VAE-2"): a two-level
hierarchy of codes (``vqvae2``, stage 1) and PixelCNN priors over both levels (``vqvae2_prior``, stage 2).

Stage 1 (Algorithm 1 and Fig. 2a):
    h_bottom = E_bottom(x)                         (B, H_d, h_b, w_b)
    e_top    = Quantize(E_top(h_bottom))           (B, D, h_t, w_t),  h_t = ⌈h_b / 2⌉
    e_bottom = Quantize(conv1×1([h_bottom, D_top(e_top)]))           (B, D, h_b, w_b)
    x̂        = D([e_bottom, upsample(e_top)])      (B, C, H, W)
so the top codes carry the global shape and the bottom codes, quantized with the top decoder's output
as context, the detail. Each level has its own codebook of K codes; the loss adds, per level, the
codebook and β-weighted commitment terms of VQ-VAE (see quantizer.py), with the EMA variant by default.

Map sizes for 28×28 images: ``bottom_downsample = 4`` (default) gives a 7×7 bottom and a 4×4 top map
(CPU-fast priors; the priors' default 6 layers of 3×3 see the whole past of both maps);
``bottom_downsample = 2`` gives 14×14 and 7×7, the paper's factor between levels, with 4× the bottom
prior's cost (its PixelCNN then needs ``num_layers = 13`` at 3×3 to see the whole past of a 14×14
map). The top map is made by a stride-2 3×3 convolution (⌈h_b / 2⌉ for odd sizes) and undone by a
transposed one whose output padding restores h_b exactly.

Stage 2 (Sec. 3.2): p(k_top) by a gated PixelCNN with a causal self-attention block after its gated
layers; p(k_bottom | k_top) by a conditional gated PixelCNN whose condition is a 3×3 convolution over
the top codes' learned embeddings, upsampled (nearest) to the bottom map. Both priors are one model,
trained together on the frozen stage-1 codes; −log p(k_top, k_bottom) = prior_nll_top + prior_nll_bottom.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.errors import TextVAEError
from textvae.image.models.base import IMAGE_CONTEXT, LossTerms
from textvae.image.models.pixelcnn import GatedPixelCNN, load_stage_one
from textvae.image.models.quantizer import Quantized, VectorQuantizer
from textvae.image.models.vqvae import (
    ConvDecoder,
    ConvEncoder,
    ResidualStack,
    check_image_shape,
    check_vq_settings,
    reconstruction_term,
)
from textvae.registry import register

FIGURE_COLUMNS = 8  # images per row in the figure grids


@register("image_model", "vqvae2", context=IMAGE_CONTEXT)
class VQVAE2(nn.Module):
    """Two-level VQ-VAE; each level has ``num_codes`` (K) codes of size ``code_dim`` (D).

    Terms (B,): ``rec``, ``commitment_top``, ``commitment_bottom`` (and ``codebook_top``,
    ``codebook_bottom`` with ``codebook_update="gradient"``). Stats: ``perplexity_top``,
    ``perplexity_bottom``, ``codes_used_top``, ``codes_used_bottom``.

    ``code_indices`` returns both maps flattened into one row per image, (B, h_t·w_t + h_b·w_b): top codes
    as they are, in [0, K), then bottom codes offset by K, in [K, 2K); ``num_codes`` = 2K is that range.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden_dim: int = 128,
        residual_hidden_dim: int = 32,
        num_residual_blocks: int = 2,
        code_dim: int = 64,
        num_codes: int = 512,
        bottom_downsample: Literal[2, 4] = 4,
        commitment_weight: float = 0.25,
        codebook_update: Literal["ema", "gradient"] = "ema",
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        dead_code_restart: bool = True,
        restart_unused_after: int = 20,
        reconstruction: Literal["bernoulli", "mse"] = "bernoulli",
    ):
        super().__init__()
        if bottom_downsample not in (2, 4):
            raise TextVAEError(f"bottom_downsample must be 2 or 4, got {bottom_downsample}")
        channels, height, width = check_image_shape(image_shape, bottom_downsample, "vqvae2")
        check_vq_settings(hidden_dim, residual_hidden_dim, num_residual_blocks, commitment_weight, reconstruction)
        bottom_shape = (height // bottom_downsample, width // bottom_downsample)
        top_shape = ((bottom_shape[0] + 1) // 2, (bottom_shape[1] + 1) // 2)
        if min(bottom_shape) < 2:
            raise TextVAEError(f"vqvae2: a {height}×{width} image is too small for two levels of codes")
        self.image_shape = (channels, height, width)
        self.bottom_shape, self.top_shape = bottom_shape, top_shape
        self.codes_per_level = num_codes
        self.num_codes = 2 * num_codes  # the range of code_indices
        self.commitment_weight = commitment_weight
        self.reconstruction = reconstruction

        steps = int(math.log2(bottom_downsample))
        residual = (residual_hidden_dim, num_residual_blocks)
        # a stride-2 3×3 conv gives ⌈h_b/2⌉; this output padding makes its transpose return exactly h_b
        output_padding = tuple(b - (2 * t - 1) for b, t in zip(bottom_shape, top_shape, strict=True))
        self.bottom_encoder = ConvEncoder(channels, hidden_dim, hidden_dim, *residual, steps)
        self.top_encoder = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1),
            ResidualStack(hidden_dim, *residual),
            nn.Conv2d(hidden_dim, code_dim, 1),
        )
        self.top_decoder = nn.Sequential(
            nn.Conv2d(code_dim, hidden_dim, 3, padding=1),
            ResidualStack(hidden_dim, *residual),
            nn.ConvTranspose2d(hidden_dim, code_dim, 3, stride=2, padding=1, output_padding=output_padding),
        )
        self.bottom_from_both = nn.Conv2d(hidden_dim + code_dim, code_dim, 1)
        self.upsample_top = nn.ConvTranspose2d(
            code_dim, code_dim, 3, stride=2, padding=1, output_padding=output_padding
        )
        quantizer = (
            num_codes,
            code_dim,
            codebook_update,
            ema_decay,
            ema_epsilon,
            dead_code_restart,
            restart_unused_after,
        )
        self.top_quantizer = VectorQuantizer(*quantizer)
        self.bottom_quantizer = VectorQuantizer(*quantizer)
        self.decoder = ConvDecoder(2 * code_dim, channels, hidden_dim, *residual, steps)

    def quantize(self, x: Tensor) -> tuple[Quantized, Quantized]:
        """x (B, C, H, W) → the top and bottom quantizations."""
        bottom_features = self.bottom_encoder(x)  # (B, H_d, h_b, w_b)
        top = self.top_quantizer(self.top_encoder(bottom_features))  # codes (B, h_t, w_t)
        top_context = self.top_decoder(top.straight_through)  # (B, D, h_b, w_b)
        bottom_z_e = self.bottom_from_both(torch.cat([bottom_features, top_context], dim=1))  # (B, D, h_b, w_b)
        return top, self.bottom_quantizer(bottom_z_e)

    def decoder_logits(self, top_embedded: Tensor, bottom_embedded: Tensor) -> Tensor:
        """Quantized maps (B, D, h_t, w_t) and (B, D, h_b, w_b) → logits (B, C, H, W)."""
        return self.decoder(torch.cat([bottom_embedded, self.upsample_top(top_embedded)], dim=1))

    def loss_terms(self, x: Tensor, step: int = 0) -> LossTerms:
        top, bottom = self.quantize(x)
        logits = self.decoder_logits(top.straight_through, bottom.straight_through)  # (B, C, H, W)
        terms = {
            "rec": reconstruction_term(logits, x, self.reconstruction),
            "commitment_top": top.commitment,
            "commitment_bottom": bottom.commitment,
        }
        per_example = terms["rec"] + self.commitment_weight * (top.commitment + bottom.commitment)  # (B,)
        if top.codebook is not None and bottom.codebook is not None:
            terms["codebook_top"], terms["codebook_bottom"] = top.codebook, bottom.codebook
            per_example = per_example + top.codebook + bottom.codebook
        stats = {
            "perplexity_top": top.perplexity,
            "perplexity_bottom": bottom.perplexity,
            "codes_used_top": float(top.codes_used),
            "codes_used_bottom": float(bottom.codes_used),
        }
        return LossTerms(loss=per_example.mean(), terms=terms, stats=stats)

    def end_of_step(self, step: int) -> dict[str, float]:
        return {
            "codes_restarted_top": float(self.top_quantizer.restart_dead_codes()),
            "codes_restarted_bottom": float(self.bottom_quantizer.restart_dead_codes()),
        }

    @torch.no_grad()
    def codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, C, H, W) → top codes (B, h_t, w_t) and bottom codes (B, h_b, w_b)."""
        top, bottom = self.quantize(x)
        return top.codes, bottom.codes

    @torch.no_grad()
    def code_indices(self, x: Tensor) -> Tensor:
        top, bottom = self.codes(x)
        return torch.cat([top.flatten(1), bottom.flatten(1) + self.codes_per_level], dim=1)  # (B, h_t·w_t + h_b·w_b)

    @torch.no_grad()
    def decode_codes(self, top: Tensor, bottom: Tensor) -> Tensor:
        """Top (B, h_t, w_t) and bottom (B, h_b, w_b) codes → images (B, C, H, W) in [0, 1]."""
        logits = self.decoder_logits(self.top_quantizer.embed(top), self.bottom_quantizer.embed(bottom))
        return torch.sigmoid(logits)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_codes(*self.codes(x))

    @torch.no_grad()
    def figures(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``levels``: (4, N, C, H, W), rows: the images; decoded from both levels; from the top codes
        alone (bottom embeddings set to zero); from the bottom codes alone (top set to zero). The decoder
        never saw a zeroed level in training: the one-level rows show what each level carries, not samples."""
        x = x[:FIGURE_COLUMNS]
        top, bottom = self.codes(x)
        top_embedded, bottom_embedded = self.top_quantizer.embed(top), self.bottom_quantizer.embed(bottom)
        rows = [
            x,
            torch.sigmoid(self.decoder_logits(top_embedded, bottom_embedded)),
            torch.sigmoid(self.decoder_logits(top_embedded, torch.zeros_like(bottom_embedded))),
            torch.sigmoid(self.decoder_logits(torch.zeros_like(top_embedded), bottom_embedded)),
        ]
        return {"levels": torch.stack(rows)}  # (4, N, C, H, W)


class TopCodeCondition(nn.Module):
    """Top codes (B, h_t, w_t) → a conditioning map (B, C, h_b, w_b): embed, upsample (nearest), 3×3 conv."""

    def __init__(self, num_codes: int, channels: int, bottom_shape: tuple[int, int]):
        super().__init__()
        self.bottom_shape = bottom_shape
        self.embedding = nn.Embedding(num_codes, channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, top_codes: Tensor) -> Tensor:
        embedded = self.embedding(top_codes).permute(0, 3, 1, 2)  # (B, C, h_t, w_t)
        return self.conv(F.interpolate(embedded, size=self.bottom_shape, mode="nearest"))  # (B, C, h_b, w_b)


@register("image_model", "vqvae2_prior", context=IMAGE_CONTEXT)
class VQVAE2Prior(nn.Module):
    """Stage 2 of VQ-VAE-2: p(k_top) p(k_bottom | k_top) over the codes of a trained, frozen ``vqvae2`` run.

    ``vqvae2_run`` names the stage-1 run directory (its ``best.pt``) or a checkpoint file; the frozen
    model is a submodule, saved with this one. Both priors use ``channels``, ``num_layers`` and
    ``kernel_size``; the top one adds a causal self-attention block with ``attention_heads`` heads.

    Terms (B,), nats per image: ``prior_nll_top`` = −log p(k_top), ``prior_nll_bottom`` =
    −log p(k_bottom | k_top), and their sum ``prior_nll`` (the loss is its batch mean).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        load_run: Callable[[Path], Any],
        vqvae2_run: str,
        channels: int = 64,
        num_layers: int = 6,
        kernel_size: int = 3,
        attention_heads: int = 4,
    ):
        super().__init__()
        self.vqvae2 = load_stage_one(vqvae2_run, "vqvae2", image_shape, "vqvae2_run", load_run)
        num_codes = self.vqvae2.codes_per_level
        top_positions = self.vqvae2.top_shape[0] * self.vqvae2.top_shape[1]
        if attention_heads < 1:
            raise TextVAEError(f"attention_heads must be positive, got {attention_heads}")
        self.top_prior = GatedPixelCNN(
            num_codes, channels, num_layers, kernel_size, attention_heads=attention_heads, num_positions=top_positions
        )
        self.top_condition = TopCodeCondition(num_codes, channels, self.vqvae2.bottom_shape)
        self.bottom_prior = GatedPixelCNN(num_codes, channels, num_layers, kernel_size, condition_channels=channels)

    def train(self, mode: bool = True) -> VQVAE2Prior:
        """Train the priors only: the stage-1 model stays in eval mode (no codebook updates, no restarts)."""
        super().train(mode)
        self.vqvae2.eval()
        return self

    def loss_terms(self, x: Tensor, step: int = 0) -> LossTerms:
        top, bottom = self.vqvae2.codes(x)  # (B, h_t, w_t), (B, h_b, w_b), no gradient
        nll_top = self.top_prior.nll(top)  # (B,)
        nll_bottom = self.bottom_prior.nll(bottom, self.top_condition(top))  # (B,)
        total = nll_top + nll_bottom
        terms = {"prior_nll": total, "prior_nll_top": nll_top, "prior_nll_bottom": nll_bottom}
        return LossTerms(loss=total.mean(), terms=terms)

    @torch.no_grad()
    def sample_bottom(self, top: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Bottom codes (N, h_b, w_b) drawn from p(k_bottom | k_top = ``top``)."""
        return self.bottom_prior.sample(len(top), self.vqvae2.bottom_shape, generator, self.top_condition(top))

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        top = self.top_prior.sample(num, self.vqvae2.top_shape, generator)  # (N, h_t, w_t)
        return self.vqvae2.decode_codes(top, self.sample_bottom(top, generator))  # (N, C, H, W)

    @torch.no_grad()
    def figures(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``bottom_resampled``: (5, N, C, H, W), rows: the images; their stage-1 reconstructions; three
        decodings of their top codes with bottom codes drawn from p(k_bottom | k_top): what the bottom adds."""
        x = x[:FIGURE_COLUMNS]
        top, bottom = self.vqvae2.codes(x)
        rows = [x, self.vqvae2.decode_codes(top, bottom)]
        rows += [self.vqvae2.decode_codes(top, self.sample_bottom(top, generator)) for _ in range(3)]
        return {"bottom_resampled": torch.stack(rows)}  # (5, N, C, H, W)
