"""Training throughput: the toolkit's step against the plain-PyTorch step of
``benchmarks/reference_step.py``, SGD then Adam, same weights and batches."""

from __future__ import annotations

import itertools
import logging
import statistics
from collections.abc import Callable

import torch

from textvae import registry
from textvae.data.batching import Batch, iterate_batches
from textvae.engine.step import StepOutcome
from textvae.engine.train_record import TrainWindow, norm_keys
from textvae.strategies import StepContext

from .clock import Clock
from .corpus import Corpus, train_batches
from .flops import train_flops
from .models import ADAM_LR, Sizes, optimizer_for, seeded_model, vae_spec

log = logging.getLogger(__name__)


def toolkit_steps(
    model, optimizer, batches: list[Batch], strategy_spec: dict | None = None, inner: list[Batch] | None = None
) -> Callable[[], int]:
    """What ``textvae.train`` does per batch once it is collated: the strategy's step (``standard``
    unless given) and the running sums of the loop. Returns a function that makes one pass over
    ``batches`` and returns the target tokens of every update it made: aggressive training's
    inner updates draw their batches from ``inner`` (default: ``batches``) in turn."""
    strategy = registry.build("strategy", strategy_spec or {"type": "standard"}, "strategy")
    pool = itertools.cycle(inner or batches)
    token_counts = [batch.num_target_tokens for batch in batches]
    progress = {"step": 0, "inner_tokens": 0}

    def inner_batch() -> Batch:
        batch = next(pool)
        progress["inner_tokens"] += batch.num_target_tokens
        return batch

    def run() -> int:
        window = TrainWindow(next(model.parameters()).device, norm_keys(model))
        progress["inner_tokens"] = 0
        for batch, tokens in zip(batches, token_counts, strict=True):
            context = StepContext(model, optimizer, 5.0, progress["step"], len(batches), inner_batch)
            terms, updated = strategy.train_step(context, batch)
            progress["step"] += int(updated)
            window.add_step(StepOutcome(updated, terms, len(batch), tokens, grad_norms=context.grad_norms))
        return sum(token_counts) + progress["inner_tokens"]

    return run


def count_updates(optimizer: torch.optim.Optimizer) -> Callable[[], int]:
    """A counter of ``optimizer.step`` calls (aggressive training makes several per batch)."""
    calls = {"count": 0}
    optimizer.register_step_post_hook(lambda *_: calls.__setitem__("count", calls["count"] + 1))
    return lambda: calls["count"]


def bench_training(clock: Clock, corpus: Corpus, sizes: Sizes, reference) -> dict:
    """Toolkit step vs the plain-PyTorch reference, SGD then Adam, same weights and batches."""
    device = clock.device
    batches = train_batches(corpus, sizes, sizes.train_steps, device)
    tokens = sum(b.num_target_tokens for b in batches)
    results = {}
    for name in ("sgd", "adam"):
        model = seeded_model(vae_spec(sizes), corpus.vocab, device)
        flops = sum(train_flops(model, b) for b in batches)
        twin = reference.ReferenceVAE.like(model)
        toolkit_run = toolkit_steps(model, optimizer_for(model, name), batches)
        twin_optimizer = reference.make_optimizer(twin, name, 1.0 if name == "sgd" else ADAM_LR)

        def reference_run(twin=twin, twin_optimizer=twin_optimizer):
            for batch in batches:
                reference.train_step(twin, twin_optimizer, batch.tokens, batch.lengths, 5.0)

        best = clock.interleaved({"toolkit": toolkit_run, "reference": reference_run}, sizes.rounds)
        # each round's FLOP/s over the matmul rate measured right after it: the machine's state shared
        round_ratios = [flops / r["seconds"]["toolkit"] / 1e9 / r["matmul_gflops"] for r in clock.last_rounds]
        results[name] = {
            "tokens": tokens,
            "steps": len(batches),
            "flops": flops,
            "seconds": best["toolkit"],
            "tokens_per_s": tokens / best["toolkit"],
            "gflops": flops / best["toolkit"] / 1e9,
            "reference_seconds": best["reference"],
            "reference_tokens_per_s": tokens / best["reference"],
            "round_ratios": round_ratios,
            "median_round_ratio": statistics.median(round_ratios),
        }
        log.info(
            "training %s: %.0f tokens/s (%.1f GFLOP/s), reference %.0f tokens/s",
            name,
            results[name]["tokens_per_s"],
            results[name]["gflops"],
            results[name]["reference_tokens_per_s"],
        )
    collate_seconds = clock.time(
        lambda: list(iterate_batches(corpus.train, [b.indices.cpu().numpy() for b in batches], corpus.vocab.pad_id))
    )
    results["collate_ms_per_batch"] = 1e3 * collate_seconds / len(batches)
    return results
