"""One training engine for every model family (text sentences, images).

``Engine(family, recipe, run_dir, resume, context).run()`` reads top to bottom as named phases:

1. ``prepare``: the run directory (fresh, started over, or resumable), torch's threads, and the
   checkpoint to resume (``run_dir.read_resumable``: same family, same config).
2. ``build``: the family's data and model (weights drawn right after seeding), the optimizer and the
   learning-rate schedule (``state.make_optimizer``, ``state.make_scheduler``).
3. ``restore_or_start``: weights, optimizer, schedule, RNG streams and ``Progress`` from the
   checkpoint, or a fresh run's files; the DistributedDataParallel wrapper under torchrun.
4. ``run_epochs`` → ``run_epoch``: for each batch ``stepper.step(batch, step) -> StepOutcome`` (the
   seam, ``step.Stepper``), ``step.count_step`` (steps taken and skipped, the window's sums) and
   ``after_step`` (progress bar, train record, validation, checkpoint, max_steps); at an epoch's end
   validation and ``end_of_epoch`` (learning-rate decay, early stopping).
5. ``validate`` (one record, ``best.pt``), ``checkpoint`` (``last.pt``/``best.pt``, rank 0 writes).
6. ``finish``: final validation, ``last.pt`` marked finished, the summary.

A family (``family.Family``, a Protocol) supplies the specifics: ``textvae.train.TextFamily``,
``textvae.image.train.ImageFamily``.
"""

from textvae.engine.family import Family
from textvae.engine.loop import Engine
from textvae.engine.metrics_log import MetricsLog
from textvae.engine.state import Progress, TrainSummary
from textvae.engine.step import SkipPolicy, StepOutcome, Stepper, Window, count_step

__all__ = [
    "Engine",
    "Family",
    "MetricsLog",
    "Progress",
    "SkipPolicy",
    "StepOutcome",
    "Stepper",
    "TrainSummary",
    "Window",
    "count_step",
]
