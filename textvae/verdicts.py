"""Published rows, what reproducing them means, and a verdict for every measured row: pure, no files.

A recipe's ``[reference]`` (or an ablation variant's ``paper = {...}``) names the published row it
reproduces (``paper``, ``table``, ``row``) with the tag that says how the number was verified (the
legend of ../shared/papers.md: ``V-text``, ``V-code``, ``V-2nd``, ``V-calc``; an ``UNVERIFIED``
number is a sanity check, never a target) and states either

- published values with a tolerance: ``expected = {kl = 0.0}``, ``tolerance = {kl = 0.1}``; the value
  is reproduced when |measured − published| ≤ tolerance; or
- the published finding as checks, when no numeric table transfers to the setting, each saying
  when it applies: ``expect = ["kl < 0.1", "au == 0"]`` holds at any budget,
  ``expect_at_convergence = ["iw_nll <= lm_nll + 1"]`` only once the row reached its stopping rule.

Published values are compared only when the row trained on the paper's data (``dataset``) for at
least the paper's budget (``epochs``, no step or time cap). A row's stopping rule is the budget its
recipe declares (the quickstart's ``max_steps``, a CPU-budget recipe's ``epochs``, early stopping);
a cap added at run time (``train.max_minutes`` that stopped it, a ``--set`` of ``max_steps`` or
``epochs``) is not: its convergence checks are **not comparable**, its any-budget checks are
judged (``stopping_rule_problems``). A check compares the row's metrics (``kl``, ``au``,
``iw_nll``, ``mi_batch``, ``kl_batch_stats``, ...), ``lm_nll`` (the NLL of the language-model row
of the same table) and the recipe's settings (``latent_dim``; ``gamma`` of ``bn_vae``;
``threshold`` of ``free_bits``), e.g. Zhu et al. 2020's bound
``"kl_batch_stats >= latent_dim * gamma**2 / 2"``. A check whose number the row did not record is
**not comparable: not recorded**. Verdicts: ``VERDICTS``; with several seeds each seed is judged
and ``inconclusive`` says how many hold (``seeds_verdict``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from textvae.errors import TextVAEError
from textvae.evaluation.metric_table import CHECKABLE, title

TAGS = ("V-text", "V-code", "V-2nd", "V-calc")  # the targets of papers.md's legend; UNVERIFIED never is
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not comparable", "not run")
METRICS = CHECKABLE  # the metrics a check may name (textvae.evaluation.metric_table)
SETTINGS = ("lm_nll", "latent_dim", "gamma", "threshold")  # names a check may use besides METRICS

_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_ARITHMETIC[ast.Pow] = operator.pow


@dataclass(frozen=True)
class Verdict:
    status: str  # one of VERDICTS
    reason: str
    detail: str = ""  # with several seeds: how many hold ("2 of 3 seeds hold")

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason, **({"detail": self.detail} if self.detail else {})}

    @property
    def cell(self) -> str:
        """The table cell: the status, with how many seeds hold when there are several."""
        return f"{self.status} ({self.detail})" if self.detail else self.status


def parse_check(text: str, where: str) -> ast.Compare:
    """A check such as ``"kl >= latent_dim * gamma**2 / 2"``: one comparison of arithmetic on
    numbers, METRICS and SETTINGS. Anything else is a one-line error naming ``where``."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise TextVAEError(f"{where}: check {text!r} is not an expression like 'kl < 0.1'") from None
    if not isinstance(tree, ast.Compare) or not all(type(op) in _COMPARE for op in tree.ops):
        raise TextVAEError(f"{where}: check {text!r} must be a comparison (<, <=, >, >=, ==)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in (*METRICS, *SETTINGS):
            raise TextVAEError(f"{where}: check {text!r} uses unknown name {node.id!r}")
        allowed = (ast.Compare, ast.BinOp, ast.UnaryOp, ast.USub, ast.Name, ast.Load, ast.Constant)
        if not isinstance(node, allowed + tuple(_COMPARE) + tuple(_ARITHMETIC)):
            raise TextVAEError(f"{where}: check {text!r} may use only numbers, names, + - * / ** and comparisons")
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            raise TextVAEError(f"{where}: check {text!r}: {node.value!r} is not a number")
    return tree


def _value(node: ast.AST, names: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        if names.get(node.id) is None:
            raise KeyError(node.id)
        return float(names[node.id])
    if isinstance(node, ast.UnaryOp):
        return -_value(node.operand, names)
    return _ARITHMETIC[type(node.op)](_value(node.left, names), _value(node.right, names))


def run_check(text: str, names: Mapping[str, float]) -> bool | None:
    """Whether the check holds for these values; None when a name it uses has no value here."""
    tree = parse_check(text, "check")
    try:
        values = [_value(node, names) for node in (tree.left, *tree.comparators)]
    except KeyError:
        return None
    return all(_COMPARE[type(op)](a, b) for op, a, b in zip(tree.ops, values, values[1:], strict=False))


def check_reference(ref: Any) -> None:
    """Validate a ``ReferenceConfig``: a cited row has its tag, every value its tolerance, checks
    parse. Errors start with the field's name (the recipe loader puts the file and table before it)."""
    if not (ref.expected or ref.expect or ref.expect_at_convergence):
        return
    if not (ref.paper and ref.table and ref.row):
        raise TextVAEError("paper: a published value or finding needs its paper, table and row")
    if ref.tag not in TAGS:
        hint = " (an UNVERIFIED number is a sanity check, never a target)" if "UNVERIFIED" in ref.tag.upper() else ""
        raise TextVAEError(f"tag: {ref.tag!r} is not one of {', '.join(TAGS)}{hint}")
    for key in (*ref.expected, *ref.tolerance):
        if key not in METRICS:
            raise TextVAEError(f"expected: {key!r} is not a metric; metrics: {', '.join(METRICS)}")
    missing = sorted(set(ref.expected) - set(ref.tolerance))
    if missing:
        raise TextVAEError(f"tolerance: none for {missing[0]!r} (what counts as reproduced?)")
    if any(t < 0 for t in ref.tolerance.values()):
        raise TextVAEError("tolerance: tolerances must be ≥ 0")
    for text in ref.expect:
        parse_check(text, "expect")
    for text in ref.expect_at_convergence:
        parse_check(text, "expect_at_convergence")


def reference_spec(ref: Any, recipe: Mapping[str, Any], declared: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a results row carries about its published row: the reference's fields, the setting
    the row trained in (``recipe`` is ``Recipe.to_dict()``) and the budget its recipe declares
    (``declared``: the recipe before run-time ``--set`` overrides; ``recipe`` when not given);
    ``{}`` when it cites no published row."""
    if not (ref.expected or ref.expect or ref.expect_at_convergence):
        return {}
    declared_train = (declared if declared is not None else recipe).get("train", {})
    data, train, model = recipe.get("data", {}), recipe.get("train", {}), recipe.get("model", {})
    setting = {
        "dataset": data.get("dataset"),
        "epochs": train.get("epochs"),
        "max_steps": train.get("max_steps"),
        "max_minutes": train.get("max_minutes"),
        "latent_dim": model.get("latent_dim"),
    }
    for remedy in recipe.get("remedies", []):
        if remedy.get("type") == "bn_vae":
            setting["gamma"] = remedy.get("gamma", 0.5)  # BNVAE's default
        if remedy.get("type") == "free_bits":
            setting["threshold"] = remedy.get("threshold")
    fields = ("paper", "table", "row", "tag", "expected", "tolerance", "expect", "expect_at_convergence", "finding")
    fields += ("dataset", "epochs")
    spec = {k: _plain(getattr(ref, k)) for k in fields}
    return {**spec, "setting": setting, "declared": declared_budget(declared_train)}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def comparability(spec: Mapping[str, Any], budget: Mapping[str, Any] | None = None) -> list[str]:
    """Why the published values do not apply to this row (data, budget); [] when they do."""
    setting, reasons = spec.get("setting", {}), []
    if spec.get("dataset") and setting.get("dataset") != spec["dataset"]:
        reasons.append(f"data {setting.get('dataset')}, the paper's {spec['dataset']}")
    paper_epochs = spec.get("epochs")
    up_to = f" (the paper: up to {paper_epochs} epochs)" if paper_epochs else ""
    if setting.get("max_steps") is not None:  # papers train to a stopping rule, never to a step cap
        reasons.append(f"capped at {setting['max_steps']} steps{up_to}")
    elif paper_epochs and setting.get("epochs") is not None and setting["epochs"] < paper_epochs:
        reasons.append(f"{setting['epochs']} epochs{up_to}")
    return reasons  # a run-time cap: stopping_rule_problems


def number_text(value: float) -> str:
    """A value as a verdict prints it: an integer as one, else 3 decimals below 10 and 2 above."""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def verdict(
    spec: Mapping[str, Any], measured: Mapping[str, float] | None, lm_nll: float | None = None, budget=None
) -> Verdict | None:
    """The verdict for one row (or one seed): ``measured`` holds its metrics, ``lm_nll`` the NLL of
    the table's language-model row, ``budget`` its ``train_steps`` / ``train_epochs`` /
    ``stopped_on_time``; None when the row cites no published row.

    Any-budget checks (``expect``) are always judged; convergence checks (``expect_at_convergence``)
    only when the row reached its own stopping rule (``stopping_rule_problems``).
    A failed check makes it **not reproduced**; every check judged and holding, **reproduced**; a
    check not judged (not recorded, or not at convergence) with none failing, **not comparable**."""
    if not spec:
        return None
    if measured is None:
        return Verdict("not run", "no results file for this row yet")
    problems = comparability(spec, budget)
    early = stopping_rule_problems(spec, budget)  # published values need the paper's budget, hence no cap either
    value_problems = problems + early
    passed, failed, notes, unrecorded, deferred = [], [], [], [], []
    if spec.get("expected"):
        if value_problems:
            notes.append("published values not comparable: " + "; ".join(value_problems))
        for key, published in spec["expected"].items():
            if value_problems:
                break
            if measured.get(key) is None:
                unrecorded.append(key)
                continue
            tolerance = spec["tolerance"][key]
            line = f"{key} {number_text(measured[key])} vs {number_text(published)} ± {number_text(tolerance)}"
            (passed if abs(measured[key] - published) <= tolerance else failed).append(line)
    names = {**spec.get("setting", {}), **measured, "lm_nll": lm_nll}
    checks = [(text, False) for text in spec.get("expect", [])]
    checks += [(text, True) for text in spec.get("expect_at_convergence", [])]
    for text, at_convergence in checks:
        if at_convergence and early:
            deferred.append(text)
            continue
        missing = [name for name in _names(text) if names.get(name) is None]
        if missing:
            unrecorded.append(f"{text} ({', '.join(_missing_text(name) for name in missing)})")
            continue
        (passed if run_check(text, names) else failed).append(f"{text} ({_described(text, names)})")
    if checks and (passed or failed) and (problems or early or budget_text(budget)):
        context = problems + ([] if deferred else early)  # with deferred checks, ``early`` is said below
        notes.append(f"finding checked {budget_text(budget) or 'at this budget'}" + "".join(f"; {p}" for p in context))
    if deferred:
        notes.append(
            f"not comparable at this budget (checks at convergence): {', '.join(deferred)}; " + "; ".join(early)
        )
    if unrecorded:
        notes.insert(0, "not recorded: " + ", ".join(unrecorded))
    if failed:
        return Verdict("not reproduced", "; ".join(["fails: " + ", ".join(failed), *notes]))
    if unrecorded or deferred:
        held = [f"holds: {', '.join(passed)}"] if passed else []
        return Verdict("not comparable", "; ".join([*notes, *held]))
    if passed:
        return Verdict("reproduced", "; ".join([", ".join(passed), *notes]))
    return Verdict("not comparable", "; ".join(notes) or "nothing to compare")


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(n.id for n in ast.walk(parse_check(text, "check")) if isinstance(n, ast.Name)))


def _missing_text(name: str) -> str:
    return "no language-model row in this table" if name == "lm_nll" else f"no {name}"


def budget_text(budget: Mapping[str, Any] | None) -> str:
    """``after 1000 steps (1 epoch)`` from a row or summary line's ``train_steps`` / ``train_epochs``."""
    if not budget or budget.get("train_steps") is None:
        return ""
    steps, epochs = (budget.get(k) for k in ("train_steps", "train_epochs"))
    steps, epochs = (v[0] if isinstance(v, tuple | list) else v for v in (steps, epochs))
    tail = f" ({epochs:.0f} epoch{'s' if epochs != 1 else ''})" if epochs is not None else ""
    return f"after {steps:.0f} steps{tail}"


def _described(text: str, names: Mapping[str, Any]) -> str:
    """The measured values behind a check, e.g. ``kl = 0.012, au = 0``."""
    return ", ".join(f"{name} = {number_text(float(names[name]))}" for name in _names(text))


def published_text(spec: Mapping[str, Any]) -> str:
    """The published side of a table cell: values (or the finding) and the tag."""
    if not spec:
        return "—"
    values = ", ".join(f"{title(k)} {v:g}" for k, v in spec.get("expected", {}).items())
    finding = spec.get("finding") or "; ".join(all_checks(spec))
    body = "; ".join(part for part in (values, finding) if part)
    return f"{spec['paper']}, {spec['table']}, {spec['row']}: {body} [{spec['tag']}]"


def published_short(spec: Mapping[str, Any]) -> str:
    """A table cell: the published values (or the finding) and the tag; the citation is in the notes."""
    if not spec:
        return "—"
    values = ", ".join(f"{title(k)} {v:g}" for k, v in spec.get("expected", {}).items())
    return f"{values or spec.get('finding') or '; '.join(all_checks(spec))} [{spec['tag']}]"


def all_checks(spec: Mapping[str, Any]) -> list[str]:
    """A finding's checks: the any-budget ones, then those that hold at convergence."""
    return [*spec.get("expect", []), *spec.get("expect_at_convergence", [])]


def language_model_nll(lines: Sequence[Mapping[str, Any]]) -> float | None:
    """The NLL of the first language-model line (an exact ``nll``, no ``kl``) of a summary."""
    for line in lines:
        if line.get("nll") is not None and line.get("kl") is None:
            value = line["nll"]
            return float(value[0] if isinstance(value, tuple | list) else value)
    return None


def summary_verdicts(lines: Sequence[dict[str, Any]], rows: Sequence[Mapping[str, Any]] = ()) -> None:
    """Add ``verdict`` (``Verdict.to_dict()``) to every summary line that cites a published row.
    With ``rows`` (the per-seed rows) a line over several seeds is judged seed by seed
    (``seeds_verdict``), the verdict on the seeds' mean beside."""
    lm_nll = language_model_nll(lines)
    lm_by_seed: dict[int | None, float | None] = {None: lm_nll}  # the first language-model row of each seed
    for row in rows:
        if row.get("nll") is not None and row.get("kl") is None:
            lm_by_seed.setdefault(row["seed"], float(row["nll"]))
    for line in lines:
        measured = {k: v[0] for k, v in line.items() if k in METRICS and isinstance(v, tuple | list)}
        result = verdict(line.get("paper", {}), measured if line.get("seeds") else None, lm_nll, line)
        seeds = [r for r in rows if r["variant"] == line["variant"] and "error" not in r]
        if result is not None and len(seeds) > 1:
            result = seeds_verdict(line["paper"], seeds, result, lm_by_seed)
        if result is not None:
            line["verdict"] = result.to_dict()


# the footnote of every table that marks an MI cell with ``mi_is_noise``
MI_NOISE_NOTE = "† MI within two standard errors of 0, or above the KL (I(x; z) ≤ KL): estimator noise."


def mi_is_noise(mi: float, se: float | None, kl: float | None) -> bool:
    """An MI estimate to read as noise: within two standard errors of 0, or above the KL (I(x; z)
    never exceeds the average KL, He et al. 2019 Eq. 5)."""
    if math.isnan(mi):
        return False
    return (se is not None and not math.isnan(se) and abs(mi) <= 2 * se) or (kl is not None and mi > kl)


# ---- when a check applies, and how seeds vote ----


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
    reason = f"{per_seed}; the seeds' mean: {mean.status} ({mean.reason})"  # ``detail`` is said beside
    return Verdict(status, reason, detail)
