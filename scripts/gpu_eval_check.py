"""GPU evaluation check (issue 16): `textvae eval` on the GPU against the CPU, and its throughput.

    PYTHONPATH=. python scripts/gpu_eval_check.py --out gpu_eval_check.json [--run RUN_DIR]
        [--data-root ../shared/data/ptb] [--device cuda]

Without ``--run`` it first trains a short PTB run of recipes/ptb/lstm_vae.toml (He et al.'s model,
hidden 256; ``--train-steps`` steps) on the device. Then, each row in its own try/except:

1. same draws: IW-NLL per sentence on the CPU and on the device with the same z (drawn on the CPU),
   ``--cpu-sentences`` sentences at K = ``--cpu-k``: the largest difference must stay under 0.01 nats.
2. ``textvae eval`` on the CPU and on the device, same checkpoint, same seeded subset, K = ``--cpu-k``:
   every metric side by side (they differ by Monte-Carlo noise: each device draws its own z); the
   device run again (the same numbers: reproducible per device).
3. ``textvae eval`` on the device over the whole test split at K = ``--full-k`` (target: ≤ 15 s for
   the PTB model on an H200), then with --matmul-precision tf32 and bf16 (their deviation from fp32).
4. the eval path's throughput (``textvae.bench.iw_nll.eval_path``: the whole ``evaluate``) at K = 50
   and K = ``--full-k``: sentences/s, IW-NLL FLOP/s, fraction of the fp32 matmul peak measured in the
   same run, peak GPU memory; for the trained model and for the bench model (E256/H512/Z32; target
   ≥ 0.75 of the peak at K = 500).

Prints one table at the end and writes every number to ``--out`` (JSON). ``--tiny`` (with
``--device cpu`` in the tests) runs every row at toy sizes in seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from textvae import cli, metrics  # noqa: E402
from textvae.api import load_checkpoint  # noqa: E402
from textvae.bench.clock import Clock  # noqa: E402
from textvae.bench.iw_nll import eval_path  # noqa: E402
from textvae.bench.models import FULL, TINY, seeded_model, vae_spec  # noqa: E402
from textvae.checkpoint import resolve_checkpoint  # noqa: E402
from textvae.data.batching import bucketed_batches, iterate_batches  # noqa: E402
from textvae.data.corpus import encode_split  # noqa: E402
from textvae.evaluation.device import logit_chunk_rows, matmul_precision, pass_rows  # noqa: E402
from textvae.evaluation.importance import decoder_log_likelihood, draw_importance_samples  # noqa: E402
from textvae.evaluation.validation import select_sentences  # noqa: E402

log = logging.getLogger("gpu_eval_check")
TOLERANCE = 0.01  # nats per sentence, CPU against GPU at fp32 on the same draws
COMPARED = ("iw_nll", "elbo", "rec", "kl", "ppl_iw", "au", "mi_batch", "mi_full")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None, help="a trained run directory (else one is trained)")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data" / "ptb")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory (default: beside --out)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--cpu-sentences", type=int, default=100)
    parser.add_argument("--cpu-k", type=int, default=100)
    parser.add_argument("--full-k", type=int, default=500)
    parser.add_argument("--throughput-sentences", type=int, default=1000)
    parser.add_argument("--tiny", action="store_true", help="toy sizes: every code path in seconds (tests)")
    return parser.parse_args(argv)


def train_run(args, work: Path) -> Path:
    """A short PTB run of recipes/ptb/lstm_vae.toml on the device (toy sizes with --tiny)."""
    run_dir = work / "run"
    overrides = [
        f"data.root={args.data_root}",
        f"data.cache_dir={work / 'cache'}",
        f"train.max_steps={args.train_steps}",
        f"train.device={args.device}",
        "train.progress_bar=false",
    ]
    if args.tiny:
        for part in ("encoder", "decoder"):
            overrides += [f"model.{part}.embed_dim=8", f"model.{part}.hidden_dim=8"]
        overrides += ["model.latent_dim=4", "train.max_valid_sentences=20"]
    code = cli.main(
        ["train", str(REPO / "recipes" / "ptb" / "lstm_vae.toml"), "--out", str(run_dir)]
        + [x for o in overrides for x in ("--set", o)]
    )
    if code != 0:
        raise RuntimeError(f"training exited with {code}")
    return run_dir


def same_draws(model, split, pad_id: int, args, device: torch.device) -> dict:
    """IW-NLL per sentence on the CPU and on ``device`` from the same z: the largest difference."""
    chosen = select_sentences(split, args.cpu_sentences, 0)
    batches = [chosen[b] for b in bucketed_batches(split.lengths[chosen], 32, shuffle=False)]
    cpu_model = copy.deepcopy(model).to("cpu").eval()
    device_model = copy.deepcopy(model).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    differences, seconds = [], {"cpu": 0.0, "device": 0.0}
    for indices, batch in zip(batches, iterate_batches(split, batches, pad_id), strict=True):
        lengths = split.lengths[indices]
        with torch.no_grad():
            draws = draw_importance_samples(cpu_model, cpu_model.infer(batch), args.cpu_k, args.cpu_k, generator)
            started = time.perf_counter()
            cpu_px = decoder_log_likelihood(cpu_model, batch, draws.z, args.cpu_k, "fp32", lengths)
            seconds["cpu"] += time.perf_counter() - started
            rows = pass_rows(device_model, device, int(lengths.max()))
            samples = args.cpu_k if rows is None else max(1, min(args.cpu_k, rows // len(batch)))
            started = time.perf_counter()
            with matmul_precision("fp32", device):
                device_px = decoder_log_likelihood(
                    device_model,
                    batch.to_device(device),
                    draws.z.to(device),
                    samples,
                    "fp32",
                    lengths,
                    logit_chunk_rows(device_model, device),
                ).cpu()
            seconds["device"] += time.perf_counter() - started
        extra = draws.log_prior - draws.log_q
        cpu_nll = -metrics.iw_log_likelihood(cpu_px + extra)
        device_nll = -metrics.iw_log_likelihood(device_px + extra)
        differences.append((cpu_nll - device_nll).abs())
    largest = float(torch.cat(differences).max())
    return {
        "sentences": len(chosen),
        "iw_samples": args.cpu_k,
        "max_abs_diff": largest,
        "tolerance": TOLERANCE,
        "within_tolerance": largest <= TOLERANCE,
        "cpu_decoder_seconds": seconds["cpu"],
        "device_decoder_seconds": seconds["device"],
    }


def textvae_eval(run_dir: Path, work: Path, name: str, *options: str) -> dict:
    """``textvae eval RUN OPTIONS`` through the real command line; its results JSON."""
    path = work / f"eval_{name}.json"
    code = cli.main(["eval", str(run_dir), "--json", str(path), "--plot", str(work / f"{name}.png"), *options])
    if code != 0:
        raise RuntimeError(f"textvae eval exited with {code}")
    result = json.loads(path.read_text())
    result.pop("config", None)
    result["sentences_per_s"] = result["num_sentences"] / result["eval_seconds"]
    return result


def reproducible(run_dir: Path, work: Path, results: dict, options: list[str]) -> dict:
    """The device subset evaluated again, same checkpoint and seed: the largest difference of any metric."""
    again = textvae_eval(run_dir, work, "dev_subset_again", *options)
    first = results["eval_device_subset"]
    differences = {key: abs(again[key] - first[key]) for key in COMPARED}
    return {"max_abs_diff": max(differences.values()), "differences": differences}


def compare(cpu: dict, device: dict) -> dict:
    """Metric by metric, CPU and device, their difference, and the Monte-Carlo s.e. of the IW-NLL difference."""
    table = {key: {"cpu": cpu[key], "device": device[key], "diff": device[key] - cpu[key]} for key in COMPARED}
    n = cpu["num_sentences"]
    table["iw_nll"]["mc_se_of_diff"] = math.hypot(cpu["iw_nll_mc_se"], device["iw_nll_mc_se"]) / math.sqrt(n)
    return table


def throughput(args, run_dir: Path, device: torch.device, split, vocab) -> dict:
    """``eval_path`` at K = 50 and K = --full-k for the trained model and the bench model."""
    clock = Clock(device, 64 if args.tiny else 4096)
    with matmul_precision("fp32", device):
        for _ in range(3):
            clock.matmul()
    loaded = load_checkpoint(resolve_checkpoint(run_dir, "best"))
    models = {
        "trained": loaded.model.to(device).eval(),
        "bench E256/H512/Z32": seeded_model(vae_spec(TINY if args.tiny else FULL), vocab, device).eval(),
    }
    sentences = min(args.throughput_sentences, len(split))
    results = {}
    for name, model in models.items():
        for k in (50, args.full_k):
            try:
                results[f"{name} K={k}"] = eval_path(clock, model, split, vocab.pad_id, k, sentences)
            except Exception as err:  # one failing row must not lose the others
                results[f"{name} K={k}"] = {"error": f"{type(err).__name__}: {err}"}
                log.error("%s", traceback.format_exc())
    results["matmul_peak_gflops"] = clock.peak_gflops
    return results


def row(results: dict, name: str, work) -> None:
    """Run one row, keeping its result or its error."""
    started = time.perf_counter()
    try:
        results[name] = work()
    except Exception as err:  # one failing row must not lose the others
        log.error("row %s failed:\n%s", name, traceback.format_exc())
        results[name] = {"error": f"{type(err).__name__}: {err}"}
    log.info("row %s: %.1f s", name, time.perf_counter() - started)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    device = torch.device(args.device)
    work = args.work or args.out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    run_dir = args.run
    if run_dir is None:
        started = time.perf_counter()
        row(results, "train", lambda: {"run": str(train_run(args, work)), "seconds": time.perf_counter() - started})
        run_dir = Path(results["train"].get("run", work / "run"))
    try:
        loaded = load_checkpoint(resolve_checkpoint(run_dir, "best"))
        moved = args.data_root.is_dir()  # else the run's own data.root
        data = replace(loaded.recipe.data, root=str(args.data_root)) if moved else loaded.recipe.data
        split = encode_split(data, "test", loaded.vocab)
    except Exception as err:  # no run, no data: the table says so
        results["load"] = {"error": f"{type(err).__name__}: {err}"}
        args.out.write_text(json.dumps(results, indent=2, default=str))
        sys.stdout.write(report(results) + f"\nload: {results['load']['error']}\nresults: {args.out}\n")
        return 1
    results["test_sentences"] = len(split)
    row(results, "same_draws", lambda: same_draws(loaded.model, split, loaded.vocab.pad_id, args, device))
    root = ["--data-root", data.root] if data.root else []
    subset = ["--max-sentences", str(args.cpu_sentences), "--iw-samples", str(args.cpu_k), *root]
    row(results, "eval_cpu_subset", lambda: textvae_eval(run_dir, work, "cpu_subset", "--device", "cpu", *subset))
    row(
        results,
        "eval_device_subset",
        lambda: textvae_eval(run_dir, work, "dev_subset", "--device", args.device, *subset),
    )
    if "error" not in results["eval_cpu_subset"] and "error" not in results["eval_device_subset"]:
        results["subset_comparison"] = compare(results["eval_cpu_subset"], results["eval_device_subset"])
    row(results, "reproducible", lambda: reproducible(run_dir, work, results, ["--device", args.device, *subset]))
    full = ["--device", args.device, "--iw-samples", str(args.full_k), *root]
    row(results, "eval_device_full", lambda: textvae_eval(run_dir, work, "dev_full", *full))
    for precision in ("tf32", "bf16"):
        options = [*full, "--max-sentences", str(args.throughput_sentences), "--matmul-precision", precision]
        row(results, f"eval_{precision}", lambda options=options, p=precision: textvae_eval(run_dir, work, p, *options))
    row(results, "throughput", lambda: throughput(args, run_dir, device, split, loaded.vocab))
    args.out.write_text(json.dumps(results, indent=2, default=str))
    sys.stdout.write(report(results) + f"\nresults: {args.out}\n")
    return 0


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(results: dict) -> str:
    """One table: every row's key numbers, or its error."""
    lines = [
        f"GPU eval check on {results['device']} (torch {results['torch']}, {results['date']})",
        "",
        "| row | figure | value |",
        "|---|---|---|",
    ]

    def add(row_name: str, figure: str, value) -> None:
        lines.append(f"| {row_name} | {figure} | {_fmt(value)} |")

    if "seconds" in results.get("train", {}):
        add("train", "short PTB run on the device", f"{results['train']['seconds']:.0f} s, {results['train']['run']}")

    for name in (
        "train",
        "same_draws",
        "eval_cpu_subset",
        "eval_device_subset",
        "reproducible",
        "eval_device_full",
        "eval_tf32",
        "eval_bf16",
    ):
        result = results.get(name, {})
        if "error" in result:
            add(name, "error", result["error"])
        elif name == "reproducible":
            add(name, "same device, checkpoint and seed twice: max |Δ| over the metrics", result["max_abs_diff"])
        elif name == "same_draws":
            add(
                name,
                f"max |IW-NLL cpu − device|, {result['sentences']} sentences, K = {result['iw_samples']}",
                f"{result['max_abs_diff']:.2e} nats (≤ {TOLERANCE}: {result['within_tolerance']})",
            )
        elif name.startswith("eval"):
            add(
                name,
                f"IW-NLL, K = {result['iw_samples']}, {result['num_sentences']} sentences on {result['device']}",
                f"{result['iw_nll']:.3f} in {result['eval_seconds']:.1f} s = {result['sentences_per_s']:.1f} sent/s",
            )
            if "matmul_precision_check" in result:
                check = result["matmul_precision_check"]
                add(
                    name,
                    f"{check['precision']} − fp32, max |Δ IW-NLL| on {check['sentences']} sentences",
                    check["max_abs_diff"],
                )
    for key, values in results.get("subset_comparison", {}).items():
        extra = f" (MC s.e. of the difference {values['mc_se_of_diff']:.3f})" if "mc_se_of_diff" in values else ""
        add("cpu vs device", key, f"{_fmt(values['cpu'])} vs {_fmt(values['device'])}: Δ {_fmt(values['diff'])}{extra}")
    rates = results.get("throughput", {})
    for name, value in rates.items():
        if not isinstance(value, dict):
            continue
        if "error" in value:
            add("eval path", name, value["error"])
            continue
        memory = "" if value["peak_memory_mb"] is None else f", peak memory {value['peak_memory_mb']:.0f} MB"
        add(
            "eval path",
            f"{name}, {value['sentences']} sentences",
            f"{value['sentences_per_s']:.1f} sent/s, {value['gflops']:.0f} GFLOP/s = {value['peak_fraction']:.2f} "
            f"of the matmul peak ({value['matmul_gflops']:.0f}){memory}",
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
