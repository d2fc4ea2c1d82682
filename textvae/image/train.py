"""The image training loop: the text loop's guarantees (``textvae.train``) for any registered image model.

A run directory holds ``config.json`` (the resolved recipe), ``metrics.jsonl`` (one JSON object per
logged step, per validation and per skipped step), ``last.pt`` (every ``checkpoint_every_steps``
steps and at every epoch end) and ``best.pt`` (lowest validation loss: −ELBO = rec + kl for a
model with both terms, else its objective; see ``evaluate.validation_loss``).
Checkpoints are the text side's atomic, checksummed files, marked ``family = "image"``.
``resume=True`` continues from ``last.pt`` exactly: the model, optimizer, scheduler, global RNG
(the models' noise) and the position in the epoch are restored; the batch order and the dynamic
binarization of every batch are functions of (seed, epoch, batch), so the resumed run sees the
same pixels; validation runs on its own seeded RNG and never shifts the training stream.

A step: ``loss_terms(x, step)`` → backward on ``LossTerms.loss`` → clip → optimizer step (a
non-finite loss or gradient skips the step, counted; ``max_nonfinite_in_a_row`` stops the run)
→ ``model.end_of_step(step)`` when the model has it (its scalars are logged). ``train.lr_decay_*``,
``early_stop_patience``, ``reload_best_on_decay`` work as in the text loop. One process only
(no torchrun); ``train.device = "auto"`` takes the GPU when there is one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from textvae import __version__, distributed, faults, registry
from textvae.checkpoint import (
    FORMAT,
    atomic_write_text,
    read_checkpoint,
    read_checkpoint_or_previous,
    read_checkpoint_strict,
    write_checkpoint_payload,
)
from textvae.errors import TextVAEError
from textvae.image.config import ImageRecipe, image_recipe_from_dict, is_image_config
from textvae.image.data import batch_generator, epoch_order, image_shape, load_image_split
from textvae.image.evaluate import TermTotals, main_term, select_examples, validate_image
from textvae.strategies import StepContext, apply_update
from textvae.train import (
    MetricsLog,
    Progress,
    TrainSummary,
    end_of_epoch,
    finish_run,
    make_optimizer,
    prepare_run_dir,
    rng_state,
    set_rng_state,
    skip_non_finite_step,
    without_runtime_keys,
)

log = logging.getLogger(__name__)

FAMILY = "image"  # the checkpoint field that tells an image run from a text run


def build_image_model(recipe: ImageRecipe) -> torch.nn.Module:
    """The recipe's ``image_model``, given ``image_shape`` = (C, H, W) of its data."""
    return registry.build("image_model", recipe.model, "model", image_shape=image_shape(recipe.data))


def resolve_image_device(choice: str) -> torch.device:
    """``train.device``: ``auto`` takes the GPU when CUDA is available."""
    return distributed.resolve_device(choice)


def save_image_checkpoint(
    path: Path, *, recipe: ImageRecipe, model: torch.nn.Module, keep_previous: bool = False, **state: Any
) -> None:
    """Model weights with the recipe that built them, plus any training ``state`` (atomic, checksummed)."""
    payload = {
        "format": FORMAT,
        "textvae_version": __version__,
        "family": FAMILY,
        "config": json.dumps(recipe.to_dict()),
        "vocab": None,  # the checkpoint format requires the key; images have no vocabulary
        "model": model.state_dict(),
        **state,
    }
    write_checkpoint_payload(path, payload, keep_previous)


@dataclass
class LoadedImageCheckpoint:
    recipe: ImageRecipe
    model: torch.nn.Module
    payload: dict[str, Any]


def load_image_checkpoint(path: Path) -> LoadedImageCheckpoint:
    """Rebuild the model from the checkpoint's own recipe and load its weights strictly (eval mode).
    A damaged file is an error (naming the ``.prev`` copy, if any), never silently replaced."""
    path = Path(path)
    payload = read_checkpoint_strict(path)
    try:
        config = json.loads(payload["config"])
    except (json.JSONDecodeError, TypeError) as err:
        raise TextVAEError(f"{path}: checkpoint config is not valid JSON ({err})") from None
    if payload.get("family") != FAMILY or not is_image_config(config):
        raise TextVAEError(f"{path}: a text model's checkpoint, not an image run")
    recipe = image_recipe_from_dict(config, source=f"{path} (config)")
    model = build_image_model(recipe)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise TextVAEError(f"{path}: weights do not fit the checkpoint's config ({reason})") from None
    model.eval()
    return LoadedImageCheckpoint(recipe, model, payload)


def is_image_run(path: str | Path) -> bool:
    """Whether a run directory (or a checkpoint file) holds an image model: its ``config.json``
    decides, else the checkpoint's own config. Anything unreadable counts as not an image run,
    so that the text commands report it in their own words."""
    path = Path(path)
    config_path = path / "config.json" if path.is_dir() else path.parent / "config.json"
    try:
        if config_path.is_file():
            return is_image_config(json.loads(config_path.read_text(encoding="utf-8")))
        if path.is_file():
            payload = read_checkpoint(path)
            return payload.get("family") == FAMILY and is_image_config(json.loads(payload["config"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, AttributeError, TextVAEError):
        return False
    return False


def _no_random_batches():
    raise NotImplementedError("image training has no strategy that asks for random batches")


def train_image(recipe: ImageRecipe, run_dir: str | Path, resume: bool = False) -> TrainSummary:
    """Train ``recipe`` into ``run_dir`` (module docstring); ``resume`` continues from ``last.pt``."""
    cfg = recipe.train
    run_dir = Path(run_dir)
    if distributed.launched_world_size() > 1:
        raise TextVAEError("image models train in one process; torchrun is not supported for them")
    device = resolve_image_device(cfg.device)
    prepare_run_dir(run_dir, recipe, resume)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)

    resumed = read_checkpoint_or_previous(run_dir / "last.pt")[0] if resume else None
    if resumed and resumed.get("family") != FAMILY:
        raise TextVAEError(f"{run_dir}: --resume of a text run with an image recipe")
    if resumed and without_runtime_keys(json.loads(resumed["config"])) != without_runtime_keys(recipe.to_dict()):
        raise TextVAEError(f"{run_dir}: --resume with a different config than the run was started with")

    # --- model first: a value the constructor rejects fails before any data is read
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_image_model(recipe).to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_decay_factor, patience=cfg.lr_decay_patience
    )

    # --- data
    valid_split = load_image_split(recipe.data, "valid")  # checked first: the smaller read fails faster
    train_split = load_image_split(recipe.data, "train")
    valid_indices = select_examples(len(valid_split), cfg.max_valid_sentences, cfg.seed)
    log.info(
        "data %s%s: train %d, valid %d (of %d) examples of shape %s",
        recipe.data.dataset,
        " (binarized)" if recipe.data.binarize else "",
        len(train_split),
        len(valid_indices),
        len(valid_split),
        train_split.example_shape,
    )

    progress = Progress()
    if resumed:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        set_rng_state(resumed["rng"], device)
        progress = Progress(**resumed["progress"])
        log.info(
            "resuming %s at step %d (epoch %d, batch %d)",
            run_dir,
            progress.step,
            progress.epoch,
            progress.batch_in_epoch,
        )
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(recipe.to_dict(), indent=2))
    num_params = sum(p.numel() for p in model.parameters())
    log.info("model %s: %.2fM parameters on %s", recipe.model["type"], num_params / 1e6, device)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl", resumed["metrics_offset"] if resumed else None)

    def checkpoint(name: str) -> None:
        save_image_checkpoint(
            run_dir / name,
            keep_previous=True,
            recipe=recipe,
            model=model,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=rng_state(device),
            progress=asdict(progress),
            metrics_offset=metrics_log.offset,
        )

    def validate() -> dict:
        result = {
            "step": progress.step,
            **validate_image(model, valid_split, valid_indices, cfg.batch_size, progress.step, cfg.seed, device),
        }
        improved = result["loss"] < progress.best_valid
        if improved:
            progress.best_valid, progress.best_step = result["loss"], progress.step
            checkpoint("best.pt")
        lr = optimizer.param_groups[0]["lr"]
        metrics_log.write({"event": "valid", "epoch": progress.epoch, "improved": improved, "lr": lr, **result})
        shown = "  ".join(f"{k} {v:.4g}" for k, v in result.items() if k not in ("step", "loss", "num_examples"))
        log.info("valid step %d: loss %.4g  %s%s", progress.step, result["loss"], shown, "  (best)" if improved else "")
        return result

    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    step_context = StepContext(model, optimizer, cfg.grad_clip, progress.step, steps_per_epoch, _no_random_batches)
    started = time.perf_counter()
    last_valid: dict = {}
    window, window_started = TermTotals(), time.perf_counter()
    stop = progress.finished
    while not stop and progress.epoch < cfg.epochs:
        batches = epoch_order(len(train_split), cfg.batch_size, cfg.seed, progress.epoch)
        bar = tqdm(
            total=len(batches),
            initial=progress.batch_in_epoch,
            desc=f"epoch {progress.epoch + 1}",
            unit="batch",
            disable=None if cfg.progress_bar else True,
            leave=False,
        )
        model.train()
        while progress.batch_in_epoch < len(batches):
            pixels = batch_generator(cfg.seed, progress.epoch, progress.batch_in_epoch)
            x = train_split.images(batches[progress.batch_in_epoch], pixels).to(device)  # (B, C, H, W)
            out = model.loss_terms(x, step=progress.step)
            step_context.step = progress.step
            updated = apply_update(step_context, out.loss)
            progress.batch_in_epoch += 1
            bar.update(1)
            if not updated:
                skip_non_finite_step(progress, cfg, run_dir, metrics_log)
                continue
            progress.step += 1
            progress.skipped_in_a_row = 0
            window.add(out, len(x))
            if hasattr(model, "end_of_step"):
                window.add_scalars(model.end_of_step(progress.step) or {})
            elapsed = time.perf_counter() - window_started
            means = window.means()
            shown = main_term(window.term_means())
            bar.set_postfix(
                img_s=f"{window.examples / max(elapsed, 1e-9):.0f}",
                loss=f"{means['objective']:.3f}",
                **({shown: f"{means[shown]:.3f}"} if shown else {}),
            )
            if progress.step % cfg.log_every_steps == 0:
                record = {
                    "event": "train",
                    "step": progress.step,
                    "epoch": progress.epoch,
                    **means,
                    "lr": optimizer.param_groups[0]["lr"],
                    "images_per_s": window.examples / max(elapsed, 1e-9),
                }
                metrics_log.write(record)
                # without a visible progress bar (not a terminal, or switched off) progress goes to the log
                (log.debug if not bar.disable else log.info)(
                    "step %d (epoch %d): %s  lr %.3g  %.0f images/s",
                    progress.step,
                    progress.epoch + 1,
                    "  ".join(f"{k} {v:.4g}" for k, v in means.items()),
                    record["lr"],
                    record["images_per_s"],
                )
                window, window_started = TermTotals(), time.perf_counter()
            if cfg.validate_every_steps and progress.step % cfg.validate_every_steps == 0:
                last_valid = validate()
                model.train()
            if cfg.max_steps is not None and progress.step >= cfg.max_steps:
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
        stop = end_of_epoch(progress, last_valid, scheduler, optimizer, model, run_dir, cfg, distributed.SINGLE_PROCESS)
        checkpoint("last.pt")

    return finish_run(run_dir, progress, last_valid, validate, checkpoint, metrics_log, started)
