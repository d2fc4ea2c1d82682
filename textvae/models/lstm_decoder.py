"""The LSTM decoder p(x|z), conditioned on z both ways used by He et al. 2019.

- ``z_init_state``: the initial state is c0 = W z, h0 = tanh(c0) (every layer has its own W);
- ``z_concat_input``: z is concatenated to every input embedding.
With ``latent_dim = 0`` (the language model) neither applies and the state starts at zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from textvae.models.init import reinitialize, uniform_init
from textvae.registry import register

State = tuple[Tensor, Tensor]  # (h, c), each (layers, B, H)


@register("decoder", "lstm", context=("vocab_size", "latent_dim", "pad_id"))
class LSTMDecoder(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        latent_dim: int,
        pad_id: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        num_layers: int = 1,
        dropout_in: float = 0.0,
        dropout_out: float = 0.0,
        z_init_state: bool = True,
        z_concat_input: bool = True,
        weight_init_range: float | None = 0.01,
        embed_init_range: float | None = 0.1,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.z_init_state = z_init_state and latent_dim > 0
        self.z_concat_input = z_concat_input and latent_dim > 0
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.dropout_in = nn.Dropout(dropout_in)
        self.dropout_out = nn.Dropout(dropout_out)
        input_dim = embed_dim + (latent_dim if self.z_concat_input else 0)
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.z_to_cell = nn.Linear(latent_dim, num_layers * hidden_dim, bias=False) if self.z_init_state else None
        self.output = nn.Linear(hidden_dim, vocab_size)
        self.init_ranges = (weight_init_range, embed_init_range)
        uniform_init(self, *self.init_ranges)

    def reinitialize(self) -> None:
        """Draw fresh weights, as at construction (Li et al. 2019 reset the decoder after pretraining)."""
        reinitialize(self, *self.init_ranges)

    def initial_state(self, z: Tensor | None, batch_size: int) -> State | None:
        """c0 = W z, h0 = tanh(c0) per layer, or None (zeros) when z does not set the state."""
        if not self.z_init_state:
            return None
        c0 = self.z_to_cell(z).view(batch_size, self.num_layers, self.hidden_dim).transpose(0, 1)  # (L, B, H)
        return torch.tanh(c0).contiguous(), c0.contiguous()

    def _inputs(self, tokens: Tensor, z: Tensor | None) -> Tensor:
        embedded = self.dropout_in(self.embedding(tokens))  # (B, T, E)
        if self.z_concat_input:
            z_steps = z.unsqueeze(1).expand(-1, tokens.shape[1], -1)  # (B, T, D)
            embedded = torch.cat([embedded, z_steps], dim=-1)  # (B, T, E + D)
        return embedded

    def forward(self, tokens: Tensor, z: Tensor | None) -> Tensor:
        """Hidden states (B, T, H) for decoder inputs ``tokens`` (B, T); causal in T."""
        hidden, _ = self.lstm(self._inputs(tokens, z), self.initial_state(z, tokens.shape[0]))
        return self.dropout_out(hidden)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.output(hidden)  # (..., V)

    def step(self, tokens: Tensor, state: State | None, z: Tensor | None) -> tuple[Tensor, State]:
        """One generation step: ``tokens`` (B,) → next-token logits (B, V) and the carried state."""
        hidden, state = self.lstm(self._inputs(tokens.unsqueeze(1), z), state)  # hidden (B, 1, H)
        return self.logits(self.dropout_out(hidden[:, 0])), state

    def reorder_state(self, state: State | None, index: Tensor) -> State | None:
        """Select batch rows of a carried state (beam search)."""
        return None if state is None else (state[0][:, index], state[1][:, index])
