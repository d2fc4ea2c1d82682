"""Posterior means of many sentences, encoded in batches on the model's device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from textvae.errors import TextVAEError


@torch.no_grad()
def posterior_means(model, sentences: Sequence[str], batch_size: int = 256) -> Tensor:
    """E_q[z|x] for each sentence: (N, D) on the model's device, in the order given.

    ``model`` is a ``textvae.api.TextModel`` with a latent variable; batches of ``batch_size``
    sentences (padding never changes an encoder's output, so the batch size only sets memory)."""
    if not model.has_latent:
        raise TextVAEError("posterior means need a model with a latent variable; this one is a language model")
    if batch_size < 1:
        raise TextVAEError(f"batch size must be ≥ 1, got {batch_size}")
    if not sentences:
        raise TextVAEError("no sentences to encode")
    chunks = [model.encode(list(sentences[i : i + batch_size])).mean for i in range(0, len(sentences), batch_size)]
    return torch.cat(chunks)  # (N, D)
