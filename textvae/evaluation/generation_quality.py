"""Generation quality through sacrebleu: reconstruction BLEU, self-BLEU and distinct-n of prior samples.

- **BLEU** (Papineni et al. 2002), sacrebleu's corpus BLEU with its defaults (13a tokenization,
  4-grams, exp smoothing): BLEU = BP · exp(Σ_n ¼ log p_n), p_n the clipped n-gram precisions summed
  over the corpus, BP = min(1, exp(1 − r/c)). Equal to ``sacrebleu REF -i HYP -b`` on the same lines.
- **Self-BLEU** (Zhu et al. 2018, Texygen): each sample is a hypothesis and all the other samples
  its references; the sentence BLEU of every sample is averaged. Sentence BLEU is sacrebleu's
  ``sentence_score`` (effective order, exp smoothing: the smoothing sacrebleu uses for single
  sentences, where Texygen used NLTK's). 100 = every sample the same; lower = more diverse.
- **Distinct-n** (Li et al. 2016): distinct n-grams / all n-grams, over the samples' whitespace tokens.

Every score is stored with its sacrebleu signature (``nrefs:1|case:mixed|eff:no|tok:13a|...``), so a
number can be reproduced and compared only with numbers of the same signature.

``evaluate_generation`` applies them to a model: the reconstruction of each evaluated sentence is
the greedy decoding of z = the posterior mean (through the posterior flow, if any), scored against
the sentence x itself as the model sees it (its vocabulary's text: unknown words as the unk token);
the samples decode z ~ N(0, I) (or sample a language model), greedily by default so that their
diversity comes from z alone — a collapsed VAE then gives self-BLEU 100. Decoding stops at EOS or at
the longest evaluated sentence's length.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from textvae.data.batching import bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.evaluation.device import module_device
from textvae.evaluation.evaluate import EvalSettings
from textvae.evaluation.validation import select_sentences
from textvae.generation.decoding import DecodeSettings, decode


@dataclass(frozen=True)
class Score:
    """A BLEU score (0–100) and the sacrebleu signature that says how it was computed."""

    score: float
    signature: str


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> Score:
    """sacrebleu corpus BLEU of ``hypotheses`` against one reference each (line i against line i)."""
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise TextVAEError(f"BLEU: {len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise TextVAEError("BLEU: no sentences")
    bleu = BLEU()
    score = bleu.corpus_score(list(hypotheses), [list(references)]).score
    return Score(score, str(bleu.get_signature()))


def self_bleu(samples: Sequence[str]) -> Score:
    """Mean sentence BLEU of each sample against all the others as references (Zhu et al. 2018)."""
    from sacrebleu.metrics import BLEU

    if len(samples) < 2:
        raise TextVAEError(f"self-BLEU needs at least 2 samples, got {len(samples)}")
    bleu = BLEU(effective_order=True)
    samples = list(samples)
    scores = [bleu.sentence_score(sample, samples[:i] + samples[i + 1 :]).score for i, sample in enumerate(samples)]
    return Score(float(np.mean(scores)), str(bleu.get_signature()))


def distinct_n(samples: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the whitespace tokens of every sample (0 when there are none)."""
    if n < 1:
        raise TextVAEError(f"distinct-n needs n ≥ 1, got {n}")
    ngrams: Counter = Counter()
    for sample in samples:
        tokens = sample.split()
        ngrams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(ngrams.values())
    return len(ngrams) / total if total else 0.0


@dataclass(frozen=True)
class GenerationSettings:
    num_samples: int = 500  # prior samples for self-BLEU and distinct-n (self-BLEU costs O(N²))
    strategy: Literal["greedy", "sample"] = "greedy"  # how the prior samples are decoded

    def __post_init__(self):
        if self.num_samples < 2:
            raise TextVAEError(f"num-samples must be ≥ 2 (self-BLEU compares samples), got {self.num_samples}")
        if self.strategy not in ("greedy", "sample"):
            raise TextVAEError(f"sample strategy must be greedy or sample, got {self.strategy!r}")


def posterior_mean_latent(model, batch) -> torch.Tensor:
    """z at the posterior mean: the Gaussian's mean, then the posterior flow (IAF) when there is one."""
    inference = model.infer(batch)
    z = inference.posterior.mean  # (B, D)
    for remedy in model.remedies:
        z, _ = remedy.posterior_sample(z, inference.context)
    return z


@torch.no_grad()
def evaluate_generation(
    model,
    split: EncodedSplit,
    vocab: Vocab,
    settings: GenerationSettings = GenerationSettings(),
    subset: EvalSettings | None = None,
) -> dict:
    """Reconstruction BLEU (VAEs), self-BLEU and distinct-1/2 of prior samples, with their signatures.

    The reconstructed sentences are those ``evaluate`` scores with the same ``subset`` settings
    (``max_sentences``, ``seed``, ``batch_size``; EvalSettings' defaults when None); the seed also
    draws the prior samples."""
    subset = EvalSettings() if subset is None else subset
    model.eval()
    device = module_device(model)  # decoding on the model's device; the scores from the text, by sacrebleu
    started = time.perf_counter()
    chosen = select_sentences(split, subset.max_sentences, subset.seed)
    max_len = int(split.lengths[chosen].max()) - 1  # generated tokens incl. EOS, as long as the longest x
    greedy = DecodeSettings(max_len=max_len)
    result: dict = {"generation_max_len": max_len}
    examples: dict[str, list] = {}
    if model.has_latent:
        references, hypotheses = [], []
        batches = [chosen[b] for b in bucketed_batches(split.lengths[chosen], subset.batch_size, shuffle=False)]
        for batch in iterate_batches(split, batches, vocab.pad_id):
            z = posterior_mean_latent(model, batch.to(device))  # decoding runs on z's device
            decoded = decode(model.decoder, z, len(batch), vocab.bos_id, vocab.eos_id, greedy)
            references += [vocab.detokenize(row) for row in batch.tokens.tolist()]
            hypotheses += [vocab.detokenize(row) for row in decoded]
        rec = corpus_bleu(hypotheses, references)
        result |= {"bleu_rec": rec.score, "bleu_rec_signature": rec.signature, "bleu_rec_sentences": len(hypotheses)}
        examples["reconstructions"] = [[r, h] for r, h in zip(references[:5], hypotheses[:5], strict=True)]
    generator = torch.Generator(device=device).manual_seed(subset.seed)
    shape = (settings.num_samples, model.latent_dim)
    z = torch.randn(shape, generator=generator, device=device) if model.has_latent else None
    sample_settings = DecodeSettings(strategy=settings.strategy, max_len=max_len)
    decoded = decode(
        model.decoder, z, settings.num_samples, vocab.bos_id, vocab.eos_id, sample_settings, generator=generator
    )
    samples = [vocab.detokenize(row) for row in decoded]
    diversity = self_bleu(samples)
    result |= {
        "self_bleu": diversity.score,
        "self_bleu_signature": diversity.signature,
        "distinct_1": distinct_n(samples, 1),
        "distinct_2": distinct_n(samples, 2),
        "generation_samples": settings.num_samples,
        "generation_strategy": settings.strategy,
        "generation_seconds": time.perf_counter() - started,
    }
    examples["samples"] = samples[:5]
    result["generation_examples"] = examples
    return result


def generation_summary(result: dict) -> str:
    """One line: the generation metrics of ``evaluate_generation`` and the BLEU signature."""
    rec = (
        f"BLEU(rec) {result['bleu_rec']:.2f} on {result['bleu_rec_sentences']} sentences, "
        if "bleu_rec" in result
        else ""
    )
    return (
        f"{rec}self-BLEU {result['self_bleu']:.2f}, distinct-1 {result['distinct_1']:.3f}, "
        f"distinct-2 {result['distinct_2']:.3f} ({result['generation_samples']} prior samples, "
        f"{result['generation_strategy']}); sacrebleu {result.get('bleu_rec_signature', result['self_bleu_signature'])}"
    )
