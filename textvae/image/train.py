"""Image training: the image family of the training engine (``textvae.engine``), for any registered image model.

A run directory holds ``config.json`` (the resolved recipe), ``metrics.jsonl`` (one JSON object per
logged step, per validation and per skipped step), ``last.pt`` (every ``checkpoint_every_steps``
steps and at every epoch end) and ``best.pt`` (lowest validation loss: −ELBO = rec + kl for a
model with both terms, else its objective; see ``image.evaluate.validation_loss``).
Checkpoints are the text side's atomic, checksummed files, marked ``family = "image"``.
``resume=True`` continues from ``last.pt`` exactly: the model, optimizer, scheduler, global RNG
(the models' noise) and the position in the epoch are restored; the batch order and the dynamic
binarization of every batch are functions of (seed, epoch, batch), so the resumed run sees the
same pixels; validation runs on its own seeded RNG and never shifts the training stream.

A step: ``loss_terms(x, step)`` → backward on ``LossTerms.loss`` → clip → optimizer step (a
non-finite loss or gradient skips the step, counted; ``max_nonfinite_in_a_row`` stops the run)
→ ``model.end_of_step(step)`` when the model has it (its scalars are logged). ``train.lr_decay_*``,
``early_stop_patience``, ``reload_best_on_decay`` work as for text (the engine does both). One
process only (no torchrun); ``train.device = "auto"`` takes the GPU when there is one. What is
image-specific lives here: ``ImageFamily`` (data, model, validation, checkpoint format),
``ImageStepper`` (the step) and ``ImageWindow`` (the running means of a train record).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from textvae.engine import Engine, StepOutcome, TrainSummary, distributed
from textvae.engine.state import seed_everything
from textvae.errors import TextVAEError
from textvae.evaluation.device import resolve_device
from textvae.image.checkpoint import FAMILY, build_image_model, save_image_checkpoint
from textvae.image.config import ImageRecipe
from textvae.image.data import batch_generator, epoch_order, load_image_split
from textvae.image.evaluate import TermTotals, main_term, select_examples, validate_image
from textvae.strategies import StepContext, apply_update

log = logging.getLogger(__name__)


def train_image(recipe: ImageRecipe, run_dir: str | Path, resume: bool = False) -> TrainSummary:
    """Train ``recipe`` into ``run_dir`` (module docstring); ``resume`` continues from ``last.pt``."""
    if distributed.launched_world_size() > 1:
        raise TextVAEError("image models train in one process; torchrun is not supported for them")
    context = distributed.Context(device=resolve_device(recipe.train.device, "train.device"))
    return Engine(ImageFamily(recipe, Path(run_dir), context.device), recipe, Path(run_dir), resume, context).run()


class ImageWindow:
    """Means of the objective, the honest terms and the models' scalars since the last log line."""

    def __init__(self):
        self.started = time.perf_counter()
        self.totals = TermTotals()

    def add_step(self, outcome: StepOutcome) -> None:
        self.totals.add(outcome.terms, outcome.examples)
        self.totals.add_scalars(outcome.scalars)

    def postfix(self, elapsed: float) -> dict[str, str]:
        means, shown = self.totals.means(), main_term(self.totals.term_means())
        return {
            "img_s": f"{self.totals.examples / max(elapsed, 1e-9):.0f}",
            "loss": f"{means['objective']:.3f}",
            **({shown: f"{means[shown]:.3f}"} if shown else {}),
        }

    def report(self, dist: distributed.Context, elapsed: float) -> tuple[dict[str, float], dict[str, float]]:
        return self.totals.means(), {"images_per_s": self.totals.examples / max(elapsed, 1e-9)}


def _no_random_batches():
    raise NotImplementedError("image training has no strategy that asks for random batches")


class ImageStepper:
    """``loss_terms(x, step)`` → backward on ``LossTerms.loss`` → clip → optimizer step, then
    ``model.end_of_step(step)`` when the model has it (its scalars are logged)."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip, steps_per_epoch: int):
        self.model = model
        self.context = StepContext(model, optimizer, grad_clip, 0, steps_per_epoch, _no_random_batches)

    def step(self, x: torch.Tensor, step: int) -> StepOutcome:
        out = self.model.loss_terms(x, step=step)
        self.context.step = step
        updated = apply_update(self.context, out.loss)
        scalars = {}
        if updated and hasattr(self.model, "end_of_step"):
            scalars = self.model.end_of_step(step + 1) or {}
        return StepOutcome(updated, out, len(x), scalars=scalars)


class ImageFamily:
    """Images: a registered image model, seeded epoch orders with per-batch binarization, its own loss."""

    def __init__(self, recipe: ImageRecipe, run_dir: Path, device: torch.device):
        self.recipe, self.cfg, self.run_dir, self.device = recipe, recipe.train, run_dir, device

    def check_resumed(self, payload: dict) -> None:
        if payload.get("family") != FAMILY:
            raise TextVAEError(f"{self.run_dir}: --resume of a text run with an image recipe")

    def build(self, resumed: dict | None) -> torch.nn.Module:
        """The model first: a value the constructor rejects fails before any data is read."""
        seed_everything(self.cfg.seed)
        self.model = build_image_model(self.recipe).to(self.device)
        data = self.recipe.data
        self.valid_split = load_image_split(data, "valid")  # checked first: the smaller read fails faster
        self.train_split = load_image_split(data, "train")
        self.valid_indices = select_examples(len(self.valid_split), self.cfg.max_valid_sentences, self.cfg.seed)
        log.info(
            "data %s%s: train %d, valid %d (of %d) examples of shape %s",
            data.dataset,
            " (binarized)" if data.binarize else "",
            len(self.train_split),
            len(self.valid_indices),
            len(self.valid_split),
            self.train_split.example_shape,
        )
        return self.model

    def run_files(self) -> dict[str, str]:
        return {"config.json": json.dumps(self.recipe.to_dict(), indent=2)}

    def restore(self, payload: dict) -> None:
        """Image runs have no state beyond the engine's."""

    def stepper(self, optimizer: torch.optim.Optimizer, forward: torch.nn.Module) -> ImageStepper:
        steps_per_epoch = math.ceil(len(self.train_split) / self.cfg.batch_size)
        return ImageStepper(self.model, optimizer, self.cfg.grad_clip, steps_per_epoch)

    def epoch(self, epoch: int, start: int) -> tuple[int, Iterator[torch.Tensor]]:
        """A seeded permutation cut into batches; batch b's pixels drawn from its own generator."""
        batches = epoch_order(len(self.train_split), self.cfg.batch_size, self.cfg.seed, epoch)

        def images() -> Iterator[torch.Tensor]:
            for index in range(start, len(batches)):
                pixels = batch_generator(self.cfg.seed, epoch, index)
                yield self.train_split.images(batches[index], pixels).to(self.device)  # (B, C, H, W)

        return len(batches), images()

    def new_window(self) -> ImageWindow:
        return ImageWindow()

    def validate(self, step: int) -> tuple[dict, str]:
        cfg = self.cfg
        result = validate_image(
            self.model, self.valid_split, self.valid_indices, cfg.batch_size, step, cfg.seed, self.device
        )
        shown = "  ".join(f"{k} {v:.4g}" for k, v in result.items() if k not in ("loss", "num_examples"))
        return result, shown

    def save_checkpoint(self, path: Path, **state: Any) -> None:
        save_image_checkpoint(path, keep_previous=True, recipe=self.recipe, model=self.model, **state)
