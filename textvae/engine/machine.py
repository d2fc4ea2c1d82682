"""What a run computed on: the CPU, the kernels torch chose for it, and the intra-op threads.

Floats are summed in a different order on another CPU (AVX2 or AVX-512 kernels; MKL picks vendor
paths, so an AMD and an Intel chip with the same capability can still differ) or with another
number of threads (each thread sums its own slice), so the same recipe and seed give weights that
agree only to float rounding across machines. Results files record this fingerprint so that a table
can name its machine, and a resumed run can say when it is no longer bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import logging
import platform

import torch

log = logging.getLogger(__name__)

# an ablation row's torch intra-op threads when the recipe's train.threads does not say: one, so that
# a table does not depend on how many rows share the machine (--jobs) or on its core count
ROW_THREADS = 1


def cpu_name() -> str:
    """The processor's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), or what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_fingerprint() -> dict[str, str | int]:
    """What changes the bits of a CPU computation: CPU model, torch's kernel capability, threads, torch."""
    return {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),  # a plain str: checkpoints are read with weights_only=True
    }


def changes_from(started: dict | None, now: dict) -> list[str]:
    """What differs between the fingerprint a run started with and ``now`` ("threads 2 → 1", ...)."""
    if not started:
        return []
    return [f"{key} {started[key]} → {now[key]}" for key in now if key in started and started[key] != now[key]]


def warn_if_changed(started: dict | None, where: str) -> list[str]:
    """Log plainly that a resumed run is no longer bit-identical when its machine or threads changed."""
    changes = changes_from(started, machine_fingerprint())
    if changes:
        log.warning(
            "%s resumes on another machine setting (%s): training goes on, but its numbers are no longer "
            "bit-identical to an uninterrupted run (float sums run in another order)",
            where,
            "; ".join(changes),
        )
    return changes
