"""What a model family supplies to the engine (``textvae.train.TextFamily``,
``textvae.image.train.ImageFamily``): a small Protocol, not a base class."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from textvae.engine.step import Stepper, Window


class Family(Protocol):
    """The text or image specifics of a training run; the engine calls them in this order."""

    def check_resumed(self, payload: dict[str, Any]) -> None:
        """Reject a checkpoint of another family (before its config is compared)."""

    def build(self, resumed: dict[str, Any] | None) -> torch.nn.Module:
        """Check the recipe, read the data and build the model on the device, its weights drawn
        right after ``seed_everything(cfg.seed)``. ``resumed``: the checkpoint being resumed."""

    def run_files(self) -> dict[str, str]:
        """Files a fresh run writes before training (name -> text): ``config.json`` and the like."""

    def restore(self, payload: dict[str, Any]) -> None:
        """Restore the family's own training state (a strategy's) from a checkpoint."""

    def stepper(self, optimizer: torch.optim.Optimizer, forward: torch.nn.Module) -> Stepper:
        """The step; ``forward`` is the model, or its DistributedDataParallel wrapper under torchrun."""

    def epoch(self, epoch: int, start: int) -> tuple[int, Iterator[Any]]:
        """The number of batches in ``epoch`` and an iterator over them from batch ``start`` on."""

    def new_window(self) -> Window:
        """Empty running sums for the next train record."""

    def validate(self, step: int) -> tuple[dict[str, Any], str]:
        """The validation result (``loss`` selects ``best.pt``) and its log line's terms."""

    def save_checkpoint(self, path: Path, **state: Any) -> None:
        """Write the model, the recipe and ``state`` (optimizer, scheduler, rng, progress, ...)."""
