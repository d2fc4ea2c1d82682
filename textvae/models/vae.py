"""The sequence VAE: an inference network q(z|x), the prior N(0, I), a decoder p(x|z), and remedies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from textvae import registry
from textvae.cross_entropy import sequence_nll
from textvae.data.batching import Batch
from textvae.data.vocab import Vocab
from textvae.distributions import DiagGaussian
from textvae.objective import VAEOutput
from textvae.registry import ComponentSpec, register


@dataclass
class Inference:
    """What the encoder says about a batch: q(z|x) (after posterior transforms) and its context."""

    posterior: DiagGaussian  # (B, D) parameters
    context: Tensor  # (B, C) encoder summary, the conditioning input of posterior flows


def build_remedies(specs, **context) -> nn.ModuleList:
    """The remedies a recipe lists, in its order (the order ``adjust`` hooks run in)."""
    return nn.ModuleList(
        registry.build("remedy", spec, f"remedies[{i}] ({spec.get('type')})", **context) for i, spec in enumerate(specs)
    )


@register("model", "vae", context=("vocab_size", "special_ids", "remedies", "vocab"))
class SequenceVAE(nn.Module):
    """A sentence VAE. ``encoder`` and ``decoder`` are component tables (``type = "lstm"`` ...)."""

    has_latent = True

    def __init__(
        self,
        vocab_size: int,
        special_ids: dict[str, int],
        remedies: list[dict[str, Any]],
        encoder: ComponentSpec("encoder"),
        decoder: ComponentSpec("decoder"),
        latent_dim: int = 32,
        vocab: Vocab | None = None,  # for encoders that read x as text (the pretrained Transformer)
    ):
        super().__init__()
        self.latent_dim = latent_dim
        context = {"vocab_size": vocab_size, "latent_dim": latent_dim, "pad_id": special_ids["pad_id"], "vocab": vocab}
        self.encoder = registry.build("encoder", encoder, "model.encoder", **context)
        self.decoder = registry.build("decoder", decoder, "model.decoder", **context)
        self.remedies = build_remedies(
            remedies, context_dim=self.encoder.context_dim, vocab_size=vocab_size, latent_dim=latent_dim, **special_ids
        )

    def infer(self, batch: Batch) -> Inference:
        posterior, context = self.encoder(batch.tokens, batch.lengths)
        for remedy in self.remedies:
            posterior = remedy.transform_posterior(posterior)
        return Inference(posterior, context)

    def encode(self, batch: Batch) -> DiagGaussian:
        """q(z|x); with a posterior flow, the Gaussian q0 the flow starts from."""
        return self.infer(batch).posterior

    def sample_latent(
        self, inference: Inference, num_samples: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """z ~ q(z|x) and log q(z|x) per dimension: both (B, D), or (K, B, D) for ``num_samples`` = K."""
        z = inference.posterior.rsample(num_samples, generator=generator)
        log_q = inference.posterior.log_prob_per_dim(z)
        for remedy in self.remedies:
            z, log_det = remedy.posterior_sample(z, inference.context)
            log_q = log_q - log_det
        return z, log_q

    @property
    def has_flow(self) -> bool:
        return any(remedy.is_posterior_flow for remedy in self.remedies)

    def reconstruction_nll(self, batch: Batch, z: Tensor, decoder_inputs: Tensor | None = None) -> Tensor:
        """−log p(x|z) per sentence, (B,), for z of shape (B, D)."""
        inputs = batch.decoder_inputs if decoder_inputs is None else decoder_inputs
        hidden = self.decoder(inputs, z)  # (B, T, H)
        return sequence_nll(self.decoder.logits, hidden, batch.targets, batch.target_mask)

    def forward(
        self, batch: Batch, generator: torch.Generator | None = None, inference: Inference | None = None
    ) -> VAEOutput:
        """One z ~ q(z|x) per sentence and −log p(x|z); ``inference`` reuses an encoder pass already made."""
        inference = self.infer(batch) if inference is None else inference
        z, log_q_per_dim = self.sample_latent(inference, generator=generator)  # (B, D) each
        inputs = batch.decoder_inputs
        if self.training:
            for remedy in self.remedies:
                inputs = remedy.decoder_inputs(inputs)
        return VAEOutput(
            rec=self.reconstruction_nll(batch, z, inputs),
            num_tokens=batch.lengths - 1,
            posterior=inference.posterior,
            z=z,
            log_q_per_dim=log_q_per_dim if self.has_flow else None,
        )

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        """log p(x|z) for K latent samples per sentence: z (K, B, D) → (K, B)."""
        num_samples, batch_size, _ = z.shape
        repeated = Batch(
            batch.tokens.repeat(num_samples, 1), batch.lengths.repeat(num_samples), batch.indices.repeat(num_samples)
        )  # row k * B + b is sentence b with sample k
        return -self.reconstruction_nll(repeated, z.reshape(num_samples * batch_size, -1)).view(num_samples, batch_size)
