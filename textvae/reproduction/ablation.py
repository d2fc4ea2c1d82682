"""The ablation runner: a list of variants over one base recipe, trained, evaluated, tabulated, plotted.

Variants may be text or image recipes (``textvae.image.config``): an image row reports IW-NLL in
nats and bits/dim, ELBO, KL, AU, MI, reconstruction error and codebook perplexity, as its model allows.

An ablation file (TOML) names a ``base`` recipe and lists ``[[variants]]``. A variant has a
``name``, optionally its own ``recipe`` file instead of the base, optionally the published
row it reproduces (``paper = {paper = ..., table = ..., row = ..., tag = ..., expected = {...}, tolerance
= {...}}`` or the finding as ``expect = [...]``: ``textvae.verdicts``), and any recipe tables (``model``,
``[[variants.remedies]]``, ``strategy``, ``train``, ...) merged over its recipe, so the diff
between two variants is the ablation row. Every variant is validated before anything runs.

Each (variant, seed) trains in ``DIR/<variant>/seed<S>/`` and is evaluated with its recipe's
``[eval]`` settings; its row is written to ``result.json`` there. A finished row is never rerun,
an interrupted training resumes from its ``last.pt``, and a failing variant is reported as a row
with an ``error`` without stopping the others. ``DIR/results.json`` (all rows), ``results.md``,
``results.csv`` (mean ± std over seeds) and PNG plots are rewritten after every row. Where the rows
run (``--jobs`` workers pinned to GPUs, or cluster jobs through submitit) is ``textvae.executors``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import time
import traceback
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textvae.checkpoint import atomic_write_text
from textvae.config import (
    Recipe,
    ReferenceConfig,
    _dataclass_from,
    apply_override,
    deep_merge,
    read_recipe_tables,
    read_toml,
)
from textvae.cuda.mps import cuda_wanted
from textvae.engine.machine import ROW_THREADS, machine_fingerprint
from textvae.errors import TextVAEError
from textvae.executors.devices import pinned_gpu, plan_devices, visible_gpu_count
from textvae.executors.pool import row_pool
from textvae.families import any_recipe_from_dict
from textvae.image.config import ImageRecipe
from textvae.reproduction.tables import ROW_METRICS, results_csv, results_markdown, summarize
from textvae.verdicts import reference_spec

log = logging.getLogger(__name__)

_VARIANT_KEYS = {"name", "recipe", "paper", "description"}
_TOP_KEYS = {"base", "description", "seeds", "variants"}


@dataclass
class Variant:
    name: str
    slug: str  # its directory name
    recipe: Recipe | ImageRecipe
    paper: dict[str, Any] = field(default_factory=dict)  # textvae.verdicts.reference_spec


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
    """The published row a variant reproduces (``textvae.verdicts.reference_spec``): its own
    ``paper`` table (the fields of ``[reference]``), else its recipe's ``[reference]`` when the
    variant changes nothing that trains (so "+annealing" over a VAE recipe does not cite the VAE's row)."""
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
    from textvae.engine.run_dir import has_checkpoint
    from textvae.image.checkpoint import load_image_checkpoint
    from textvae.image.evaluate import evaluate_image_run
    from textvae.image.train import train_image

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
    from textvae.engine.run_dir import has_checkpoint
    from textvae.train import train

    recipe = _with_seed(variant.recipe, seed)
    if isinstance(recipe, ImageRecipe):
        return _run_image_variant(variant, recipe, seed, run_dir)
    started = time.perf_counter()
    summary = train(recipe, run_dir, resume=has_checkpoint(run_dir))
    train_seconds = time.perf_counter() - started
    return _evaluate_text_row(variant, recipe, seed, run_dir, summary.progress, train_seconds)


def _evaluate_text_row(variant: Variant, recipe: Recipe, seed: int, run_dir: Path, progress, train_seconds: float):
    """A trained text row's result: its ``best.pt`` (or ``eval.checkpoint``'s) evaluated with the recipe's
    ``[eval]`` settings; ``progress``: where its training ended (``textvae.engine.state.Progress``)."""
    from textvae.api import load_checkpoint
    from textvae.data.corpus import encode_split
    from textvae.evaluation.device import resolve_device
    from textvae.evaluation.evaluate import EvalSettings, evaluate

    cfg = recipe.eval
    loaded = load_checkpoint(run_dir / f"{cfg.checkpoint}.pt")
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
    # the last epoch that trained: one that finished has moved ``epoch`` on
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
        "checkpoint": cfg.checkpoint,
        "train_steps": progress.step,
        "train_seconds": train_seconds,
        "eval_seconds": result["eval_seconds"],
        "eval_device": result["device"],
        "eval_subset_seed": result["subset_seed"],
        **bound,
        "paper": variant.paper,
    }


def _finish_row(variant: Variant, run_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """A trained and evaluated row with its machine and budget, written to its ``result.json``."""
    fingerprint = machine_fingerprint()
    row = row | {key: fingerprint[key] for key in ("cpu", "cpu_capability", "threads")} | _budget(variant, run_dir)
    if pinned_gpu() is not None:
        row["gpu"] = pinned_gpu()
    atomic_write_text(run_dir / "result.json", json.dumps(row, indent=2))
    return row


def _run_fused_group(items: list[tuple[Variant, int, Path]]) -> list[dict[str, Any]]:
    """A group of rows trained as one fused model (``textvae.reproduction.fused``); each row's result."""
    from textvae.reproduction.fused import run_group

    def alone(item):
        return _run_and_save(*item)

    threads = row_threads(items[0][0].recipe)
    return run_group(items, _with_seed, _evaluate_text_row, _finish_row, alone, threads)


def _fused_groups(todo: list) -> tuple[list[list], list]:
    """(the fused groups of ``todo``'s rows, the rows that train alone), logged."""
    from textvae.reproduction.fused import plan_fusion

    plan = plan_fusion(todo, _with_seed)
    in_groups = {(v.name, s) for group in plan.groups for v, s, _ in group}
    for group in plan.groups:
        log.info("fused group of %d rows: %s", len(group), ", ".join(f"{v.name} (seed {s})" for v, s, _ in group))
    for (variant, seed, _), reason in plan.alone:
        log.info("%s seed %d trains alone: %s", variant.name, seed, reason)
    return plan.groups, [item for item in todo if (item[0].name, item[1]) not in in_groups]


def fusion_plan(path, out_dir, seeds=None, overrides=(), only=None) -> str:
    """``textvae ablate --fuse-plan``: the fused groups of the rows not finished yet, nothing trained."""
    from textvae.reproduction.fused import plan_fusion, plan_text

    variants, seeds = select_variants(path, seeds, list(overrides), only)
    todo = [
        (variant, seed, Path(out_dir) / variant.slug / f"seed{seed}")
        for variant in variants
        for seed in seeds
        if not (Path(out_dir) / variant.slug / f"seed{seed}" / "result.json").is_file()
    ]
    return plan_text(plan_fusion(todo, _with_seed), _with_seed)


def _bn_bound_measurements(model, recipe: Recipe, vocab, test_split, epoch: int, cfg) -> dict[str, Any]:
    """For a BN-VAE row: the KL under batch statistics over the training batches (the quantity of
    Zhu et al. 2020's bound) and the test sentences' variance ratio (``textvae.evaluation.bn_batch_kl``)."""
    from textvae.data.corpus import encode_split
    from textvae.evaluation.bn_batch_kl import batch_statistics_kl, bn_norms, eval_variance_ratio
    from textvae.evaluation.validation import select_sentences

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


def _run_and_save(variant: Variant, seed: int, run_dir: Path) -> dict[str, Any]:
    try:
        row = run_variant(variant, seed, run_dir)
        row.update(_budget(variant, run_dir))
        row["fused"] = False  # trained by itself (textvae ablate --fuse: the size of its fused group)
        if pinned_gpu() is not None:  # the worker's device among the ablate process's visible GPUs
            row["gpu"] = pinned_gpu()
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

    from textvae.engine.metrics_log import read_metrics

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


def select_variants(
    path: str | Path, seeds: list[int] | None = None, overrides: list[str] = (), only: list[str] | None = None
) -> tuple[list[Variant], list[int]]:
    """The variants of an ablation file (``only``: those with these names) and its seeds (or ``seeds``)."""
    variants, file_seeds = load_ablation(path, list(overrides))
    if only:
        unknown = sorted(set(only) - {v.name for v in variants})
        if unknown:
            names = ", ".join(v.name for v in variants)
            raise TextVAEError(f"{path}: no variant named {unknown[0]!r}; variants: {names}")
        variants = [v for v in variants if v.name in only]
    return variants, seeds or file_seeds


def describe_ablation(out_dir: Path, path: str | Path, variants: list[Variant], seeds: list[int]) -> None:
    """``DIR/ablation.json``: the source file, the seeds and every variant's resolved recipe."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out_dir / "ablation.json",
        json.dumps(
            {
                "source": str(path),
                "seeds": seeds,
                "variants": [
                    {"name": v.name, "dir": v.slug, "paper": v.paper, "recipe": v.recipe.to_dict()} for v in variants
                ],
            },
            indent=2,
        ),
    )


def run_ablation(
    path: str | Path,
    out_dir: str | Path,
    jobs: int = 1,
    seeds: list[int] | None = None,
    overrides: list[str] = (),
    only: list[str] | None = None,
    gpus: list[int] | None = None,
    fuse: str = "off",
) -> list[dict[str, Any]]:
    """Run every (variant, seed) not finished yet, ``jobs`` at a time; returns all rows.

    ``only`` restricts the run to the variants with these names; ``gpus`` the GPUs the workers are
    spread over (indices among the visible devices; default: all of them). ``fuse`` ("on", "off",
    "auto"): rows that share their model's shapes and batches train as one fused model
    (``textvae.reproduction.fused``)."""
    from textvae.reproduction.fused import fuse_wanted

    if jobs < 1:
        raise TextVAEError(f"--jobs must be ≥ 1, got {jobs}")
    fusing = fuse_wanted(fuse)
    variants, seeds = select_variants(path, seeds, overrides, only)
    if gpus:
        plan_devices(0, visible_gpu_count(), gpus)  # a GPU that does not exist: an error before anything is written
    out_dir = Path(out_dir)
    describe_ablation(out_dir, path, variants, seeds)
    return run_rows(variants, seeds, out_dir, jobs, gpus=gpus, fuse=fusing)


def run_rows(
    variants: list[Variant],
    seeds: list[int],
    out_dir: Path,
    jobs: int,
    *,
    gpus: list[int] | None = None,
    rows_wanted: set[tuple[str, int]] | None = None,
    table: bool = True,
    device_count: int | None = None,
    fuse: bool = False,
) -> list[dict[str, Any]]:
    """Train and evaluate the (variant, seed) rows without a ``result.json`` yet, ``jobs`` at a time.

    ``rows_wanted`` restricts the run to these (variant name, seed) pairs (one cluster job's group);
    ``table=False`` writes no results tables (a cluster job: its submitter writes them from every
    job's rows). ``device_count`` overrides the visible GPU count (tests). ``fuse``: the rows that
    can, train in fused groups (``textvae.reproduction.fused``), each group one task of the pool."""
    rows: dict[tuple[str, int], dict] = {}
    todo = []
    for variant in variants:
        for seed in seeds:
            if rows_wanted is not None and (variant.name, seed) not in rows_wanted:
                continue
            run_dir = out_dir / variant.slug / f"seed{seed}"
            done = run_dir / "result.json"
            if done.is_file():
                rows[(variant.name, seed)] = json.loads(done.read_text(encoding="utf-8"))
                log.info("%s seed %d: finished earlier, not rerun", variant.name, seed)
            else:
                todo.append((variant, seed, run_dir))
    order = [(v.name, s) for v in variants for s in seeds]
    groups, todo = _fused_groups(todo) if fuse else ([], todo)

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
        if table:
            write_results(out_dir, [rows[key] for key in order if key in rows], variants)

    workers = min(jobs, len(todo) + len(groups))
    everything = todo + [item for group in groups for item in group]
    cuda = cuda_wanted(getattr(v.recipe.train, "device", "auto") for v, _, _ in everything)
    count = device_count if device_count is not None else (visible_gpu_count() if cuda or gpus else 0)
    plan = plan_devices(workers, count, gpus)
    if jobs == 1 and not gpus:
        for group in groups:
            for row in _run_fused_group(group):
                record(row)
        for variant, seed, run_dir in todo:
            log.info("== %s (seed %d) → %s", variant.name, seed, run_dir)
            record(_run_and_save(variant, seed, run_dir))
    elif todo or groups:
        # the variants with a non-standard strategy (aggressive training) cost the most: start them first
        todo.sort(key=lambda item: getattr(item[0].recipe, "strategy", {}).get("type", "standard") == "standard")
        # on a GPU the rows that share it do so through the MPS daemon (started here if none runs, stopped after)
        with row_pool(workers, plan, cuda) as pool:
            futures = [pool.submit(_run_fused_group, group) for group in groups]  # a list of rows each
            futures += [pool.submit(_run_and_save, v, s, d) for v, s, d in todo]
            for future in as_completed(futures):
                result = future.result()
                for row in result if isinstance(result, list) else [result]:
                    record(row)
    final = [rows[key] for key in order if key in rows]
    if table:
        write_results(out_dir, final, variants)
    return final


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
    from textvae.reproduction.plots import plot_ablation

    slugs = {v.name: v.slug for v in variants} if variants else {r["variant"]: _slug(r["variant"]) for r in rows}
    plot_ablation(out_dir, rows, slugs)
