"""Which rows of an ablation train as one fused model (``textvae ablate --fuse``), and running a group.

Rows fuse when they share the model's shapes (``textvae.models.fused.vae.fusion_key``) and the
batch stream: the data settings, batch size, bucketing and data-order seed (``train.data_seed``,
else ``train.seed``), plus the optimizer, device and threads. Seed replicates fuse when they share
``train.data_seed``. Pretrain + reset rows fuse too (their autoencoder phase and reset are per row,
``textvae.models.fused.step.RowPhases``). Everything else runs as before: the LM, IAF and aggressive
rows, image rows, SGD with momentum, rows of other shapes, and a group of one.

``--fuse auto`` is off everywhere until fused training is measured faster than separate rows: on
the CPU it is slower (a hand-written LSTM recurrence against mkldnn's), and on a GPU it has not been
measured yet (scripts/gpu_fused_check.py). A fused row's ``train_seconds`` is its group's wall time,
its ``fused`` the group's size (``False`` for a row trained alone).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textvae.errors import TextVAEError

log = logging.getLogger(__name__)

FUSE_CHOICES = ("on", "off", "auto")
AUTO_REASON = "fused training is not yet measured faster than separate rows (slower on the CPU, unmeasured on GPUs)"

Item = tuple[Any, int, Path]  # (variant, seed, run_dir)


@dataclass
class FusionPlan:
    groups: list[list[Item]] = field(default_factory=list)  # two rows or more each
    alone: list[tuple[Item, str]] = field(default_factory=list)  # a row that trains by itself, and why


def fuse_wanted(fuse: str) -> bool:
    """``--fuse``: on, off, or auto (off until measured; the log says why)."""
    if fuse not in FUSE_CHOICES:
        raise TextVAEError(f"--fuse must be one of {', '.join(FUSE_CHOICES)}, got {fuse!r}")
    if fuse == "auto":
        log.info("--fuse auto: off, %s", AUTO_REASON)
    return fuse == "on"


def row_key(recipe) -> str:
    """What a row must share with the others of its group, as a string; a one-line ``TextVAEError``
    says why a row cannot fuse at all."""
    from textvae.config import Recipe
    from textvae.models.fused.vae import fusion_key

    if not isinstance(recipe, Recipe):
        raise TextVAEError("an image row does not fuse")
    if recipe.strategy.get("type", "standard") not in ("standard", "pretrain_reset"):
        raise TextVAEError(f"strategy {recipe.strategy['type']!r} does not fuse (its step runs its own loop)")
    cfg = recipe.train
    if cfg.momentum != 0:
        raise TextVAEError("SGD with momentum does not fuse")
    shared = {
        "model": fusion_key(recipe.model, recipe.remedies),
        "data": recipe.to_dict()["data"],
        "batch": [cfg.batch_size, cfg.bucket_pool_batches, cfg.seed if cfg.data_seed is None else cfg.data_seed],
        "optimizer": cfg.optimizer,
        "device": cfg.device,
        "threads": cfg.threads,
    }
    return json.dumps(shared, sort_keys=True)


def _bow_size(recipe) -> int | None:
    sizes = [r.get("hidden_dim", 256) for r in recipe.remedies if r.get("type") == "bow_loss"]
    return sizes[0] if sizes else None


def plan_fusion(todo: list[Item], with_seed: Callable) -> FusionPlan:
    """Group the rows still to run; ``with_seed(recipe, seed)`` is the recipe a row trains."""
    plan, keyed = FusionPlan(), {}
    for item in todo:
        variant, seed, _ = item
        try:
            keyed.setdefault(row_key(with_seed(variant.recipe, seed)), []).append(item)
        except TextVAEError as err:
            plan.alone.append((item, str(err)))
    for items in keyed.values():
        bow = [_bow_size(with_seed(v.recipe, s)) for v, s, _ in items]
        sizes = sorted({b for b in bow if b is not None})
        group = [item for item, b in zip(items, bow, strict=True) if b in (None, *sizes[:1])]
        plan.alone += [(item, "its bag-of-words head differs in size") for item in items if item not in group]
        if len(group) >= 2:
            plan.groups.append(group)
        else:
            plan.alone += [(item, "no other row shares its model shapes and batches") for item in group]
    return plan


def row_bytes(recipe) -> int | None:
    """Training memory of one row in a group (weights, gradient, optimizer state and the output
    layer's logits and their gradient for a batch of the longest sentences), or None while the
    vocabulary's size is unknown (no ``data.max_vocab_size``)."""
    from textvae.data.vocab import Vocab
    from textvae.models import build_model

    if recipe.data.max_vocab_size is None:
        return None
    vocab = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *(f"w{i}" for i in range(recipe.data.max_vocab_size))))
    model = build_model(recipe.model, vocab, recipe.remedies)
    params = sum(p.numel() for p in model.parameters())
    copies = 4 if recipe.train.optimizer == "adam" else 2  # weights, gradient (, Adam's two moments)
    steps = (recipe.data.max_len or 50) + 1
    logits = 2 * recipe.train.batch_size * steps * len(vocab)
    return 4 * (copies * params + logits)


def plan_text(plan: FusionPlan, with_seed: Callable) -> str:
    """``--fuse-plan``: the groups, their rows and memory, and the rows that train alone."""
    lines = []
    for number, group in enumerate(plan.groups, start=1):
        sizes = [row_bytes(with_seed(v.recipe, s)) for v, s, _ in group]
        memory = f"about {sum(sizes) / 2**20:.0f} MiB" if None not in sizes else "unknown until the vocabulary is read"
        names = ", ".join(f"{v.name} (seed {s})" for v, s, _ in group)
        lines.append(f"group {number}: {len(group)} rows fused, training memory {memory}: {names}")
    for (variant, seed, _), reason in plan.alone:
        lines.append(f"alone: {variant.name} (seed {seed}): {reason}")
    return "\n".join(lines) if lines else "nothing left to run"


def run_group(
    items: list[Item],
    with_seed: Callable,
    evaluate_row: Callable,
    finish_row: Callable,
    run_alone: Callable,
    threads: int,
) -> list[dict[str, Any]]:
    """Train ``items`` as one fused group, then evaluate each row; returns their rows.

    ``evaluate_row(variant, recipe, seed, run_dir, progress, train_seconds)`` makes a row's result,
    ``finish_row(variant, run_dir, row)`` adds its budget and writes ``result.json``, ``run_alone(item)``
    trains a row by itself: the fallback when the rows' checkpoints stand at different batches."""
    from textvae.engine.fused_group import FusedGroup
    from textvae.engine.run_dir import has_checkpoint

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        recipes = [with_seed(variant.recipe, seed) for variant, seed, _ in items]
        run_dirs = [run_dir for _, _, run_dir in items]
        started = time.perf_counter()
        try:
            group = FusedGroup(recipes, run_dirs, [has_checkpoint(d) for d in run_dirs])
            results = group.run()
        except TextVAEError as err:
            log.warning("fused group of %d rows not fused (%s): each row trains alone", len(items), err)
            return [run_alone(item) for item in items]
        seconds = time.perf_counter() - started
        rows = []
        for (variant, seed, run_dir), recipe, result in zip(items, recipes, results, strict=True):
            if isinstance(result, BaseException):
                rows.append({"variant": variant.name, "seed": seed, "error": f"{type(result).__name__}: {result}"})
                continue
            try:
                row = evaluate_row(variant, recipe, seed, run_dir, result.progress, seconds)
                row["fused"] = len(items)
                rows.append(finish_row(variant, run_dir, row))
            except TextVAEError as err:
                rows.append({"variant": variant.name, "seed": seed, "error": str(err)})
        return rows
    finally:
        torch.set_num_threads(previous)
