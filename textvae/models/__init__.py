"""Encoders, decoders and the sequence models built from them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textvae import registry
from textvae.data.vocab import Vocab


def build_model(spec: Mapping[str, Any], vocab: Vocab):
    """The model a recipe's ``[model]`` table names, sized for ``vocab``."""
    return registry.build("model", spec, "model", vocab_size=len(vocab), pad_id=vocab.pad_id)
