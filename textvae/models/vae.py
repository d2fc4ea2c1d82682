"""The sequence VAE: an inference network q(z|x), the prior N(0, I), a decoder p(x|z), and remedies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from textvae import registry
from textvae.data.batching import Batch
from textvae.data.vocab import Vocab
from textvae.distributions import DiagGaussian
from textvae.evaluation.device import decoder_autocast, device_index
from textvae.models.cross_entropy import linear_cross_entropy, output_layer_of, sequence_nll, token_nll
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

    def samples_log_likelihood(
        self,
        batch: Batch,
        z: Tensor,
        *,
        host_lengths: np.ndarray | None = None,
        logit_rows: int | None = None,
        precision: str = "fp32",
    ) -> Tensor:
        """``log_likelihood`` for importance sampling: log p(x|z_k) for z (K, B, D) → (K, B), float32.

        When the decoder can share work across samples (``sample_hidden_steps``, the LSTM decoder), it
        steps through time on all K·B rows at once and each step's real tokens go straight through the
        output layer, so memory is one step of hidden states and one chunk of logits, whatever the
        sentence length. Which sentences have a target at step t comes from ``host_lengths`` (the
        batch's lengths on the host), so the device is never asked. A subclass that scores differently
        (its own ``log_likelihood``) is asked through that."""
        steps = getattr(self.decoder, "sample_hidden_steps", None)
        if steps is None or type(self).log_likelihood is not SequenceVAE.log_likelihood:
            with decoder_autocast(precision, z.device):
                return self.log_likelihood(batch, z).float()
        num_samples, batch_size, _ = z.shape
        log_px_z = z.new_zeros(num_samples, batch_size, dtype=torch.float32)  # (K, B)
        targets = batch.targets  # (B, T)
        target_lengths = (batch.lengths.cpu().numpy() if host_lengths is None else np.asarray(host_lengths)) - 1
        shortest = int(target_lengths.min())  # steps at which every sentence has a target
        for t, hidden in enumerate(steps(batch.decoder_inputs, z)):  # hidden (K, B, H)
            if t < shortest:  # every sentence: no copy
                step_hidden = hidden.reshape(-1, hidden.shape[-1])  # (K·B, H)
                nll = _step_nll(self.decoder, step_hidden, targets[:, t].repeat(num_samples), logit_rows, precision)
                log_px_z.sub_(nll.view(num_samples, batch_size))
                continue
            host_present = np.flatnonzero(target_lengths > t)  # sentences with a target at step t, (b,)
            if host_present.size == 0:
                break
            present = device_index(host_present, z.device)
            step_hidden = hidden.index_select(1, present).reshape(-1, hidden.shape[-1])  # (K·b, H)
            step_targets = targets[present, t].repeat(num_samples)  # (K·b,)
            nll = _step_nll(self.decoder, step_hidden, step_targets, logit_rows, precision)  # (K·b,)
            log_px_z.index_add_(1, present, nll.view(num_samples, -1).float(), alpha=-1.0)
        return log_px_z


def _step_nll(decoder, hidden: Tensor, targets: Tensor, logit_rows: int | None, precision: str) -> Tensor:
    """−log p(y|h) per row, (N,): ``token_nll``; on a GPU the fused output layer in chunks of
    ``logit_rows``; with ``bf16`` the output layer under bfloat16 autocast (its log-softmax in float32)."""
    if precision == "bf16":
        with decoder_autocast(precision, hidden.device):
            return token_nll(decoder.logits, hidden, targets).float()
    layer = output_layer_of(decoder.logits)
    if logit_rows is None or layer is None or hidden.dtype != layer.weight.dtype:
        return token_nll(decoder.logits, hidden, targets)
    return linear_cross_entropy(hidden, layer, targets, chunk_rows=logit_rows)
