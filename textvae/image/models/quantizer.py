"""Vector quantization with a learned codebook (van den Oord et al. 2017, "Neural Discrete Representation
Learning"), its exponential-moving-average variant (Appendix A.1), and the restart of dead codes.

An encoder output z_e(x) (B, D, h, w) is a grid of h·w vectors of size D; each is replaced by its nearest
codebook vector e_k, k = argmin_j ‖z_e − e_j‖₂ (Eq. 1–2). Gradients pass straight through the
quantization: the decoder reads z_e + sg[e_k − z_e], which equals e_k in value and has ∂/∂z_e = identity.

Per-example terms, each (B,): squared L2 norms summed over the h·w positions and the D coordinates (Eq. 3)
    codebook    ‖sg[z_e] − e‖²   moves the codes toward the encoder outputs (gradient variant only)
    commitment  ‖z_e − sg[e]‖²   keeps the encoder near its codes (the model's loss weights it by β)

EMA variant (Appendix A.1): there is no codebook term; each training forward pass, with n_i the number of
grid vectors assigned to code i in the batch and γ the decay,
    N_i ← γ N_i + (1 − γ) n_i
    m_i ← γ m_i + (1 − γ) Σ_{j: k_j = i} z_e,j
    e_i = m_i / N̂_i,    N̂_i = (N_i + ε) / (n + K ε) · n,   n = Σ_l N_l      (Laplace smoothing of N)
N starts at 1 and m at the initial codebook, so e = m / N holds from the first step.

Dead-code restart (``dead_code_restart``): a code that no grid vector chose for ``restart_unused_after``
training batches is moved onto a random encoder output of the most recent training batch
(``restart_dead_codes``, called after the optimizer step); for the EMA variant N_i is reset to 1 and m_i
to the new e_i. Codes start out counted as unused for that long, so the first training step moves every
code the first batch did not choose onto its encoder outputs (the initial codebook, small and near 0,
would otherwise leave all vectors on one code until the first restart).

Codebook usage of a batch: p_i = n_i / Σ_l n_l, perplexity = exp(−Σ_i p_i log p_i) (1 when one code is
used, K when all are used equally).

Not handled: data-parallel training would need the EMA counts and sums all-reduced across processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from textvae.errors import TextVAEError


@dataclass
class Quantized:
    """The result of quantizing one grid of encoder outputs."""

    straight_through: Tensor  # (B, D, h, w): e_k in value, gradient straight into z_e
    codes: Tensor  # (B, h, w) long, index k of the nearest code
    commitment: Tensor  # (B,) ‖z_e − sg[e]‖²
    codebook: Tensor | None  # (B,) ‖sg[z_e] − e‖²; None for the EMA variant, which has no such term
    perplexity: float  # exp of the entropy of this batch's code usage
    codes_used: int  # distinct codes chosen in this batch


def usage_perplexity(codes: Tensor, num_codes: int) -> float:
    """exp(−Σ p log p) of the code frequencies p in ``codes`` (any shape, values in [0, num_codes))."""
    counts = torch.bincount(codes.flatten(), minlength=num_codes).float()  # (K,)
    probs = counts / counts.sum()
    entropy = -torch.special.xlogy(probs, probs).sum()  # 0 log 0 = 0
    return float(entropy.exp())


class VectorQuantizer(nn.Module):
    """A codebook of ``num_codes`` (K) vectors of size ``code_dim`` (D), updated by gradient or by EMA.

    ``codebook_update="gradient"``: the codebook is a parameter trained by the codebook term.
    ``codebook_update="ema"``: the codebook is a buffer, updated in every training-mode forward pass.
    ``dead_code_restart``: whether ``restart_dead_codes`` moves codes unused for ``restart_unused_after``
    training batches.
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        codebook_update: Literal["ema", "gradient"] = "ema",
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        dead_code_restart: bool = True,
        restart_unused_after: int = 20,
    ):
        super().__init__()
        if num_codes < 2:
            raise TextVAEError(f"num_codes must be at least 2, got {num_codes}")
        if code_dim < 1:
            raise TextVAEError(f"code_dim must be positive, got {code_dim}")
        if codebook_update not in ("ema", "gradient"):
            raise TextVAEError(f"codebook_update must be 'ema' or 'gradient', got {codebook_update!r}")
        if not 0.0 < ema_decay < 1.0:
            raise TextVAEError(f"ema_decay must lie in (0, 1), got {ema_decay}")
        if ema_epsilon <= 0.0:
            raise TextVAEError(f"ema_epsilon must be positive, got {ema_epsilon}")
        if restart_unused_after < 1:
            raise TextVAEError(f"restart_unused_after must be at least 1, got {restart_unused_after}")
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.ema = codebook_update == "ema"
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        self.dead_code_restart = dead_code_restart
        self.restart_unused_after = restart_unused_after

        initial = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)  # (K, D)
        if self.ema:
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_count", torch.ones(num_codes))  # N (K,)
            self.register_buffer("ema_sum", initial.clone())  # m (K, D)
        else:
            self.codebook = nn.Parameter(initial)
        # every code starts as long unused, so the first training step's restart moves each code the first
        # batch did not choose onto one of its encoder outputs: a data-dependent initialization
        self.register_buffer("batches_unused", torch.full((num_codes,), restart_unused_after))  # (K,)
        self._latest_vectors: Tensor | None = None  # the last training batch's z_e rows, for restarts

    def nearest_codes(self, z_e: Tensor) -> Tensor:
        """z_e (B, D, h, w) → index of the nearest code at every position (B, h, w)."""
        batch, dim, height, width = z_e.shape
        with torch.no_grad():
            vectors = z_e.detach().permute(0, 2, 3, 1).reshape(-1, dim)  # (B·h·w, D)
            codebook = self.codebook.detach()
            distances = (  # ‖z‖² − 2 z·e + ‖e‖²
                vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ codebook.T + codebook.pow(2).sum(1)[None, :]
            )  # (B·h·w, K)
            return distances.argmin(dim=1).view(batch, height, width)

    def embed(self, codes: Tensor) -> Tensor:
        """Code indices (B, h, w) → their codebook vectors (B, D, h, w)."""
        return self.codebook[codes].permute(0, 3, 1, 2)  # (B, D, h, w)

    def forward(self, z_e: Tensor) -> Quantized:
        codes = self.nearest_codes(z_e)  # (B, h, w)
        quantized = self.embed(codes)  # (B, D, h, w)
        commitment = (z_e - quantized.detach()).pow(2).flatten(1).sum(1)  # (B,)
        codebook = None if self.ema else (z_e.detach() - quantized).pow(2).flatten(1).sum(1)  # (B,)
        straight_through = z_e + (quantized - z_e).detach()  # (B, D, h, w)
        counts = torch.bincount(codes.flatten(), minlength=self.num_codes)  # (K,) n_i
        if self.training:
            self._track_usage(z_e, codes, counts)
        return Quantized(
            straight_through=straight_through,
            codes=codes,
            commitment=commitment,
            codebook=codebook,
            perplexity=usage_perplexity(codes, self.num_codes),
            codes_used=int((counts > 0).sum()),
        )

    @torch.no_grad()
    def _track_usage(self, z_e: Tensor, codes: Tensor, counts: Tensor) -> None:
        vectors = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (B·h·w, D)
        self.batches_unused.add_(1).masked_fill_(counts > 0, 0)
        if self.dead_code_restart:
            self._latest_vectors = vectors
        if self.ema:
            self._ema_update(vectors, codes.flatten(), counts)

    def _ema_update(self, vectors: Tensor, codes: Tensor, counts: Tensor) -> None:
        """Appendix A.1: N ← γN + (1−γ)n, m ← γm + (1−γ)Σz, e = m / N̂ (N̂ Laplace-smoothed)."""
        decay = self.ema_decay
        sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, vectors.to(self.ema_sum.dtype))  # (K, D)
        self.ema_count.mul_(decay).add_(counts.to(self.ema_count.dtype), alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.ema_epsilon) / (total + self.num_codes * self.ema_epsilon) * total  # (K,)
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    @torch.no_grad()
    def restart_dead_codes(self) -> int:
        """Move every code unused for ``restart_unused_after`` training batches onto a random encoder
        output of the latest training batch; returns how many were moved."""
        if not self.dead_code_restart or self._latest_vectors is None:
            return 0
        dead = (self.batches_unused >= self.restart_unused_after).nonzero().flatten()  # (R,)
        vectors, self._latest_vectors = self._latest_vectors, None
        if dead.numel() == 0:
            return 0
        picks = torch.randint(len(vectors), (dead.numel(),), device=vectors.device)  # (R,)
        replacement = vectors[picks].to(self.codebook.dtype)  # (R, D)
        self.codebook.data[dead] = replacement
        if self.ema:
            self.ema_count[dead] = 1.0
            self.ema_sum[dead] = replacement
        self.batches_unused[dead] = 0
        return int(dead.numel())
