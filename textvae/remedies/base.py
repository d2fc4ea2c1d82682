"""The Remedy interface: a posterior-collapse remedy is a small component with hooks.

A remedy listed in a recipe's ``[[remedies]]`` is on; absent, it is off. Every hook is a no-op
here; a remedy overrides the ones it needs. Per training step the hooks run in this order:

    transform_posterior  q(z|x) → q'(z|x)                      (BN-VAE)
    posterior_sample     z0 ~ q → z, log|det ∂z/∂z0| per dim     (IAF)
    decoder_inputs       decoder input tokens, training only     (word dropout)
    extra_terms          extra per-example loss terms            (bag-of-words loss)
    adjust               the Objective: weights and terms        (annealing, β, free bits)

Hooks never change the honest terms (``textvae.objective.elbo_terms``): every reported number
comes from those. A remedy is an ``nn.Module``, so a trainable one is saved with the model.
Training state (``step``) reaches ``adjust`` explicitly; the model's forward never sees it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from textvae.distributions import DiagGaussian
from textvae.objective import ElboTerms, Objective, VAEOutput

# what every remedy constructor may ask for, supplied by the model that owns it
REMEDY_CONTEXT = ("latent_dim", "context_dim", "vocab_size", "pad_id", "bos_id", "eos_id", "unk_id")


class Remedy(nn.Module):
    """A posterior-collapse remedy. Every hook is a no-op; override the ones you need."""

    needs_latent = True  # False for remedies that also make sense for a language model
    part_of_inference = False  # True when its parameters belong to q(z|x) (updated with the encoder)
    is_posterior_flow = False  # True when posterior_sample changes z (then the KL is estimated by Monte Carlo)

    def transform_posterior(self, posterior: DiagGaussian) -> DiagGaussian:
        return posterior

    def posterior_sample(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """z (..., B, D), context (B, C) → new z and log|∂z_new/∂z| per dimension, both (..., B, D)."""
        return z, torch.zeros_like(z)

    def decoder_inputs(self, tokens: Tensor) -> Tensor:  # (B, T) → (B, T); called in training only
        return tokens

    def extra_terms(self, out: VAEOutput, batch) -> dict[str, Tensor]:  # name → (B,) per-example loss
        return {}

    def adjust(self, objective: Objective, terms: ElboTerms, *, step: int, steps_per_epoch: int) -> Objective:
        return objective


def training_objective(
    remedies: Sequence[Remedy], out: VAEOutput, terms: ElboTerms, batch, *, step: int, steps_per_epoch: int
) -> Objective:
    """The negative ELBO, plus the remedies' extra terms, adjusted by each remedy in recipe order."""
    objective = Objective.negative_elbo(terms)
    for remedy in remedies:
        for name, value in remedy.extra_terms(out, batch).items():
            objective.terms[name] = value
            objective.weights.setdefault(name, 1.0)
    for remedy in remedies:
        objective = remedy.adjust(objective, terms, step=step, steps_per_epoch=steps_per_epoch)
    return objective
