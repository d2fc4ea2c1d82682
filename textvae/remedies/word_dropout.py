"""Word dropout (Bowman et al. 2016, §3.1): weaken the decoder by hiding its input words.

Each decoder input token is replaced by the unk token with probability 1 − ``keep_prob``
(``keep_prob`` = k in the paper; k = 0 is the inputless decoder, which sees only z and position).
PAD, BOS and EOS are never replaced. Training only: at evaluation the decoder sees every word.
"""

from __future__ import annotations

import torch
from torch import Tensor

from textvae.errors import TextVAEError
from textvae.registry import register
from textvae.remedies.base import REMEDY_CONTEXT, Remedy


@register("remedy", "word_dropout", context=REMEDY_CONTEXT)
class WordDropout(Remedy):
    needs_latent = False

    def __init__(self, pad_id: int, bos_id: int, eos_id: int, unk_id: int, keep_prob: float = 0.75):
        super().__init__()
        if not 0 <= keep_prob <= 1:
            raise TextVAEError(f"word_dropout: keep_prob must be in [0, 1], got {keep_prob}")
        self.keep_prob = keep_prob
        self.unk_id = unk_id
        self.register_buffer("protected", torch.tensor([pad_id, bos_id, eos_id]), persistent=False)

    def decoder_inputs(self, tokens: Tensor) -> Tensor:
        drop = torch.rand(tokens.shape, device=tokens.device) >= self.keep_prob  # (B, T)
        drop &= ~torch.isin(tokens, self.protected)
        return tokens.masked_fill(drop, self.unk_id)
