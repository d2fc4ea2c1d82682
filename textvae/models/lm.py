"""The language-model baseline: the decoder without z, whose NLL is exact (the reference row)."""

from __future__ import annotations

from torch import Tensor, nn

from textvae import registry
from textvae.data.batching import Batch
from textvae.objective import VAEOutput, sequence_nll
from textvae.registry import ComponentSpec, register


@register("model", "lm", context=("vocab_size", "pad_id"))
class LanguageModel(nn.Module):
    has_latent = False
    latent_dim = 0

    def __init__(self, vocab_size: int, pad_id: int, decoder: ComponentSpec("decoder")):
        super().__init__()
        self.decoder = registry.build(
            "decoder", decoder, "model.decoder", vocab_size=vocab_size, latent_dim=0, pad_id=pad_id
        )

    def forward(self, batch: Batch, generator=None) -> VAEOutput:
        hidden = self.decoder(batch.decoder_inputs, None)  # (B, T, H)
        rec = sequence_nll(self.decoder.logits, hidden, batch.targets, batch.target_mask)
        return VAEOutput(rec=rec, num_tokens=batch.lengths - 1, posterior=None, z=None)

    def log_likelihood(self, batch: Batch) -> Tensor:
        """log p(x) per sentence, (B,)."""
        return -self.forward(batch).rec
