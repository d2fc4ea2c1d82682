"""When a check applies, how seeds vote, and which citation a re-rendered table uses.

Three rules on top of ``textvae.reproduction.verdict``:

- **Budget.** A row's stopping rule is the budget its recipe declares (``train.epochs``,
  ``train.max_steps``, early stopping). A cap added at run time is not: a row stopped by
  ``train.max_minutes``, or by a ``--set`` of ``train.max_steps`` / ``train.epochs`` smaller than
  the recipe's, did not reach its stopping rule, and its convergence checks
  (``expect_at_convergence``) are not comparable (``stopping_rule_problems``).
- **Seeds.** With several seeds each seed is judged on its own numbers: **reproduced** when every
  seed holds, **not reproduced** when none does, **inconclusive** otherwise, with ``k of n seeds
  hold`` and the verdict on the seeds' mean beside it (``seeds_verdict``).
- **Re-rendering.** A results row keeps what it measured and the setting it trained in; its
  citation (paper, checks, tolerance) is the recipe's current one (``with_current_citations``),
  so a corrected citation reaches old results.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textvae.errors import TextVAEError

log = logging.getLogger(__name__)

# the fields of a citation a recipe states; the rest of a row's spec (``setting``) is what the row ran
CITATION_FIELDS = ("paper", "table", "row", "tag", "expected", "tolerance", "expect", "expect_at_convergence")
CITATION_FIELDS += ("finding", "dataset", "epochs", "declared")


def declared_budget(train: Mapping[str, Any]) -> dict[str, Any]:
    """The budget a recipe declares (its ``train`` table before run-time overrides)."""
    return {"epochs": train.get("epochs"), "max_steps": train.get("max_steps")}


def _first(value: Any) -> Any:
    """A row's number, or a summary line's (mean, std) mean."""
    return value[0] if isinstance(value, tuple | list) else value


def stopping_rule_problems(spec: Mapping[str, Any], budget: Mapping[str, Any] | None) -> list[str]:
    """Why the row did not reach its own stopping rule; [] when it did (or nothing says otherwise).

    ``spec["setting"]`` is the budget the row ran with, ``spec["declared"]`` the one its recipe
    declares (absent in results written before 2026-12-07: then only a wall-clock stop is known)."""
    setting, declared, budget = spec.get("setting", {}), spec.get("declared"), budget or {}
    problems = []
    if budget.get("stopped_on_time"):
        cap = setting.get("max_minutes")
        problems.append(
            f"stopped by a wall-clock cap (train.max_minutes{f' = {cap:g}' if cap else ''}), not its own stopping rule"
        )
    if declared is None:
        return problems
    steps, cap = _first(budget.get("train_steps")), setting.get("max_steps")
    if cap is not None and cap != declared.get("max_steps") and (steps is None or steps >= cap):
        recipe = declared.get("max_steps")
        problems.append(f"stopped at max_steps = {cap} set at run time (the recipe's: {recipe if recipe else 'none'})")
    epochs, recipe_epochs = setting.get("epochs"), declared.get("epochs")
    if epochs is not None and recipe_epochs is not None and epochs < recipe_epochs:
        problems.append(f"{epochs} epochs set at run time (the recipe's: {recipe_epochs})")
    return problems


def seeds_verdict(spec: Mapping[str, Any], seeds: Sequence[Mapping[str, Any]], mean: Any, lm_nll_by_seed=None):
    """The verdict over several seeds: each seed's row (``seeds``) judged on its own numbers (with
    the language-model row of the same seed, else ``lm_nll_by_seed[None]``), combined; ``mean`` is
    the verdict on the seeds' mean (``textvae.reproduction.Verdict``), shown beside."""
    from textvae.reproduction import METRICS, Verdict, verdict

    lm_nll_by_seed = lm_nll_by_seed or {}
    judged = []
    for row in seeds:
        measured = {k: float(row[k]) for k in METRICS if row.get(k) is not None}
        lm_nll = lm_nll_by_seed.get(row["seed"], lm_nll_by_seed.get(None))
        judged.append((row["seed"], verdict(spec, measured, lm_nll, row)))
    n = len(judged)
    holds = sum(v.status == "reproduced" for _, v in judged)
    fails = sum(v.status == "not reproduced" for _, v in judged)
    if holds == n:
        status = "reproduced"
    elif fails == n:
        status = "not reproduced"
    elif holds + fails == 0:
        status = "not comparable"
    else:
        status = "inconclusive"
    per_seed = "; ".join(f"seed {seed}: {v.status} ({v.reason})" for seed, v in judged)
    detail = f"{holds} of {n} seeds hold"
    reason = f"{detail}: {per_seed}; the seeds' mean: {mean.status} ({mean.reason})"
    return Verdict(status, reason, detail)


def with_current_citations(rows: list[dict[str, Any]], source: str | Path | None) -> list[dict[str, Any]]:
    """``rows`` (a results.json) with each row's citation replaced by the current one of its variant
    in the ablation file ``source`` (its measured numbers and ``setting`` kept); a variant the file no
    longer cites loses its citation. Without a readable ``source`` the rows are returned as they are."""
    from textvae.ablation import load_ablation

    path = Path(source) if source else None
    if path is None or not path.is_file():
        if source:
            log.warning("%s: not found; verdicts use the citations recorded in the results", source)
        return rows
    try:
        variants = {v.name: v for v in load_ablation(path)[0]}
    except TextVAEError as err:
        log.warning("%s; verdicts use the citations recorded in the results", err)
        return rows
    updated = []
    for row in rows:
        variant = variants.get(row["variant"])
        if variant is None:
            updated.append(row)
            continue
        current, recorded = variant.paper, row.get("paper") or {}
        if not current:
            updated.append({**row, "paper": {}})
            continue
        setting = recorded.get("setting") or current.get("setting", {})
        updated.append(
            {**row, "paper": {**{k: current[k] for k in CITATION_FIELDS if k in current}, "setting": setting}}
        )
    return updated


def ablation_source(run_dir: Path) -> str | None:
    """The ablation file a results directory ran: ``ablation.json``'s source, else the command in ``run.json``."""
    try:
        ablation = run_dir / "ablation.json"
        if ablation.is_file():
            return json.loads(ablation.read_text(encoding="utf-8"))["source"]
        run = run_dir / "run.json"
        command = json.loads(run.read_text(encoding="utf-8")).get("command", "") if run.is_file() else ""
    except (ValueError, KeyError) as err:
        raise TextVAEError(f"{run_dir}: unreadable results ({err})") from None
    return command.split("ablate ", 1)[1].split()[0] if "ablate " in command else None
