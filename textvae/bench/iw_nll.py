"""IW-NLL throughput: ``textvae.evaluation.importance.importance_log_weights`` against the one-sentence-at-a-time
baseline of ``benchmarks/naive_iw_nll.py``, and ``textvae eval``'s own path (``eval_path``: the whole
``textvae.evaluation.evaluate.evaluate`` on a seeded subset of the test split, as a user runs it, at each K)."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from textvae import metrics
from textvae.data.batching import Batch, bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit
from textvae.evaluation.device import matmul_precision
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.evaluation.importance import importance_log_weights
from textvae.evaluation.validation import select_sentences

from .clock import Clock
from .corpus import Corpus
from .flops import iw_flops
from .models import Sizes, seeded_model, vae_spec
from .references import load_reference

log = logging.getLogger(__name__)


def _iw_batches(corpus: Corpus, sizes: Sizes, split: EncodedSplit | None = None) -> list[Batch]:
    """``iw_batches`` batches drawn (seeded) from the test split sorted by length and cut into
    batches, as ``textvae eval`` batches a whole split: sentences of one batch have about the same
    length, and the drawn batches spread over the lengths."""
    split = corpus.test if split is None else split
    order = bucketed_batches(split.lengths, sizes.iw_batch_size, shuffle=False)
    drawn = np.random.default_rng(0).choice(len(order), size=min(sizes.iw_batches, len(order)), replace=False)
    return list(iterate_batches(split, [order[i] for i in sorted(drawn)], corpus.vocab.pad_id))


@torch.no_grad()
def toolkit_iw(model, batches: list[Batch], num_samples: int, chunk: int, device) -> torch.Tensor:
    """IW-NLL per sentence as ``textvae.evaluation.evaluate`` computes it (in eval mode)."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    values = []
    for batch in batches:
        batch = batch.to(device)
        log_weights = importance_log_weights(model, batch, model.infer(batch), num_samples, chunk, generator)
        values.append(-metrics.iw_log_likelihood(log_weights))
    return torch.cat(values)


def bench_iw(clock: Clock, corpus: Corpus, sizes: Sizes, naive) -> dict:
    """IW-NLL sentences/s and FLOP/s against the one-sentence-at-a-time baseline, batch by batch in
    turns (each after an untimed chunk of warm-up), each batch timed ``iw_repeats`` times and its
    best time kept, a matmul measurement after each timing."""
    device = clock.device
    model = seeded_model(vae_spec(sizes), corpus.vocab, device).eval()
    twin = load_reference("reference_step").ReferenceVAE.like(model).eval()
    batches = _iw_batches(corpus, sizes)
    sentences = [[b.tokens[i, : int(b.lengths[i])].to(device) for i in range(len(b))] for b in batches]
    toolkit_iw(model, batches[:1], sizes.iw_chunk, sizes.iw_chunk, device)
    naive.iw_nll(twin, sentences[0][:1], sizes.iw_chunk, sizes.iw_chunk)
    seconds = naive_seconds = 0.0
    toolkit_nll, naive_nll = [], []
    for batch, rows in zip(batches, sentences, strict=True):
        best = best_naive = math.inf
        for _ in range(sizes.iw_repeats):
            best = min(
                best,
                clock.time(
                    lambda batch=batch: toolkit_nll.append(toolkit_iw(model, [batch], *_iw_work(sizes), device))
                ),
            )
            best_naive = min(
                best_naive, clock.time(lambda rows=rows: naive_nll.append(naive.iw_nll(twin, rows, *_iw_work(sizes))))
            )
            clock.matmul()
        seconds += best
        naive_seconds += best_naive
    count = sum(len(b) for b in batches)
    flops = sum(iw_flops(model, b, sizes.iw_samples) for b in batches)
    log.info("IW-NLL K=%d: %.3f sentences/s, naive %.3f", sizes.iw_samples, count / seconds, count / naive_seconds)
    return {
        "sentences": count,
        "tokens": sum(b.num_target_tokens for b in batches),
        "iw_samples": sizes.iw_samples,
        "iw_chunk": sizes.iw_chunk,
        "batch_size": sizes.iw_batch_size,
        "seconds": seconds,
        "sentences_per_s": count / seconds,
        "flops": flops,
        "gflops": flops / seconds / 1e9,
        "naive_seconds": naive_seconds,
        "naive_sentences_per_s": count / naive_seconds,
        # the same sentences with independent samples: equal up to Monte-Carlo noise
        "mean_iw_nll": float(torch.cat(toolkit_nll).mean()),
        "mean_iw_nll_naive": float(torch.cat(naive_nll).mean()),
        # textvae eval's whole path at K = 50 and 500; on a CPU only at the tests' tiny sizes (the
        # bench's CPU budget has no room for two evaluations at K = 500 of the full-size model)
        "eval_path": bench_eval_path(clock, corpus, sizes) if device.type == "cuda" or sizes.synthetic_base else {},
    }


def _peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def eval_path(clock: Clock, model, split: EncodedSplit, pad_id: int, num_samples: int, sentences: int) -> dict:
    """``textvae eval``'s code (``evaluate``: ELBO, MI, AU and IW-NLL) on ``sentences`` seeded test
    sentences at K = ``num_samples``, timed after one untimed run: sentences/s, the IW-NLL FLOPs
    (``iw_flops``; the ELBO pass and the encoder are not counted, so the rate is a lower bound) per
    second, that rate over the best fp32 matmul rate the clock has seen (one more measured right
    after), and the peak GPU memory."""
    device = clock.device
    settings = EvalSettings(iw_samples=num_samples, max_sentences=sentences, progress_bar=False)
    chosen = select_sentences(split, sentences, settings.seed)
    batches = [chosen[b] for b in bucketed_batches(split.lengths[chosen], settings.batch_size, shuffle=False)]
    flops = sum(iw_flops(model, batch, num_samples) for batch in iterate_batches(split, batches, pad_id))
    evaluate(model, split, pad_id, settings)  # warm-up: kernels, the allocator's pools
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    results = []
    seconds = clock.time(lambda: results.append(evaluate(model, split, pad_id, settings).metrics))
    with matmul_precision("fp32", device):  # the fp32 peak, whatever the global setting
        clock.matmul()
    peak = clock.peak_gflops
    gflops = flops / seconds / 1e9
    log.info(
        "eval path K=%d: %.1f sentences/s, %.0f GFLOP/s (%.2f of %.0f)",
        num_samples,
        len(chosen) / seconds,
        gflops,
        gflops / peak,
        peak,
    )
    return {
        "iw_samples": num_samples,
        "sentences": len(chosen),
        "seconds": seconds,
        "sentences_per_s": len(chosen) / seconds,
        "flops": flops,
        "gflops": gflops,
        "matmul_gflops": peak,
        "peak_fraction": gflops / peak,
        "peak_memory_mb": _peak_memory_mb(device),
        "iw_nll": results[0]["iw_nll"],
    }


def bench_eval_path(clock: Clock, corpus: Corpus, sizes: Sizes) -> dict:
    """``eval_path`` of the bench model at K = ``iw_small_samples`` and ``iw_samples``, on as many
    test sentences as the IW-NLL comparison uses (at least one batch); GPU memory should not grow with K."""
    model = seeded_model(vae_spec(sizes), corpus.vocab, clock.device).eval()
    sentences = max(sizes.iw_batches * sizes.iw_batch_size, EvalSettings().batch_size)
    return {
        str(k): eval_path(clock, model, corpus.test, corpus.vocab.pad_id, k, sentences)
        for k in (sizes.iw_small_samples, sizes.iw_samples)
    }


def _iw_work(sizes: Sizes) -> tuple[int, int]:
    return sizes.iw_samples, sizes.iw_chunk
