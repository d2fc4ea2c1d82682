"""Honest ELBO terms, and the separate object that says what the optimizer minimizes.

The model's forward pass returns unweighted per-example quantities (``VAEOutput``);
``elbo_terms`` turns them into the terms every reported number comes from. ``Objective`` holds
those terms with weights; remedies (annealing, free bits, ...) change only the objective, so
the reported ELBO, NLL, PPL and KL never depend on how a model was trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from textvae.distributions import LOG_2PI, DiagGaussian


@dataclass
class VAEOutput:
    """What a forward pass returns: unweighted, per example. For a language model there is no z."""

    rec: Tensor  # (B,) −log p(x|z), nats, summed over target tokens (words + EOS, not BOS)
    num_tokens: Tensor  # (B,) target tokens per sentence: words + EOS
    posterior: DiagGaussian | None  # q(z|x) with (B, D) parameters; None for a language model
    z: Tensor | None  # (B, D) the sample the decoder saw
    # with a posterior flow (IAF): log q(z|x) of that z per dimension, (B, D) = log q0(z0_d) − log|∂z_d/∂z0_d|
    log_q_per_dim: Tensor | None = None


@dataclass
class ElboTerms:
    """The honest per-example terms: −ELBO = rec + kl. Units are nats."""

    rec: Tensor  # (B,)
    kl: Tensor  # (B,)
    kl_per_dim: Tensor  # (B, D); D = 0 for a language model
    num_tokens: Tensor  # (B,)

    @property
    def neg_elbo(self) -> Tensor:
        return self.rec + self.kl


def elbo_terms(out: VAEOutput) -> ElboTerms:
    """Per-example reconstruction NLL and KL(q(z|x) || N(0, I)), total and per dimension.

    The KL is in closed form for a diagonal Gaussian posterior. With a posterior flow it is the
    one-sample Monte-Carlo estimate log q(z|x) − log p(z) at the z the decoder saw (Kingma et al.
    2016); its per-dimension split uses the flow's per-dimension log-determinant, so the dimensions
    still add up to the total.
    """
    if out.posterior is None:
        batch = out.rec.shape[0]
        kl_per_dim = out.rec.new_zeros(batch, 0)
    elif out.log_q_per_dim is not None:
        kl_per_dim = out.log_q_per_dim + 0.5 * (LOG_2PI + out.z**2)  # log q(z_d) − log N(z_d; 0, 1)
    else:
        kl_per_dim = out.posterior.kl_per_dim()
    return ElboTerms(rec=out.rec, kl=kl_per_dim.sum(-1), kl_per_dim=kl_per_dim, num_tokens=out.num_tokens)


@dataclass
class Objective:
    """What the optimizer minimizes: Σ_k weight_k · term_k, averaged over the sentences of a batch.

    Terms are per-example tensors (B,); a weight is a float (or a tensor, for a learned one). The
    plain VAE objective is ``{"rec": 1, "kl": 1}``, i.e. the negative ELBO per sentence.
    """

    terms: dict[str, Tensor]
    weights: dict[str, float | Tensor] = field(default_factory=dict)

    @classmethod
    def negative_elbo(cls, terms: ElboTerms) -> Objective:
        return cls(terms={"rec": terms.rec, "kl": terms.kl}, weights={"rec": 1.0, "kl": 1.0})

    def loss(self) -> Tensor:
        total = sum(self.weights.get(name, 1.0) * value for name, value in self.terms.items())
        return total.mean()
