"""A fused group: R text rows trained in lockstep as one ``FusedVAE``, each row still a full engine run.

Each row keeps its own ``Engine`` (``FusedRowEngine``), run directory, metrics log, validation,
learning-rate decay on its own plateau (reloading its own best weights), early stop, ``max_steps``,
checkpoints and resume, exactly as an unfused run: the rows' engines run in threads, and their
steppers meet at a ``Lockstep``, which runs one fused step for all rows still training once each has
handed in the same batch. A finished row leaves, and the next step repacks the fused model without
it (``Lockstep._repack``): a finished row costs nothing more.

Weights live in the fused model while training. A row's unfused model and torch optimizer are
brought up to date from it (``pull``) before its validation and its checkpoints, which are therefore
the unfused format: ``textvae eval``, ``report``, resume and the tables read them as they are. After a
learning-rate decay reloads a row's best weights, they go back into the fused model (``push``). A
row's checkpoint stores its own generator's state as the torch RNG state, so a killed fused run
resumes fused, and a checkpoint of either kind resumes as the other (rows join a group only when
their checkpoints stand at the same batch: ``FusedGroup.run``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from textvae.config import Recipe
from textvae.engine import Engine, StepOutcome, distributed
from textvae.engine.state import TrainSummary
from textvae.errors import TextVAEError
from textvae.models.fused.noise import RowNoise
from textvae.models.fused.optimizer import FusedOptimizer
from textvae.models.fused.remedies import RowObjective
from textvae.models.fused.step import RowPhases, fused_train_step
from textvae.models.fused.vae import FusedVAE
from textvae.train import TextBatch, TextFamily

log = logging.getLogger(__name__)


@dataclass
class RowTerms:
    """A row's honest terms of one fused step, as ``TrainWindow`` reads them."""

    rec: torch.Tensor  # (B,)
    kl: torch.Tensor  # (B,)


class FusedRowFamily(TextFamily):
    """A row's text family whose step is its seat at the group's ``Lockstep``; data shared with row 0."""

    def __init__(self, recipe: Recipe, context: distributed.Context, row: int, group: FusedGroup):
        super().__init__(recipe, context)
        self.row, self.group = row, group

    def load_data(self, resumed: dict | None) -> None:
        shared = self.group.families[0] if self.row else None
        if shared is None:
            super().load_data(resumed)
            return
        from textvae.evaluation.validation import select_sentences

        self.vocab, self.train_split, self.valid_split = shared.vocab, shared.train_split, shared.valid_split
        self.train_table = shared.train_table
        self.rank_valid_indices = select_sentences(self.valid_split, self.cfg.max_valid_sentences, self.cfg.seed)

    def build(self, resumed: dict | None) -> torch.nn.Module:
        model = super().build(resumed)  # seed_everything(seed), then the weights: the unfused row's
        self.generator_state = device_rng_state(self.dist.device)  # what the unfused run draws its noise from
        return model

    def stepper(self, optimizer: torch.optim.Optimizer, forward: torch.nn.Module) -> _RowSeat:
        self.graph_stepper = None
        return _RowSeat(self.group, self.row)

    def validate(self, step: int) -> tuple[dict, str]:
        self.group.lockstep.pull(self.row, optimizer=False)
        return super().validate(step)


class FusedRowEngine(Engine):
    """One row's engine: its checkpoints carry its generator and the fused weights and optimizer state."""

    def __init__(self, family: FusedRowFamily, recipe: Recipe, run_dir: Path, resume: bool):
        super().__init__(family, recipe, run_dir, resume, distributed.SINGLE_PROCESS)
        self.row = family.row

    def restore(self, payload: dict) -> None:
        super().restore(payload)
        saved = payload["rng"][0] if isinstance(payload["rng"], list) else payload["rng"]
        key = "cuda" if self.dist.device.type == "cuda" else "torch"
        self.family.generator_state = saved[key]  # the row's noise stream continues where it was saved

    def checkpoint(self, name: str) -> None:
        lockstep = self.family.group.lockstep
        lockstep.pull(self.row, optimizer=True)
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        rng["cuda" if self.dist.device.type == "cuda" else "torch"] = lockstep.generator_state(self.row)
        self.write_checkpoint(name, rng, fused_group=lockstep.size)

    def end_of_epoch(self, valid: dict) -> bool:
        decays = self.progress.lr_decays
        stop = super().end_of_epoch(valid)
        if self.progress.lr_decays > decays and self.cfg.reload_best_on_decay:
            self.family.group.lockstep.push(self.row)  # the best weights it reloaded
        return stop


class _RowSeat:
    """A row's stepper: hands its batch to the lockstep and waits for the fused step's outcome."""

    def __init__(self, group: FusedGroup, row: int):
        self.group, self.row = group, row  # the group's lockstep exists once every row is built

    def step(self, batch: TextBatch, step: int) -> StepOutcome:
        return self.group.lockstep.submit(self.row, batch, step)


class Lockstep:
    """Where the rows' steppers meet: the last row to hand in its batch runs the fused step.

    The fused model holds the rows still training (``slots``: their row numbers, in order). When a row
    finishes, the next step first repacks the array: the remaining rows' weights, optimizer state and
    noise streams go through their unfused copies (``pull``) into a fused model of the remaining rows
    only, so a finished row costs nothing more."""

    def __init__(self, engines: list[FusedRowEngine]):
        self.engines = engines
        self.size = len(engines)  # rows in the group (``fused`` in their results)
        self.device = engines[0].dist.device
        self.generator_states = {row: engine.family.generator_state for row, engine in enumerate(engines)}
        self._build(list(range(self.size)))
        self.active = set(range(self.size))
        self.repack_due = False
        self.pending: dict[int, tuple[TextBatch, int]] = {}
        self.outcomes: dict[int, StepOutcome] = {}
        self.generation = 0
        self.error: BaseException | None = None
        self.condition = threading.Condition()

    def _build(self, rows: list[int]) -> None:
        """The fused model, optimizer, objective, phases and noise of ``rows``, from their unfused copies."""
        self.slots = rows
        engines = [self.engines[row] for row in rows]
        models = [engine.model for engine in engines]
        self.model = FusedVAE.from_models(models)
        cfgs = [engine.cfg for engine in engines]
        self.lr = [engine.optimizer.param_groups[0]["lr"] for engine in engines]
        clips, decays = [cfg.grad_clip for cfg in cfgs], [cfg.weight_decay for cfg in cfgs]
        self.optimizer = FusedOptimizer(list(self.model.parameters()), cfgs[0].optimizer, self.lr, clips, decays)
        self.objective = RowObjective(self.model.remedies, self.device)
        self.phases = RowPhases([engine.family.strategy for engine in engines], models)  # pretrain + reset rows
        self.noise = RowNoise([self.generator_states[row] for row in rows], self.device)
        self.param_index = {name: i for i, (name, _) in enumerate(self.model.named_parameters())}
        for row in rows:
            self._load_optimizer_state(row)

    def generator_state(self, row: int) -> torch.Tensor:
        """Row ``row``'s noise stream now (while it trains; the last state it had once it left)."""
        if row in self.slots:
            return self.noise.generators[self.slots.index(row)].get_state()
        return self.generator_states[row]

    # --- the step
    def submit(self, row: int, batch: TextBatch, step: int) -> StepOutcome:
        with self.condition:
            self._raise_if_failed()
            self.pending[row] = (batch, step)
            generation = self.generation
            self._step_if_ready()
            while self.generation == generation and self.error is None:
                self.condition.wait()
            self._raise_if_failed()
            return self.outcomes.pop(row)

    def leave(self, row: int) -> None:
        """Row ``row`` stopped training: the others no longer wait for it, and the array is repacked."""
        with self.condition:
            self.active.discard(row)
            self.pending.pop(row, None)
            self.repack_due = bool(self.active)
            with contextlib.suppress(BaseException):  # kept in self.error: the waiting rows raise it
                self._step_if_ready()
            self.condition.notify_all()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise TextVAEError(f"another row of the fused group failed: {self.error}")

    def _step_if_ready(self) -> None:
        if not self.pending or set(self.pending) != self.active:
            return
        try:
            if self.repack_due:
                self._repack()
            self.outcomes = self._fused_step()
        except BaseException as err:
            self.error = err
            raise
        finally:
            self.pending = {}
            self.generation += 1
            self.condition.notify_all()

    def _repack(self) -> None:
        rows = sorted(self.active)
        for row in rows:
            self.pull(row, optimizer=True)
            self.generator_states[row] = self.generator_state(row)
        for row in set(self.slots) - set(rows):
            self.generator_states[row] = self.generator_state(row)
        self._build(rows)
        self.repack_due = False
        log.info("fused group: %d of %d rows still training, repacked", len(rows), self.size)

    def _fused_step(self) -> dict[int, StepOutcome]:
        rows = self.slots  # == sorted(self.pending): every row of the fused model is waiting
        first = self.pending[rows[0]][0]
        on_host = first.batch.indices.device.type == "cpu"  # on a GPU the host-side counts only: no sync
        for row in rows[1:]:
            batch = self.pending[row][0]
            same = batch.num_tokens == first.num_tokens and len(batch.batch) == len(first.batch)
            if not same or (on_host and not torch.equal(batch.batch.indices, first.batch.indices)):
                raise TextVAEError("the rows of a fused group reached different batches (their data order differs)")
        for slot, row in enumerate(rows):  # each row's learning rate, as its own scheduler set it
            lr = self.engines[row].optimizer.param_groups[0]["lr"]
            if lr != self.lr[slot]:
                self.lr[slot] = lr
                self.optimizer.lr[slot] = lr
        steps = [self.pending[row][1] for row in rows]
        spe = first.steps_per_epoch
        model, optimizer, objective, noise = self.model, self.optimizer, self.objective, self.noise
        result = fused_train_step(model, optimizer, objective, noise, first.batch, steps, spe, None, self.phases)
        updated = result.updated.tolist()
        out, norms = result.out, self._grad_norms()
        return {
            row: StepOutcome(
                updated[slot],
                RowTerms(out.rec[slot], out.kl[slot]),
                len(first.batch),
                first.num_tokens,
                grad_norms={key: value[slot] for key, value in norms.items()},
            )
            for slot, row in enumerate(rows)
        }

    def _grad_norms(self) -> dict[str, torch.Tensor]:
        """Each row's ‖g‖₂ before clipping (R,): of all its parameters, of its encoder and of its decoder
        (``textvae.engine.train_record``: the unfused run's train record has the same three)."""
        squares = {"grad_norm": 0.0, "grad_norm_encoder": 0.0, "grad_norm_decoder": 0.0}
        for name, param in self.model.named_parameters():
            if param.grad is None:
                continue
            square = param.grad.reshape(param.shape[0], -1).pow(2).sum(1)  # (R,)
            squares["grad_norm"] = squares["grad_norm"] + square
            part = "encoder" if name.startswith("enc_") else "decoder" if name.startswith(DECODER_PARTS) else None
            if part:
                squares[f"grad_norm_{part}"] = squares[f"grad_norm_{part}"] + square
        return {key: torch.as_tensor(value).sqrt() for key, value in squares.items()}

    # --- the rows' unfused copies
    def pull(self, row: int, optimizer: bool) -> None:
        """The fused weights (and optimizer state) of ``row`` into its unfused model (and optimizer)."""
        engine, slot = self.engines[row], self.slots.index(row)
        with torch.no_grad():
            engine.model.load_state_dict(self.model.row_state_dict(slot))
        if not optimizer or self.optimizer.kind != "adam":
            return
        params = dict(engine.model.named_parameters())
        state = engine.optimizer.state
        for fused_name, name in self.model.names[slot].items():
            if name not in params:
                continue
            index = self.param_index[fused_name]
            param = params[name]
            steps = int(self.optimizer.steps[index][slot])
            if steps == 0:  # never updated, or its state dropped: torch.optim holds none
                state.pop(param, None)
                continue
            state[param] = {
                "step": torch.tensor(float(steps), dtype=torch.float32, device=param.device),
                "exp_avg": self.optimizer.exp_avg[index][slot].clone(),
                "exp_avg_sq": self.optimizer.exp_avg_sq[index][slot].clone(),
            }

    def push(self, row: int) -> None:
        """``row``'s unfused weights (e.g. its reloaded best) into the fused model."""
        slot = self.slots.index(row)
        fused = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        state = self.engines[row].model.state_dict()
        with torch.no_grad():
            for fused_name, name in self.model.names[slot].items():
                fused[fused_name][slot].copy_(state[name])

    def _load_optimizer_state(self, row: int) -> None:
        """A row's Adam state (its torch optimizer's: restored, or pulled before a repack) into the fused one."""
        engine, slot = self.engines[row], self.slots.index(row)
        if self.optimizer.kind != "adam" or not engine.optimizer.state:
            return
        params = dict(engine.model.named_parameters())
        for fused_name, name in self.model.names[slot].items():
            saved = engine.optimizer.state.get(params.get(name))
            if not saved:
                continue
            index = self.param_index[fused_name]
            self.optimizer.exp_avg[index][slot].copy_(saved["exp_avg"])
            self.optimizer.exp_avg_sq[index][slot].copy_(saved["exp_avg_sq"])
            self.optimizer.steps[index][slot] = int(saved["step"])


class FusedGroup:
    """R text recipes trained together into their run directories; ``run`` returns their summaries."""

    def __init__(self, recipes: list[Recipe], run_dirs: list[Path], resume: list[bool]):
        check_group(recipes)
        self.families: list[FusedRowFamily] = []
        self.engines: list[FusedRowEngine] = []
        for row, (recipe, run_dir, resumed) in enumerate(zip(recipes, run_dirs, resume, strict=True)):
            family = FusedRowFamily(recipe, distributed.SINGLE_PROCESS, row, self)
            self.families.append(family)
            self.engines.append(FusedRowEngine(family, recipe, Path(run_dir), resumed))

    def run(self) -> list[TrainSummary | BaseException]:
        """Train every row; a row's result is its summary, or the error that ended it."""
        for engine in self.engines:  # one at a time: each row's weights come from the global RNG
            engine.prepare()
            engine.build()
            engine.restore_or_start()
        positions = {(e.progress.epoch, e.progress.batch_in_epoch) for e in self.engines if not e.progress.finished}
        if len(positions) > 1:
            raise TextVAEError(f"the rows stand at different batches {sorted(positions)}: they cannot resume fused")
        self.lockstep = Lockstep(self.engines)
        results: list[TrainSummary | BaseException | None] = [None] * len(self.engines)
        threads = [threading.Thread(target=self._run_row, args=(row, results)) for row in range(len(self.engines))]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log.info("fused group of %d rows: %.0f s", len(self.engines), time.perf_counter() - started)
        return results

    def _run_row(self, row: int, results: list) -> None:
        engine = self.engines[row]
        try:
            engine.started = time.perf_counter()
            engine.run_epochs()
            results[row] = engine.finish(engine.started)  # the others wait: the fused slice is still
            self.lockstep.leave(row)
        except BaseException as err:  # reported as the row's error; the other rows go on
            log.error("fused row %s failed: %s", engine.run_dir, err)
            results[row] = err  # an error of the fused step itself reaches every row (Lockstep.error)
            self.lockstep.leave(row)


DECODER_PARTS = ("dec_", "z_to_cell.", "output.")  # the fused names of the unfused model's decoder
FUSIBLE_STRATEGIES = ("standard", "pretrain_reset")  # pretrain + reset: a per-row phase (RowPhases)


def device_rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator a run on ``device`` draws its dropout and z noise from."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def check_group(recipes: list[Recipe]) -> None:
    """What must hold for recipes to train fused (``fusion_key`` is the cheap check before)."""
    if len(recipes) < 2:
        raise TextVAEError("a fused group needs at least two rows")
    for recipe in recipes:
        if recipe.strategy.get("type", "standard") not in FUSIBLE_STRATEGIES:
            raise TextVAEError(f"strategy {recipe.strategy['type']!r} does not fuse (its step runs its own loop)")
        if recipe.train.momentum != 0:
            raise TextVAEError("SGD with momentum does not fuse (the fused SGD has no momentum buffer)")
