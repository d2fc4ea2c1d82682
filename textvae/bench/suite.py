"""``textvae bench`` end to end: every section in one process, the results dict, the command."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

import textvae
from textvae.checkpoint import atomic_write_text
from textvae.errors import TextVAEError

from .clock import Clock
from .corpus import load_corpora
from .decoders import bench_decoders
from .iw_nll import bench_iw
from .memory import bench_memory
from .models import FULL, QUICK, SIZES, Sizes
from .references import load_reference
from .remedies import bench_remedies
from .report import table
from .training import bench_training

log = logging.getLogger(__name__)


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
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


def run(
    sizes: Sizes = FULL,
    *,
    device: str = "cpu",
    threads: int | None = None,
    data_root: Path | None = None,
) -> dict:
    """Every measurement of the table; returns the results (``table`` renders them)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TextVAEError("--device cuda: CUDA is not available on this machine")
    if threads is not None:
        torch.set_num_threads(threads)
    reference = load_reference("reference_step")
    naive = load_reference("naive_iw_nll")
    started = time.perf_counter()
    info = machine(device)
    with tempfile.TemporaryDirectory(prefix="textvae-bench-") as scratch:
        corpora = load_corpora(sizes, Path(scratch), data_root)
        base = next(iter(corpora.values()))
        # a GPU finishes a 2048³ product in well under a millisecond: time a larger one there
        clock = Clock(device, sizes.matmul_size if device.type == "cpu" else max(sizes.matmul_size, 8192))
        clock.matmul()
        section_seconds = {"data": time.perf_counter() - started}

        def section(name: str, measure: Callable[[], dict]) -> dict:
            section_started = time.perf_counter()
            result = measure()
            section_seconds[name] = time.perf_counter() - section_started
            log.info("bench: %s done in %.0f s", name, section_seconds[name])
            return result

        sections = {
            "memory": section("memory", lambda: bench_memory(corpora, sizes, device)),
            "training": section("training", lambda: bench_training(clock, base, sizes, reference)),
            "remedies": section("remedies", lambda: bench_remedies(clock, base, sizes)),
            "iw": section("iw_nll", lambda: bench_iw(clock, base, sizes, naive)),
            "decoders": section("decoders", lambda: bench_decoders(clock, base, sizes)),
        }
    results = summarize(clock, sections, list(corpora), sizes)
    results["details"].update(seconds=time.perf_counter() - started, section_seconds=section_seconds)
    results["machine"] = {
        **info,
        "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    return results


def summarize(clock: Clock, sections: dict[str, dict], corpus_names: list[str], sizes: Sizes) -> dict:
    """The headline figures of every section (the JSON's top level) and the sections in ``details``."""
    training, remedies, iw = sections["training"], sections["remedies"], sections["iw"]
    decoders, memory = sections["decoders"], sections["memory"]
    base_name, scaled_name = corpus_names
    sgd, adam = training["sgd"], training["adam"]
    return {
        "matmul_gflops": clock.peak_gflops,
        "train_tokens_per_s": sgd["tokens_per_s"],
        "train_flops_per_token": sgd["flops"] / sgd["tokens"],
        "train_gflops": sgd["gflops"],
        "train_peak_fraction": sgd["gflops"] / clock.peak_gflops,
        "train_adjacent_matmul_fraction": sgd["median_round_ratio"],
        "train_tokens_per_s_reference": sgd["reference_tokens_per_s"],
        "train_reference_ratio": sgd["tokens_per_s"] / sgd["reference_tokens_per_s"],
        "train_adam_tokens_per_s": adam["tokens_per_s"],
        "train_adam_gflops": adam["gflops"],
        "train_adam_peak_fraction": adam["gflops"] / clock.peak_gflops,
        "train_adam_tokens_per_s_reference": adam["reference_tokens_per_s"],
        "train_adam_reference_ratio": adam["tokens_per_s"] / adam["reference_tokens_per_s"],
        "collate_ms_per_batch": training["collate_ms_per_batch"],
        "remedy_stack_step_ratio": remedies["remedy_stack_step_ratio"],
        "iaf_step_ratio": remedies["iaf_step_ratio"],
        "aggressive_step_ratio": remedies["aggressive_step_ratio"],
        "aggressive_update_ratio": remedies["aggressive_update_ratio"],
        "aggressive_updates_per_step": remedies["aggressive_updates_per_step"],
        "iw_nll_sents_per_s": iw["sentences_per_s"],
        "iw_nll_sents_per_s_naive": iw["naive_sentences_per_s"],
        "iw_nll_speedup": iw["sentences_per_s"] / iw["naive_sentences_per_s"],
        "iw_nll_gflops": iw["gflops"],
        "iw_nll_peak_fraction": iw["gflops"] / clock.peak_gflops,
        "cnn_tokens_per_s": {name: row["tokens_per_s"] for name, row in decoders.items() if name != "lstm"},
        "cnn_gflops": {name: row["gflops"] for name, row in decoders.items() if name != "lstm"},
        "lstm_tokens_per_s": decoders["lstm"]["tokens_per_s"],
        "lstm_gflops": decoders["lstm"]["gflops"],
        "peak_rss_mb_train": memory[f"train_{base_name}"]["peak_rss_mb"],
        "peak_rss_mb_train_scaled": memory[f"train_{scaled_name}"]["peak_rss_mb"],
        "peak_rss_mb_eval": memory[f"iw_{base_name}"]["peak_rss_mb"],
        "peak_rss_mb_eval_scaled": memory[f"iw_{scaled_name}"]["peak_rss_mb"],
        "iw_peak_rss_mb_small_k": memory["iw_small_k"]["peak_rss_mb"],
        "iw_peak_rss_mb_large_k": memory[f"iw_{base_name}"]["peak_rss_mb"],
        "details": {
            **sections,
            "matmul_samples_gflops": clock.matmul_samples,
            "corpus": base_name,
            "corpus_scale": sizes.corpus_scale,
            "matmul_size": clock.matmul_size,
            "flop_count": "2 × multiply–accumulates of every matrix product, real tokens; training ×3",
            "sizes": asdict(sizes),
        },
    }


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
