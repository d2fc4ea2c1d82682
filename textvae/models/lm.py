"""The language-model baseline: the decoder without z, whose NLL is exact (the reference row)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from textvae import registry
from textvae.data.batching import Batch
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.models.cross_entropy import sequence_nll
from textvae.models.vae import build_remedies
from textvae.objective import VAEOutput
from textvae.registry import ComponentSpec, register


@register("model", "lm", context=("vocab_size", "special_ids", "remedies", "vocab"))
class LanguageModel(nn.Module):
    has_latent = False
    latent_dim = 0

    def __init__(
        self,
        vocab_size: int,
        special_ids: dict[str, int],
        remedies: list[dict[str, Any]],
        decoder: ComponentSpec("decoder"),
        vocab: Vocab | None = None,  # for decoders that check a pretrained tokenizer token by token
    ):
        super().__init__()
        context = {"vocab_size": vocab_size, "latent_dim": 0, "pad_id": special_ids["pad_id"], "vocab": vocab}
        self.decoder = registry.build("decoder", decoder, "model.decoder", **context)
        self.remedies = build_remedies(remedies, context_dim=0, vocab_size=vocab_size, latent_dim=0, **special_ids)
        for remedy in self.remedies:
            if remedy.needs_latent:
                raise TextVAEError(f"remedy {type(remedy).__name__} needs a latent variable; a language model has none")

    def forward(self, batch: Batch, generator=None) -> VAEOutput:
        inputs = batch.decoder_inputs
        if self.training:
            for remedy in self.remedies:
                inputs = remedy.decoder_inputs(inputs)
        hidden = self.decoder(inputs, None)  # (B, T, H)
        rec = sequence_nll(self.decoder.logits, hidden, batch.targets, batch.target_mask)
        return VAEOutput(rec=rec, num_tokens=batch.lengths - 1, posterior=None, z=None)

    def log_likelihood(self, batch: Batch) -> Tensor:
        """log p(x) per sentence, (B,)."""
        return -self.forward(batch).rec
