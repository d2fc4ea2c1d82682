"""Layers with per-row weights: row r of the input goes through row r of the weights only.

Each is ``torch.matmul`` over a leading row dimension R (batched GEMM): one kernel for R rows'
products. Nothing mixes rows, forward or backward, so a non-finite value in one row stays there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def stack_parameter(tensors: list[Tensor]) -> nn.Parameter:
    """R equal-shaped tensors → one (R, ...) parameter (a copy)."""
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())


class GroupedEmbedding(nn.Module):
    """R embedding tables (R, V, E); ``pad_id``'s vector gets no gradient (``nn.Embedding``'s padding_idx)."""

    def __init__(self, weight: Tensor, pad_id: int):
        super().__init__()
        self.weight = nn.Parameter(weight)  # (R, V, E)
        self.pad_id = pad_id

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (R, B, T) → (R, B, T, E)."""
        rows, vocab, dim = self.weight.shape
        offsets = torch.arange(rows, device=tokens.device).view(rows, *([1] * (tokens.dim() - 1))) * vocab
        embedded = self.weight.view(rows * vocab, dim)[tokens + offsets]  # (R, B, T, E)
        padding = (tokens == self.pad_id).unsqueeze(-1)
        return torch.where(padding, embedded.detach(), embedded)  # the pad vector's value, no gradient


class GroupedLinear(nn.Module):
    """y_r = x_r W_rᵀ + b_r for R weight matrices (R, O, I) and biases (R, O) (or none)."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight)  # (R, O, I)
        self.bias = nn.Parameter(bias) if bias is not None else None  # (R, O)

    def forward(self, x: Tensor) -> Tensor:
        """x (R, ..., I) → (R, ..., O)."""
        rows = x.shape[0]
        flat = x.reshape(rows, -1, x.shape[-1])  # (R, N, I)
        if self.bias is None:
            out = torch.bmm(flat, self.weight.transpose(1, 2))  # (R, N, O)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))  # (R, N, O)
        return out.view(*x.shape[:-1], out.shape[-1])


class GroupedLSTM(nn.Module):
    """R one-layer LSTMs (PyTorch's gate order i, f, g, o), batch first.

    i, f, g, o = σ(W_i x_t + U_i h + b_i), σ(...), tanh(...), σ(...);  c_t = f ⊙ c_{t−1} + i ⊙ g;
    h_t = o ⊙ tanh(c_t). The input side W x_t + b for all T steps is one batched GEMM; the recurrence
    is one batched GEMM (R, B, H) × (R, H, 4H) per step.
    """

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor):
        super().__init__()
        self.weight_ih = nn.Parameter(weight_ih)  # (R, 4H, I)
        self.weight_hh = nn.Parameter(weight_hh)  # (R, 4H, H)
        self.bias_ih = nn.Parameter(bias_ih)  # (R, 4H)
        self.bias_hh = nn.Parameter(bias_hh)  # (R, 4H)

    @property
    def hidden_dim(self) -> int:
        return self.weight_hh.shape[-1]

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (R, B, T, I), state (h0, c0) each (R, B, H) or zeros → hidden states (R, B, T, H)."""
        rows, batch, steps, _ = x.shape
        hidden = self.hidden_dim
        bias = (self.bias_ih + self.bias_hh).unsqueeze(1)  # (R, 1, 4H)
        inputs = torch.baddbmm(bias, x.reshape(rows, batch * steps, -1), self.weight_ih.transpose(1, 2))
        inputs = inputs.view(rows, batch, steps, 4 * hidden)  # (R, B, T, 4H)
        if state is None:
            h = c = x.new_zeros(rows, batch, hidden)
        else:
            h, c = state
        recurrent = self.weight_hh.transpose(1, 2)  # (R, H, 4H)
        outputs = []
        for t in range(steps):
            gates = torch.baddbmm(inputs[:, :, t], h, recurrent)  # (R, B, 4H)
            in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)  # (R, B, H) each
            c = torch.sigmoid(forget_gate) * c + torch.sigmoid(in_gate) * torch.tanh(cell_gate)
            h = torch.sigmoid(out_gate) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=2)  # (R, B, T, H)
