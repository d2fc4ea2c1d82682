"""``train.tensorboard = true``: what ``metrics.jsonl`` records, also as TensorBoard scalars.

Every numeric field of a ``train`` or ``valid`` record becomes the scalar ``<event>/<field>`` at its
step (``valid/kl``, ``valid/mi``, ``valid/au``, ``train/loss``, ...), and a record's ``kl_per_dim``
a histogram of the KL of the latent dimensions (collapsed dimensions pile up at 0). Written with
``torch.utils.tensorboard`` into ``RUN_DIR/tensorboard``; view with ``tensorboard --logdir RUN_DIR``.
The ``tensorboard`` package is optional (``pip install tensorboard``): without it the run stops
with a one-line error before training.
"""

from __future__ import annotations

from pathlib import Path

import torch

from textvae.errors import TextVAEError

_NOT_SCALARS = ("event", "step", "epoch")


class TensorBoardMirror:
    """A ``MetricsLog`` mirror: called with each record written to ``metrics.jsonl``."""

    def __init__(self, log_dir: Path, writer=None):
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TextVAEError(
                    "train.tensorboard = true needs the tensorboard package (pip install tensorboard)"
                ) from None
            writer = SummaryWriter(str(log_dir))
        self.writer = writer

    def __call__(self, record: dict) -> None:
        event, step = record.get("event"), record.get("step")
        if event not in ("train", "valid") or step is None:
            return
        for key, value in record.items():
            if key not in _NOT_SCALARS and isinstance(value, int | float):  # a bool (improved) counts as 0 / 1
                self.writer.add_scalar(f"{event}/{key}", float(value), step)
        if record.get("kl_per_dim"):
            self.writer.add_histogram(
                f"{event}/kl_per_dim", torch.tensor(record["kl_per_dim"], dtype=torch.float64), step
            )

    def close(self) -> None:
        self.writer.close()
