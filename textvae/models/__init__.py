"""Encoders, decoders and the sequence models built from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textvae import components, registry  # noqa: F401 - importing components registers the built-in ones
from textvae.data.vocab import Vocab


def build_model(spec: Mapping[str, Any], vocab: Vocab, remedies: Sequence[Mapping[str, Any]] = ()):
    """The model a recipe's ``[model]`` table names, sized for ``vocab``, with the recipe's remedies."""
    special_ids = {"pad_id": vocab.pad_id, "bos_id": vocab.bos_id, "eos_id": vocab.eos_id, "unk_id": vocab.unk_id}
    return registry.build(
        "model", spec, "model", vocab_size=len(vocab), special_ids=special_ids, remedies=list(remedies), vocab=vocab
    )
