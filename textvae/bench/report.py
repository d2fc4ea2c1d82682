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
        *_eval_path_rows(iw.get("eval_path") or {}),
    ]


def _eval_path_rows(eval_path: dict) -> list[str]:
    """``textvae eval``'s own path (``bench.iw_nll.eval_path``), where it was measured (CUDA, tests)."""
    rows = []
    for k, run in eval_path.items():
        memory = f", peak GPU memory {run['peak_memory_mb']:,.0f} MB" if run.get("peak_memory_mb") else ""
        rows.append(
            ratio_row(
                f"textvae eval, K = {k}: FLOP/s ({run['sentences_per_s']:,.1f} sentences/s{memory})",
                gflops(run["gflops"]),
                "matmul peak",
                run["peak_fraction"],
                f"≥ {TARGETS['iw']}",
            )
        )
    return rows


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


def _missing_row(figure: str, why: str) -> str:
    return f"| {figure} | {why} | | | |"


def _graph_rows(graphs: dict) -> list[str]:
    """Eager and graphed steps on batches of one length; the graphed toolkit step beside the graphed
    plain one and beside the published reference code's stated tokens/s."""
    rows, found = [], graphs["rows"]
    shape = "×".join(str(n) for n in graphs["batch_shape"])
    labels = {
        "eager_toolkit": "toolkit step, eager",
        "eager_reference": "plain PyTorch step, eager",
        "graphed_reference": "plain PyTorch step, one CUDA graph",
        "graphed_toolkit": "toolkit step, one CUDA graph",
    }
    for name, label in labels.items():
        row = found.get(name, {"missing": "not run"})
        figure = f"{label}, SGD (batches {shape}): tokens/s"
        if "missing" in row:
            rows.append(_missing_row(figure, row["missing"]))
        elif name == "graphed_toolkit" and "tokens_per_s" in found.get("graphed_reference", {}):
            reference = found["graphed_reference"]["tokens_per_s"]
            value = f"{row['tokens_per_s']:,.0f} ({row['ms_per_step']:.2f} ms/step)"
            target = f"≥ {graphs['targets']['toolkit_vs_reference']}"
            rows.append(
                ratio_row(figure, value, f"{reference:,.0f} (graphed plain)", row["tokens_per_s"] / reference, target)
            )
        else:
            rows.append(f"| {figure} | {row['tokens_per_s']:,.0f} ({row['ms_per_step']:.2f} ms/step) | | | |")
    published = graphs["published_reference"]
    toolkit = found.get("graphed_toolkit", {})
    if "tokens_per_s" in toolkit:
        rows.append(
            ratio_row(
                "toolkit step, one CUDA graph: tokens/s",
                f"{toolkit['tokens_per_s']:,.0f}",
                f"{published['tokens_per_s']:,} (stated: {published['provenance']})",
                toolkit["tokens_per_s"] / published["tokens_per_s"],
                f"≥ {graphs['targets']['vs_published']}",
            )
        )
    return rows


def _process_rows(processes: dict) -> list[str]:
    rows = []
    for mode, label in (("time_sliced", "without MPS"), ("mps", "through MPS")):
        found = processes.get(mode, {"missing": "not run"})
        if "missing" in found:
            rows.append(_missing_row(f"aggregate model-steps/s, N processes {label}", found["missing"]))
            continue
        single = found["counts"].get("1", {}).get("steps_per_s")
        for count, row in found["counts"].items():
            rows.append(
                ratio_row(
                    f"aggregate model-steps/s, {count} process{'es' if count != '1' else ''} {label} ({found['step']})",
                    f"{row['steps_per_s']:,.0f}",
                    f"{single:,.0f} (1 process)" if single else "",
                    row["steps_per_s"] / single if single else float("nan"),
                    f"≥ {processes['target']:,}",
                )
            )
    return rows


def _image_rows(image: dict) -> list[str]:
    rows = []
    for batch in image["batches"]:
        eager = image["rows"].get(f"eager_{batch}", {})
        for kind in ("eager", "graphed"):
            row = image["rows"].get(f"{kind}_{batch}", {"missing": "not run"})
            figure = f"image MLP (Burda et al. 2015 MNIST VAE), batch {batch}, {kind}: images/s"
            if "missing" in row:
                rows.append(_missing_row(figure, row["missing"]))
            elif kind == "graphed" and "images_per_s" in eager:
                value, baseline = row["images_per_s"], eager["images_per_s"]
                target = f"≥ {image['target']:,}"
                rows.append(ratio_row(figure, f"{value:,.0f}", f"{baseline:,.0f} (eager)", value / baseline, target))
            else:
                rows.append(f"| {figure} | {row['images_per_s']:,.0f} | | | ≥ {image['target']:,} |")
    return rows


def footer(results: dict) -> str:
    info, details = results["machine"], results["details"]
    return (
        f"{info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, {info['threads']} threads, "
        f"device {info.get('device_name', info['device'])}; load average {info['load_average_1min']:.2f} at the "
        f"start, {info['load_average_1min_end']:.2f} at the end; "
        + (
            f"data loading (collation) {results['collate_ms_per_batch']:.1f} ms per batch; "
            if "collate_ms_per_batch" in results
            else ""
        )
        + (
            f"the engine's host time per step (a no-op step, quickstart corpus) "
            f"{results['engine_host_ms_per_step']:.3f} ms (target ≤ 0.1); "
            if "engine_host_ms_per_step" in results
            else ""
        )
        + f"{details['seconds']:.0f} s in all."
    )


def table(results: dict) -> str:
    """The Markdown table: figure, baseline, ratio (and the issue's target where there is one), for
    each section that ran; a failed section is one row with its error."""
    details = results["details"]
    rows = ["| figure | value | baseline | ratio | target |", "|---|---|---|---|---|"]
    if "matmul_gflops" in results:
        rows.append(f"| matmul peak, fp32 {details['matmul_size']}³ | {gflops(results['matmul_gflops'])} | | | |")
    renderers = {
        "processes": lambda: _process_rows(details["processes"]),
        "training": lambda: _training_rows(results),
        "remedies": lambda: _remedy_rows(details["remedies"]),
        "iw": lambda: _iw_rows(results),
        "decoders": lambda: _decoder_rows(details["decoders"], details["sizes"]["cnn_width"], results["matmul_gflops"]),
        "memory": lambda: _memory_rows(results),
        "graphs": lambda: _graph_rows(details["graphs"]),
        "image": lambda: _image_rows(details["image"]),
    }
    for name, render in renderers.items():
        if name not in details:
            continue
        rows += (
            [_missing_row(f"section {name}", f"failed: {details[name]['failed']}")]
            if "failed" in details[name]
            else render()
        )
    return "\n".join(rows) + "\n\n" + footer(results)
