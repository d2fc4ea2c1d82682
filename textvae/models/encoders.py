"""The LSTM inference network q(z|x) = N(mean, diag(exp(logvar)))."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from textvae.distributions import DiagGaussian
from textvae.models.init import uniform_init
from textvae.registry import register


@register("encoder", "lstm", context=("vocab_size", "latent_dim", "pad_id"))
class LSTMEncoder(nn.Module):
    """Embedding → LSTM over BOS w_1..w_n EOS → final hidden state(s) → linear → (mean, logvar).

    With ``bidirectional``, the last layer's final forward and backward states are concatenated;
    that summary is also returned as the context of posterior flows (IAF, Kingma et al. 2016).
    """

    def __init__(
        self,
        vocab_size: int,
        latent_dim: int,
        pad_id: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        weight_init_range: float | None = 0.01,
        embed_init_range: float | None = 0.1,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(
            embed_dim,
            hidden_dim,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        directions = 2 if bidirectional else 1
        self.to_params = nn.Linear(hidden_dim * directions, 2 * latent_dim)
        self.directions = directions
        self.context_dim = hidden_dim * directions  # size of the summary handed to posterior flows
        uniform_init(self, weight_init_range, embed_init_range)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[DiagGaussian, Tensor]:
        """q(z|x) with (B, D) parameters, and the (B, context_dim) summary it was computed from."""
        embedded = self.embedding(tokens)  # (B, T, E)
        if self.directions == 1 and not (self.training and self.lstm.dropout > 0):
            # One direction: the state at each sentence's last real token is what a packed pass would
            # end with (the LSTM is causal and padding comes after it). Unpacked, the LSTM runs as one
            # fused kernel instead of a loop over time steps, the same arithmetic much faster.
            states, _ = self.lstm(embedded)  # (B, T, H)
            summary = states[torch.arange(len(lengths), device=tokens.device), lengths - 1]  # (B, H)
        else:  # bidirectional (the backward pass must start at the last real token), or inter-layer dropout
            packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h_n, _) = self.lstm(packed)  # h_n: (layers * directions, B, H)
            last = h_n[-self.directions :]  # (directions, B, H)
            summary = torch.cat(list(last), dim=-1)  # (B, directions * H)
        mean, logvar = self.to_params(summary).chunk(2, dim=-1)  # (B, D) each
        return DiagGaussian(mean, logvar), summary
