"""Fault injection for the crash-safety tests: the process kills itself with SIGKILL at a named point.

``TEXTVAE_FAULT=POINT:N`` (unset in normal use) kills the process the N-th time ``POINT`` is passed:
- ``after_step:N``: right after optimizer step N (and its checkpoint, if one was due);
- ``checkpoint_write:N``: halfway through writing the N-th file of ``atomic_write_bytes`` (a
  checkpoint or a JSON file), after half of its bytes reached the temporary file.
SIGKILL cannot be caught, so this is what an out-of-memory kill or a pre-empted job looks like.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_VAR = "TEXTVAE_FAULT"
_passes: Counter[str] = Counter()


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return None
    point, _, count = spec.partition(":")
    return point, int(count)


def kill_point(point: str, count: int | None = None) -> None:
    """SIGKILL this process if ``TEXTVAE_FAULT`` names ``point`` and this is its N-th pass (or ``count`` = N)."""
    target = _target()
    if target is None or target[0] != point:
        return
    _passes[point] += 1
    if (count if count is not None else _passes[point]) == target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
