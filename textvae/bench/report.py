"""The bench's Markdown table: figure, value, baseline, ratio, and the issue's target where there is one."""

from __future__ import annotations

TARGETS = {"train": 0.85, "reference": 0.97, "remedy_stack": 1.10, "iw": 0.75}


def gflops(value: float) -> str:
    return f"{value:,.1f} GFLOP/s" if value >= 1 else f"{value:.3g} GFLOP/s"


def ratio_row(figure: str, value: str, baseline: str, ratio: float, target: str = "") -> str:
    return f"| {figure} | {value} | {baseline} | {ratio:.2f} | {target} |"


def _training_rows(results: dict) -> list[str]:
    peak = results["matmul_gflops"]
    rows = []
    for name, label in (("", "SGD"), ("adam_", "Adam")):
        rate = results[f"train_{name}gflops"]
        rows.append(
            ratio_row(
                f"training, {label}: FLOP/s ({results['train_flops_per_token'] / 1e6:.1f} MFLOP/token)",
                gflops(rate),
                "matmul peak",
                rate / peak,
                f"≥ {TARGETS['train']}" if not name else "",
            )
        )
        if not name:
            training = results["details"]["training"]["sgd"]
            rows.append(
                ratio_row(
                    f"training, {label}: FLOP/s, each round beside the matmul right after it "
                    f"(median of {len(training['round_ratios'])})",
                    "",
                    "that matmul",
                    training["median_round_ratio"],
                )
            )
        rows.append(
            ratio_row(
                f"training, {label}: tokens/s",
                f"{results[f'train_{name}tokens_per_s']:,.0f}",
                f"{results[f'train_{name}tokens_per_s_reference']:,.0f} (plain PyTorch)",
                results[f"train_{name}reference_ratio"],
                f"≥ {TARGETS['reference']}",
            )
        )
    return rows


def _remedy_rows(remedies: dict) -> list[str]:
    rows = []
    step_ms = 1e3 * remedies["plain_seconds"] / remedies["steps"]
    for key, label in (("remedy_stack", "remedy stack (annealing, word dropout, free bits, BoW)"), ("iaf", "IAF")):
        target = f"≤ {TARGETS['remedy_stack']}" if key == "remedy_stack" else ""
        ms = 1e3 * remedies[f"{key}_seconds"] / remedies["steps"]
        rows.append(
            ratio_row(f"{label}: step time", f"{ms:,.0f} ms", f"{step_ms:,.0f} ms (plain VAE)", ms / step_ms, target)
        )
    update_ms = step_ms * remedies["aggressive_update_ratio"]
    rows.append(
        ratio_row(
            f"aggressive: time per update of a mean batch ({remedies['aggressive_updates_per_step']:.1f} updates/step)",
            f"{update_ms:,.0f} ms",
            f"{step_ms:,.0f} ms (plain VAE step)",
            remedies["aggressive_update_ratio"],
        )
    )
    return rows


def _iw_rows(results: dict) -> list[str]:
    iw = results["details"]["iw"]
    return [
        ratio_row(
            f"IW-NLL, K = {iw['iw_samples']}: sentences/s",
            f"{results['iw_nll_sents_per_s']:,.3f}",
            f"{results['iw_nll_sents_per_s_naive']:,.3f} (one sentence at a time)",
            results["iw_nll_speedup"],
        ),
        ratio_row(
            f"IW-NLL, K = {iw['iw_samples']}: FLOP/s",
            gflops(results["iw_nll_gflops"]),
            "matmul peak",
            results["iw_nll_peak_fraction"],
            f"≥ {TARGETS['iw']}",
        ),
    ]


def _decoder_rows(decoders: dict, width: int, peak: float) -> list[str]:
    lstm = decoders["lstm"]
    rows = [
        ratio_row(
            f"decoder LSTM (width {width}): FLOP/s",
            f"{gflops(lstm['gflops'])} ({lstm['tokens_per_s']:,.0f} tokens/s)",
            "matmul peak",
            lstm["gflops"] / peak,
        )
    ]
    for name, row in decoders.items():
        if name == "lstm":
            continue
        rows.append(
            ratio_row(
                f"decoder {name.upper()} (width {width}): FLOP/s",
                f"{gflops(row['gflops'])} ({row['tokens_per_s']:,.0f} tokens/s)",
                f"{gflops(lstm['gflops'])} (LSTM)",
                row["gflops"] / lstm["gflops"],
                "≥ 1",
            )
        )
    return rows


def _memory_rows(results: dict) -> list[str]:
    details = results["details"]
    corpus = details["corpus"].upper() if details["corpus"] == "ptb" else details["corpus"]
    memory, iw = details["memory"], details["iw"]
    rows = []
    for key, label in (
        ("train", f"training ({memory['train_sentence_length']}-token sentences)"),
        ("eval", f"IW-NLL K = {iw['iw_samples']} ({memory['iw_sentence_length']}-token sentences)"),
    ):
        small, large = results[f"peak_rss_mb_{key}"], results[f"peak_rss_mb_{key}_scaled"]
        rows.append(
            ratio_row(
                f"peak RSS, {label}, {details['corpus_scale']}× corpus",
                f"{large:,.0f} MB",
                f"{small:,.0f} MB ({corpus})",
                large / small,
            )
        )
    small_k, large_k = results["iw_peak_rss_mb_small_k"], results["iw_peak_rss_mb_large_k"]
    rows.append(
        ratio_row(
            f"peak RSS, IW-NLL K = {iw['iw_samples']} (chunks of {memory['iw_chunk']})",
            f"{large_k:,.0f} MB",
            f"{small_k:,.0f} MB (K = {details['sizes']['iw_small_samples']})",
            large_k / small_k,
        )
    )
    return rows


def footer(results: dict) -> str:
    info, details = results["machine"], results["details"]
    return (
        f"{info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, {info['threads']} threads, "
        f"device {info.get('device_name', info['device'])}; load average {info['load_average_1min']:.2f} at the "
        f"start, {info['load_average_1min_end']:.2f} at the end; data loading (collation) "
        f"{results['collate_ms_per_batch']:.1f} ms per batch; {details['seconds']:.0f} s in all."
    )


def table(results: dict) -> str:
    """The Markdown table: figure, baseline, ratio (and the issue's target where there is one)."""
    peak = results["matmul_gflops"]
    details = results["details"]
    rows = ["| figure | value | baseline | ratio | target |", "|---|---|---|---|---|"]
    rows.append(f"| matmul peak, fp32 {details['matmul_size']}³ | {gflops(peak)} | | | |")
    rows += _training_rows(results)
    rows += _remedy_rows(details["remedies"])
    rows += _iw_rows(results)
    rows += _decoder_rows(details["decoders"], details["sizes"]["cnn_width"], peak)
    rows += _memory_rows(results)
    return "\n".join(rows) + "\n\n" + footer(results)
