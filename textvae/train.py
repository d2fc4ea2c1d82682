"""Text training: the sentence family of the training engine (``textvae.engine``).

A run directory holds ``config.json`` (the resolved recipe), ``vocab.json``, ``metrics.jsonl``
(one JSON object per logged step and per validation), ``last.pt`` (written every
``checkpoint_every_steps`` steps and at every epoch end) and ``best.pt`` (lowest validation loss).
Checkpoints are written atomically; ``resume=True`` continues from ``last.pt`` with the same
batch order, RNG state and optimizer state, and cuts ``metrics.jsonl`` back to what that
checkpoint had seen.

What is text-specific lives here (``TextFamily``): the vocabulary, length-bucketed batches, the
strategy's step (``StrategyStepper``), the running sums of the honest terms (``TrainWindow``) and
validation by −ELBO. Launched by ``torchrun``, the same loop runs in every process on its slice of
each global batch, with DistributedDataParallel averaging the gradients (``textvae.engine.distributed``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from textvae import __version__, registry
from textvae.checkpoint import FORMAT, write_checkpoint_payload
from textvae.config import Recipe
from textvae.cuda.graph_stepper import GraphStepper, cuda_graphs_decision
from textvae.data.batching import Batch, bucketed_batches, collate, iterate_batches
from textvae.data.corpus import build_vocab, encode_split, load_text
from textvae.data.vocab import BOS, EOS, PAD, Vocab
from textvae.engine import Engine, StepOutcome, distributed
from textvae.engine.state import TrainSummary, seed_everything
from textvae.engine.train_record import TrainWindow, norm_keys
from textvae.errors import TextVAEError
from textvae.evaluation.validation import (
    VALIDATION_SUMS,
    VALIDATION_VECTORS,
    select_sentences,
    validation_from_sums,
    validation_sums,
)
from textvae.models import build_model
from textvae.strategies import StepContext, Strategy

log = logging.getLogger(__name__)


def train(recipe: Recipe, run_dir: str | Path, resume: bool = False) -> TrainSummary:
    """Train ``recipe`` into ``run_dir``; under torchrun, as one of its processes."""
    context = distributed.setup(recipe.train.device)
    try:
        return Engine(TextFamily(recipe, context), recipe, Path(run_dir), resume, context).run()
    finally:
        distributed.teardown(context)


@dataclass
class TextBatch:
    """One step's batch (this process's slice, on the device) and what the step needs to know of it."""

    batch: Batch
    num_tokens: int  # target tokens, counted on the host before the batch moved
    loss_scale: float  # world_size · n_rank / n_global (textvae.engine.distributed)
    steps_per_epoch: int


@dataclass
class StrategyStepper:
    """The default text step: the recipe's strategy (``textvae.strategies``) on one batch."""

    strategy: Strategy
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    grad_clip: float | None
    forward: torch.nn.Module
    dist: distributed.Context
    random_batch: Callable[[], Batch]

    def step(self, batch: TextBatch, step: int) -> StepOutcome:
        context = StepContext(
            self.model,
            self.optimizer,
            self.grad_clip,
            step,
            batch.steps_per_epoch,
            self.random_batch,
            forward=self.forward,
            loss_scale=batch.loss_scale,
            dist=self.dist,
        )
        terms, updated = self.strategy.train_step(context, batch.batch)
        return StepOutcome(updated, terms, len(batch.batch), batch.num_tokens, grad_norms=context.grad_norms)


class TextFamily:
    """Sentences: a vocabulary, length-bucketed batches, a strategy's step, validation by −ELBO."""

    def __init__(self, recipe: Recipe, context: distributed.Context):
        self.recipe, self.cfg, self.dist = recipe, recipe.train, context
        # set by the engine's phases, in this order: check_recipe, load_data, build, stepper
        self.strategy: Strategy | None = None
        self.vocab: Vocab | None = None
        self.train_split = self.valid_split = None  # EncodedSplit
        self.rank_valid_indices = None  # this process's share of the validation sentences
        self.model: torch.nn.Module | None = None
        self.graph_stepper: GraphStepper | None = None  # the stepper, when the step runs as CUDA graphs

    def check_resumed(self, payload: dict) -> None:
        """A text run's config decides (``read_resumable`` compares it)."""

    def build(self, resumed: dict | None) -> torch.nn.Module:
        self.check_recipe()
        self.load_data(resumed)
        seed_everything(self.cfg.seed)
        self.model = build_model(self.recipe.model, self.vocab, self.recipe.remedies).to(self.dist.device)
        return self.model

    def check_recipe(self) -> None:
        """A model the recipe cannot build (a size torch rejects) fails here, before any data is read
        (a pretrained tokenizer's vocabulary needs no data, and a pretrained decoder accepts only that one)."""
        recipe, dist = self.recipe, self.dist
        pretrained = recipe.data.tokenizer == "pretrained"
        dry_vocab = build_vocab(recipe.data) if pretrained else Vocab(words=(PAD, BOS, EOS, "<unk>", "word"))
        dry_model = build_model(recipe.model, dry_vocab, recipe.remedies)
        self.strategy = registry.build("strategy", recipe.strategy, "strategy")
        if self.strategy.needs_latent and not dry_model.has_latent:
            raise TextVAEError(f"strategy {recipe.strategy['type']!r} needs a model with a latent variable")
        if dist.enabled and not self.strategy.supports_distributed:
            raise TextVAEError(
                f"strategy {recipe.strategy['type']!r} does not support torchrun (multi-process) training"
            )
        if dist.enabled and self.cfg.batch_size < dist.world_size:
            raise TextVAEError(
                f"train.batch_size = {self.cfg.batch_size} is the global batch: it must be ≥ the "
                f"{dist.world_size} processes"
            )
        if self.cfg.cuda_graphs is True:  # asked for: what prevents it (no CUDA device, ...) fails here too
            cuda_graphs_decision(True, dist.device, dist, self.strategy, dry_model)

    def load_data(self, resumed: dict | None) -> None:
        """The splits; the vocabulary comes from the training split (or from the checkpoint on resume)."""
        data, dist = self.recipe.data, self.dist
        with distributed.main_process_first(dist):  # rank 0 builds the dataset cache, the others read it
            valid_text = load_text(data, "valid")  # checked first: a missing file fails before train is cached
            train_text = load_text(data, "train")
        self.vocab = Vocab.from_json(resumed["vocab"]) if resumed else build_vocab(data, train_text)
        self.train_split = encode_split(data, "train", self.vocab, train_text)
        self.valid_split = encode_split(data, "valid", self.vocab, valid_text)
        valid_indices = select_sentences(self.valid_split, self.cfg.max_valid_sentences, self.cfg.seed)
        self.rank_valid_indices = valid_indices[dist.rank :: dist.world_size]  # this process's share
        log.info(
            "data %s: vocab %d, train %d sentences (%d truncated), valid %d",
            data.dataset,
            len(self.vocab),
            len(self.train_split),
            self.train_split.num_truncated,
            len(valid_indices),
        )

    def run_files(self) -> dict[str, str]:
        return {"config.json": json.dumps(self.recipe.to_dict(), indent=2), "vocab.json": self.vocab.to_json()}

    def restore(self, payload: dict) -> None:
        self.strategy.load_state_dict(payload["strategy"])

    def stepper(self, optimizer: torch.optim.Optimizer, forward: torch.nn.Module) -> StrategyStepper | GraphStepper:
        """The strategy's step, or on CUDA (``train.cuda_graphs``) the standard step captured as CUDA graphs."""
        host = StrategyStepper(
            self.strategy, self.model, optimizer, self.cfg.grad_clip, forward, self.dist, self.random_batch
        )
        if cuda_graphs_decision(self.cfg.cuda_graphs, self.dist.device, self.dist, self.strategy, self.model):
            self.graph_stepper = GraphStepper(
                self.model, optimizer, self.cfg.grad_clip, strategy=self.strategy, host_stepper=host
            )
            return self.graph_stepper
        return host

    def random_batch(self) -> Batch:
        """Random training sentences (the inner batches of aggressive training), from the global RNG."""
        indices = torch.randint(len(self.train_split), (self.cfg.batch_size,)).tolist()
        return collate(self.train_split.rows(indices), indices, self.vocab.pad_id).to(self.dist.device)

    def epoch(self, epoch: int, start: int) -> tuple[int, Iterator[TextBatch]]:
        """Shuffled length-bucketed batches of ``epoch`` (the same on every process), each cut to this
        process's slice; a global batch smaller than the number of processes would leave one idle."""
        cfg, dist = self.cfg, self.dist
        batches = bucketed_batches(
            self.train_split.lengths,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            epoch=epoch,
            pool_batches=cfg.bucket_pool_batches,
        )
        if dist.enabled:
            batches = [b for b in batches if len(b) >= dist.world_size]
        return len(batches), self._batches_from(batches, start)

    def _batches_from(self, batches: list, start: int) -> Iterator[TextBatch]:
        rank_batches = [distributed.rank_slice(self.dist, b) for b in batches]
        collated = iterate_batches(self.train_split, rank_batches, self.vocab.pad_id, start=start)
        for indices, batch in zip(batches[start:], collated, strict=True):
            loss_scale = self.dist.world_size * len(batch) / len(indices)
            yield TextBatch(batch.to_device(self.dist.device), batch.num_target_tokens, loss_scale, len(batches))

    def new_window(self) -> TrainWindow:
        """The train record's sums: the graphed step's own device tensors, else a window of the host's."""
        sums = self.graph_stepper.state.sums if self.graph_stepper is not None else None
        return TrainWindow(self.dist.device, norm_keys(self.model), sums)

    def validate(self, step: int) -> tuple[dict, str]:
        """−ELBO, rec, KL, PPL and MI over the seeded validation subset, summed across processes."""
        cfg = self.cfg
        sums = validation_sums(
            self.model,
            self.valid_split,
            self.vocab.pad_id,
            cfg.batch_size,
            self.rank_valid_indices,
            cfg.seed,
            self.dist.device,
        )
        totals = distributed.sum_across(self.dist, [sums[key] for key in VALIDATION_SUMS])
        totals = dict(zip(VALIDATION_SUMS, totals, strict=True))
        for key in VALIDATION_VECTORS:  # per latent dimension (a VAE only), summed across processes too
            if key in sums:
                totals[key] = distributed.sum_across(self.dist, sums[key])
        result = validation_from_sums(totals)
        self.strategy.after_validation({"step": step, **result})
        au = f"  au {result['au']}/{len(result['kl_per_dim'])}" if "au" in result else ""
        return result, f"rec {result['rec']:.3f}  kl {result['kl']:.3f}  ppl {result['ppl']:.2f}{au}"

    def save_checkpoint(self, path: Path, *, metrics_offset: int, **state) -> None:
        save_checkpoint(  # the module's function, below
            path,
            keep_previous=True,
            recipe=self.recipe,
            vocab=self.vocab,
            model=self.model,
            **state,
            strategy=self.strategy.state_dict(),
            metrics_offset=metrics_offset,
        )


def save_checkpoint(
    path: Path, *, recipe: Recipe, vocab: Vocab, model: torch.nn.Module, keep_previous: bool = False, **state: Any
) -> None:
    """Save model weights with the config and vocab that built them, plus any training ``state``."""
    payload = {
        "format": FORMAT,
        "textvae_version": __version__,
        "config": json.dumps(recipe.to_dict()),
        "vocab": vocab.to_json(),
        "model": model.state_dict(),
        **state,
    }
    write_checkpoint_payload(path, payload, keep_previous)
