"""Bag-of-words loss (Zhao et al. 2017, §3.2): z must predict the sentence's words, order-free.

An MLP f maps z to vocabulary logits; the extra per-example term is
    bow = −Σ_t log softmax(f(z))[x_t]
over the target tokens (words and EOS), padding masked. It is added to the objective with weight
``weight`` (not annealed) and reported as its own term; the ELBO is unchanged.
"""

from __future__ import annotations

from torch import Tensor, nn

from textvae.objective import VAEOutput
from textvae.registry import register
from textvae.remedies.base import REMEDY_CONTEXT, Remedy


@register("remedy", "bow_loss", context=REMEDY_CONTEXT)
class BagOfWordsLoss(Remedy):
    def __init__(self, latent_dim: int, vocab_size: int, hidden_dim: int = 256, weight: float = 1.0):
        super().__init__()
        self.weight = weight
        self.predictor = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, vocab_size))

    def bow_nll(self, z: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
        """z (B, D), targets and mask (B, T) → −Σ_t log p_bow(x_t | z) per example, (B,)."""
        log_probs = self.predictor(z).log_softmax(-1)  # (B, V)
        return -(log_probs.gather(1, targets) * mask).sum(1)

    def extra_terms(self, out: VAEOutput, batch) -> dict[str, Tensor]:
        return {"bow": self.bow_nll(out.z, batch.targets, batch.target_mask)}

    def adjust(self, objective, terms, *, step: int, steps_per_epoch: int):
        objective.weights["bow"] = self.weight
        return objective
