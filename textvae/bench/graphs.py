"""CUDA-graph rows: the toolkit's graphed training step against a graphed plain-PyTorch step.

On a GPU a step of these small models is launch-bound: hundreds of small kernels, each launched
by the host. Captured as one CUDA graph (PyTorch's CUDA semantics notes, "whole network capture")
the step is one launch. The rows, on batches of one sentence length (a graph holds fixed shapes;
``bucketed_batches`` makes PTB batches of one length), SGD lr 1.0 with clipping at 5 (He et al.
2019), taking turns round after round as every bench row does:

- eager toolkit step and eager plain-PyTorch step (``benchmarks/reference_step.py``): measured on
  any device;
- graphed plain-PyTorch step (``reference_step.graphed_train_step``) and the toolkit's graphed step
  (``textvae.cuda.sync_free_step.SyncFreeStep`` replayed by ``textvae.cuda.graph_cache.GraphedStep``, as training
  runs it; "not available" without those modules): CUDA only, "needs CUDA" elsewhere.

Targets (issue 17, one H200): graphed toolkit ≥ 0.95 × graphed plain step, and ≥ 3.5 × the
published reference code's tokens/s at H512 (``PUBLISHED_REFERENCE``, a stated constant).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

import numpy as np

from textvae.data.batching import Batch, iterate_batches
from textvae.data.corpus import EncodedSplit

from .clock import Clock
from .corpus import Corpus
from .models import Sizes, optimizer_for, seeded_model, vae_spec
from .training import toolkit_steps

log = logging.getLogger(__name__)

GRAD_CLIP = 5.0
# the published reference code (He et al. 2019's training script) at hidden 512, tokens/s: measured on
# one NVIDIA H200 by this project's previous lead, 2026-12-04; that code is not in this repository
PUBLISHED_REFERENCE = {
    "tokens_per_s": 86_960,
    "provenance": "published reference code at H512, measured 2026-12-04 on one H200 by the lead's predecessor "
    "(not re-measurable here: that code is not in the repository)",
}
GRAPH_TARGETS = {"toolkit_vs_reference": 0.95, "vs_published": 3.5}


def one_length_batches(split: EncodedSplit, batch_size: int, count: int, pad_id: int) -> list[Batch]:
    """``count`` batches of ``batch_size`` sentences all of one length: the length nearest the
    median of which the split holds at least a batch (seeded draw)."""
    counts = np.bincount(split.lengths)
    lengths = [length for length in range(len(counts)) if counts[length] >= batch_size]
    median = float(np.median(split.lengths))
    length = min(lengths, key=lambda n: (abs(n - median), n)) if lengths else int(np.argmax(counts))
    candidates = np.flatnonzero(split.lengths == length)
    rng = np.random.default_rng(0)
    order = [rng.choice(candidates, size=min(batch_size, len(candidates)), replace=False) for _ in range(count)]
    return list(iterate_batches(split, order, pad_id))


def graphed_sync_free(step, example, fake_capture=None) -> Callable[[object], None]:
    """The toolkit's graphed step around a ``textvae.cuda.sync_free_step.SyncFreeStep``: its graph cache
    (``textvae.cuda.graph_cache.GraphedStep``), captured here on ``example`` (after the cache's eager
    warm-up steps, which train too); a capture that fails raises instead of training uncaptured.
    ``fake_capture`` replaces ``torch.cuda.graph`` (tests on a CPU). Raises ImportError without
    those modules (issue 17)."""
    graph_cache = importlib.import_module("textvae.cuda.graph_cache")
    graphed = graph_cache.GraphedStep(step, capture=fake_capture)
    for _ in range(graphed.warmup_steps + 1):
        graphed(example)
    if graphed.failure is not None or graphed.captures != 1:
        raise RuntimeError(f"the toolkit's CUDA graph capture failed: {graphed.failure}")
    return graphed


def toolkit_graphed(model, optimizer, batches: list[Batch], fake_capture=None) -> Callable[[], None]:
    """One pass of the toolkit's graphed step (``graphed_sync_free``, SGD, clip 5) over ``batches``."""
    graph_step = importlib.import_module("textvae.cuda.sync_free_step")
    step = graph_step.SyncFreeStep(model, optimizer, graph_step.text_loss_fn(model), grad_clip=GRAD_CLIP)
    graphed = graphed_sync_free(step, batches[0], fake_capture)

    def run() -> None:
        for batch in batches:
            graphed(batch)

    return run


def reference_graphed(reference, twin, optimizer, batches: list[Batch]) -> Callable[[], None]:
    """``reference_step.graphed_train_step`` on ``batches``."""
    step = reference.graphed_train_step(twin, optimizer, batches[0].tokens, batches[0].lengths, GRAD_CLIP)

    def run() -> None:
        for batch in batches:
            step(batch.tokens, batch.lengths)

    return run


def _runs(clock: Clock, corpus: Corpus, sizes: Sizes, reference, batches: list[Batch]) -> tuple[dict, dict]:
    """The timed runs by name, and why a row has none ("needs CUDA", "not available: …", an error)."""
    device = clock.device
    runs, missing = {}, {}
    model = seeded_model(vae_spec(sizes), corpus.vocab, device)
    twin = reference.ReferenceVAE.like(model)
    runs["eager_toolkit"] = toolkit_steps(model, optimizer_for(model, "sgd"), batches)
    twin_optimizer = reference.make_optimizer(twin, "sgd", 1.0)

    def eager_reference() -> None:
        for batch in batches:
            reference.train_step(twin, twin_optimizer, batch.tokens, batch.lengths, GRAD_CLIP)

    runs["eager_reference"] = eager_reference
    if device.type != "cuda":
        missing["graphed_reference"] = missing["graphed_toolkit"] = "needs CUDA"
        return runs, missing
    graphed_twin = reference.ReferenceVAE.like(model)
    try:
        optimizer = reference.make_optimizer(graphed_twin, "sgd", 1.0)
        runs["graphed_reference"] = reference_graphed(reference, graphed_twin, optimizer, batches)
    except Exception as err:  # a failed capture is a row of the table, not the end of the bench
        log.exception("graphed reference step")
        missing["graphed_reference"] = f"failed: {type(err).__name__}: {err}"
    graphed_model = seeded_model(vae_spec(sizes), corpus.vocab, device)
    try:
        runs["graphed_toolkit"] = toolkit_graphed(graphed_model, optimizer_for(graphed_model, "sgd"), batches)
    except ImportError as err:
        missing["graphed_toolkit"] = f"not available ({err})"
    except Exception as err:
        log.exception("graphed toolkit step")
        missing["graphed_toolkit"] = f"failed: {type(err).__name__}: {err}"
    return runs, missing


def bench_graphs(clock: Clock, corpus: Corpus, sizes: Sizes, reference) -> dict:
    """Tokens/s of the eager and graphed steps (toolkit and plain PyTorch) on batches of one length."""
    batches = one_length_batches(corpus.train, sizes.batch_size, sizes.graph_steps, corpus.vocab.pad_id)
    batches = [batch.to(clock.device) for batch in batches]
    tokens = sum(batch.num_target_tokens for batch in batches)
    runs, missing = _runs(clock, corpus, sizes, reference, batches)
    best = clock.interleaved(runs, sizes.rounds)
    rows = {
        name: {"tokens_per_s": tokens / seconds, "ms_per_step": 1e3 * seconds / len(batches)}
        for name, seconds in best.items()
    }
    rows.update({name: {"missing": why} for name, why in missing.items()})
    for name, row in rows.items():
        log.info("graphs %s: %s", name, row)
    return {
        "rows": rows,
        "steps": len(batches),
        "batch_shape": list(batches[0].tokens.shape),
        "tokens": tokens,
        "published_reference": PUBLISHED_REFERENCE,
        "targets": GRAPH_TARGETS,
    }
