"""The training loop, readable top to bottom: data → model → epochs of steps → validation → checkpoints.

A run directory holds ``config.json`` (the resolved recipe), ``vocab.json``, ``metrics.jsonl``
(one JSON object per logged step and per validation), ``last.pt`` (written every
``checkpoint_every_steps`` steps and at every epoch end) and ``best.pt`` (lowest validation loss).
Checkpoints are written atomically; ``resume=True`` continues from ``last.pt`` with the same
batch order, RNG state and optimizer state, and cuts ``metrics.jsonl`` back to what that
checkpoint had seen.

Launched by ``torchrun``, the same loop runs in every process on its slice of each global batch,
with DistributedDataParallel averaging the gradients (``textvae.distributed`` says how).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from textvae import distributed, faults, registry
from textvae.checkpoint import atomic_write_text, previous_path, read_checkpoint_or_previous, save_checkpoint
from textvae.config import Recipe
from textvae.data.batching import bucketed_batches, collate, iterate_batches
from textvae.data.corpus import build_vocab, encode_split, load_text
from textvae.data.vocab import BOS, EOS, PAD, Vocab
from textvae.errors import TextVAEError
from textvae.evaluate import VALIDATION_SUMS, select_sentences, validation_from_sums, validation_sums
from textvae.models import build_model
from textvae.strategies import StepContext

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of ``epoch`` already trained on
    best_valid: float = math.inf
    best_step: int = -1
    lr_decays: int = 0
    epochs_without_improvement: int = 0
    skipped_steps: int = 0  # steps whose loss or gradient was not finite
    skipped_in_a_row: int = 0  # the current run of such steps; training stops at train.max_nonfinite_in_a_row
    finished: bool = False


@dataclass
class TrainSummary:
    run_dir: Path
    progress: Progress
    last_valid: dict
    seconds: float


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # PyTorch's fused Adam kernel: the same update in one pass over each tensor instead of about
    # eight (on this CPU 10 ms instead of 47 ms per step of the hidden-512 PTB VAE, 13.5 M parameters)
    params = list(model.parameters())
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


_WRITTEN_BEFORE_FIRST_CHECKPOINT = ("config.json", "vocab.json", "metrics.jsonl")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds something to resume from (``last.pt`` or the copy kept beside it)."""
    return (run_dir / "last.pt").is_file() or previous_path(run_dir / "last.pt").is_file()


def prepare_run_dir(run_dir: Path, recipe: Recipe, resume: bool, delete_leftovers: bool = True) -> None:
    """A fresh run needs an empty directory, or one left by the same recipe killed before its first
    checkpoint (its config.json equal to this recipe, vocab, metrics, temporary files): that is started over."""
    if resume:
        if not has_checkpoint(run_dir):
            raise TextVAEError(f"{run_dir}: nothing to resume (no last.pt)")
        for path in filter(_is_temporary, run_dir.iterdir() if delete_leftovers else ()):
            log.info("removing %s (left by a writer that was killed)", path)
            path.unlink(missing_ok=True)
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise TextVAEError(f"{run_dir}: exists and is not a directory")
    leftovers = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if not all(_is_temporary(p) for p in leftovers) and not (
        all(p.name in _WRITTEN_BEFORE_FIRST_CHECKPOINT or _is_temporary(p) for p in leftovers)
        and _same_config(run_dir / "config.json", recipe)
    ):
        raise TextVAEError(f"{run_dir}: run directory exists and is not empty; use --resume or another --out")
    if leftovers and delete_leftovers:
        log.warning("%s: starting over (a previous attempt stopped before its first checkpoint)", run_dir)
        for path in leftovers:
            path.unlink(missing_ok=True)


# train settings that change how a run executes, not what it computes: --resume may change them
RUNTIME_KEYS = ("progress_bar", "threads", "max_nonfinite_in_a_row", "device")


def without_runtime_keys(config: dict) -> dict:
    """The config as far as it decides what a run computes: without runtime keys and provenance."""
    config = json.loads(json.dumps(config))
    for key in RUNTIME_KEYS:
        config.get("train", {}).pop(key, None)
    for key in ("source", "description"):  # where the recipe came from and its prose
        config.pop(key, None)
    return config


def _same_config(path: Path, recipe: Recipe) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(recipe.to_dict()))
    except (OSError, ValueError):
        return False


def _is_temporary(path: Path) -> bool:
    """A temporary file of ``atomic_write_bytes`` (``.NAME.XXXX.tmp``), left by a killed writer."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_rank(seed: int, context: distributed.Context) -> None:
    """Each process its own dropout and z-noise stream (rank 0 keeps the single-process one)."""
    torch.manual_seed(seed + 1_000_003 * context.rank)
    random.seed(seed + 1_000_003 * context.rank)


def _restore_rng(saved: dict | list, context: distributed.Context, seed: int) -> None:
    """A checkpoint holds one RNG state per process (a list) under torchrun, else one dict."""
    states = saved if isinstance(saved, list) else [saved]
    if len(states) == context.world_size:
        set_rng_state(states[context.rank], context.device)
        return
    log.warning(
        "resuming with %d processes a run checkpointed with %d: random streams restart from the seed",
        context.world_size,
        len(states),
    )
    _seed_rank(seed + len(states), context)


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; ``offset`` is saved in checkpoints."""

    def __init__(self, path: Path, truncate_to: int | None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if not enabled:  # the other ranks of a torchrun job: rank 0 keeps the log
            self.handle = None
            return
        if truncate_to is not None and path.exists():
            with path.open("r+b") as handle:
                handle.truncate(truncate_to)
        self.handle = path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()

    @property
    def offset(self) -> int:
        return self.handle.tell() if self.handle is not None else 0

    def close(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()


class TrainWindow:
    """Sums of the honest terms over the steps since the last log line.

    The loss, rec and KL sums stay tensors on the model's device, so a step never waits for the
    device to report a number; ``sums`` turns them into floats (once per log line)."""

    def __init__(self):
        self.started = time.perf_counter()
        self.sentences = self.tokens = 0
        self._terms: torch.Tensor | None = None  # (3,) float64: loss, rec, kl

    def add(self, terms, sentences: int, tokens: int) -> None:
        rec, kl = terms.rec.detach().sum(), terms.kl.detach().sum()
        step_sums = torch.stack([rec + kl, rec, kl]).double()  # (3,)
        self._terms = step_sums if self._terms is None else self._terms + step_sums
        self.sentences += sentences
        self.tokens += tokens

    def sums(self) -> dict[str, float]:
        loss, rec, kl = self._terms.tolist() if self._terms is not None else (0.0, 0.0, 0.0)
        return {"loss": loss, "rec": rec, "kl": kl, "sentences": self.sentences, "tokens": self.tokens}


def train(recipe: Recipe, run_dir: str | Path, resume: bool = False) -> TrainSummary:
    """Train ``recipe`` into ``run_dir``; under torchrun, as one of its processes."""
    context = distributed.setup(recipe.train.device)
    try:
        return _train(recipe, Path(run_dir), resume, context)
    finally:
        distributed.teardown(context)


def _train(recipe: Recipe, run_dir: Path, resume: bool, dist_context: distributed.Context) -> TrainSummary:
    cfg = recipe.train
    device, is_main = dist_context.device, dist_context.is_main
    prepare_run_dir(run_dir, recipe, resume, delete_leftovers=is_main)
    distributed.barrier(dist_context)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)

    resumed = read_checkpoint_or_previous(run_dir / "last.pt")[0] if resume else None
    if resumed and without_runtime_keys(json.loads(resumed["config"])) != without_runtime_keys(recipe.to_dict()):
        raise TextVAEError(f"{run_dir}: --resume with a different config than the run was started with")
    # a model the recipe cannot build (a size torch rejects) fails here, before any data is read
    # (a pretrained tokenizer's vocabulary needs no data, and a pretrained decoder accepts only that one)
    pretrained = recipe.data.tokenizer == "pretrained"
    dry_vocab = build_vocab(recipe.data) if pretrained else Vocab(words=(PAD, BOS, EOS, "<unk>", "word"))
    dry_model = build_model(recipe.model, dry_vocab, recipe.remedies)
    strategy = registry.build("strategy", recipe.strategy, "strategy")
    if strategy.needs_latent and not dry_model.has_latent:
        raise TextVAEError(f"strategy {recipe.strategy['type']!r} needs a model with a latent variable")
    if dist_context.enabled and not strategy.supports_distributed:
        raise TextVAEError(f"strategy {recipe.strategy['type']!r} does not support torchrun (multi-process) training")
    if dist_context.enabled and cfg.batch_size < dist_context.world_size:
        raise TextVAEError(
            f"train.batch_size = {cfg.batch_size} is the global batch: it must be ≥ the "
            f"{dist_context.world_size} processes"
        )

    # --- data: the vocabulary comes from the training split (or from the checkpoint on resume)
    with distributed.main_process_first(dist_context):  # rank 0 builds the dataset cache, the others read it
        valid_text = load_text(recipe.data, "valid")  # checked first: a missing file fails before train is cached
        train_text = load_text(recipe.data, "train")
    vocab = Vocab.from_json(resumed["vocab"]) if resumed else build_vocab(recipe.data, train_text)
    train_split = encode_split(recipe.data, "train", vocab, train_text)
    valid_split = encode_split(recipe.data, "valid", vocab, valid_text)
    valid_indices = select_sentences(valid_split, cfg.max_valid_sentences, cfg.seed)
    rank_valid_indices = valid_indices[dist_context.rank :: dist_context.world_size]  # this process's share
    log.info(
        "data %s: vocab %d, train %d sentences (%d truncated), valid %d",
        recipe.data.dataset,
        len(vocab),
        len(train_split),
        train_split.num_truncated,
        len(valid_indices),
    )

    # --- model, optimizer, scheduler
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_model(recipe.model, vocab, recipe.remedies).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_decay_factor, patience=cfg.lr_decay_patience
    )
    progress = Progress()
    if resumed:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        _restore_rng(resumed["rng"], dist_context, cfg.seed)
        progress = Progress(**resumed["progress"])
        strategy.load_state_dict(resumed["strategy"])
        log.info(
            "resuming %s at step %d (epoch %d, batch %d)",
            run_dir,
            progress.step,
            progress.epoch,
            progress.batch_in_epoch,
        )
    else:
        if dist_context.enabled:
            _seed_rank(cfg.seed, dist_context)  # after the model: every rank built the same initial weights
        if is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.json", json.dumps(recipe.to_dict(), indent=2))
            atomic_write_text(run_dir / "vocab.json", vocab.to_json())
    num_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2fM parameters on %s", recipe.model["type"], num_params / 1e6, device)
    # the module a training step calls: under torchrun, the wrapper that averages gradients across processes
    forward = model
    if dist_context.enabled:
        forward = DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=True
        )

    metrics_log = MetricsLog(run_dir / "metrics.jsonl", resumed["metrics_offset"] if resumed else None, enabled=is_main)

    def checkpoint(name: str) -> None:
        """Every process calls this (the RNG states are gathered); rank 0 writes."""
        rng = rng_state(device)
        rng = distributed.gather_objects(dist_context, rng) if dist_context.enabled else rng
        if not is_main:
            return
        save_checkpoint(
            run_dir / name,
            keep_previous=True,
            recipe=recipe,
            vocab=vocab,
            model=model,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=rng,
            progress=asdict(progress),
            strategy=strategy.state_dict(),
            metrics_offset=metrics_log.offset,
        )

    def validate() -> dict:
        sums = validation_sums(model, valid_split, vocab.pad_id, cfg.batch_size, rank_valid_indices, cfg.seed, device)
        totals = distributed.sum_across(dist_context, [sums[key] for key in VALIDATION_SUMS])
        result = {"step": progress.step, **validation_from_sums(dict(zip(VALIDATION_SUMS, totals, strict=True)))}
        strategy.after_validation(result)
        improved = result["loss"] < progress.best_valid
        if improved:
            progress.best_valid, progress.best_step = result["loss"], progress.step
            checkpoint("best.pt")
        metrics_log.write(
            {
                "event": "valid",
                "epoch": progress.epoch,
                "improved": improved,
                "lr": optimizer.param_groups[0]["lr"],
                **result,
            }
        )
        log.info(
            "valid step %d: loss %.3f  rec %.3f  kl %.3f  ppl %.2f%s",
            progress.step,
            result["loss"],
            result["rec"],
            result["kl"],
            result["ppl"],
            "  (best)" if improved else "",
        )
        return result

    def random_batch():
        """Random training sentences (the inner batches of aggressive training), from the global RNG."""
        indices = torch.randint(len(train_split), (cfg.batch_size,)).tolist()
        return collate(train_split.rows(indices), indices, vocab.pad_id).to(device)

    started = time.perf_counter()
    last_valid: dict = {}
    window = TrainWindow()
    stop = progress.finished
    while not stop and progress.epoch < cfg.epochs:
        batches = bucketed_batches(
            train_split.lengths,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            epoch=progress.epoch,
            pool_batches=cfg.bucket_pool_batches,
        )
        if dist_context.enabled:  # a global batch smaller than the number of processes would leave one idle
            batches = [b for b in batches if len(b) >= dist_context.world_size]
        global_sizes = [len(b) for b in batches]
        rank_batches = [distributed.rank_slice(dist_context, b) for b in batches]
        bar = tqdm(
            total=len(batches),
            initial=progress.batch_in_epoch,
            desc=f"epoch {progress.epoch + 1}",
            unit="batch",
            disable=None if cfg.progress_bar and is_main else True,
            leave=False,
        )
        model.train()
        for batch in iterate_batches(train_split, rank_batches, vocab.pad_id, start=progress.batch_in_epoch):
            num_tokens = batch.num_target_tokens  # counted on the host, before the batch moves
            batch = batch.to(device)
            global_size = global_sizes[progress.batch_in_epoch]
            context = StepContext(
                model,
                optimizer,
                cfg.grad_clip,
                progress.step,
                len(batches),
                random_batch,
                forward=forward,
                loss_scale=dist_context.world_size * len(batch) / global_size,
                dist=dist_context,
            )
            terms, updated = strategy.train_step(context, batch)
            progress.batch_in_epoch += 1
            if updated:
                progress.step += 1
                progress.skipped_in_a_row = 0
            else:
                skip_non_finite_step(progress, cfg, run_dir, metrics_log)
                bar.update(1)
                continue
            window.add(terms, len(batch), num_tokens)
            elapsed = time.perf_counter() - window.started
            bar.update(1)
            if not bar.disable:  # reading the sums waits for the device: only for a visible bar
                sums = window.sums()
                bar.set_postfix(
                    tok_s=f"{sums['tokens'] / max(elapsed, 1e-9):.0f}",
                    loss=f"{sums['loss'] / sums['sentences']:.2f}",
                    kl=f"{sums['kl'] / sums['sentences']:.3f}",
                )
            if progress.step % cfg.log_every_steps == 0:
                keys = ("loss", "rec", "kl", "sentences", "tokens")  # sums over every process's sentences
                sums = window.sums()
                totals = dict(zip(keys, distributed.sum_across(dist_context, [sums[k] for k in keys]), strict=True))
                record = {
                    "event": "train",
                    "step": progress.step,
                    "epoch": progress.epoch,
                    "loss": totals["loss"] / totals["sentences"],
                    "rec": totals["rec"] / totals["sentences"],
                    "kl": totals["kl"] / totals["sentences"],
                    "lr": optimizer.param_groups[0]["lr"],
                    "tokens_per_s": totals["tokens"] / max(elapsed, 1e-9),
                }
                metrics_log.write(record)
                # without a visible progress bar (not a terminal, or switched off) progress goes to the log
                (log.debug if not bar.disable else log.info)(
                    "step %d (epoch %d): loss %.2f  rec %.2f  kl %.3f  lr %.3g  %.0f tokens/s",
                    progress.step,
                    progress.epoch + 1,
                    record["loss"],
                    record["rec"],
                    record["kl"],
                    record["lr"],
                    record["tokens_per_s"],
                )
                window = TrainWindow()
            if cfg.validate_every_steps and progress.step % cfg.validate_every_steps == 0:
                last_valid = validate()
                model.train()
            reached_max = cfg.max_steps is not None and progress.step >= cfg.max_steps
            if reached_max:
                stop = True
                break
            if cfg.checkpoint_every_steps and progress.step % cfg.checkpoint_every_steps == 0:
                checkpoint("last.pt")
            faults.kill_point("after_step", progress.step)
        bar.close()
        if stop:
            break
        progress.epoch += 1
        progress.batch_in_epoch = 0
        if last_valid.get("step") != progress.step:  # not validated at this step already
            last_valid = validate()
        stop = end_of_epoch(progress, last_valid, scheduler, optimizer, model, run_dir, cfg, dist_context)
        checkpoint("last.pt")

    return finish_run(run_dir, progress, last_valid, validate, checkpoint, metrics_log, started)


def finish_run(run_dir: Path, progress: Progress, last_valid: dict, validate, checkpoint, metrics_log, started: float):
    """The end of a training run (text or image): validate the final weights unless that just happened,
    mark the run finished in ``last.pt``, close the metrics log and say how it went."""
    if not progress.finished:
        if last_valid.get("step") != progress.step:
            last_valid = validate()
        progress.finished = True
        checkpoint("last.pt")
    metrics_log.close()
    seconds = time.perf_counter() - started
    log.info(
        "finished at step %d (best valid %.4g at step %d) in %.0fs; %d steps skipped",
        progress.step,
        progress.best_valid,
        progress.best_step,
        seconds,
        progress.skipped_steps,
    )
    return TrainSummary(run_dir, progress, last_valid, seconds)


def skip_non_finite_step(progress: Progress, cfg, run_dir: Path, metrics_log: MetricsLog) -> None:
    """Count a step whose loss or gradient was not finite (nothing was updated); stop after too many in a row."""
    progress.skipped_steps += 1
    progress.skipped_in_a_row += 1
    log.warning(
        "non-finite loss or gradient after step %d: batch skipped (%d in a row, %d in all)",
        progress.step,
        progress.skipped_in_a_row,
        progress.skipped_steps,
    )
    metrics_log.write({"event": "skipped", "step": progress.step, "in_a_row": progress.skipped_in_a_row})
    if progress.skipped_in_a_row >= cfg.max_nonfinite_in_a_row:
        metrics_log.close()
        last = run_dir / "last.pt"
        kept = f"the last good checkpoint {last} is intact" if last.is_file() else "no checkpoint had been written yet"
        raise TextVAEError(
            f"training stopped after step {progress.step}: {progress.skipped_in_a_row} batches in a row gave a "
            f"non-finite loss or gradient (train.max_nonfinite_in_a_row); {kept}"
        )


def end_of_epoch(progress, valid, scheduler, optimizer, model, run_dir, cfg, dist_context) -> bool:
    """Learning-rate decay on plateau (reloading the best weights), early stopping. True = stop."""
    improved = progress.best_step == progress.step
    progress.epochs_without_improvement = 0 if improved else progress.epochs_without_improvement + 1
    lr_before = optimizer.param_groups[0]["lr"]
    scheduler.step(valid["loss"])
    if optimizer.param_groups[0]["lr"] < lr_before:
        progress.lr_decays += 1
        log.info("lr decay %d: %.4g → %.4g", progress.lr_decays, lr_before, optimizer.param_groups[0]["lr"])
        distributed.barrier(dist_context)  # rank 0 has finished writing best.pt
        if cfg.reload_best_on_decay and (run_dir / "best.pt").is_file():
            model.load_state_dict(read_checkpoint_or_previous(run_dir / "best.pt")[0]["model"])
        if progress.lr_decays >= cfg.max_lr_decays:
            log.info("stopping: %d learning-rate decays", progress.lr_decays)
            return True
    if cfg.early_stop_patience is not None and progress.epochs_without_improvement >= cfg.early_stop_patience:
        log.info("early stop: %d epochs without improvement", progress.epochs_without_improvement)
        return True
    return False
