"""``train.tensorboard = true``: what ``metrics.jsonl`` records, also as TensorBoard event files.

Written with ``torch.utils.tensorboard`` into ``RUN_DIR/tensorboard``:

- every numeric field of a ``train`` or ``valid`` record becomes the scalar ``<event>/<field>`` at
  its step (``valid/kl``, ``valid/mi``, ``valid/au``, ``train/loss``, ...), and a record's
  ``kl_per_dim`` a histogram of the KL of the latent dimensions (collapsed dimensions pile up at 0);
- the skipped steps (non-finite loss or gradient): ``train/skipped_steps``, the count so far, at
  every train window and at every skipped step, and ``train/skipped_in_a_row`` at a skipped step;
- the resolved recipe, as JSON text under the tag ``recipe`` (TensorBoard's TEXT tab).

View one run with ``tensorboard --logdir RUN_DIR``, a whole ablation (one folder per row) with
``tensorboard --logdir ABLATION_DIR``. A resumed run appends a new event file and hides, with
``purge_step``, what the killed process wrote after the checkpoint it resumes from. The
``tensorboard`` package is optional (``pip install 'textvae[tensorboard]'``): without it the run
stops with a one-line error before training.
"""

from __future__ import annotations

from pathlib import Path

import torch

from textvae.errors import TextVAEError

_NOT_SCALARS = ("event", "step", "epoch")


class TensorBoardMirror:
    """A ``MetricsLog`` mirror: called with each record written to ``metrics.jsonl``.

    ``recipe_text`` is written once as text; ``skipped`` is the number of steps skipped before this
    process started (a resumed run's count); ``purge_step`` hides events at or after that step."""

    def __init__(
        self,
        log_dir: Path,
        writer=None,
        *,
        recipe_text: str | None = None,
        skipped: int = 0,
        purge_step: int | None = None,
    ):
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TextVAEError(
                    "train.tensorboard = true needs the tensorboard package (pip install 'textvae[tensorboard]')"
                ) from None
            writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        self.writer = writer
        self.skipped = skipped
        if recipe_text is not None:
            # markdown in TensorBoard's TEXT tab: four spaces make a code block, so the JSON keeps its layout
            self.writer.add_text("recipe", "\n".join("    " + line for line in recipe_text.splitlines()), 0)

    def __call__(self, record: dict) -> None:
        event, step = record.get("event"), record.get("step")
        if step is None:
            return
        if event == "skipped":
            self.skipped += 1
            self.writer.add_scalar("train/skipped_steps", float(self.skipped), step)
            self.writer.add_scalar("train/skipped_in_a_row", float(record.get("in_a_row", 0)), step)
            return
        if event not in ("train", "valid"):
            return
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, int | float):  # a bool (improved) counts as 0 / 1
                self.writer.add_scalar(f"{event}/{key}", float(value), step)
        if event == "train":
            self.writer.add_scalar("train/skipped_steps", float(self.skipped), step)
        if record.get("kl_per_dim"):
            self.writer.add_histogram(
                f"{event}/kl_per_dim", torch.tensor(record["kl_per_dim"], dtype=torch.float64), step
            )

    def close(self) -> None:
        self.writer.close()
