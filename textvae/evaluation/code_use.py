"""Does the decoder use its code? Content words kept by reconstructions, and sentences on homotopies.

A posterior-collapsed VAE can have a KL above zero and still decode the same sentence whatever z is.
Two checks on held-out sentences say whether z steers the output, as a reader of Bowman et al.
2016's tables would judge it:

- **Content words kept.** Content words are the vocabulary's words outside its ``frequent`` most
  frequent ones (a word vocabulary ranks by training-split count; the unk token is never one). Each
  evaluated sentence x_i is reconstructed greedily from its posterior mean, x̂_i, and
  overlap(x̂, y) = #(C(x̂) ∩ C(y)), the number of content-word *types* the two share. Reported:
  ``keep_rate`` = the share of sentences with overlap(x̂_i, x_i) ≥ 1, ``overlap_own`` = mean_i
  overlap(x̂_i, x_i), ``overlap_other`` = mean_i overlap(x̂_i, x_π(i)) with π a seeded derangement (a
  random other evaluated sentence), and their ratio. A decoder that ignores z has a ratio near 1.
- **Homotopies** (Bowman et al. 2016, §5.2): for ``pairs`` seeded pairs of evaluated sentences,
  ``steps`` evenly spaced points z(t) = (1 − t) μ₁ + t μ₂ (endpoints included) decoded greedily;
  reported is the mean number of different sentences on a path and the share of paths with ≥ 3.

Decoding is the command line's default (greedy, at most 50 tokens, unk never emitted), so
``textvae reconstruct`` and ``textvae interpolate --steps STEPS`` print the examples stored here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from textvae.data.batching import bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.evaluation.device import module_device
from textvae.evaluation.generation_quality import posterior_mean_latent
from textvae.generation.decoding import DecodeSettings, decode

FIRST_WORD = 4  # a word vocabulary's ids: pad, bos, eos, unk, then words by training count


@dataclass(frozen=True)
class CodeUseSettings:
    frequent: int = 100  # the most frequent words that are not content words
    pairs: int = 100  # homotopies measured
    steps: int = 7  # points on each homotopy, endpoints included
    examples: int = 5  # reconstructions and homotopies kept in the results, drawn by the seed
    example_words: tuple[int, int] = (5, 20)  # examples: held-out sentences of this many words, no unk
    seed: int = 0
    batch_size: int = 64


def content_ids(ids: Sequence[int], vocab: Vocab, frequent: int) -> set[int]:
    """The content-word types among word ids (outside the ``frequent`` most frequent words, not unk)."""
    return {i for i in ids if i >= FIRST_WORD + frequent and i != vocab.unk_id}


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) with no fixed point (n ≥ 2): a seeded shuffle, shifted by one."""
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = np.roll(order, 1)  # order[k] is paired with order[k - 1]
    return partner


def _greedy(model, z: torch.Tensor, vocab: Vocab) -> list[list[int]]:
    return decode(model.decoder, z, z.shape[0], vocab.bos_id, vocab.eos_id, DecodeSettings(), None, vocab.unk_id)


def _content(ids: Sequence[int], vocab: Vocab) -> list[int]:
    return vocab._content_ids(ids)


def _means(model, split: EncodedSplit, indices: np.ndarray, vocab: Vocab, batch_size: int):
    """Posterior means (N, D) and token rows of ``indices``, in the order given."""
    device = module_device(model)
    means, rows = [], []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        for batch in iterate_batches(split, [chunk], vocab.pad_id):
            means.append(posterior_mean_latent(model, batch.to(device)))
            rows += [_content(row, vocab) for row in batch.tokens.tolist()]
    return torch.cat(means), rows


def _keep_stats(sources: list[list[int]], outputs: list[list[int]], vocab: Vocab, s: CodeUseSettings) -> dict:
    own_sets = [content_ids(x, vocab, s.frequent) for x in sources]
    out_sets = [content_ids(x, vocab, s.frequent) for x in outputs]
    partner = derangement(len(sources), np.random.default_rng(s.seed))
    own = np.array([len(o & x) for o, x in zip(out_sets, own_sets, strict=True)])
    other = np.array([len(out_sets[i] & own_sets[partner[i]]) for i in range(len(sources))])
    return {
        "code_use_sentences": len(sources),
        "code_use_frequent_words": s.frequent,
        "keep_rate": float((own >= 1).mean()),
        "overlap_own": float(own.mean()),
        "overlap_other": float(other.mean()),
        "overlap_ratio": float(own.mean() / other.mean()) if other.mean() > 0 else float("inf"),
        "inputs_without_content_words": int(sum(1 for x in own_sets if not x)),
    }


def _example_indices(rows: list[list[int]], vocab: Vocab, count: int, s: CodeUseSettings, rng) -> list[int]:
    low, high = s.example_words
    eligible = [i for i, r in enumerate(rows) if low <= len(r) <= high and vocab.unk_id not in r]
    count = min(count, len(eligible))  # a small evaluation shows fewer examples, never fails for want of them
    return [eligible[i] for i in rng.choice(len(eligible), size=count, replace=False)]


def _homotopies(model, means: torch.Tensor, pairs: np.ndarray, vocab: Vocab, steps: int) -> list[list[str]]:
    weights = torch.linspace(0, 1, steps, device=means.device).view(1, steps, 1)  # (1, S, 1)
    first, second = means[pairs[:, 0]].unsqueeze(1), means[pairs[:, 1]].unsqueeze(1)  # (P, 1, D)
    z = ((1 - weights) * first + weights * second).reshape(-1, means.shape[1])  # (P·S, D)
    texts = [" ".join(vocab.decode(row)) for row in _greedy(model, z, vocab)]
    return [texts[p * steps : (p + 1) * steps] for p in range(len(pairs))]


@torch.no_grad()
def evaluate_code_use(model, split: EncodedSplit, vocab: Vocab, chosen: np.ndarray, s: CodeUseSettings) -> dict:
    """The checks above on the evaluated sentences ``chosen`` (indices into ``split``)."""
    if not model.has_latent:
        raise TextVAEError("--code-use needs a model with a latent variable; this one is a language model")
    if vocab.is_subword:
        raise TextVAEError("--code-use counts content words: it needs a word vocabulary, not subword pieces")
    if len(chosen) < 2:
        raise TextVAEError("--code-use needs at least 2 evaluated sentences")
    model.eval()
    order = np.concatenate(bucketed_batches(np.asarray(split.lengths)[chosen], s.batch_size, shuffle=False))
    indices = np.asarray(chosen)[order]  # by length: fewer padded steps when decoding
    means, sources = _means(model, split, indices, vocab, s.batch_size)
    outputs = [
        row
        for start in range(0, len(indices), s.batch_size)
        for row in _greedy(model, means[start : start + s.batch_size], vocab)
    ]
    result = _keep_stats(sources, outputs, vocab, s)
    rng = np.random.default_rng(s.seed)
    pairs = np.stack([rng.choice(len(indices), size=2, replace=False) for _ in range(s.pairs)])  # (P, 2)
    paths = _homotopies(model, means, pairs, vocab, s.steps)
    distinct = np.array([len(set(path)) for path in paths])
    result |= {
        "homotopy_pairs": s.pairs,
        "homotopy_steps": s.steps,
        "homotopy_distinct_mean": float(distinct.mean()),
        "homotopy_three_or_more": float((distinct >= 3).mean()),
    }
    text = [" ".join(vocab.decode(r)) for r in sources]
    shown = _example_indices(sources, vocab, 3 * s.examples, s, rng)
    reconstructions = [[text[i], " ".join(vocab.decode(outputs[i]))] for i in shown[: s.examples]]
    rest = shown[s.examples :]
    example_pairs = np.array(rest[: len(rest) // 2 * 2], dtype=np.int64).reshape(-1, 2)[: s.examples]
    example_paths = _homotopies(model, means, example_pairs, vocab, s.steps) if len(example_pairs) else []
    result["code_use_examples"] = {
        "reconstructions": reconstructions,
        "homotopies": [
            {"from": text[a], "to": text[b], "path": p} for (a, b), p in zip(example_pairs, example_paths, strict=True)
        ],
    }
    return result


def code_use_summary(result: dict) -> str:
    """Two lines: content words kept, and the homotopies' variety."""
    return (
        f"content words kept (outside the {result['code_use_frequent_words']} most frequent): "
        f"{100 * result['keep_rate']:.1f}% of {result['code_use_sentences']} reconstructions keep ≥ 1; "
        f"overlap with the own input {result['overlap_own']:.2f} vs a random other {result['overlap_other']:.2f} "
        f"(×{result['overlap_ratio']:.1f})\n"
        f"homotopies: {result['homotopy_distinct_mean']:.2f} different sentences on average over "
        f"{result['homotopy_steps']} points; {100 * result['homotopy_three_or_more']:.0f}% of "
        f"{result['homotopy_pairs']} pass through ≥ 3"
    )
