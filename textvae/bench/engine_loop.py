"""The loop around the step: the engine's host time per step when the step itself costs nothing.

``textvae train`` on the quickstart corpus with a step that returns at once (the same honest terms
every time): what remains is the engine's own work per step (cutting and moving the batch, the
counters, the train record's sums, the log line every ``log_every_steps``, the step-event checks),
divided by the steps. No validation or checkpoint falls inside the timed steps (``max_steps`` stops
before the epoch's end). A graphed GPU step of 1.8 ms waits on this host work; the target is ≤ 0.1 ms.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from textvae.config import load_recipe
from textvae.engine import Engine, StepOutcome
from textvae.engine.distributed import SINGLE_PROCESS
from textvae.objective import ElboTerms
from textvae.train import TextBatch, TextFamily

log = logging.getLogger(__name__)

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart" / "vae.toml"


class NoOpStepper:
    """A step that trains nothing: the batch's honest terms are fixed tensors of its size."""

    def __init__(self, latent_dim: int):
        self.latent_dim = latent_dim
        self.terms: dict[int, ElboTerms] = {}

    def step(self, batch: TextBatch, step: int) -> StepOutcome:
        size = len(batch.batch)
        terms = self.terms.get(size)
        if terms is None:
            ones = torch.ones(size)
            terms = ElboTerms(ones * 50.0, ones * 0.5, torch.zeros(size, self.latent_dim), ones * 20.0)
            self.terms[size] = terms
        return StepOutcome(True, terms, size, batch.num_tokens)


class NoOpFamily(TextFamily):
    """The quickstart text family with the step replaced by ``NoOpStepper``."""

    def stepper(self, optimizer, forward):
        self.graph_stepper = None
        return NoOpStepper(self.model.latent_dim)


def bench_engine_loop(steps: int = 700, recipe_path: Path = QUICKSTART, rounds: int = 3) -> dict:
    """Seconds of ``Engine.run_epochs`` per step with a no-op step, best of ``rounds``; one epoch of
    quickstart has 778 batches of 32, so ``steps`` ≤ 778 stay in the first epoch."""
    overrides = [
        f"train.max_steps={steps}",
        "train.validate_every_steps=100000",
        "train.checkpoint_every_steps=100000",
        "train.progress_bar=false",
        "train.device='cpu'",
    ]
    recipe = load_recipe(recipe_path, overrides)
    per_step = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="textvae-engine-loop-") as scratch:
            engine = Engine(NoOpFamily(recipe, SINGLE_PROCESS), recipe, Path(scratch) / "run", False, SINGLE_PROCESS)
            engine.prepare()
            engine.build()
            engine.restore_or_start()
            engine.started = started = time.perf_counter()
            engine.run_epochs()
            seconds = time.perf_counter() - started
            engine.metrics_log.close()
            if engine.progress.step != steps:
                raise RuntimeError(f"engine loop bench: {engine.progress.step} steps instead of {steps}")
            per_step.append(seconds / steps)
    best = min(per_step)
    log.info("engine loop: %.3f ms of host time per no-op step (best of %d)", 1e3 * best, rounds)
    return {"steps": steps, "ms_per_step": 1e3 * best, "rounds_ms_per_step": [1e3 * s for s in per_step]}
