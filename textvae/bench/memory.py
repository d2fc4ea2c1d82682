"""Peak memory while training and while evaluating IW-NLL, on PTB and on a corpus 10× larger."""

from __future__ import annotations

import gc
import math
import os
import re
import resource
from pathlib import Path

import numpy as np
import torch

from textvae.data.batching import Batch, iterate_batches
from textvae.data.corpus import EncodedSplit

from .corpus import Corpus
from .iw_nll import toolkit_iw
from .models import Sizes, optimizer_for, seeded_model, vae_spec
from .training import toolkit_steps


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak resident memory (MB) while the block runs, and the growth above the RSS at its start.

    On Linux the kernel's high-water mark (VmHWM) is reset at the start (``/proc/self/clear_refs``),
    so the peak is the block's own; elsewhere it is the process's peak so far (``ru_maxrss``). On
    CUDA also the peak of allocated device memory."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = self.start_mb = self.device_peak_mb = math.nan
        self.per_block = False

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")
            self.per_block = True
        except OSError:
            self.per_block = False
        self.start_mb = _rss_mb() if Path("/proc/self/statm").exists() else math.nan
        return self

    def __exit__(self, *exc):
        status = Path("/proc/self/status")
        found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
        if found:
            self.peak_mb = int(found.group(1)) / 1024
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if self.device.type == "cuda":
            self.device_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        return False

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb

    def record(self) -> dict:
        record = {"peak_rss_mb": self.peak_mb, "rss_growth_mb": self.growth_mb, "peak_is_per_block": self.per_block}
        if self.device.type == "cuda":
            record["peak_device_mb"] = self.device_peak_mb
        return record


def _batches_of_length(split: EncodedSplit, length: int, batch_size: int, count: int, pad_id: int) -> list[Batch]:
    """``count`` batches of ``batch_size`` sentences of exactly ``length`` tokens (seeded draw): the
    same shapes on every corpus, so that memory measured on two corpora differs only by the corpus."""
    candidates = np.flatnonzero(split.lengths == length)
    rng = np.random.default_rng(0)
    order = [rng.choice(candidates, size=min(batch_size, len(candidates)), replace=False) for _ in range(count)]
    return list(iterate_batches(split, order, pad_id))


def _memory_length(split: EncodedSplit, batch_size: int) -> int:
    """A long sentence length (the 95th percentile) of which the split has at least a batch."""
    counts = np.bincount(split.lengths)
    lengths = [length for length in range(len(counts)) if counts[length] >= batch_size]
    target = np.percentile(split.lengths, 95)
    return min(lengths, key=lambda length: (abs(length - target), -length)) if lengths else int(split.lengths.max())


def bench_memory(corpora: dict[str, Corpus], sizes: Sizes, device: torch.device) -> dict:
    """Peak RSS while training (``memory_steps`` steps) and while evaluating IW-NLL (one batch), on
    the base corpus and on the scaled one, with batches of the same shapes on both (sentences of one
    long length, ``_memory_length`` of the base corpus); IW-NLL at a small K and at the bench's K,
    both in chunks of the small K's size, after one unmeasured pass at the small K (it makes the
    reused logit buffers and lets the allocator's heap settle at its working size: without it the
    heap's growth over the first passes showed as a peak ~40–100 MB higher for whichever K ran
    second). Smaller before larger, so that growth with K would show as a higher peak."""
    results = {}
    base = next(iter(corpora.values()))
    train_length = _memory_length(base.train, sizes.batch_size)
    test_length = _memory_length(base.test, sizes.iw_batch_size)
    # one chunk size for every IW run, no larger than the small K: memory must not depend on K
    memory_chunk = min(sizes.iw_chunk, sizes.iw_small_samples)
    for name, corpus in corpora.items():
        batches = _batches_of_length(
            corpus.train, train_length, sizes.batch_size, sizes.memory_steps, corpus.vocab.pad_id
        )
        batches = [batch.to(device) for batch in batches]
        model = seeded_model(vae_spec(sizes), corpus.vocab, device)
        run = toolkit_steps(model, optimizer_for(model, "sgd"), batches)
        with PeakMemory(device) as memory:
            run()
        results[f"train_{name}"] = memory.record()
        del model, run, batches
    warm_up = seeded_model(vae_spec(sizes), base.vocab, device).eval()
    toolkit_iw(
        warm_up,
        _batches_of_length(base.test, test_length, sizes.iw_batch_size, 1, base.vocab.pad_id),
        sizes.iw_small_samples,
        memory_chunk,
        device,
    )
    del warm_up
    for key, (name, corpus), num_samples in (
        ("iw_small_k", next(iter(corpora.items())), sizes.iw_small_samples),
        *((f"iw_{name}", (name, corpus), sizes.iw_samples) for name, corpus in corpora.items()),
    ):
        model = seeded_model(vae_spec(sizes), corpus.vocab, device).eval()
        batch = _batches_of_length(corpus.test, test_length, sizes.iw_batch_size, 1, corpus.vocab.pad_id)
        with PeakMemory(device) as memory:
            toolkit_iw(model, batch, num_samples, memory_chunk, device)
        results[key] = {**memory.record(), "iw_samples": num_samples, "corpus": name}
    results["train_sentence_length"], results["iw_sentence_length"] = train_length, test_length
    results["iw_chunk"] = memory_chunk
    return results
