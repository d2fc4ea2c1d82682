"""Shared fixtures: tiny, distinct sizes (B=3, T=7, V=11, D=4) so that transposes fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from textvae.data.batching import collate
from textvae.data.vocab import Vocab
from textvae.models import build_model

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

WORDS = ("a", "b", "c", "d", "e", "f", "g")  # with 4 specials: V = 11


@pytest.fixture
def vocab() -> Vocab:
    return Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *WORDS))


def tiny_vae_spec(latent_dim: int = 4, **decoder) -> dict:
    return {
        "type": "vae",
        "latent_dim": latent_dim,
        "encoder": {"type": "lstm", "embed_dim": 5, "hidden_dim": 6},
        "decoder": {"type": "lstm", "embed_dim": 5, "hidden_dim": 6, **decoder},
    }


def tiny_lm_spec() -> dict:
    return {"type": "lm", "decoder": {"type": "lstm", "embed_dim": 5, "hidden_dim": 6}}


@pytest.fixture
def tiny_vae(vocab):
    torch.manual_seed(0)
    # larger init than the papers' U(-0.01, 0.01) so that z visibly changes the outputs
    spec = tiny_vae_spec(weight_init_range=0.5)
    spec["encoder"]["weight_init_range"] = 0.5
    return build_model(spec, vocab).eval()


@pytest.fixture
def tiny_lm(vocab):
    torch.manual_seed(0)
    return build_model(tiny_lm_spec(), vocab).eval()


@pytest.fixture
def batch(vocab):
    """B = 3 sentences of unequal lengths; the longest has T = 7 tokens with BOS and EOS."""
    rows = [[1, 4, 5, 6, 7, 8, 2], [1, 9, 10, 2], [1, 4, 2]]
    return collate(rows, [0, 1, 2], vocab.pad_id)
