"""The JSON's top level: each section's headline figures (the table's values), then every section in
``details``. A section that was not run, or failed, adds no headline figure."""

from __future__ import annotations

from dataclasses import asdict

from .clock import Clock
from .models import Sizes


def _training(training: dict, peak: float) -> dict:
    sgd, adam = training["sgd"], training["adam"]
    return {
        "train_tokens_per_s": sgd["tokens_per_s"],
        "train_flops_per_token": sgd["flops"] / sgd["tokens"],
        "train_gflops": sgd["gflops"],
        "train_peak_fraction": sgd["gflops"] / peak,
        "train_adjacent_matmul_fraction": sgd["median_round_ratio"],
        "train_tokens_per_s_reference": sgd["reference_tokens_per_s"],
        "train_reference_ratio": sgd["tokens_per_s"] / sgd["reference_tokens_per_s"],
        "train_adam_tokens_per_s": adam["tokens_per_s"],
        "train_adam_gflops": adam["gflops"],
        "train_adam_peak_fraction": adam["gflops"] / peak,
        "train_adam_tokens_per_s_reference": adam["reference_tokens_per_s"],
        "train_adam_reference_ratio": adam["tokens_per_s"] / adam["reference_tokens_per_s"],
        "collate_ms_per_batch": training["collate_ms_per_batch"],
        "engine_host_ms_per_step": training["engine_loop"]["ms_per_step"],
    }


def _remedies(remedies: dict, peak: float) -> dict:
    keys = ("remedy_stack", "iaf", "aggressive")
    figures = {f"{key}_step_ratio": remedies[f"{key}_step_ratio"] for key in keys}
    figures["aggressive_update_ratio"] = remedies["aggressive_update_ratio"]
    figures["aggressive_updates_per_step"] = remedies["aggressive_updates_per_step"]
    return figures


def _iw(iw: dict, peak: float) -> dict:
    return {
        "iw_nll_sents_per_s": iw["sentences_per_s"],
        "iw_nll_sents_per_s_naive": iw["naive_sentences_per_s"],
        "iw_nll_speedup": iw["sentences_per_s"] / iw["naive_sentences_per_s"],
        "iw_nll_gflops": iw["gflops"],
        "iw_nll_peak_fraction": iw["gflops"] / peak,
    }


def _decoders(decoders: dict, peak: float) -> dict:
    return {
        "cnn_tokens_per_s": {name: row["tokens_per_s"] for name, row in decoders.items() if name != "lstm"},
        "cnn_gflops": {name: row["gflops"] for name, row in decoders.items() if name != "lstm"},
        "lstm_tokens_per_s": decoders["lstm"]["tokens_per_s"],
        "lstm_gflops": decoders["lstm"]["gflops"],
    }


def _memory(memory: dict, base_name: str, scaled_name: str) -> dict:
    return {
        "peak_rss_mb_train": memory[f"train_{base_name}"]["peak_rss_mb"],
        "peak_rss_mb_train_scaled": memory[f"train_{scaled_name}"]["peak_rss_mb"],
        "peak_rss_mb_eval": memory[f"iw_{base_name}"]["peak_rss_mb"],
        "peak_rss_mb_eval_scaled": memory[f"iw_{scaled_name}"]["peak_rss_mb"],
        "iw_peak_rss_mb_small_k": memory["iw_small_k"]["peak_rss_mb"],
        "iw_peak_rss_mb_large_k": memory[f"iw_{base_name}"]["peak_rss_mb"],
    }


def _gpu(sections: dict) -> dict:
    """The CUDA additions' headline figures that were measured (a missing row adds none)."""
    figures = {}
    graphs = sections.get("graphs", {}).get("rows", {})
    for name, row in graphs.items():
        if "tokens_per_s" in row:
            figures[f"{name}_tokens_per_s"] = row["tokens_per_s"]
    processes = sections.get("processes", {})
    for mode in ("time_sliced", "mps"):
        for count, row in processes.get(mode, {}).get("counts", {}).items():
            figures[f"aggregate_{mode}_{count}_steps_per_s"] = row["steps_per_s"]
    for name, row in sections.get("image", {}).get("rows", {}).items():
        if "images_per_s" in row:
            figures[f"image_{name}_images_per_s"] = row["images_per_s"]
    return figures


def summarize(clock: Clock | None, sections: dict[str, dict], corpus_names: list[str], sizes: Sizes) -> dict:
    """The headline figures of every section that ran (the JSON's top level) and the sections in ``details``."""
    base_name = corpus_names[0]
    scaled_name = f"{base_name}_x{sizes.corpus_scale}"
    figures = {}
    peak = clock.peak_gflops if clock is not None else float("nan")
    if clock is not None:
        figures["matmul_gflops"] = peak
    ok = {name: section for name, section in sections.items() if "failed" not in section}
    for name, headline in (("training", _training), ("remedies", _remedies), ("iw", _iw), ("decoders", _decoders)):
        if name in ok:
            figures.update(headline(ok[name], peak))
    if "memory" in ok:
        figures.update(_memory(ok["memory"], base_name, scaled_name))
    figures.update(_gpu(ok))
    figures["details"] = {
        **sections,
        "matmul_samples_gflops": clock.matmul_samples if clock is not None else [],
        "corpus": base_name,
        "corpus_scale": sizes.corpus_scale,
        "matmul_size": clock.matmul_size if clock is not None else None,
        "flop_count": "2 × multiply–accumulates of every matrix product, real tokens; training ×3",
        "sizes": asdict(sizes),
    }
    return figures
