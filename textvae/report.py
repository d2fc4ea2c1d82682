"""Results as text tables: one row per model or variant, the same columns everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from textvae.reproduction import MI_NOISE_NOTE, published_short, published_text

# (key in the results dict, column header, format)
COLUMNS = [
    ("elbo", "ELBO", "{:.2f}"),
    ("rec", "Rec", "{:.2f}"),
    ("kl", "KL", "{:.3f}"),
    ("iw_nll", "IW-NLL", "{:.2f}"),
    ("nll", "NLL", "{:.2f}"),
    ("ppl_elbo", "PPL(ELBO)", "{:.2f}"),
    ("ppl_iw", "PPL(IW)", "{:.2f}"),
    ("ppl", "PPL", "{:.2f}"),
    ("au", "AU", "{:d}"),
    ("mi_batch", "MI(batch)", "{:.3f}"),
    ("mi_full", "MI(full)", "{:.3f}"),
]


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return fmt.format(value)


def markdown_table(rows: Sequence[tuple[str, Mapping]], columns=COLUMNS, name_header: str = "model") -> str:
    """A Markdown table; a column appears when any row has it, a missing value is shown as —. An
    evaluation result whose recipe (``config``) cites a published row gets it and the verdict."""
    used = [c for c in columns if any(c[0] in r for _, r in rows)]
    verdicts = _eval_verdicts(rows)
    header = [name_header, *(title for _, title, _ in used), *(["published", "verdict"] if verdicts else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    marked = False
    for name, result in rows:
        cells = [name]
        for key, _, fmt in used:
            cells.append(_cell(result.get(key), fmt))
            if key.startswith("mi_") and _mi_noise(result, key):
                cells[-1] += " †"
                marked = True
        if verdicts:
            spec, verdict = verdicts.get(name, ({}, None))
            cells += [published_short(spec), verdict.status if verdict else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    note = ["", MI_NOISE_NOTE]
    reasons = [
        f"- {name}: **{v.status}**: {v.reason}. Published: {published_text(s)}." for name, (s, v) in verdicts.items()
    ]
    return "\n".join(lines + (note if marked else []) + (["", "Verdicts:", *reasons] if reasons else []))


def _eval_verdicts(rows: Sequence[tuple[str, Mapping]]) -> dict:
    """name → (published row, verdict) for the evaluation results whose recipe cites a published row."""
    from textvae.config import ReferenceConfig
    from textvae.errors import TextVAEError
    from textvae.reproduction import reference_spec, verdict

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


def _mi_noise(result: Mapping, key: str) -> bool:
    from textvae.reproduction import mi_is_noise

    value = result.get(key)
    return isinstance(value, int | float) and mi_is_noise(value, result.get(f"{key}_se"), result.get("kl"))


def reproduction_report(recipes_dir: Path | None, run_dirs: Sequence[Path], update: Sequence[Path] = ()) -> str:
    """``textvae report --reproduction RECIPES_DIR RUN_DIR...``: the status table of every published
    row the recipes cite (``textvae.reproduction``), also written into each ``update`` file's block."""
    from textvae.errors import TextVAEError
    from textvae.reproduction import status_markdown, status_rows, update_status_block

    if recipes_dir is None or not recipes_dir.is_dir():
        raise TextVAEError(f"--reproduction: {recipes_dir} is not a recipes directory")
    block = status_markdown(status_rows(recipes_dir, run_dirs))
    for path in update:
        update_status_block(path, block)
    return block
