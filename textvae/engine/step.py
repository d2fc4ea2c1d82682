"""One training step, seen from the engine: a ``Stepper`` turns a batch into a ``StepOutcome``, and
``count_step`` is the one place where an outcome moves the counters (steps taken, steps skipped)
and the running sums of the current log window.

The seam: a family's ``stepper`` may be replaced by any object with ``step(batch, step)``, e.g.
one that captures the step in a CUDA graph; as long as it returns a ``StepOutcome`` the loop,
the accounting and the logging stay as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from textvae.engine import distributed
from textvae.engine.metrics_log import MetricsLog
from textvae.engine.state import Progress
from textvae.errors import TextVAEError

log = logging.getLogger(__name__)


@dataclass
class StepOutcome:
    """What one step reports to the engine.

    ``updated``: the parameters changed (False: the loss or a gradient was not finite on some rank,
    nothing changed). ``terms``: the honest terms of the batch (the family's window reads them:
    ``ElboTerms`` for text, ``LossTerms`` for images). ``examples``, ``tokens``: this process's
    batch size and target tokens. ``scalars``: batch-level values to log (e.g. codes restarted).
    ``grad_norms``: ‖g‖₂ before clipping, 0-dim device tensors (``textvae.engine.train_record``).
    """

    updated: bool
    terms: Any
    examples: int
    tokens: int = 0
    scalars: dict[str, float] = field(default_factory=dict)
    grad_norms: dict[str, Any] | None = None


class Stepper(Protocol):
    def step(self, batch: Any, step: int) -> StepOutcome:
        """Train on ``batch``; ``step`` = optimizer steps taken before this one."""


class Window(Protocol):
    """Running sums of a family's terms over the steps since the last train record."""

    started: float  # time.perf_counter() when the window opened

    def add_step(self, outcome: StepOutcome) -> None: ...

    def postfix(self, elapsed: float) -> dict[str, str]:
        """What the progress bar shows (reads the sums: called only while a bar is visible)."""

    def report(self, dist: distributed.Context, elapsed: float) -> tuple[dict[str, float], dict[str, float]]:
        """(means over all processes, {rate name: per second}); every process calls it."""


def count_step(outcome: StepOutcome, progress: Progress, window: Window, skip: SkipPolicy) -> bool:
    """Move the counters for one trained batch; True when it counted as an optimizer step."""
    progress.batch_in_epoch += 1
    if not outcome.updated:
        skip.count(progress)
        return False
    progress.step += 1
    progress.skipped_in_a_row = 0
    window.add_step(outcome)
    return True


@dataclass
class SkipPolicy:
    """Skipped steps (non-finite loss or gradient): counted, logged, and fatal after ``max_in_a_row``."""

    max_in_a_row: int
    run_dir: Path
    metrics_log: MetricsLog

    def count(self, progress: Progress) -> None:
        """One skipped step, seen at once (the host step)."""
        self.record(progress, 1, progress.skipped_in_a_row + 1, progress.skipped_in_a_row + 1, late=False)

    def record(self, progress: Progress, new: int, in_a_row: int, longest_run: int, late: bool = True) -> None:
        """``new`` skipped steps: counted, logged, written to the metrics log (with their ``count`` when
        seen ``late``, as a graphed step's are, several at once); ``in_a_row`` is the run of skipped steps
        now and ``longest_run`` the longest among the new ones. Fatal when that run reaches ``max_in_a_row``."""
        progress.skipped_steps += new
        progress.skipped_in_a_row = in_a_row
        if late:
            log.warning(
                "non-finite loss or gradient: %d batch(es) skipped before step %d (%d in a row at most, %d in all)",
                new,
                progress.step,
                longest_run,
                progress.skipped_steps,
            )
        else:
            log.warning(
                "non-finite loss or gradient after step %d: batch skipped (%d in a row, %d in all)",
                progress.step,
                in_a_row,
                progress.skipped_steps,
            )
        seen_late = {"count": new} if late else {}
        self.metrics_log.write({"event": "skipped", "step": progress.step, **seen_late, "in_a_row": longest_run})
        if longest_run >= self.max_in_a_row:
            progress.skipped_in_a_row = longest_run
            self.stop(progress)

    def stop(self, progress: Progress) -> None:
        """End the run: ``progress.skipped_in_a_row`` batches in a row were skipped (a one-line error)."""
        self.metrics_log.close()
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint {last} is intact" if last.is_file() else "no checkpoint had been written yet"
        raise TextVAEError(
            f"training stopped after step {progress.step}: {progress.skipped_in_a_row} batches in a row gave a "
            f"non-finite loss or gradient (train.max_nonfinite_in_a_row); {kept}"
        )
