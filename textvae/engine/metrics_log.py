"""``metrics.jsonl``: one JSON object per line (train windows, validations, skipped steps)."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; ``offset`` is saved in checkpoints,
    and a resumed run cuts the file back to it (``truncate_to``)."""

    def __init__(self, path: Path, truncate_to: int | None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.mirrors: list = []  # called with every record too (``textvae.engine.tensorboard``)
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
            for mirror in self.mirrors:
                mirror(record)

    @property
    def offset(self) -> int:
        return self.handle.tell() if self.handle is not None else 0

    def close(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
            for mirror in self.mirrors:
                mirror.close()


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl ([] when there is none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
