"""Per-row optimization of fused (R, ...) parameters: each row is updated as its unfused run would be.

For row r with gradients g_r (every parameter's row-r slice):
    n_r = ‖g_r‖₂ over all parameters (its own norm: one global clip would couple the rows);
    s_r = min(1, c_r / (n_r + 1e-6)) with clip c_r (``clip_grad_norm_``'s rule; no clip: s_r = 1);
    g' = s_r g_r + λ_r θ_r (weight decay λ_r, an L2 term as in ``torch.optim``);
    SGD (no momentum):  θ_r ← θ_r − lr_r · g';
    Adam (Kingma & Ba 2015, ``torch.optim.Adam``): t_r ← t_r + 1,
          m ← β1 m + (1 − β1) g',  v ← β2 v + (1 − β2) g'²,
          θ_r ← θ_r − lr_r / (1 − β1^t_r) · m / (sqrt(v) / sqrt(1 − β2^t_r) + ε).
A row whose loss or norm is not finite, or that is frozen (``active`` False), keeps its weights and
its optimizer state (t_r too) exactly: the new values are selected per row with ``torch.where``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class FusedOptimizer:
    """SGD (no momentum) or Adam over (R, ...) parameters with per-row lr, weight decay and clip."""

    def __init__(
        self,
        params: list[nn.Parameter],
        kind: Literal["sgd", "adam"],
        lr: list[float],
        grad_clip: list[float | None],
        weight_decay: list[float] | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        if kind not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.params, self.kind, self.betas, self.eps = list(params), kind, betas, eps
        device = self.params[0].device
        rows = self.params[0].shape[0]
        self.lr = torch.tensor(lr, dtype=torch.float64, device=device)  # (R,) changed by lr decay
        clip = [c if c is not None else float("inf") for c in grad_clip]
        self.clip = torch.tensor(clip, dtype=torch.float64, device=device)  # (R,) c_r
        self.weight_decay = torch.tensor(weight_decay or [0.0] * rows, dtype=torch.float64, device=device)  # (R,)
        # t_r per parameter (Adam's bias correction): a parameter whose state was dropped (a decoder
        # re-initialised after pretraining) counts again from 0, as torch.optim.Adam's own state does
        self.steps = [torch.zeros(rows, dtype=torch.long, device=device) for _ in self.params]  # (R,) each
        if kind == "adam":
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def row_norms(self) -> Tensor:
        """n_r, (R,): each row's gradient norm over every parameter."""
        squares = [p.grad.reshape(p.shape[0], -1).pow(2).sum(1) for p in self.params if p.grad is not None]
        return torch.stack(squares).sum(0).sqrt()

    @torch.no_grad()
    def step(self, active: Tensor) -> Tensor:
        """Update the rows where ``active`` (R,) bool and the gradient norm is finite; returns that mask."""
        norms = self.row_norms()  # (R,)
        updated = active & torch.isfinite(norms)  # (R,)
        scale = torch.clamp(self.clip / (norms + 1e-6), max=1.0)  # (R,) s_r
        scale = torch.where(torch.isfinite(self.clip), scale, torch.ones_like(scale))
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            view = (-1,) + (1,) * (param.dim() - 1)
            keep = updated.view(view)
            grad = param.grad * scale.view(view).to(param.dtype)
            grad = grad + (self.weight_decay.view(view) * param).to(param.dtype)  # L2, after the clip
            lr = self.lr.view(view)
            if self.kind == "sgd":
                new = param - (lr * grad).to(param.dtype)
                param.copy_(torch.where(keep, new, param))
                continue
            beta1, beta2 = self.betas
            exp_avg = self.exp_avg[index] * beta1 + grad * (1 - beta1)
            exp_avg_sq = self.exp_avg_sq[index] * beta2 + grad * grad * (1 - beta2)
            self.steps[index] += updated.long()
            steps = self.steps[index].view(view).to(torch.float64).clamp(min=1)
            correction1, correction2 = 1 - beta1**steps, 1 - beta2**steps
            denom = (exp_avg_sq.sqrt() / correction2.sqrt().to(param.dtype)) + self.eps
            new = param - (lr / correction1).to(param.dtype) * exp_avg / denom
            param.copy_(torch.where(keep, new, param))
            self.exp_avg[index].copy_(torch.where(keep, exp_avg, self.exp_avg[index]))
            self.exp_avg_sq[index].copy_(torch.where(keep, exp_avg_sq, self.exp_avg_sq[index]))
        return updated

    def drop_state(self, row: int, indices: list[int]) -> None:
        """Forget row ``row``'s optimizer state of the parameters ``indices`` (``optimizer.state.pop``)."""
        if self.kind != "adam":
            return
        for index in indices:
            self.exp_avg[index][row].zero_()
            self.exp_avg_sq[index][row].zero_()
            self.steps[index][row] = 0
