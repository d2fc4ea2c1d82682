"""Decoding from a decoder given z: greedy, sampling (temperature, top-k, top-p) and beam search,
under constraints: never unk, no repeated n-gram, a repetition penalty, min/max length.

Works for any decoder with ``initial_state(z, B)``, ``step(tokens, state, z)`` and
``reorder_state(state, index)``. A hypothesis that never emits EOS stops at ``max_len`` tokens.

The constraints are ``transformers`` LogitsProcessors applied to each step's raw logits (B, V),
given the tokens generated so far (B, t), BOS excluded (so ``min_len`` and the n-grams count
generated words only): ``SuppressTokensLogitsProcessor`` (unk), ``NoRepeatNGramLogitsProcessor``,
``RepetitionPenaltyLogitsProcessor`` (Keskar et al. 2019: a seen token's logit divided by the
penalty when positive, multiplied when negative) and ``MinLengthLogitsProcessor`` (EOS banned before
``min_len`` words). Beam search applies them before its log-softmax, so a beam of one is greedy.
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
    length_penalty: float = 1.0  # beam only: rank hypotheses by log p / length ** this (length counts EOS)
    max_len: int = 50  # generated tokens, EOS included
    min_len: int = 0  # generated words before EOS may be emitted
    forbid_unk: bool = True  # never emit the unk token (when decode is given its id and it is not EOS)
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this size appears twice in one output
    repetition_penalty: float = 1.0  # > 1 discourages tokens already generated

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
        if not 0 <= self.min_len < self.max_len:
            raise TextVAEError(f"min length must be in [0, max length {self.max_len}), got {self.min_len}")
        if self.no_repeat_ngram_size < 0:
            raise TextVAEError(f"no-repeat n-gram size must be ≥ 0, got {self.no_repeat_ngram_size}")
        if self.repetition_penalty <= 0:
            raise TextVAEError(f"repetition penalty must be > 0, got {self.repetition_penalty}")


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


def constraints(settings: DecodeSettings, eos_id: int, unk_id: int | None, device: torch.device) -> list:
    """The ``transformers`` LogitsProcessors that ``settings`` asks for; each maps (history (B, t), logits (B, V))
    to logits (B, V). Empty when nothing is constrained (then ``transformers`` is not imported)."""
    wanted_unk = settings.forbid_unk and unk_id is not None and unk_id != eos_id  # GPT-2: unk is EOS, keep it
    if not (wanted_unk or settings.no_repeat_ngram_size or settings.repetition_penalty != 1.0 or settings.min_len):
        return []
    from transformers import (
        MinLengthLogitsProcessor,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    processors = []
    if wanted_unk:
        processors.append(SuppressTokensLogitsProcessor([unk_id], device=device))
    if settings.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.min_len:
        processors.append(MinLengthLogitsProcessor(settings.min_len, eos_id, device=device))
    return processors


def _constrain(processors: list, history: Tensor, logits: Tensor) -> Tensor:
    """Apply the processors in order: history (B, t) of generated ids, logits (B, V) → (B, V)."""
    for processor in processors:
        logits = processor(history, logits)
    return logits


def _device(decoder, z: Tensor | None) -> torch.device:
    """Where decoding runs: z's device, else the decoder's parameters' (a language model)."""
    if z is not None:
        return z.device
    parameters = getattr(decoder, "parameters", None)
    return next(iter(parameters())).device if parameters is not None else torch.get_default_device()


@torch.no_grad()
def decode(
    decoder,
    z: Tensor | None,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    settings: DecodeSettings = DecodeSettings(),
    generator: torch.Generator | None = None,
    unk_id: int | None = None,
) -> list[list[int]]:
    """Token ids (without BOS, up to and excluding EOS) for each of ``batch_size`` rows of z (B, D).

    ``unk_id``: the token that ``settings.forbid_unk`` bans; None (scoring, metrics) bans nothing.
    Runs on z's device (or the decoder's); a sampling ``generator`` must live there too."""
    device = _device(decoder, z)
    processors = constraints(settings, eos_id, unk_id, device)
    if settings.strategy == "beam":
        return [
            _beam_search(decoder, None if z is None else z[b : b + 1], bos_id, eos_id, settings, processors)
            for b in range(batch_size)
        ]
    state = decoder.initial_state(z, batch_size)
    tokens = torch.full((batch_size,), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    outputs = []
    for _ in range(settings.max_len):
        logits, state = decoder.step(tokens, state, z)  # (B, V)
        if processors:
            history = torch.stack(outputs, dim=1) if outputs else tokens.new_zeros(batch_size, 0)  # (B, t)
            logits = _constrain(processors, history, logits)
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


def _beam_search(
    decoder, z: Tensor | None, bos_id: int, eos_id: int, settings: DecodeSettings, processors: list
) -> list[int]:
    """Beam search for one z (1, D): keeps ``beam_size`` live hypotheses, collects finished ones.

    Length penalty (EOS-aware): a hypothesis of n tokens, its EOS counted when it has one, ranks by
    log p / n ** ``length_penalty``; hypotheses still live at ``max_len`` compete with the finished ones
    by the same rule. Candidates banned by a constraint (log p = −inf) are never kept. The search stops early
    once ``beam_size`` hypotheses have finished and none of the live ones ranks above the last of them now
    (exact for a penalty of 0, where scores only fall; ``transformers``' heuristic otherwise)."""
    width = settings.beam_size
    device = _device(decoder, z)
    state = decoder.initial_state(z, 1)
    tokens = torch.tensor([bos_id], device=device)
    scores = torch.zeros(1, device=device)  # (W,) log p of each live hypothesis
    histories: list[list[int]] = [[]]
    finished: list[tuple[float, list[int]]] = []
    for step in range(settings.max_len):
        live = len(histories)
        z_live = None if z is None else z.expand(live, -1)
        logits, state = decoder.step(tokens, state, z_live)  # (W, V)
        if processors:
            logits = _constrain(processors, torch.tensor(histories, dtype=torch.long, device=device), logits)
        candidates = (scores.unsqueeze(1) + logits.log_softmax(-1)).view(-1)  # (W * V,)
        top_scores, top_index = candidates.topk(min(2 * width, candidates.numel()))
        vocab_size = logits.shape[-1]
        next_rows, next_tokens, next_scores, next_histories = [], [], [], []
        for score, index in zip(top_scores.tolist(), top_index.tolist(), strict=True):
            if score == float("-inf"):
                break  # sorted: every later candidate is banned too
            row, token = divmod(index, vocab_size)
            if token == eos_id:
                finished.append((score / (step + 1) ** settings.length_penalty, histories[row]))
            elif len(next_rows) < width:
                next_rows.append(row)
                next_tokens.append(token)
                next_scores.append(score)
                next_histories.append([*histories[row], token])
        if not next_rows or _beam_done(finished, max(next_scores) / (step + 1) ** settings.length_penalty, width):
            break
        state = decoder.reorder_state(state, torch.tensor(next_rows, device=device))
        tokens, scores, histories = (
            torch.tensor(next_tokens, device=device),
            torch.tensor(next_scores, device=device),
            next_histories,
        )
    else:  # max_len reached: the live hypotheses (no EOS) compete with the finished ones
        finished += [
            (score / max(len(history), 1) ** settings.length_penalty, history)
            for score, history in zip(scores.tolist(), histories, strict=True)
        ]
    if not finished:  # every continuation banned: the best live hypothesis
        return histories[int(scores.argmax())]
    return max(finished, key=lambda item: item[0])[1]


def _beam_done(finished: list[tuple[float, list[int]]], best_live: float, width: int) -> bool:
    """True when ``width`` hypotheses have finished and the best live one ranks below the width-th of them."""
    if len(finished) < width:
        return False
    return best_live <= sorted((score for score, _ in finished), reverse=True)[width - 1]
