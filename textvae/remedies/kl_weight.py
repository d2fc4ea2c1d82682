"""β weighting: a constant weight β on the KL term (β-VAE, Higgins et al. 2017).

He et al. 2019 (Table 1) report β = 0.2, 0.4, 0.6, 0.8 rows on Yahoo and Yelp: β < 1 trades a
looser bound for more information in z. Composes with annealing by multiplication.
"""

from __future__ import annotations

from textvae.errors import TextVAEError
from textvae.objective import ElboTerms, Objective
from textvae.registry import register
from textvae.remedies.base import REMEDY_CONTEXT, Remedy


@register("remedy", "beta", context=REMEDY_CONTEXT)
class BetaWeight(Remedy):
    def __init__(self, beta: float = 1.0):
        super().__init__()
        if beta < 0:
            raise TextVAEError(f"beta: must be ≥ 0, got {beta}")
        self.beta = beta

    def adjust(self, objective: Objective, terms: ElboTerms, *, step: int, steps_per_epoch: int) -> Objective:
        objective.weights["kl"] = objective.weights.get("kl", 1.0) * self.beta
        return objective
