"""The sequence VAE: an inference network q(z|x), the prior N(0, I), a decoder p(x|z)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from textvae import registry
from textvae.data.batching import Batch
from textvae.distributions import DiagGaussian
from textvae.objective import VAEOutput, sequence_nll
from textvae.registry import ComponentSpec, register


@register("model", "vae", context=("vocab_size", "pad_id"))
class SequenceVAE(nn.Module):
    """A sentence VAE. ``encoder`` and ``decoder`` are component tables (``type = "lstm"`` ...)."""

    has_latent = True

    def __init__(
        self,
        vocab_size: int,
        pad_id: int,
        encoder: ComponentSpec("encoder"),
        decoder: ComponentSpec("decoder"),
        latent_dim: int = 32,
    ):
        super().__init__()
        self.latent_dim = latent_dim
        context = {"vocab_size": vocab_size, "latent_dim": latent_dim, "pad_id": pad_id}
        self.encoder = registry.build("encoder", encoder, "model.encoder", **context)
        self.decoder = registry.build("decoder", decoder, "model.decoder", **context)

    def encode(self, batch: Batch) -> DiagGaussian:
        return self.encoder(batch.tokens, batch.lengths)

    def reconstruction_nll(self, batch: Batch, z: Tensor, decoder_inputs: Tensor | None = None) -> Tensor:
        """−log p(x|z) per sentence, (B,), for z of shape (B, D)."""
        inputs = batch.decoder_inputs if decoder_inputs is None else decoder_inputs
        hidden = self.decoder(inputs, z)  # (B, T, H)
        return sequence_nll(self.decoder.logits, hidden, batch.targets, batch.target_mask)

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> VAEOutput:
        posterior = self.encode(batch)
        z = posterior.rsample(generator=generator)  # (B, D)
        rec = self.reconstruction_nll(batch, z)
        return VAEOutput(rec=rec, num_tokens=batch.lengths - 1, posterior=posterior, z=z)

    def log_likelihood(self, batch: Batch, z: Tensor) -> Tensor:
        """log p(x|z) for K latent samples per sentence: z (K, B, D) → (K, B)."""
        num_samples, batch_size, _ = z.shape
        repeated = Batch(
            batch.tokens.repeat(num_samples, 1), batch.lengths.repeat(num_samples), batch.indices.repeat(num_samples)
        )  # row k * B + b is sentence b with sample k
        return -self.reconstruction_nll(repeated, z.reshape(num_samples * batch_size, -1)).view(num_samples, batch_size)
