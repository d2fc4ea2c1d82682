"""The training engine: one run of any family, as named phases read top to bottom.

``Engine.run``: ``prepare`` (run directory, threads, the checkpoint to resume) → ``build`` (data,
model, optimizer, schedule) → ``restore_or_start`` → ``run_epochs`` (``run_epoch`` → for each batch
``stepper.step`` and ``after_step``: count, log, validate, checkpoint) → ``end_of_epoch`` →
``finish``. The family (``textvae.engine.family.Family``) supplies the data, the model, the step
and the validation; DDP, resume, non-finite steps, progress bars and logging live here once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from textvae import faults
from textvae.checkpoint import atomic_write_text, read_checkpoint_or_previous
from textvae.engine import distributed
from textvae.engine.family import Family
from textvae.engine.machine import machine_fingerprint, warn_if_changed
from textvae.engine.metrics_log import MetricsLog
from textvae.engine.run_dir import prepare_run_dir, read_resumable
from textvae.engine.state import (
    Progress,
    TrainSummary,
    make_optimizer,
    make_scheduler,
    restore_rng,
    rng_state,
    seed_rank,
)
from textvae.engine.step import SkipPolicy, count_step

log = logging.getLogger(__name__)


class Engine:
    """One training run of ``family``'s ``recipe`` into ``run_dir``, as process ``context`` of the job."""

    def __init__(self, family: Family, recipe, run_dir: Path, resume: bool, context: distributed.Context):
        self.family, self.recipe, self.cfg = family, recipe, recipe.train
        self.run_dir, self.resume, self.dist = Path(run_dir), resume, context
        self.progress = Progress()
        self.last_valid: dict = {}
        self.started = time.perf_counter()  # reset when training starts (run); train.max_minutes counts from it

    def run(self) -> TrainSummary:
        self.prepare()
        self.build()
        self.restore_or_start()
        self.started = time.perf_counter()
        self.run_epochs()
        return self.finish(self.started)

    # --- before training
    def prepare(self) -> None:
        """The run directory (fresh or resumable), torch's threads, the checkpoint to resume."""
        prepare_run_dir(self.run_dir, self.recipe, self.resume, delete_leftovers=self.dist.is_main)
        distributed.barrier(self.dist)
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        self.resumed = read_resumable(self.run_dir, self.recipe, self.family.check_resumed) if self.resume else None

    def build(self) -> None:
        """The family's data and model, then the optimizer and the learning-rate schedule."""
        self.model = self.family.build(self.resumed)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.scheduler = make_scheduler(self.optimizer, self.cfg)

    def restore_or_start(self) -> None:
        """Load the resumed state, or write a fresh run's files; then the step and the metrics log."""
        if self.resumed:
            self.restore(self.resumed)
        else:
            if self.dist.enabled:
                seed_rank(self.cfg.seed, self.dist)  # after the model: every rank built the same initial weights
            if self.dist.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                for name, text in self.family.run_files().items():
                    atomic_write_text(self.run_dir / name, text)
        num_params = sum(p.numel() for p in self.model.parameters())
        log.info("model %s: %.2fM parameters on %s", self.recipe.model["type"], num_params / 1e6, self.dist.device)
        self.stepper = self.family.stepper(self.optimizer, self.forward_module())
        offset = self.resumed["metrics_offset"] if self.resumed else None
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl", offset, enabled=self.dist.is_main)
        changes = warn_if_changed(self.resumed.get("machine"), str(self.run_dir)) if self.resumed else []
        if changes:
            self.metrics_log.write({"event": "machine_changed", "step": self.progress.step, "changes": changes})
        if self.cfg.tensorboard and self.dist.is_main:
            from textvae.engine.tensorboard import TensorBoardMirror

            mirror = TensorBoardMirror(
                self.run_dir / "tensorboard",
                recipe_text=json.dumps(self.recipe.to_dict(), indent=2),
                skipped=self.progress.skipped_steps,
                purge_step=self.progress.step + 1 if self.resumed else None,
            )
            self.metrics_log.mirrors.append(mirror)
        self.skip = SkipPolicy(self.cfg.max_nonfinite_in_a_row, self.run_dir, self.metrics_log)

    def restore(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        restore_rng(payload["rng"], self.dist, self.cfg.seed)
        self.progress = Progress(**payload["progress"])
        self.family.restore(payload)
        log.info(
            "resuming %s at step %d (epoch %d, batch %d)",
            self.run_dir,
            self.progress.step,
            self.progress.epoch,
            self.progress.batch_in_epoch,
        )

    def forward_module(self) -> torch.nn.Module:
        """What a step calls: under torchrun, the wrapper that averages gradients across processes."""
        if not self.dist.enabled:
            return self.model
        device = self.dist.device
        device_ids = [device] if device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids, find_unused_parameters=True)

    # --- training
    def run_epochs(self) -> None:
        """Epochs until ``train.epochs``, ``max_steps``, the learning-rate decays or early stopping end the run."""
        self.window = self.family.new_window()
        stop = self.progress.finished
        while not stop and self.progress.epoch < self.cfg.epochs:
            if self.run_epoch():
                break  # max_steps reached inside the epoch
            self.settle()
            self.progress.epoch += 1
            self.progress.batch_in_epoch = 0
            if self.last_valid.get("step") != self.progress.step:  # not validated at this step already
                self.last_valid = self.validate()
            stop = self.end_of_epoch(self.last_valid)
            self.checkpoint("last.pt")

    def run_epoch(self) -> bool:
        """The remaining batches of the current epoch; True when ``max_steps`` was reached."""
        num_batches, batches = self.family.epoch(self.progress.epoch, self.progress.batch_in_epoch)
        self.bar = tqdm(
            total=num_batches,
            initial=self.progress.batch_in_epoch,
            desc=f"epoch {self.progress.epoch + 1}",
            unit="batch",
            disable=None if self.cfg.progress_bar and self.dist.is_main else True,
            leave=False,
        )
        self.model.train()
        try:
            for batch in batches:
                outcome = self.stepper.step(batch, self.progress.step)
                self.bar.update(1)
                if count_step(outcome, self.progress, self.window, self.skip) and self.after_step():
                    return True
        finally:
            self.bar.close()
        return False

    def after_step(self) -> bool:
        """Progress, the train record, validation, the checkpoint; True when ``max_steps`` is reached."""
        step, cfg = self.progress.step, self.cfg
        if self.settle(step):
            return False  # batches were skipped: the count moved back, the events wait for the corrected count
        elapsed = time.perf_counter() - self.window.started
        if not self.bar.disable:  # reading the sums waits for the device: only for a visible bar
            self.bar.set_postfix(**self.window.postfix(elapsed))
        if step % cfg.log_every_steps == 0:
            self.log_train(elapsed)
        if cfg.validate_every_steps and step % cfg.validate_every_steps == 0:
            self.last_valid = self.validate()
            self.model.train()
        if cfg.max_steps is not None and step >= cfg.max_steps:
            return True
        if self.out_of_time(step):
            return True
        if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0:
            self.checkpoint("last.pt")
        faults.kill_point("after_step", step)
        return False

    def out_of_time(self, step: int) -> bool:
        """Whether ``train.max_minutes`` of this process's training have passed: checked at log steps (a
        step the host settles anyway), stopping every rank when any rank is over. The run then ends as at
        ``max_steps`` (validated, marked finished) with ``progress.stopped_on_time`` set."""
        limit = self.cfg.max_minutes
        if limit is None or step % self.cfg.log_every_steps:
            return False
        over = time.perf_counter() - self.started >= 60 * limit
        if distributed.all_ranks_agree(self.dist, not over):
            return False
        self.progress.stopped_on_time = True
        self.metrics_log.write({"event": "stopped", "step": step, "stopped_on_time": True, "max_minutes": limit})
        log.warning("stopping at step %d: train.max_minutes = %g reached (before the run's stopping rule)", step, limit)
        return True

    def settle(self, step: int | None = None) -> bool:
        """A stepper that counts skipped steps on the device (``textvae.cuda.graph_stepper.GraphStepper``)
        corrects ``progress`` before the host acts on the step count: when an event (log, validate,
        stop, checkpoint) is due at ``step``, or always (``step`` None). True when steps were taken back."""
        settle, cfg = getattr(self.stepper, "settle", None), self.cfg
        if settle is None:
            return False
        if step is not None:
            every = (cfg.log_every_steps, cfg.validate_every_steps, cfg.checkpoint_every_steps)
            if not any(n and step % n == 0 for n in every) and (cfg.max_steps is None or step < cfg.max_steps):
                return False
        before = self.progress.step
        settle(self.progress, self.skip)
        return self.progress.step != before

    def log_train(self, elapsed: float) -> None:
        """One train record: the window's means over all processes, the learning rate, the speed."""
        means, rate = self.window.report(self.dist, elapsed)
        lr = self.optimizer.param_groups[0]["lr"]
        record = {"event": "train", "step": self.progress.step, "epoch": self.progress.epoch, **means, "lr": lr, **rate}
        self.metrics_log.write(record)
        # without a visible progress bar (not a terminal, or switched off) progress goes to the log
        (log.debug if not self.bar.disable else log.info)(
            "step %d (epoch %d): %s  lr %.3g  %s",
            self.progress.step,
            self.progress.epoch + 1,
            "  ".join(f"{k} {v:.4g}" for k, v in means.items()),
            lr,
            "  ".join(f"{v:.0f} {k.replace('_per_s', '/s')}" for k, v in rate.items()),
        )
        self.window = self.family.new_window()

    def validate(self) -> dict:
        """One validation record; a new best loss writes ``best.pt``."""
        progress = self.progress
        result, shown = self.family.validate(progress.step)
        result = {"step": progress.step, **result}
        improved = result["loss"] < progress.best_valid
        if improved:
            progress.best_valid, progress.best_step = result["loss"], progress.step
            self.checkpoint("best.pt")
        lr = self.optimizer.param_groups[0]["lr"]
        self.metrics_log.write({"event": "valid", "epoch": progress.epoch, "improved": improved, "lr": lr, **result})
        log.info("valid step %d: loss %.4g  %s%s", progress.step, result["loss"], shown, "  (best)" if improved else "")
        return result

    def checkpoint(self, name: str) -> None:
        """Every process calls this (the RNG states are gathered); rank 0 writes."""
        rng = rng_state(self.dist.device)
        rng = distributed.gather_objects(self.dist, rng) if self.dist.enabled else rng
        if not self.dist.is_main:
            return
        self.write_checkpoint(name, rng)

    def write_checkpoint(self, name: str, rng, **extra) -> None:
        """``name`` in the run directory: the model, optimizer, schedule, ``rng``, progress and ``extra``."""
        self.family.save_checkpoint(
            self.run_dir / name,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng,
            progress=asdict(self.progress),
            metrics_offset=self.metrics_log.offset,
            machine=machine_fingerprint(),  # a resume on other threads or another CPU says it is not bit-exact
            **extra,
        )

    def end_of_epoch(self, valid: dict) -> bool:
        """Learning-rate decay on plateau (reloading the best weights), early stopping. True = stop."""
        progress, optimizer, cfg = self.progress, self.optimizer, self.cfg
        improved = progress.best_step == progress.step
        progress.epochs_without_improvement = 0 if improved else progress.epochs_without_improvement + 1
        lr_before = optimizer.param_groups[0]["lr"]
        self.scheduler.step(valid["loss"])
        if optimizer.param_groups[0]["lr"] < lr_before:
            progress.lr_decays += 1
            log.info("lr decay %d: %.4g → %.4g", progress.lr_decays, lr_before, optimizer.param_groups[0]["lr"])
            distributed.barrier(self.dist)  # rank 0 has finished writing best.pt
            if cfg.reload_best_on_decay and (self.run_dir / "best.pt").is_file():
                self.model.load_state_dict(read_checkpoint_or_previous(self.run_dir / "best.pt")[0]["model"])
            if progress.lr_decays >= cfg.max_lr_decays:
                log.info("stopping: %d learning-rate decays", progress.lr_decays)
                return True
        if cfg.early_stop_patience is not None and progress.epochs_without_improvement >= cfg.early_stop_patience:
            log.info("early stop: %d epochs without improvement", progress.epochs_without_improvement)
            return True
        return False

    # --- after training
    def finish(self, started: float) -> TrainSummary:
        """Validate the final weights unless that just happened, mark the run finished in
        ``last.pt``, close the metrics log and say how it went."""
        progress = self.progress
        if not progress.finished:
            self.settle()
            if self.last_valid.get("step") != progress.step:
                self.last_valid = self.validate()
            progress.finished = True
            self.checkpoint("last.pt")
        self.metrics_log.close()
        seconds = time.perf_counter() - started
        log.info(
            "finished at step %d (best valid %.4g at step %d) in %.0fs; %d steps skipped",
            progress.step,
            progress.best_valid,
            progress.best_step,
            seconds,
            progress.skipped_steps,
        )
        return TrainSummary(self.run_dir, progress, self.last_valid, seconds)
