"""Results as tables: an ablation's summary over seeds (Markdown, CSV) and evaluation results side by side.

Every column comes from ``textvae.evaluation.metric_table``; an MI cell that reads as estimator noise is
marked † (``verdicts.mi_is_noise``) and a row that cites a published row gets its verdict line below.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from textvae.config import ReferenceConfig
from textvae.errors import TextVAEError
from textvae.evaluation.metric_table import (
    ABLATION_COLUMNS,
    CHECKABLE,
    EVAL_COLUMNS,
    IMAGE_ONLY,
    MI_KEYS,
    Metric,
    columns,
)
from textvae.verdicts import MI_NOISE_NOTE, mi_is_noise, published_short, published_text, reference_spec, verdict
from textvae.verdicts import summary_verdicts as _summary_verdicts

# what a row of an ablation keeps of an evaluation: the measured metrics and the MIs' standard errors
ROW_METRICS = (*CHECKABLE, *(f"{key}_se" for key in MI_KEYS))
ROW_METRICS += ("bn_eval_variance_ratio",)  # BN-VAE rows only (textvae.evaluation.bn_batch_kl)


def verdict_line(name: str, status: str, reason: str, spec: Mapping[str, Any], detail: str = "") -> str:
    """The line below a table that says why a row got its verdict (with several seeds, how many
    hold: ``detail``), and what was published."""
    return f"- {name}: **{status}**{f' ({detail})' if detail else ''}: {reason}. Published: {published_text(spec)}."


def _mi_marked(cell: str, key: str, value: float | None, se: float | None, kl: float | None) -> tuple[str, bool]:
    """An MI cell with † when it reads as estimator noise; whether it was marked."""
    noise = key in MI_KEYS and value is not None and mi_is_noise(value, se, kl)
    return (cell + " †", True) if noise else (cell, False)


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
    the published row it cites (``paper``) and its verdict (``textvae.verdicts``)."""
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
        line["fused"] = max((r.get("fused") or 0 for r in group), default=0) or False  # its largest fused group
        if failed:
            line["error"] = failed[0]["error"]
        summary.append(line)
    _summary_verdicts(summary, rows)
    return summary


def _summary_cell(line: dict[str, Any], metric: Metric) -> tuple[str, bool]:
    pair, seeds = line.get(metric.key), line["seeds"]
    if pair is None:
        return "—", False
    cell = metric.cell(pair[0], pair[1] if seeds > 1 else None)
    se, kl = line.get(f"{metric.key}_se"), line.get("kl")
    return _mi_marked(cell, metric.key, pair[0], se[0] if se else None, kl[0] if kl else None)


def results_markdown(summary: list[dict[str, Any]]) -> str:
    """The table: mean (± std over seeds) of each metric, then the published row and the verdict
    when a variant cites one; below it the verdicts' reasons and the published rows in full."""
    used = [m for m in columns(ABLATION_COLUMNS) if any(m.key in line for line in summary)]
    cited = any(line.get("paper") for line in summary)
    header = ["variant", "seeds", *(m.title for m in used), *(["published", "verdict"] if cited else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    marked = False
    for line in summary:
        cells = [line["variant"], str(line["seeds"]) + (f" ({line['failed']} failed)" if line["failed"] else "")]
        for metric in used:
            cell, noise = _summary_cell(line, metric)
            cells.append(cell)
            marked |= noise
        if cited:
            verdict_ = line.get("verdict", {})
            detail = f" ({verdict_['detail']})" if verdict_.get("detail") else ""
            cells += [published_short(line.get("paper", {})), verdict_.get("status", "—") + detail]
        lines.append("| " + " | ".join(cells) + " |")
    reasons = [
        verdict_line(
            line["variant"],
            line["verdict"]["status"],
            line["verdict"]["reason"],
            line["paper"],
            line["verdict"].get("detail", ""),
        )
        for line in summary
        if "verdict" in line
    ]
    errors = [f"- {line['variant']}: {line['error']}" for line in summary if "error" in line]
    fused = [f"{line['variant']} ({line['fused']})" for line in summary if line.get("fused")]
    fused_note = (
        "Fused (textvae ablate --fuse; the group's size): " + ", ".join(fused) + ". Each trained in one fused"
        " model with its group, from the weights, batches and noise it has alone; its train s is the group's."
    )
    return "\n".join(
        lines
        + (["", MI_NOISE_NOTE] if marked else [])
        + (["", fused_note] if fused else [])
        + (["", "Verdicts:", *reasons] if reasons else [])
        + (["", "Failed:", *errors] if errors else [])
    )


def results_csv(summary: list[dict[str, Any]]) -> str:
    # the image columns only when a row has them: a text ablation's CSV keeps its columns
    optional = (*IMAGE_ONLY, "kl_batch_stats")  # columns only a table with such a row has
    keys = [k for k in ABLATION_COLUMNS if k not in optional or any(k in line for line in summary)]
    extra = ["published", "verdict", "verdict_reason"]
    lines = [",".join(["variant", "seeds", "failed", *(f"{k}_mean,{k}_std" for k in keys), *extra])]
    for line in summary:
        cells = [json.dumps(line["variant"]), str(line["seeds"]), str(line["failed"])]
        for key in keys:
            cells += [f"{line[key][0]:.6g}", f"{line[key][1]:.6g}"] if key in line else ["", ""]
        verdict_ = line.get("verdict", {})
        published = published_text(line["paper"]) if line.get("paper") else ""
        cells += [json.dumps(published), json.dumps(verdict_.get("status", "")), json.dumps(verdict_.get("reason", ""))]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def markdown_table(
    rows: Sequence[tuple[str, Mapping]], metrics: Sequence[Metric] | None = None, name_header: str = "model"
) -> str:
    """Evaluation results side by side: a column appears when any row has it, a missing value is —.
    A result whose recipe (``config``) cites a published row gets it and the verdict."""
    used = [m for m in (metrics or columns(EVAL_COLUMNS)) if any(m.key in r for _, r in rows)]
    verdicts = _eval_verdicts(rows)
    header = [name_header, *(m.title for m in used), *(["published", "verdict"] if verdicts else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    marked = False
    for name, result in rows:
        cells = [name]
        for metric in used:
            value = result.get(metric.key)
            number = value if isinstance(value, int | float) else None
            cell, noise = _mi_marked(
                metric.cell(value), metric.key, number, result.get(f"{metric.key}_se"), result.get("kl")
            )
            cells.append(cell)
            marked |= noise
        if verdicts:
            spec, result_verdict = verdicts.get(name, ({}, None))
            cells += [published_short(spec), result_verdict.status if result_verdict else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    reasons = [verdict_line(name, v.status, v.reason, s) for name, (s, v) in verdicts.items()]
    return "\n".join(lines + (["", MI_NOISE_NOTE] if marked else []) + (["", "Verdicts:", *reasons] if reasons else []))


def _eval_verdicts(rows: Sequence[tuple[str, Mapping]]) -> dict:
    """name → (published row, verdict) for the evaluation results whose recipe cites a published row."""
    lm_nll = next((r["nll"] for _, r in rows if r.get("kind") == "lm" and "nll" in r), None)
    found = {}
    for name, result in rows:
        config = result.get("config") or {}
        try:
            spec = reference_spec(ReferenceConfig(**config.get("reference", {})), config)
        except (TypeError, TextVAEError):  # a results file of an older format
            continue
        if spec:
            found[name] = (spec, verdict(spec, result, lm_nll))
    return found
