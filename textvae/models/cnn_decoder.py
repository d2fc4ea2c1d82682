"""The dilated-CNN decoder p(x|z) of Yang et al. 2017: a context window that can be set between a
bag of words and an LSTM's whole prefix.

Inputs are word embeddings with z concatenated to every position, projected to ``channels``; then
residual blocks, each LayerNorm → ReLU → causal dilated convolution (kernel ``kernel_size``,
dilation d, left-padded by (k − 1)·d so position t sees only positions ≤ t) → dropout, added back to
its input. The last block's output goes through ``dropout_out`` to the softmax layer.

Presets (``preset = "scnn"`` ...) are the four dilation schedules of Yang et al. 2017 (Section 4.1,
as we read it: kernel 3, dilations doubling from 1 to 16 within a block of five layers):
- SCNN  (small):      1, 2, 4                       receptive field 15 words
- MCNN  (medium):     1, 2, 4, 8, 16                receptive field 63
- LCNN  (large):      (1, 2, 4, 8, 16) × 2          receptive field 125
- VLCNN (very large): (1, 2, 4, 8, 16) × 3          receptive field 187
The receptive field 1 + (k − 1)·Σ dilations is the number of positions (the current input
included) an output can see; it is logged when the model is built. ``dilations`` sets any other
schedule.

Generation keeps, per block, the last (k − 1)·d inputs of its convolution (``step``): one new
position costs one column per layer instead of recomputing the whole prefix, and gives exactly
what the full forward pass gives.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.errors import TextVAEError
from textvae.models.dropout import Dropout
from textvae.models.init import reinitialize, uniform_init
from textvae.registry import register

log = logging.getLogger(__name__)

PRESETS: dict[str, tuple[int, ...]] = {
    "scnn": (1, 2, 4),
    "mcnn": (1, 2, 4, 8, 16),
    "lcnn": (1, 2, 4, 8, 16) * 2,
    "vlcnn": (1, 2, 4, 8, 16) * 3,
}

State = list[Tensor]  # per block: its convolution's last (k − 1)·d inputs, (B, C, (k − 1)·d)


def receptive_field(kernel_size: int, dilations: tuple[int, ...]) -> int:
    """Positions an output sees, the current input included: 1 + (k − 1)·Σ d."""
    return 1 + (kernel_size - 1) * sum(dilations)


class CausalConvBlock(nn.Module):
    """x + Dropout(CausalConv_d(ReLU(LayerNorm(x)))), on (B, C, T)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel_size, dilation=dilation)
        self.dropout = Dropout(dropout)
        self.history = (kernel_size - 1) * dilation  # inputs before t the convolution reads

    def _activate(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(x.transpose(1, 2)).transpose(1, 2))  # LayerNorm over channels, (B, C, T)

    def forward(self, x: Tensor) -> Tensor:
        activated = F.pad(self._activate(x), (self.history, 0))  # zeros before the first position
        return x + self.dropout(self.conv(activated))  # (B, C, T)

    def step(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """One position: x (B, C, 1) and the cached inputs (B, C, history) → output (B, C, 1), new cache."""
        window = torch.cat([cache, self._activate(x)], dim=2)  # (B, C, history + 1)
        return x + self.dropout(self.conv(window)), window[:, :, 1:]


@register("decoder", "dilated_cnn", context=("vocab_size", "latent_dim", "pad_id"))
class DilatedCNNDecoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        latent_dim: int,
        pad_id: int,
        preset: Literal["scnn", "mcnn", "lcnn", "vlcnn"] | None = "mcnn",
        dilations: list[int] | None = None,  # instead of a preset
        kernel_size: int = 3,
        embed_dim: int = 512,
        channels: int = 512,
        dropout_in: float = 0.0,
        dropout: float = 0.0,  # inside every block
        dropout_out: float = 0.0,
        weight_init_range: float | None = None,  # None: PyTorch's default initialization
        embed_init_range: float | None = 0.1,
    ):
        super().__init__()
        if dilations is not None:
            schedule = tuple(dilations)
            name = "custom"
        elif preset is not None:
            schedule, name = PRESETS[preset], preset
        else:
            raise TextVAEError("dilated_cnn: set a preset (scnn, mcnn, lcnn, vlcnn) or dilations")
        if not schedule or any(d < 1 for d in schedule):
            raise TextVAEError(f"dilated_cnn: dilations must be a non-empty list of integers ≥ 1, got {list(schedule)}")
        if kernel_size < 2:
            raise TextVAEError(f"dilated_cnn: kernel_size must be ≥ 2, got {kernel_size}")
        self.latent_dim = latent_dim
        self.dilations = schedule
        self.kernel_size = kernel_size
        self.receptive_field = receptive_field(kernel_size, schedule)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout_in = Dropout(dropout_in)
        self.project_in = nn.Linear(embed_dim + latent_dim, channels)
        self.blocks = nn.ModuleList(CausalConvBlock(channels, kernel_size, d, dropout) for d in schedule)
        self.dropout_out = Dropout(dropout_out)
        self.output = nn.Linear(channels, vocab_size)
        self.init_ranges = (weight_init_range, embed_init_range)
        uniform_init(self, *self.init_ranges)
        log.info(
            "dilated CNN decoder (%s): %d blocks, kernel %d, dilations %s, receptive field %d words",
            name,
            len(schedule),
            kernel_size,
            list(schedule),
            self.receptive_field,
        )

    def reinitialize(self) -> None:
        """Draw fresh weights, as at construction (Li et al. 2019 reset the decoder after pretraining)."""
        reinitialize(self, *self.init_ranges)

    def _inputs(self, tokens: Tensor, z: Tensor | None) -> Tensor:
        """(B, T) tokens → (B, C, T) projected [embedding; z]."""
        embedded = self.dropout_in(self.embedding(tokens))  # (B, T, E)
        if self.latent_dim > 0:
            embedded = torch.cat([embedded, z.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1)  # (B, T, E + D)
        return self.project_in(embedded).transpose(1, 2)  # (B, C, T)

    def forward(self, tokens: Tensor, z: Tensor | None) -> Tensor:
        """Hidden states (B, T, C) for decoder inputs ``tokens`` (B, T); causal in T."""
        hidden = self._inputs(tokens, z)
        for block in self.blocks:
            hidden = block(hidden)
        return self.dropout_out(hidden.transpose(1, 2))

    def logits(self, hidden: Tensor) -> Tensor:
        return self.output(hidden)  # (..., V)

    @property
    def logits_layer(self) -> nn.Linear:
        """The linear layer ``logits`` applies: ``sequence_nll`` fuses it with the cross-entropy."""
        return self.output

    def initial_state(self, z: Tensor | None, batch_size: int) -> State:
        """Empty histories: the zeros the full pass pads with, (B, C, (k − 1)·d) per block."""
        weight = self.output.weight
        channels = weight.shape[1]
        return [weight.new_zeros(batch_size, channels, block.history) for block in self.blocks]

    def step(self, tokens: Tensor, state: State, z: Tensor | None) -> tuple[Tensor, State]:
        """One generation step: ``tokens`` (B,) → next-token logits (B, V) and the updated histories."""
        hidden = self._inputs(tokens.unsqueeze(1), z)  # (B, C, 1)
        new_state = []
        for block, cache in zip(self.blocks, state, strict=True):
            hidden, cache = block.step(hidden, cache)
            new_state.append(cache)
        return self.logits(self.dropout_out(hidden[:, :, 0])), new_state

    def reorder_state(self, state: State, index: Tensor) -> State:
        """Select batch rows of the histories (beam search)."""
        return [cache[index] for cache in state]
