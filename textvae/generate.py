"""Decoding from a decoder given z: greedy, sampling (temperature, top-k, top-p) and beam search.

Works for any decoder with ``initial_state(z, B)``, ``step(tokens, state, z)`` and
``reorder_state(state, index)``. A hypothesis that never emits EOS stops at ``max_len`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from textvae.errors import TextVAEError


@dataclass(frozen=True)
class DecodeSettings:
    strategy: Literal["greedy", "sample", "beam"] = "greedy"
    temperature: float = 1.0  # sampling only: logits / temperature
    top_k: int | None = None  # sampling only: keep the k most likely tokens
    top_p: float | None = None  # sampling only: keep the smallest set with probability ≥ p (nucleus)
    beam_size: int = 5
    length_penalty: float = 1.0  # beam only: rank finished hypotheses by log p / length ** this
    max_len: int = 50  # generated tokens, EOS included

    def __post_init__(self):
        if self.strategy not in ("greedy", "sample", "beam"):
            raise TextVAEError(f"unknown decoding strategy {self.strategy!r}; choose greedy, sample or beam")
        if self.temperature <= 0:
            raise TextVAEError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise TextVAEError(f"top-k must be ≥ 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise TextVAEError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.beam_size < 1:
            raise TextVAEError(f"beam size must be ≥ 1, got {self.beam_size}")
        if self.max_len < 1:
            raise TextVAEError(f"max length must be ≥ 1, got {self.max_len}")


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Set to −inf every logit outside the top-k and outside the top-p nucleus; (B, V) → (B, V)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def decode(
    decoder,
    z: Tensor | None,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    settings: DecodeSettings = DecodeSettings(),
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Token ids (without BOS, up to and excluding EOS) for each of ``batch_size`` rows of z (B, D)."""
    if settings.strategy == "beam":
        return [
            _beam_search(decoder, None if z is None else z[b : b + 1], bos_id, eos_id, settings)
            for b in range(batch_size)
        ]
    state = decoder.initial_state(z, batch_size)
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long)
    finished = torch.zeros(batch_size, dtype=torch.bool)
    outputs = []
    for _ in range(settings.max_len):
        logits, state = decoder.step(tokens, state, z)  # (B, V)
        if settings.strategy == "greedy":
            tokens = logits.argmax(-1)
        else:
            logits = filter_logits(logits / settings.temperature, settings.top_k, settings.top_p)
            tokens = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
        tokens = tokens.masked_fill(finished, eos_id)
        outputs.append(tokens)
        finished |= tokens == eos_id
        if finished.all():
            break
    ids = torch.stack(outputs, dim=1).tolist()  # (B, steps)
    return [row[: row.index(eos_id)] if eos_id in row else row for row in ids]


def _beam_search(decoder, z: Tensor | None, bos_id: int, eos_id: int, settings: DecodeSettings) -> list[int]:
    """Beam search for one z (1, D): keeps ``beam_size`` live hypotheses, collects finished ones."""
    width = settings.beam_size
    state = decoder.initial_state(z, 1)
    tokens = torch.tensor([bos_id])
    scores = torch.zeros(1)  # (W,) log p of each live hypothesis
    histories: list[list[int]] = [[]]
    finished: list[tuple[float, list[int]]] = []
    for step in range(settings.max_len):
        live = len(histories)
        z_live = None if z is None else z.expand(live, -1)
        logits, state = decoder.step(tokens, state, z_live)  # (W, V)
        candidates = (scores.unsqueeze(1) + logits.log_softmax(-1)).view(-1)  # (W * V,)
        top_scores, top_index = candidates.topk(min(2 * width, candidates.numel()))
        vocab_size = logits.shape[-1]
        next_rows, next_tokens, next_scores, next_histories = [], [], [], []
        for score, index in zip(top_scores.tolist(), top_index.tolist(), strict=True):
            row, token = divmod(index, vocab_size)
            if token == eos_id:
                finished.append((score / (step + 1) ** settings.length_penalty, histories[row]))
            elif len(next_rows) < width:
                next_rows.append(row)
                next_tokens.append(token)
                next_scores.append(score)
                next_histories.append([*histories[row], token])
        if len(finished) >= width or not next_rows:
            break
        state = decoder.reorder_state(state, torch.tensor(next_rows))
        tokens, scores, histories = torch.tensor(next_tokens), torch.tensor(next_scores), next_histories
    if not finished:  # nothing emitted EOS within max_len: the best live hypothesis, cut there
        best = int(scores.argmax())
        return histories[best]
    return max(finished, key=lambda item: item[0])[1]
