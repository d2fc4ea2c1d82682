"""What makes fused rows differ, read from each row's unfused remedies into per-row values.

Per row r (the unfused row's ``training_objective``, with its honest terms in (R, B) tensors):

    loss_r = mean_b [ rec_rb + w_r(t) · KL'_rb + ω_r · bow_rb ]

w_r(t): the product of the row's KL weights in recipe order (annealing schedules, β) at its step t;
KL'_r: the honest KL, or the row's free-bits replacement (λ_r, mode); ω_r: its bag-of-words weight
(0 without one). Word dropout (keep probability k_r) and BN-VAE (γ_r, momentum, ε) act in the
forward pass (``textvae.models.fused.vae``); a row without them is marked off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from textvae.errors import TextVAEError
from textvae.remedies.bn_vae import BNVAE
from textvae.remedies.bow_loss import BagOfWordsLoss
from textvae.remedies.free_bits import FreeBits
from textvae.remedies.kl_annealing import KLAnnealing
from textvae.remedies.kl_weight import BetaWeight
from textvae.remedies.word_dropout import WordDropout

FUSIBLE_REMEDIES = (KLAnnealing, BetaWeight, FreeBits, WordDropout, BagOfWordsLoss, BNVAE)
FREE_BITS_MODES = ("off", "dimension", "total", "dimension_mask")


@dataclass
class RowRemedies:
    """One row's remedies as plain values (``None``: that remedy is off)."""

    kl_weights: list = field(default_factory=list)  # KLAnnealing / BetaWeight modules, in recipe order
    free_bits: tuple[float, str] | None = None  # (λ, mode)
    keep_prob: float | None = None  # word dropout
    bow: tuple[float, int] | None = None  # (weight, hidden_dim)
    bn: tuple[float, float, float] | None = None  # (γ, momentum, ε)

    @classmethod
    def of(cls, remedies) -> RowRemedies:
        """Read an unfused model's ``remedies``; one that cannot fuse is a one-line error."""
        row = cls()
        for remedy in remedies:
            name = type(remedy).__name__
            if not isinstance(remedy, FUSIBLE_REMEDIES):
                raise TextVAEError(f"remedy {name} does not fuse (it changes the model's shapes or the step)")
            if isinstance(remedy, KLAnnealing | BetaWeight):
                row.kl_weights.append(remedy)
            elif isinstance(remedy, FreeBits):
                row.free_bits = (remedy.threshold, remedy.mode)
            elif isinstance(remedy, WordDropout):
                row.keep_prob = remedy.keep_prob
            elif isinstance(remedy, BagOfWordsLoss):
                row.bow = (remedy.weight, remedy.predictor[0].out_features)
            else:
                row.bn = (remedy.gamma, remedy.norm.momentum, remedy.norm.eps)
        if sum(isinstance(r, FreeBits) for r in remedies) > 1 or sum(isinstance(r, WordDropout) for r in remedies) > 1:
            raise TextVAEError("a row with two free-bits or two word-dropout remedies does not fuse")
        if sum(isinstance(r, BagOfWordsLoss) for r in remedies) > 1 or sum(isinstance(r, BNVAE) for r in remedies) > 1:
            raise TextVAEError("a row with two bag-of-words or two BN-VAE remedies does not fuse")
        return row

    def kl_weight(self, step: int, steps_per_epoch: int) -> float:
        """w_r(t): each KL weight of the row in recipe order, multiplied as ``adjust`` multiplies them."""
        weight = 1.0
        for remedy in self.kl_weights:
            if isinstance(remedy, KLAnnealing):
                t = step / steps_per_epoch if remedy.unit == "epoch" else float(step)
                weight = weight * remedy.weight(t)
            else:
                weight = weight * remedy.beta
        return weight


class RowObjective:
    """The rows' objectives as (R,) tensors; the KL weights are set on the host each step."""

    def __init__(self, rows: list[RowRemedies], device: torch.device):
        self.rows = rows
        threshold = [row.free_bits[0] if row.free_bits else 0.0 for row in rows]
        mode = [FREE_BITS_MODES.index(row.free_bits[1]) if row.free_bits else 0 for row in rows]
        # float64, cast to the terms' dtype where used: a Python float meets a float32 term the same way
        as_tensor = lambda values: torch.tensor(values, dtype=torch.float64, device=device)  # noqa: E731
        self.threshold = as_tensor(threshold)  # (R,) λ
        self.mode = torch.tensor(mode, device=device)  # (R,) index into FREE_BITS_MODES
        self.bow_weight = as_tensor([row.bow[0] if row.bow else 0.0 for row in rows])  # (R,) ω
        self.has_bow = any(row.bow for row in rows)
        self.has_free_bits = any(row.free_bits for row in rows)
        self.kl_weight = as_tensor([1.0] * len(rows))  # (R,) w_r(t), updated in place

    def set_step(self, step: int | list[int], steps_per_epoch: int) -> None:
        """w_r(t) for every row at its step (one step for all, or one per row)."""
        steps = step if isinstance(step, list) else [step] * len(self.rows)
        weights = [row.kl_weight(s, steps_per_epoch) for row, s in zip(self.rows, steps, strict=True)]
        self.kl_weight.copy_(torch.tensor(weights, dtype=torch.float64))

    def kl_term(self, kl_per_dim: Tensor) -> Tensor:
        """KL'_rb (R, B): the honest KL, or the row's free-bits replacement (``FreeBits.clamped_kl``)."""
        if not self.has_free_bits:
            return kl_per_dim.sum(-1)
        threshold = self.threshold.to(kl_per_dim.dtype).view(-1, 1, 1)  # (R, 1, 1)
        mode = self.mode.view(-1, 1)  # (R, 1)
        honest = kl_per_dim.sum(-1)  # (R, B)
        above = kl_per_dim.mean(1, keepdim=True) > threshold  # (R, 1, D)
        floor = torch.where(mode.unsqueeze(-1) == 3, torch.zeros_like(threshold), threshold)  # (R, 1, 1)
        per_dim = torch.where(above, kl_per_dim, floor.expand_as(kl_per_dim)).sum(-1)  # (R, B)
        total_above = honest.mean(1, keepdim=True) > threshold.view(-1, 1)  # (R, 1)
        total = torch.where(total_above, honest, threshold.view(-1, 1).expand_as(honest))  # (R, B)
        return torch.where(mode == 0, honest, torch.where(mode == 2, total, per_dim))

    def loss(self, rec: Tensor, kl_per_dim: Tensor, bow: Tensor | None, pretraining: Tensor | None = None) -> Tensor:
        """loss_r (R,) from rec (R, B), KL per dimension (R, B, D) and bow (R, B) or None; a row in
        pretrain + reset's autoencoder phase (``pretraining`` (R,) bool) minimizes mean_b rec_rb alone."""
        total = rec + self.kl_weight.to(rec.dtype).unsqueeze(1) * self.kl_term(kl_per_dim)  # (R, B)
        if bow is not None:
            total = total + self.bow_weight.to(rec.dtype).unsqueeze(1) * bow
        if pretraining is None:
            return total.mean(1)
        return torch.where(pretraining, rec.mean(1), total.mean(1))
