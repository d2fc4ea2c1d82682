"""Published rows, what reproducing them means, and a verdict for every measured row: pure, no files.

A recipe's ``[reference]`` (or an ablation variant's ``paper = {...}``) names the published row it
reproduces (``paper``, ``table``, ``row``) with the tag that says how the number was verified (the
legend of ../shared/papers.md: ``V-text``, ``V-code``, ``V-2nd``, ``V-calc``; an ``UNVERIFIED``
number is a sanity check, never a target) and states either

- published values with a tolerance: ``expected = {kl = 0.0}``, ``tolerance = {kl = 0.1}``; the value
  is reproduced when |measured − published| ≤ tolerance; or
- the published finding as checks, when no numeric table transfers to the setting:
  ``expect = ["kl < 0.1", "au == 0", "iw_nll <= lm_nll + 1"]``.

Published values are compared only when the row trained on the paper's data (``dataset``) for at
least the paper's budget (``epochs``, no step or time cap); a finding's checks apply at any budget
and the reason says at which one. A check compares the row's metrics (``kl``, ``au``, ``iw_nll``,
``mi_batch``, ...), ``lm_nll`` (the NLL of the language-model row of the same table) and the recipe's
settings (``latent_dim``; ``gamma`` of ``bn_vae``; ``threshold`` of ``free_bits``), e.g. Zhu et al.
2020's bound ``"kl >= latent_dim * gamma**2 / 2"``. Verdicts: ``VERDICTS``.
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
VERDICTS = ("reproduced", "not reproduced", "not comparable", "not run")
METRICS = CHECKABLE  # the metrics a check may name (textvae.evaluation.metric_table)
SETTINGS = ("lm_nll", "latent_dim", "gamma", "threshold")  # names a check may use besides METRICS

_COMPARE = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_ARITHMETIC[ast.Pow] = operator.pow


@dataclass(frozen=True)
class Verdict:
    status: str  # one of VERDICTS
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


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
    if not (ref.expected or ref.expect):
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


def reference_spec(ref: Any, recipe: Mapping[str, Any]) -> dict[str, Any]:
    """What a results row carries about its published row: the reference's fields and the setting
    the row trained in (``recipe`` is ``Recipe.to_dict()``); ``{}`` when it cites no published row."""
    if not (ref.expected or ref.expect):
        return {}
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
    fields = ("paper", "table", "row", "tag", "expected", "tolerance", "expect", "finding", "dataset", "epochs")
    return {**{k: _plain(getattr(ref, k)) for k in fields}, "setting": setting}


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
    if budget and budget.get("stopped_on_time"):
        reasons.append("training stopped at its wall-clock cap (train.max_minutes)")
    return reasons


def number_text(value: float) -> str:
    """A value as a verdict prints it: an integer as one, else 3 decimals below 10 and 2 above."""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def verdict(
    spec: Mapping[str, Any], measured: Mapping[str, float] | None, lm_nll: float | None = None, budget=None
) -> Verdict | None:
    """The verdict for one row: ``measured`` holds its metrics (means over seeds), ``lm_nll`` the
    NLL of the table's language-model row; None when the row cites no published row."""
    if not spec:
        return None
    if measured is None:
        return Verdict("not run", "no results file for this row yet")
    problems = comparability(spec, budget)
    passed, failed, notes = [], [], []
    if spec.get("expected"):
        if problems:
            notes.append("published values not comparable: " + "; ".join(problems))
        for key, published in spec["expected"].items():
            if problems:
                break
            if measured.get(key) is None:
                notes.append(f"no measured {key}")
                continue
            tolerance = spec["tolerance"][key]
            line = f"{key} {number_text(measured[key])} vs {number_text(published)} ± {number_text(tolerance)}"
            (passed if abs(measured[key] - published) <= tolerance else failed).append(line)
    names = {**spec.get("setting", {}), **measured, "lm_nll": lm_nll}
    for text in spec.get("expect", []):
        outcome = run_check(text, names)
        if outcome is None:
            notes.append(f"{text}: not checkable here")
            continue
        (passed if outcome else failed).append(f"{text} ({_described(text, names)})")
    if spec.get("expect") and (passed or failed) and (problems or budget_text(budget)):
        notes.append(f"finding checked {budget_text(budget) or 'at this budget'}" + "".join(f"; {p}" for p in problems))
    if failed:
        return Verdict("not reproduced", "; ".join(["fails: " + ", ".join(failed), *notes]))
    if passed:
        return Verdict("reproduced", "; ".join([", ".join(passed), *notes]))
    return Verdict("not comparable", "; ".join(notes) or "nothing to compare")


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
    used = dict.fromkeys(n.id for n in ast.walk(parse_check(text, "check")) if isinstance(n, ast.Name))
    return ", ".join(f"{name} = {number_text(float(names[name]))}" for name in used)


def published_text(spec: Mapping[str, Any]) -> str:
    """The published side of a table cell: values (or the finding) and the tag."""
    if not spec:
        return "—"
    values = ", ".join(f"{title(k)} {v:g}" for k, v in spec.get("expected", {}).items())
    finding = spec.get("finding") or "; ".join(spec.get("expect", []))
    body = "; ".join(part for part in (values, finding) if part)
    return f"{spec['paper']}, {spec['table']}, {spec['row']}: {body} [{spec['tag']}]"


def published_short(spec: Mapping[str, Any]) -> str:
    """A table cell: the published values (or the finding) and the tag; the citation is in the notes."""
    if not spec:
        return "—"
    values = ", ".join(f"{title(k)} {v:g}" for k, v in spec.get("expected", {}).items())
    return f"{values or spec.get('finding') or '; '.join(spec.get('expect', []))} [{spec['tag']}]"


def language_model_nll(lines: Sequence[Mapping[str, Any]]) -> float | None:
    """The NLL of the first language-model line (an exact ``nll``, no ``kl``) of a summary."""
    for line in lines:
        if line.get("nll") is not None and line.get("kl") is None:
            value = line["nll"]
            return float(value[0] if isinstance(value, tuple | list) else value)
    return None


def summary_verdicts(lines: Sequence[dict[str, Any]]) -> None:
    """Add ``verdict`` (``Verdict.to_dict()``) to every summary line that cites a published row."""
    lm_nll = language_model_nll(lines)
    for line in lines:
        measured = {k: v[0] for k, v in line.items() if k in METRICS and isinstance(v, tuple | list)}
        result = verdict(line.get("paper", {}), measured if line.get("seeds") else None, lm_nll, line)
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
