"""The ablation runner: a list of variants over one base recipe, trained, evaluated, tabulated, plotted.

Variants may be text or image recipes (``textvae.image.config``): an image row reports IW-NLL in
nats and bits/dim, ELBO, KL, AU, MI, reconstruction error and codebook perplexity, as its model allows.

An ablation file (TOML) names a ``base`` recipe and lists ``[[variants]]``. A variant has a
``name``, optionally its own ``recipe`` file instead of the base, optionally the published
row it reproduces (``paper = {paper = ..., table = ..., row = ..., tag = ..., expected = {...}, tolerance
= {...}}`` or the finding as ``expect = [...]``: ``textvae.reproduction``), and any recipe tables (``model``,
``[[variants.remedies]]``, ``strategy``, ``train``, ...) merged over its recipe, so the diff
between two variants is the ablation row. Every variant is validated before anything runs.

Each (variant, seed) trains in ``DIR/<variant>/seed<S>/`` and is evaluated with its recipe's
``[eval]`` settings; its row is written to ``result.json`` there. A finished row is never rerun,
an interrupted training resumes from its ``last.pt``, and a failing variant is reported as a row
with an ``error`` without stopping the others. ``DIR/results.json`` (all rows), ``results.md``,
``results.csv`` (mean ± std over seeds) and PNG plots are rewritten after every row.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import re
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from textvae.checkpoint import atomic_write_text
from textvae.config import Recipe, apply_override, deep_merge, read_recipe_tables, read_toml
from textvae.engine.machine import ROW_THREADS, machine_fingerprint
from textvae.errors import TextVAEError
from textvae.image.config import ImageRecipe, any_recipe_from_dict
from textvae.mps import MPSDaemon, cuda_wanted

log = logging.getLogger(__name__)

ROW_METRICS = ["iw_nll", "ppl_iw", "elbo", "rec", "kl", "mi_batch", "mi_full", "au", "nll", "ppl"]
IMAGE_ROW_METRICS = ["bits_per_dim", "recon_mse", "recon_bce", "codebook_perplexity"]  # image rows only
ROW_METRICS += IMAGE_ROW_METRICS
ROW_METRICS += ["mi_batch_se", "mi_full_se"]  # Monte-Carlo standard errors of the MI estimates
ROW_METRICS += ["kl_batch_stats", "bn_eval_variance_ratio"]  # BN-VAE rows only (textvae.bn_batch_kl)
_VARIANT_KEYS = {"name", "recipe", "paper", "description"}
_TOP_KEYS = {"base", "description", "seeds", "variants"}


@dataclass
class Variant:
    name: str
    slug: str  # its directory name
    recipe: Recipe | ImageRecipe
    paper: dict[str, Any] = field(default_factory=dict)  # textvae.reproduction.reference_spec


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "variant"


def load_ablation(path: str | Path, overrides: list[str] = ()) -> tuple[list[Variant], list[int]]:
    """Read and validate every variant of an ablation file; ``overrides`` apply to each of them."""
    path = Path(path)
    table = read_toml(path)
    unknown = sorted(set(table) - _TOP_KEYS)
    if unknown:
        raise TextVAEError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_TOP_KEYS))}")
    seeds = table.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise TextVAEError(f"{path}: 'seeds' must be a non-empty list of integers ≥ 0")
    variants_table = table.get("variants")
    if not isinstance(variants_table, list) or not variants_table:
        raise TextVAEError(f"{path}: no [[variants]]; an ablation lists at least one")
    variants, slugs = [], set()
    for number, raw_variant in enumerate(variants_table, start=1):
        where = f"{path}: variant #{number}"
        name = raw_variant.get("name")
        if not isinstance(name, str) or not name:
            raise TextVAEError(f"{where}: needs a 'name'")
        recipe_file = raw_variant.get("recipe", table.get("base"))
        if not isinstance(recipe_file, str):
            raise TextVAEError(f"{where} ({name}): no recipe: set 'base' at the top or 'recipe' in the variant")
        raw = read_recipe_tables(path.parent / recipe_file)
        delta = {k: copy.deepcopy(v) for k, v in raw_variant.items() if k not in _VARIANT_KEYS}
        deep_merge(raw, delta)
        declared = copy.deepcopy(raw["train"]) if isinstance(raw.get("train"), dict) else {}  # before --set
        for assignment in overrides:
            apply_override(raw, assignment)
        recipe = any_recipe_from_dict(raw, source=f"{where} ({name})")
        slug = _slug(name)
        if slug in slugs:
            raise TextVAEError(f"{where}: variant name {name!r} is used twice")
        slugs.add(slug)
        paper = _variant_reference(raw_variant, recipe, f"{where} ({name})", declared)
        variants.append(Variant(name, slug, recipe, paper))
    return variants, seeds


def _variant_reference(
    raw_variant: dict, recipe: Recipe | ImageRecipe, where: str, declared_train: dict
) -> dict[str, Any]:
    """The published row a variant reproduces (``textvae.reproduction.reference_spec``): its own
    ``paper`` table (the fields of ``[reference]``), else its recipe's ``[reference]`` when the
    variant changes nothing that trains (so "+annealing" over a VAE recipe does not cite the VAE's row)."""
    from textvae.config import ReferenceConfig, _dataclass_from
    from textvae.reproduction import reference_spec

    if "paper" in raw_variant:
        reference = _dataclass_from(ReferenceConfig, raw_variant["paper"], f"{where}: paper")
    elif "reference" in raw_variant or not set(raw_variant) & {"model", "remedies", "strategy", "train", "data"}:
        reference = recipe.reference
    else:
        return {}
    defaults = {f.name: f.default for f in dataclasses.fields(type(recipe.train))}  # what the recipe left out
    declared = {"train": {k: declared_train.get(k, defaults.get(k)) for k in ("epochs", "max_steps")}}
    return reference_spec(reference, recipe.to_dict(), declared)


def _with_seed(recipe: Recipe | ImageRecipe, seed: int) -> Recipe | ImageRecipe:
    raw = recipe.to_dict()
    raw["train"]["seed"] = seed  # eval.seed stays: every seed is evaluated on the same sentences
    return any_recipe_from_dict(raw, source=recipe.source)


def _run_image_variant(variant: Variant, recipe: ImageRecipe, seed: int, run_dir: Path) -> dict[str, Any]:
    """Train (or resume) and evaluate one image (variant, seed); its eval JSON and figures stay in ``run_dir``."""
    from textvae.image.evaluate import evaluate_image_run
    from textvae.image.train import load_image_checkpoint, train_image
    from textvae.train import has_checkpoint

    started = time.perf_counter()
    summary = train_image(recipe, run_dir, resume=has_checkpoint(run_dir))
    train_seconds = time.perf_counter() - started
    best = run_dir / "best.pt"
    cfg = recipe.eval
    result, _ = evaluate_image_run(
        load_image_checkpoint(best), best, cfg, run_dir / f"eval_{cfg.split}.json", progress_bar=False
    )
    keys = (*ROW_METRICS, "kl_per_dim", "num_examples", "iw_samples", "codes_used", "terms")
    return {
        "variant": variant.name,
        "seed": seed,
        **{k: result[k] for k in keys if k in result},
        "split": cfg.split,
        "train_steps": summary.progress.step,
        "train_seconds": train_seconds,
        "eval_seconds": result["eval_seconds"],
        "paper": variant.paper,
    }


def row_threads(recipe: Recipe | ImageRecipe) -> int:
    """A row's torch intra-op threads: the recipe's ``train.threads``, else one, whatever ``--jobs`` is,
    so that ``--jobs 1`` and ``--jobs N`` give the same table (threads change the float rounding)."""
    return recipe.train.threads or ROW_THREADS


def run_variant(variant: Variant, seed: int, run_dir: Path) -> dict[str, Any]:
    """Train (or resume) and evaluate one (variant, seed) with ``row_threads``; returns its row."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(row_threads(variant.recipe))
    try:
        row = _train_and_evaluate(variant, seed, run_dir)
        fingerprint = machine_fingerprint()  # the CPU and threads the row ran with, for the table's machine
        return row | {key: fingerprint[key] for key in ("cpu", "cpu_capability", "threads")}
    finally:
        torch.set_num_threads(threads)  # a row run in the ablation's own process (--jobs 1) leaves it as it was


def _train_and_evaluate(variant: Variant, seed: int, run_dir: Path) -> dict[str, Any]:
    from textvae.checkpoint import load_checkpoint
    from textvae.data.corpus import encode_split
    from textvae.eval_device import resolve_device
    from textvae.evaluate import EvalSettings, evaluate
    from textvae.train import has_checkpoint, train

    recipe = _with_seed(variant.recipe, seed)
    if isinstance(recipe, ImageRecipe):
        return _run_image_variant(variant, recipe, seed, run_dir)
    started = time.perf_counter()
    summary = train(recipe, run_dir, resume=has_checkpoint(run_dir))
    train_seconds = time.perf_counter() - started
    loaded = load_checkpoint(run_dir / "best.pt")
    cfg = recipe.eval
    split = encode_split(recipe.data, cfg.split, loaded.vocab)
    # the training seed draws the estimators' samples; the sentences are eval.seed's, the same for every seed
    settings = EvalSettings(
        cfg.iw_samples,
        cfg.iw_chunk_size,
        cfg.batch_size,
        cfg.max_sentences,
        seed,
        False,
        mi_samples=cfg.mi_samples,
        subset_seed=cfg.seed,
    )
    device = resolve_device(cfg.device)  # eval.device: the GPU when there is one (auto), like training
    model = loaded.model.to(device)
    result = evaluate(model, split, loaded.vocab.pad_id, settings).metrics
    progress = summary.progress  # the last epoch that trained: one that finished has moved ``epoch`` on
    last_epoch = max(0, progress.epoch - 1) if progress.batch_in_epoch == 0 else progress.epoch
    bound = _bn_bound_measurements(model, recipe, loaded.vocab, split, last_epoch, cfg)
    return {
        "variant": variant.name,
        "seed": seed,
        **{
            k: result[k]
            for k in (*ROW_METRICS, "kl_per_dim", "num_sentences", "num_tokens", "iw_samples")
            if k in result
        },
        "split": cfg.split,
        "train_steps": summary.progress.step,
        "train_seconds": train_seconds,
        "eval_seconds": result["eval_seconds"],
        "eval_device": result["device"],
        "eval_subset_seed": result["subset_seed"],
        **bound,
        "paper": variant.paper,
    }


def _bn_bound_measurements(model, recipe: Recipe, vocab, test_split, epoch: int, cfg) -> dict[str, Any]:
    """For a BN-VAE row: the KL under batch statistics over the training batches (the quantity of
    Zhu et al. 2020's bound) and the test sentences' variance ratio (``textvae.bn_batch_kl``)."""
    from textvae.bn_batch_kl import batch_statistics_kl, bn_norms, eval_variance_ratio
    from textvae.data.corpus import encode_split
    from textvae.evaluate import select_sentences

    if not bn_norms(model):
        return {}
    train_cfg = recipe.train
    train_split = encode_split(recipe.data, "train", vocab)
    measured = batch_statistics_kl(
        model,
        train_split,
        vocab.pad_id,
        train_cfg.batch_size,
        seed=train_cfg.seed,
        epoch=epoch,
        pool_batches=train_cfg.bucket_pool_batches,
    )
    chosen = select_sentences(test_split, cfg.max_sentences, cfg.seed)
    measured["bn_eval_variance_ratio"] = eval_variance_ratio(model, test_split, chosen, vocab.pad_id, cfg.batch_size)
    return measured


def _exit_with_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Worker initializer: end this worker when the ablation process that started it is gone.

    A killed ``textvae ablate`` (SIGTERM, SIGKILL) cannot stop its workers itself; without this they
    would go on training, unseen, into the same run directories as the next ``ablate``. The row a
    worker was training resumes from its last checkpoint, as after any kill."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_and_save(variant: Variant, seed: int, run_dir: Path) -> dict[str, Any]:
    try:
        row = run_variant(variant, seed, run_dir)
        row.update(_budget(variant, run_dir))
    except TextVAEError as err:
        row = {"variant": variant.name, "seed": seed, "error": str(err)}
    except Exception as err:  # a bug or a crash in one variant must not lose the others
        log.error("variant %s seed %d failed:\n%s", variant.name, seed, traceback.format_exc())
        row = {"variant": variant.name, "seed": seed, "error": f"{type(err).__name__}: {err}"}
    if "error" not in row:
        atomic_write_text(run_dir / "result.json", json.dumps(row, indent=2))
    return row


def _budget(variant: Variant, run_dir: Path) -> dict[str, Any]:
    """What a verdict needs besides the metrics: epochs trained (from metrics.jsonl), where and when."""
    import datetime

    import torch

    from textvae.plots import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    # train records carry the epoch they were in (0-based); the validation at an epoch's end already
    # carries the next one, so it counts only for a run that logged no train record
    epochs = [r["epoch"] for r in records if r.get("event") == "train"] or [r["epoch"] for r in records if "epoch" in r]
    wanted = getattr(variant.recipe.train, "device", "auto")
    cuda = wanted != "cpu" and torch.cuda.is_available()
    return {
        "train_epochs": max(epochs) + 1 if epochs else None,  # epochs started (the last may be partial)
        "stopped_on_time": any(r.get("stopped_on_time") for r in records),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
    }


def run_ablation(
    path: str | Path,
    out_dir: str | Path,
    jobs: int = 1,
    seeds: list[int] | None = None,
    overrides: list[str] = (),
    only: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run every (variant, seed) not finished yet, ``jobs`` at a time; returns all rows.

    ``only`` restricts the run to the variants with these names."""
    variants, file_seeds = load_ablation(path, list(overrides))
    if only:
        unknown = sorted(set(only) - {v.name for v in variants})
        if unknown:
            names = ", ".join(v.name for v in variants)
            raise TextVAEError(f"{path}: no variant named {unknown[0]!r}; variants: {names}")
        variants = [v for v in variants if v.name in only]
    seeds = seeds or file_seeds
    out_dir = Path(out_dir)
    if jobs < 1:
        raise TextVAEError(f"--jobs must be ≥ 1, got {jobs}")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "ablation.json",
        json.dumps(
            {
                "source": str(path),
                "seeds": seeds,
                "overrides": list(overrides),  # --set: a run-time budget is not the recipe's stopping rule
                "variants": [
                    {"name": v.name, "dir": v.slug, "paper": v.paper, "recipe": v.recipe.to_dict()} for v in variants
                ],
            },
            indent=2,
        ),
    )
    rows: dict[tuple[str, int], dict] = {}
    todo = []
    for variant in variants:
        for seed in seeds:
            run_dir = out_dir / variant.slug / f"seed{seed}"
            done = run_dir / "result.json"
            if done.is_file():
                rows[(variant.name, seed)] = json.loads(done.read_text(encoding="utf-8"))
                log.info("%s seed %d: finished earlier, not rerun", variant.name, seed)
            else:
                todo.append((variant, seed, run_dir))
    order = [(v.name, s) for v in variants for s in seeds]

    def record(row: dict) -> None:
        rows[(row["variant"], row["seed"])] = row
        if "error" in row:
            log.error("%s seed %d FAILED: %s", row["variant"], row["seed"], row["error"])
        else:
            log.info(
                "%s seed %d: KL %.3f, AU %s, %.0fs",
                row["variant"],
                row["seed"],
                row.get("kl", 0.0),
                row.get("au", "—"),
                row["train_seconds"],
            )
        write_results(out_dir, [rows[key] for key in order if key in rows], variants)

    if jobs == 1:
        for variant, seed, run_dir in todo:
            log.info("== %s (seed %d) → %s", variant.name, seed, run_dir)
            record(_run_and_save(variant, seed, run_dir))
    else:
        # the variants with a non-standard strategy (aggressive training) cost the most: start them first
        todo.sort(key=lambda item: getattr(item[0].recipe, "strategy", {}).get("type", "standard") == "standard")
        # on a GPU the rows share it through the MPS daemon (started here if none runs, stopped after)
        cuda = cuda_wanted(getattr(v.recipe.train, "device", "auto") for v, _, _ in todo)
        with (
            MPSDaemon(cuda=cuda, jobs=min(jobs, len(todo))),
            ProcessPoolExecutor(
                max_workers=jobs,
                mp_context=get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            ) as pool,
        ):
            futures = [pool.submit(_run_and_save, v, s, d) for v, s, d in todo]
            for future in as_completed(futures):
                record(future.result())
    final = [rows[key] for key in order if key in rows]
    write_results(out_dir, final, variants)
    return final


def _machine_text(row: dict) -> str:
    """Where a row ran: its GPU, or its CPU with the threads ("cpu (AMD EPYC, 1 thread)") where recorded."""
    if row["device"] != "cpu" or "cpu" not in row:
        return row["device"]
    threads = row["threads"]
    return f"cpu ({row['cpu']}, {threads} thread{'s' if threads != 1 else ''})"


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per variant (in row order): mean and std over seeds of every metric, the budget,
    the published row it cites (``paper``) and its verdict (``textvae.reproduction``)."""
    from textvae.reproduction import summary_verdicts

    names = list(dict.fromkeys(row["variant"] for row in rows))
    summary = []
    for name in names:
        group = [r for r in rows if r["variant"] == name and "error" not in r]
        failed = [r for r in rows if r["variant"] == name and "error" in r]
        line: dict[str, Any] = {"variant": name, "seeds": len(group), "failed": len(failed)}
        for key in [*ROW_METRICS, "train_seconds", "train_steps", "train_epochs"]:
            values = [r[key] for r in group if r.get(key) is not None]
            if values:
                line[key] = _mean_std([float(v) for v in values])
        paper = (group or failed)[0].get("paper", {}) if (group or failed) else {}
        line["paper"] = paper if "tag" in paper else {}  # results written before 2026-12-04 cite no tagged row
        line["device"] = ", ".join(sorted({_machine_text(r) for r in group if r.get("device")})) or None
        line["date"] = max((r["date"] for r in group if r.get("date")), default=None)
        line["stopped_on_time"] = any(r.get("stopped_on_time") for r in group)
        if failed:
            line["error"] = failed[0]["error"]
        summary.append(line)
    summary_verdicts(summary, rows)
    return summary


_MD_COLUMNS = [
    ("iw_nll", "IW-NLL", 2),
    ("bits_per_dim", "bits/dim", 4),
    ("nll", "NLL (LM)", 2),
    ("ppl_iw", "PPL(IW)", 2),
    ("ppl", "PPL (LM)", 2),
    ("elbo", "ELBO", 2),
    ("rec", "Rec", 2),
    ("kl", "KL", 3),
    ("kl_batch_stats", "KL(batch stats)", 3),  # BN-VAE rows: the KL of Zhu et al. 2020's bound
    ("mi_batch", "MI(batch)", 3),
    ("mi_full", "MI(full)", 3),
    ("au", "AU", 1),
    ("recon_mse", "Rec MSE", 4),
    ("recon_bce", "Rec BCE", 2),
    ("codebook_perplexity", "Codebook PPL", 1),
    ("train_seconds", "train s", 0),
]


def _fmt(pair: tuple[float, float] | None, digits: int, seeds: int) -> str:
    if pair is None:
        return "—"
    mean, std = pair
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if seeds > 1 else "")


def _mi_cell(line: dict[str, Any], key: str, digits: int) -> str:
    """An MI cell, marked † when it reads as estimator noise (``textvae.reproduction.mi_is_noise``)."""
    from textvae.reproduction import mi_is_noise

    cell = _fmt(line.get(key), digits, line["seeds"])
    se, kl = line.get(f"{key}_se"), line.get("kl")
    if key in line and mi_is_noise(line[key][0], se[0] if se else None, kl[0] if kl else None):
        cell += " †"
    return cell


def results_markdown(summary: list[dict[str, Any]]) -> str:
    """The table: mean (± std over seeds) of each metric, then the published row and the verdict
    when a variant cites one; below it the verdicts' reasons and the published rows in full."""
    from textvae.reproduction import MI_NOISE_NOTE, published_short, published_text

    used = [c for c in _MD_COLUMNS if any(c[0] in line for line in summary)]
    cited = any(line.get("paper") for line in summary)
    header = ["variant", "seeds", *(title for _, title, _ in used), *(["published", "verdict"] if cited else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for line in summary:
        cells = [line["variant"], str(line["seeds"]) + (f" ({line['failed']} failed)" if line["failed"] else "")]
        for key, _, digits in used:  # with one seed a count (AU) is printed as the integer it is
            digits = 0 if key == "au" and line["seeds"] == 1 else digits
            cell = _mi_cell(line, key, digits) if key.startswith("mi_") else _fmt(line.get(key), digits, line["seeds"])
            cells.append(cell)
        if cited:
            verdict = line.get("verdict", {})
            detail = f" ({verdict['detail']})" if verdict.get("detail") else ""
            cells += [published_short(line.get("paper", {})), verdict.get("status", "—") + detail]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if any("†" in row for row in lines[2:]):
        notes.append(MI_NOISE_NOTE)
    reasons = [
        f"- {line['variant']}: **{line['verdict']['status']}**"
        + (f" ({line['verdict']['detail']})" if line["verdict"].get("detail") else "")
        + f": {line['verdict']['reason']}. "
        f"Published: {published_text(line['paper'])}."
        for line in summary
        if "verdict" in line
    ]
    errors = [f"- {line['variant']}: {line['error']}" for line in summary if "error" in line]
    return "\n".join(
        lines
        + (["", *notes] if notes else [])
        + (["", "Verdicts:", *reasons] if reasons else [])
        + (["", "Failed:", *errors] if errors else [])
    )


def results_csv(summary: list[dict[str, Any]]) -> str:
    # the image columns only when a row has them: a text ablation's CSV keeps its columns
    from textvae.reproduction import published_text

    optional = (*IMAGE_ROW_METRICS, "kl_batch_stats")  # columns only a table with such a row has
    keys = [k for k, _, _ in _MD_COLUMNS if k not in optional or any(k in line for line in summary)]
    extra = ["published", "verdict", "verdict_reason"]
    lines = [",".join(["variant", "seeds", "failed", *(f"{k}_mean,{k}_std" for k in keys), *extra])]
    for line in summary:
        cells = [json.dumps(line["variant"]), str(line["seeds"]), str(line["failed"])]
        for key in keys:
            cells += [f"{line[key][0]:.6g}", f"{line[key][1]:.6g}"] if key in line else ["", ""]
        verdict = line.get("verdict", {})
        published = published_text(line["paper"]) if line.get("paper") else ""
        cells += [json.dumps(published), json.dumps(verdict.get("status", "")), json.dumps(verdict.get("reason", ""))]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, rows: list[dict[str, Any]], variants: list[Variant] | None = None) -> None:
    """results.json (every row), results.md and results.csv (mean ± std over seeds), and the plots."""
    summary = summarize(rows)
    verdicts = {line["variant"]: line["verdict"] for line in summary if "verdict" in line}
    for row in rows:  # every seed's row carries its variant's verdict (over the mean of the seeds)
        if row["variant"] in verdicts and "error" not in row:
            row["verdict"] = verdicts[row["variant"]]
    atomic_write_text(out_dir / "results.json", json.dumps(rows, indent=2))
    atomic_write_text(out_dir / "results.md", results_markdown(summary) + "\n")
    atomic_write_text(out_dir / "results.csv", results_csv(summary))
    from textvae.plots import plot_ablation

    slugs = {v.name: v.slug for v in variants} if variants else {r["variant"]: _slug(r["variant"]) for r in rows}
    plot_ablation(out_dir, rows, slugs)
