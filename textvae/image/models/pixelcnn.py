"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders") over
maps of discrete codes, and ``vqvae_prior``: the learned prior of a trained VQ-VAE (stage 2).

The network models a code map (B, h, w) autoregressively in raster order,
    p(k) = Π_i p(k_i | k_<i [, condition]),   each factor a categorical over the K codes,
so the logits at position i may depend on codes at positions j < i only.

Two stacks remove the blind spot of the original PixelCNN (Sec. 2.2):
- the vertical stack sees whole rows: its k×k convolution is masked to rows ≤ the current one, and its
  features reach the horizontal stack shifted down by one row, so position (r, c) sees rows < r across
  the full kernel width, including the pixels above-right;
- the horizontal stack sees the current row: its 1×k convolution is masked to columns < c in the first
  layer (mask type A, which excludes the current code) and to columns ≤ c afterwards (mask type B).
Each layer is gated (Eq. 4 with the conditioning of Eq. 5):
    y = tanh(W_f ∗ x + V_f ∗ c) ⊙ σ(W_g ∗ x + V_g ∗ c)
where c is an optional conditioning map (B, C_c, h, w) read by 1×1 convolutions; the horizontal
stack adds the vertical one's features through a 1×1 convolution and keeps a residual connection
(not in the first layer, where it would pass the current code through).

An optional causal self-attention block after the gated layers (used by VQ-VAE-2's top prior) lets
every position read all earlier ones: position i attends to the features of positions j ≤ i, which
themselves depend on codes < j only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.checkpoint import resolve_checkpoint
from textvae.errors import TextVAEError
from textvae.image.models.base import IMAGE_CONTEXT, LossTerms
from textvae.registry import register


def vertical_mask(kernel_size: int) -> Tensor:
    """(k, k) mask keeping the rows above the centre and the centre row itself."""
    mask = torch.zeros(kernel_size, kernel_size)
    mask[: kernel_size // 2 + 1] = 1.0
    return mask


def horizontal_mask(kernel_size: int, mask_type: str) -> Tensor:
    """(1, k) mask keeping the columns left of the centre; type "B" also keeps the centre."""
    mask = torch.zeros(1, kernel_size)
    mask[:, : kernel_size // 2 + (1 if mask_type == "B" else 0)] = 1.0
    return mask


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose (kh, kw) kernel is multiplied by a fixed 0/1 mask."""

    def __init__(self, in_channels: int, out_channels: int, mask: Tensor):
        kernel_height, kernel_width = mask.shape
        super().__init__(in_channels, out_channels, (kernel_height, kernel_width))
        self.register_buffer("mask", mask[None, None], persistent=False)  # (1, 1, kh, kw)
        self.padding_sides = (kernel_width // 2, kernel_width // 2, kernel_height // 2, kernel_height // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, self.padding_sides), self.weight * self.mask, self.bias)


def gate(x: Tensor) -> Tensor:
    """(B, 2C, h, w) → tanh(first half) ⊙ σ(second half) (B, C, h, w)."""
    features, gates = x.chunk(2, dim=1)
    return torch.tanh(features) * torch.sigmoid(gates)


class GatedLayer(nn.Module):
    """One layer of both stacks: (vertical, horizontal) (B, C, h, w) each → the same shapes."""

    def __init__(self, channels: int, kernel_size: int, first: bool, condition_channels: int):
        super().__init__()
        self.first = first
        self.vertical = MaskedConv2d(channels, 2 * channels, vertical_mask(kernel_size))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal = MaskedConv2d(channels, 2 * channels, horizontal_mask(kernel_size, "A" if first else "B"))
        self.horizontal_out = nn.Conv2d(channels, channels, 1)
        self.condition = nn.Conv2d(condition_channels, 4 * channels, 1) if condition_channels > 0 else None

    def forward(self, vertical: Tensor, horizontal: Tensor, condition: Tensor | None) -> tuple[Tensor, Tensor]:
        vertical_pre = self.vertical(vertical)  # (B, 2C, h, w): row r sees rows ≤ r
        from_above = F.pad(vertical_pre, (0, 0, 1, 0))[:, :, :-1]  # (B, 2C, h, w): row r sees rows < r
        horizontal_pre = self.horizontal(horizontal) + self.vertical_to_horizontal(from_above)  # (B, 2C, h, w)
        if self.condition is not None:
            vertical_shift, horizontal_shift = self.condition(condition).chunk(2, dim=1)  # (B, 2C, h, w) each
            vertical_pre = vertical_pre + vertical_shift
            horizontal_pre = horizontal_pre + horizontal_shift
        horizontal_out = self.horizontal_out(gate(horizontal_pre))  # (B, C, h, w)
        if not self.first:
            horizontal_out = horizontal_out + horizontal
        return gate(vertical_pre), horizontal_out


class CausalSelfAttention(nn.Module):
    """x (B, C, h, w) → x + attention, position i (raster order) attending to positions j ≤ i.

    Pre-norm multi-head attention with a learned position embedding for the ``num_positions`` = h·w
    positions of a fixed map size."""

    def __init__(self, channels: int, heads: int, num_positions: int):
        super().__init__()
        if channels % heads:
            raise TextVAEError(f"attention_heads ({heads}) must divide channels ({channels})")
        self.heads = heads
        self.position = nn.Parameter(0.02 * torch.randn(num_positions, channels))  # (L, C)
        self.norm = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        sequence = x.flatten(2).transpose(1, 2)  # (B, L, C)
        query, key, value = self.qkv(self.norm(sequence + self.position)).chunk(3, dim=-1)  # (B, L, C) each

        def split(t: Tensor) -> Tensor:
            return t.view(batch, -1, self.heads, channels // self.heads).transpose(1, 2)  # (B, heads, L, C/heads)

        attended = F.scaled_dot_product_attention(split(query), split(key), split(value), is_causal=True)
        merged = attended.transpose(1, 2).reshape(batch, -1, channels)  # (B, L, C)
        return x + self.out(merged).transpose(1, 2).view(batch, channels, height, width)


class GatedPixelCNN(nn.Module):
    """codes (B, h, w) [, condition (B, C_c, h, w)] → logits (B, K, h, w); logits at i see codes < i only.

    ``attention_heads`` adds one causal self-attention block after the gated layers (it needs the map's
    ``num_positions`` = h·w)."""

    def __init__(
        self,
        num_codes: int,
        channels: int,
        num_layers: int,
        kernel_size: int,
        condition_channels: int = 0,
        attention_heads: int | None = None,
        num_positions: int = 0,
    ):
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise TextVAEError(f"kernel_size must be odd and at least 3, got {kernel_size}")
        if num_layers < 1 or channels < 1:
            raise TextVAEError(f"num_layers and channels must be positive, got {num_layers} and {channels}")
        self.num_codes = num_codes
        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(
            GatedLayer(channels, kernel_size, first=i == 0, condition_channels=condition_channels)
            for i in range(num_layers)
        )
        self.attention = (
            CausalSelfAttention(channels, attention_heads, num_positions) if attention_heads is not None else None
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, num_codes, 1)
        )

    def forward(self, codes: Tensor, condition: Tensor | None = None) -> Tensor:
        return self.logits_from_embedded(self.embedding(codes).permute(0, 3, 1, 2), condition)  # (B, K, h, w)

    def logits_from_embedded(self, embedded: Tensor, condition: Tensor | None = None) -> Tensor:
        """Embedded codes (B, C, h, w) → logits (B, K, h, w)."""
        vertical, horizontal = embedded, embedded
        for layer in self.layers:
            vertical, horizontal = layer(vertical, horizontal, condition)
        if self.attention is not None:
            horizontal = self.attention(horizontal)
        return self.head(horizontal)

    def nll(self, codes: Tensor, condition: Tensor | None = None) -> Tensor:
        """−log p(codes) per map (B,), in nats."""
        logits = self(codes, condition)  # (B, K, h, w)
        return F.cross_entropy(logits, codes, reduction="none").flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self,
        num: int,
        map_shape: tuple[int, int],
        generator: torch.Generator | None = None,
        condition: Tensor | None = None,
    ) -> Tensor:
        """Draw ``num`` code maps (num, h, w) one position at a time in raster order."""
        device = self.embedding.weight.device
        height, width = map_shape
        codes = torch.zeros(num, height, width, dtype=torch.long, device=device)
        sample_device = generator.device if generator is not None else device
        for row in range(height):
            for col in range(width):
                probs = torch.softmax(self(codes, condition)[:, :, row, col].float(), dim=1)  # (N, K)
                drawn = torch.multinomial(probs.to(sample_device), 1, generator=generator)  # (N, 1)
                codes[:, row, col] = drawn.squeeze(1).to(device)
        return codes


def load_stage_one(
    run: str, expected_type: str, image_shape: tuple[int, int, int], parameter: str, load_run: Callable[[Path], Any]
) -> nn.Module:
    """The trained stage-1 model of an image run directory (its ``best.pt``) or checkpoint file, frozen,
    in eval mode; read by ``load_run`` (``IMAGE_CONTEXT``: ``textvae.image.checkpoint.load_image_checkpoint``,
    checksummed, rebuilt from the checkpoint's own recipe, weights loaded strictly). One-line errors for a
    missing run, a run of another model type, or a run trained on images of another shape."""
    path = Path(run)
    if not path.exists():
        raise TextVAEError(f"{parameter} = {run!r}: no such run directory or checkpoint")
    loaded = load_run(resolve_checkpoint(path, "best"))
    found = loaded.recipe.model["type"]
    if found != expected_type:
        raise TextVAEError(f"{parameter} = {run!r}: the run trained a {found!r} model, not {expected_type!r}")
    model = loaded.model
    if tuple(model.image_shape) != tuple(image_shape):
        raise TextVAEError(
            f"{parameter} = {run!r}: stage 1 was trained on images of shape {tuple(model.image_shape)}, "
            f"this data has {tuple(image_shape)}"
        )
    model.requires_grad_(False)
    return model.eval()


@register("image_model", "vqvae_prior", context=IMAGE_CONTEXT)
class VQVAEPrior(nn.Module):
    """Stage 2 of VQ-VAE: a gated PixelCNN prior p(k) over the code maps of a trained, frozen ``vqvae`` run.

    ``vqvae_run`` names the stage-1 run directory (its ``best.pt``) or a checkpoint file. The frozen
    VQ-VAE is a submodule, so this model's checkpoints hold it too; rebuilding one still reads ``vqvae_run``.

    ``channels``, ``num_layers``, ``kernel_size``: the gated PixelCNN. L layers of k×k kernels let a
    position see up to L·(k−1)/2 + 1 rows above and L·(k−1)/2 columns to either side: the default 6 layers
    of 3×3 cover the whole past of a 7×7 map (28×28 images), as a test checks.

    Term: ``prior_nll`` = −log p(k(x)) per image (B,), in nats, k(x) the stage-1 codes of x.
    ``sample`` draws codes from the prior and decodes them with the stage-1 decoder.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        load_run: Callable[[Path], Any],
        vqvae_run: str,
        channels: int = 64,
        num_layers: int = 6,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.vqvae = load_stage_one(vqvae_run, "vqvae", image_shape, "vqvae_run", load_run)
        self.code_shape = self.vqvae.code_shape
        self.prior = GatedPixelCNN(self.vqvae.num_codes, channels, num_layers, kernel_size)

    def train(self, mode: bool = True) -> VQVAEPrior:
        """Train the prior only: the stage-1 model stays in eval mode (no codebook updates, no restarts)."""
        super().train(mode)
        self.vqvae.eval()
        return self

    def loss_terms(self, x: Tensor, step: int = 0) -> LossTerms:
        codes = self.vqvae.code_indices(x)  # (B, h, w), no gradient
        nll = self.prior.nll(codes)  # (B,)
        bits_per_code = float(nll.detach().mean()) / (math.log(2) * codes[0].numel())
        return LossTerms(loss=nll.mean(), terms={"prior_nll": nll}, stats={"bits_per_code": bits_per_code})

    @torch.no_grad()
    def sample(self, num: int, generator: torch.Generator | None = None) -> Tensor:
        codes = self.prior.sample(num, self.code_shape, generator)  # (N, h, w)
        return self.vqvae.decode_codes(codes)  # (N, C, H, W)
