"""The LSTM decoder p(x|z), conditioned on z both ways used by He et al. 2019.

- ``z_init_state``: the initial state is c0 = W z, h0 = tanh(c0) (every layer has its own W);
- ``z_concat_input``: z is concatenated to every input embedding.
With ``latent_dim = 0`` (the language model) neither applies and the state starts at zero.

Importance-weighted evaluation decodes each sentence under K samples z_k; ``sample_hidden_steps``
does that without repeating the work the samples share (the embedding side of the input projection).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textvae.models.dropout import Dropout
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
        self.dropout_in = Dropout(dropout_in)
        self.dropout_out = Dropout(dropout_out)
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

    @property
    def logits_layer(self) -> nn.Linear:
        """The linear layer ``logits`` applies: ``sequence_nll`` fuses it with the cross-entropy."""
        return self.output

    def sample_hidden_steps(self, tokens: Tensor, z: Tensor) -> Iterator[Tensor]:
        """Hidden states under K latent samples per sentence, one time step at a time.

        For decoder inputs ``tokens`` (B, T) and z (K, B, D), yields h_t (K, B, H) for t = 0 .. T−1:
        what ``forward(tokens, z_k)`` gives for every k (in eval mode), up to float rounding. The
        first layer's gate input W_ih [e_t; z_k] + b splits into W_e e_t + b, computed once per
        sentence and shared by the K samples, and W_z z_k, once per sample instead of once per token;
        the recurrence W_hh h_{t−1} runs on all K·B rows at once. Memory is O(K·B·H) per step.
        """
        num_samples, batch_size, _ = z.shape
        if self.training and (self.dropout_in.p > 0 or self.dropout_out.p > 0):
            # dropout masks differ per sample: decode each row of the repeated batch as forward does
            hidden = self(tokens.repeat(num_samples, 1), z.reshape(num_samples * batch_size, -1))  # (K·B, T, H)
            yield from hidden.view(num_samples, batch_size, *hidden.shape[1:]).unbind(2)
            return
        rows, hidden_dim = num_samples * batch_size, self.hidden_dim
        # gate rows reordered from PyTorch's (i, f, g, o) to (i, f, o, g): one sigmoid, one tanh per step
        order = torch.cat([torch.arange(2 * hidden_dim), torch.arange(3 * hidden_dim, 4 * hidden_dim)])
        order = torch.cat([order, torch.arange(2 * hidden_dim, 3 * hidden_dim)]).to(z.device)
        layers = [
            (
                getattr(self.lstm, f"weight_ih_l{layer}")[order],
                getattr(self.lstm, f"weight_hh_l{layer}")[order].t(),
                (getattr(self.lstm, f"bias_ih_l{layer}") + getattr(self.lstm, f"bias_hh_l{layer}"))[order],
            )
            for layer in range(self.num_layers)
        ]
        embedded = self.dropout_in(self.embedding(tokens))  # (B, T, E)
        embed_dim = embedded.shape[-1]
        first_ih, _, first_bias = layers[0]
        shared = F.linear(embedded, first_ih[:, :embed_dim], first_bias)  # (B, T, 4H), once per sentence
        per_sample = (z @ first_ih[:, embed_dim:].t()) if self.z_concat_input else None  # (K, B, 4H), once per sample
        state = self.initial_state(z.reshape(rows, -1), rows)
        if state is None:
            zeros = z.new_zeros(self.num_layers, rows, hidden_dim)  # (L, K·B, H)
            state = (zeros, zeros)
        hs = list(state[0].unbind(0))  # per layer (K·B, H)
        cs = [c.clone() for c in state[1].unbind(0)]  # per layer (K·B, H), updated in place
        for t in range(tokens.shape[1]):
            step_input = None
            for layer, (weight_ih, weight_hh_t, bias) in enumerate(layers):
                if layer == 0 and per_sample is not None:
                    gates = torch.add(per_sample, shared[:, t]).view(rows, -1)  # (K·B, 4H)
                elif layer == 0:
                    gates = shared[:, t].repeat(num_samples, 1)  # (K·B, 4H)
                else:
                    gates = F.linear(step_input, weight_ih, bias)  # (K·B, 4H)
                gates.addmm_(hs[layer], weight_hh_t)
                gates[:, : 3 * hidden_dim].sigmoid_()
                gates[:, 3 * hidden_dim :].tanh_()
                in_gate, forget_gate, out_gate, cell_gate = gates.split(hidden_dim, dim=1)  # (K·B, H) each
                cs[layer].mul_(forget_gate).addcmul_(in_gate, cell_gate)  # c_t = f ⊙ c_{t−1} + i ⊙ g
                hs[layer] = torch.tanh(cs[layer]).mul_(out_gate)  # h_t = o ⊙ tanh(c_t)
                step_input = hs[layer]
            yield self.dropout_out(step_input).view(num_samples, batch_size, -1)  # (K, B, H)

    def step(self, tokens: Tensor, state: State | None, z: Tensor | None) -> tuple[Tensor, State]:
        """One generation step: ``tokens`` (B,) → next-token logits (B, V) and the carried state."""
        hidden, state = self.lstm(self._inputs(tokens.unsqueeze(1), z), state)  # hidden (B, 1, H)
        return self.logits(self.dropout_out(hidden[:, 0])), state

    def reorder_state(self, state: State | None, index: Tensor) -> State | None:
        """Select batch rows of a carried state (beam search)."""
        return None if state is None else (state[0][:, index], state[1][:, index])
