"""Remedy overhead: the quickstart's remedy stack and IAF against the plain VAE step, and aggressive
inference training (He et al. 2019) per update."""

from __future__ import annotations

from .clock import Clock
from .corpus import Corpus, train_batches
from .models import AGGRESSIVE, IAF, REMEDY_STACK, Sizes, optimizer_for, seeded_model, vae_spec
from .training import count_updates, toolkit_steps


def bench_remedies(clock: Clock, corpus: Corpus, sizes: Sizes) -> dict:
    """Step time of the remedy stack and of IAF against the plain VAE step (SGD, same batches); time
    per update of aggressive training (its steps are several updates long, timed on their own)."""
    device = clock.device
    batches = train_batches(corpus, sizes, sizes.remedy_steps, device)
    runs = {}
    for name, remedies in (("plain", ()), ("remedy_stack", REMEDY_STACK), ("iaf", IAF)):
        model = seeded_model(vae_spec(sizes), corpus.vocab, device, remedies)
        runs[name] = toolkit_steps(model, optimizer_for(model, "sgd"), batches)
    best = clock.interleaved(runs, sizes.rounds)
    model = seeded_model(vae_spec(sizes), corpus.vocab, device)
    optimizer = optimizer_for(model, "sgd")
    updates = count_updates(optimizer)
    aggressive = toolkit_steps(model, optimizer, batches[: sizes.aggressive_steps], AGGRESSIVE, inner=batches)
    aggressive()  # warm-up
    before = updates()
    tokens = []
    aggressive_seconds = clock.time(lambda: tokens.append(aggressive()))
    aggressive_updates = updates() - before
    plain_tokens = sum(b.num_target_tokens for b in batches)
    plain_step = best["plain"] / len(batches)
    return {
        "steps": len(batches),
        "plain_seconds": best["plain"],
        "remedy_stack_seconds": best["remedy_stack"],
        "remedy_stack_step_ratio": best["remedy_stack"] / best["plain"],
        "iaf_seconds": best["iaf"],
        "iaf_step_ratio": best["iaf"] / best["plain"],
        "aggressive_steps": sizes.aggressive_steps,
        "aggressive_seconds": aggressive_seconds,
        "aggressive_step_ratio": aggressive_seconds / sizes.aggressive_steps / plain_step,
        "aggressive_updates_per_step": aggressive_updates / sizes.aggressive_steps,
        # seconds per target token of an update (inner batches differ in length from the plain ones)
        "aggressive_update_ratio": (aggressive_seconds / tokens[0]) / (best["plain"] / plain_tokens),
    }
