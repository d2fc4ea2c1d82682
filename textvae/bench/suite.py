"""``textvae bench`` end to end: every section in one process, the results dict, the command."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import textvae
from textvae.checkpoint import atomic_write_text
from textvae.engine.machine import cpu_name
from textvae.errors import TextVAEError

from .clock import Clock
from .corpus import load_corpora
from .decoders import bench_decoders
from .graphs import bench_graphs
from .image import bench_image
from .iw_nll import bench_iw
from .memory import bench_memory
from .models import FULL, QUICK, SIZES, Sizes
from .processes import bench_processes
from .references import load_reference
from .remedies import bench_remedies
from .report import table
from .summary import summarize
from .training import bench_training

log = logging.getLogger(__name__)


def machine(device: torch.device) -> dict:
    info = {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "textvae": textvae.__version__,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


SECTIONS = ("processes", "memory", "training", "remedies", "iw", "decoders", "graphs", "image")
GPU_SECTIONS = ("processes", "graphs", "image")  # what the CUDA additions measure (scripts/gpu_bench.sh)


def run(
    sizes: Sizes = FULL,
    *,
    device: str = "cpu",
    threads: int | None = None,
    data_root: Path | None = None,
    sections: tuple[str, ...] = SECTIONS,
) -> dict:
    """The measurements of ``sections`` (default: all); returns the results (``table`` renders them).

    A section that fails is recorded with its error (``details[name]["failed"]``) and the others go on."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TextVAEError("--device cuda: CUDA is not available on this machine")
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise TextVAEError(f"unknown bench section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    if threads is not None:
        torch.set_num_threads(threads)
    reference = load_reference("reference_step")
    naive = load_reference("naive_iw_nll")
    started = time.perf_counter()
    info = None  # read after the processes section: its device name would make a CUDA context here
    measured, section_seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="textvae-bench-") as scratch:
        corpora = load_corpora(sizes, Path(scratch), data_root, scaled="memory" in sections)
        base = next(iter(corpora.values()))
        section_seconds["data"] = time.perf_counter() - started
        clock = None
        measures = {
            # first, before this process makes a CUDA context: its workers may share the GPU through MPS
            "processes": lambda: bench_processes(base, sizes, device),
            "memory": lambda: bench_memory(corpora, sizes, device),
            "training": lambda: bench_training(clock, base, sizes, reference),
            "remedies": lambda: bench_remedies(clock, base, sizes),
            "iw": lambda: bench_iw(clock, base, sizes, naive),
            "decoders": lambda: bench_decoders(clock, base, sizes),
            "graphs": lambda: bench_graphs(clock, base, sizes, reference),
            "image": lambda: bench_image(clock, sizes),
        }
        for name in (name for name in SECTIONS if name in sections):
            if info is None and name != "processes":
                info = machine(device)
            if clock is None and name != "processes":
                # a GPU finishes a 2048³ product in well under a millisecond: time a larger one there
                clock = Clock(device, sizes.matmul_size if device.type == "cpu" else max(sizes.matmul_size, 8192))
                clock.matmul()
            measured[name], section_seconds[name] = _section(name, measures[name])
    results = summarize(clock, measured, list(corpora), sizes)
    results["details"].update(seconds=time.perf_counter() - started, section_seconds=section_seconds)
    results["machine"] = {
        **(info or machine(device)),
        "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return results


def _section(name: str, measure: Callable[[], dict]) -> tuple[dict, float]:
    """One section's results (or its error: the bench goes on) and its seconds."""
    started = time.perf_counter()
    try:
        result = measure()
    except TextVAEError:
        raise
    except Exception as err:
        log.exception("bench: section %s failed", name)
        result = {"failed": f"{type(err).__name__}: {err}"}
    seconds = time.perf_counter() - started
    log.info("bench: %s done in %.0f s", name, seconds)
    return result, seconds


def command(args) -> None:
    """``textvae bench``: run, print the table, write the JSON."""
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        raise TextVAEError(f"{args.json}: expected a file name in an existing directory")
    sizes = SIZES[args.sizes] if args.sizes else (QUICK if args.quick else FULL)
    results = run(sizes, device=args.device, threads=args.threads, data_root=args.data_root)
    sys.stdout.write(table(results) + "\n")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
        sys.stdout.write(f"results: {args.json}\n")
