"""Published rows, what reproducing them means, and a verdict for every measured row.

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
judged (``textvae.verdict_rules``). A check compares the row's metrics (``kl``, ``au``,
``iw_nll``, ``mi_batch``, ``kl_batch_stats``, ...), ``lm_nll`` (the NLL of the language-model row
of the same table) and the recipe's settings (``latent_dim``; ``gamma`` of ``bn_vae``;
``threshold`` of ``free_bits``), e.g. Zhu et al. 2020's bound
``"kl_batch_stats >= latent_dim * gamma**2 / 2"``. A check whose number the row did not record is
**not comparable: not recorded**. Verdicts: ``VERDICTS``; with several seeds each seed is judged
and ``inconclusive`` says how many hold (``textvae.verdict_rules.seeds_verdict``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textvae.errors import TextVAEError

TAGS = ("V-text", "V-code", "V-2nd", "V-calc")  # the targets of papers.md's legend; UNVERIFIED never is
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not comparable", "not run")
METRICS = (
    *("iw_nll", "ppl_iw", "elbo", "rec", "kl", "mi_batch", "mi_full", "au", "nll", "ppl"),
    *("bits_per_dim", "recon_mse", "recon_bce", "codebook_perplexity"),
    "kl_batch_stats",  # BN-VAE: the KL under batch statistics over the training batches (textvae.bn_batch_kl)
)
SETTINGS = ("lm_nll", "latent_dim", "gamma", "threshold")  # names a check may use besides METRICS
METRIC_TITLES = {"iw_nll": "IW-NLL", "ppl_iw": "PPL(IW)", "elbo": "ELBO", "rec": "Rec", "kl": "KL", "au": "AU"}
METRIC_TITLES |= {
    "kl_batch_stats": "KL(batch stats)",
    "mi_batch": "MI(batch)",
    "mi_full": "MI(full)",
    "nll": "NLL",
    "ppl": "PPL",
    "bits_per_dim": "bits/dim",
}

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
    from textvae.verdict_rules import declared_budget

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
    return reasons  # a run-time cap: textvae.verdict_rules.stopping_rule_problems


def _fmt(value: float) -> str:
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def verdict(
    spec: Mapping[str, Any], measured: Mapping[str, float] | None, lm_nll: float | None = None, budget=None
) -> Verdict | None:
    """The verdict for one row (or one seed): ``measured`` holds its metrics, ``lm_nll`` the NLL of
    the table's language-model row, ``budget`` its ``train_steps`` / ``train_epochs`` /
    ``stopped_on_time``; None when the row cites no published row.

    Any-budget checks (``expect``) are always judged; convergence checks (``expect_at_convergence``)
    only when the row reached its own stopping rule (``textvae.verdict_rules.stopping_rule_problems``).
    A failed check makes it **not reproduced**; every check judged and holding, **reproduced**; a
    check not judged (not recorded, or not at convergence) with none failing, **not comparable**."""
    from textvae.verdict_rules import stopping_rule_problems

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
            line = f"{key} {_fmt(measured[key])} vs {_fmt(published)} ± {_fmt(tolerance)}"
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
    return ", ".join(f"{name} = {_fmt(float(names[name]))}" for name in _names(text))


def published_text(spec: Mapping[str, Any]) -> str:
    """The published side of a table cell: values (or the finding) and the tag."""
    if not spec:
        return "—"
    values = ", ".join(f"{METRIC_TITLES.get(k, k)} {v:g}" for k, v in spec.get("expected", {}).items())
    finding = spec.get("finding") or "; ".join(all_checks(spec))
    body = "; ".join(part for part in (values, finding) if part)
    return f"{spec['paper']}, {spec['table']}, {spec['row']}: {body} [{spec['tag']}]"


def published_short(spec: Mapping[str, Any]) -> str:
    """A table cell: the published values (or the finding) and the tag; the citation is in the notes."""
    if not spec:
        return "—"
    values = ", ".join(f"{METRIC_TITLES.get(k, k)} {v:g}" for k, v in spec.get("expected", {}).items())
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
    (``textvae.verdict_rules.seeds_verdict``), the verdict on the seeds' mean beside."""
    from textvae.verdict_rules import seeds_verdict

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


# ---- the reproduction status: every cited published row beside what the results files measured ----

STATUS_BEGIN = "<!-- reproduction status: generated by `textvae report --reproduction`; do not edit by hand -->"
STATUS_END = "<!-- end of reproduction status -->"


def cited_rows(recipes_dir: Path) -> list[dict[str, Any]]:
    """Every published row a recipe or an ablation variant under ``recipes_dir`` cites: ``source``
    (the file), ``variant`` (None for a recipe) and ``spec``. A recipe's row that an ablation already
    cites through one of its variants is listed there only."""
    from textvae.ablation import load_ablation
    from textvae.config import read_toml
    from textvae.image.config import load_any_recipe

    ablations, recipes = [], []
    for path in sorted(Path(recipes_dir).rglob("*.toml")):
        if "variants" in read_toml(path):
            variants = load_ablation(path)[0]
            ablations += [{"source": path, "variant": v.name, "spec": v.paper} for v in variants if v.paper]
        else:
            reference = load_any_recipe(path).reference
            if reference.expected or reference.expect or reference.expect_at_convergence:
                recipes.append({"source": path, "variant": None, "spec": reference_spec(reference, {})})
    seen = {_row_key(c["spec"]) for c in ablations}
    return ablations + [c for c in recipes if _row_key(c["spec"]) not in seen]


def _row_key(spec: Mapping[str, Any]) -> tuple[str, str, str]:
    return spec["paper"], spec["table"], spec["row"]


def read_run(run_dir: Path) -> dict[str, Any]:
    """An ablation results directory: its summary lines (with verdicts), the ablation file it ran
    (``ablation.json``'s source, else the command in ``run.json``) and ``run.json`` itself."""
    import json

    from textvae.ablation import summarize
    from textvae.verdict_rules import ablation_source, with_current_citations

    results = run_dir / "results.json"
    if not results.is_file():
        raise TextVAEError(f"{run_dir}: not an ablation results directory (no results.json)")
    try:
        rows = json.loads(results.read_text(encoding="utf-8"))
        run = json.loads((run_dir / "run.json").read_text(encoding="utf-8")) if (run_dir / "run.json").is_file() else {}
    except ValueError as err:
        raise TextVAEError(f"{run_dir}: unreadable results ({err})") from None
    source = ablation_source(run_dir)
    rows = with_current_citations(rows, source)  # the measured numbers, today's citations and rules
    return {"dir": run_dir, "source": source, "lines": summarize(rows), "run": run}


def _same_file(cited: Path, source: str | None, recipes_dir: Path) -> bool:
    if source is None:
        return False
    candidates = [Path(source), Path(recipes_dir).parent / source, Path(recipes_dir) / source]
    return any(c.is_file() and c.resolve() == cited.resolve() for c in candidates)


def status_rows(recipes_dir: Path, run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """One line per cited published row and results file that measured it; 'not run' where none did.
    A run is matched by the ablation file it ran and the variant's name (or, with no file recorded,
    by the variant's name and the published row it cites)."""
    runs = [read_run(Path(d)) for d in run_dirs]
    table = []
    for cited in cited_rows(recipes_dir):
        found = []
        for run in runs:
            for line in run["lines"]:
                same_row = line.get("paper") and _row_key(line["paper"]) == _row_key(cited["spec"])
                by_file = (
                    _same_file(cited["source"], run["source"], recipes_dir) and line["variant"] == cited["variant"]
                )
                by_row = run["source"] is None and same_row and line["variant"] == cited["variant"]
                if (by_file or by_row) and line.get("paper"):
                    found.append((run, line))
        base = {"source": str(cited["source"]), "variant": cited["variant"], "spec": cited["spec"]}
        if not found:
            table.append({**base, "verdict": {"status": "not run", "reason": "no results file for this row yet"}})
        for run, line in found:
            table.append({**base, "spec": line["paper"], "line": line, "run": run, "verdict": line.get("verdict")})
    return table


def _measured_text(spec: Mapping[str, Any], line: Mapping[str, Any]) -> str:
    """The row's values of the metrics its published row names, e.g. ``KL 0.012, AU 0``."""
    used = list(spec.get("expected", {}))
    for text in all_checks(spec):
        used += [n.id for n in ast.walk(parse_check(text, "expect")) if isinstance(n, ast.Name) and n.id in METRICS]
    cells = [f"{METRIC_TITLES.get(k, k)} {_fmt(line[k][0])}" for k in dict.fromkeys(used) if line.get(k)]
    return ", ".join(cells) or "—"


def _budget_cell(line: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """Steps (epochs), device, date and the results directory of a measured row."""
    info = run.get("run", {})
    parts = [budget_text(line).removeprefix("after ") or "budget not recorded"]
    parts.append(line.get("device") or info.get("gpu") or "device not recorded")
    parts.append(line.get("date") or info.get("date") or "date not recorded")
    return ", ".join(parts) + f"; `{run['dir']}`"


def status_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """The reproduction status as Markdown, between the markers ``update_status_block`` looks for."""
    header = ["recipe", "variant", "published row", "published value or finding", "measured", "budget", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    counts = dict.fromkeys(VERDICTS, 0)
    for entry in table:
        spec, line, verdict_ = entry["spec"], entry.get("line"), entry.get("verdict") or {}
        status = verdict_.get("status", "—")
        counts[status] = counts.get(status, 0) + 1
        cells = [
            f"`{entry['source']}`",
            entry["variant"] or "—",
            f"{spec['paper'].split(',')[0]}, {spec['table']}, {spec['row']}",
            published_short(spec),
            _measured_text(spec, line) if line else "—",
            _budget_cell(line, entry["run"]) if line else "—",
            f"**{status}**"
            + (f" ({verdict_['detail']})" if verdict_.get("detail") else "")
            + (f": {verdict_['reason']}" if line and verdict_.get("reason") else ""),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return "\n".join([STATUS_BEGIN, "", *lines, "", f"{len(table)} cited rows: {summary}.", "", STATUS_END])


def update_status_block(path: Path, block: str) -> None:
    """Replace the generated block (``STATUS_BEGIN`` … ``STATUS_END``) of a Markdown file with ``block``."""
    from textvae.checkpoint import atomic_write_text

    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if STATUS_BEGIN not in text or STATUS_END not in text:
        raise TextVAEError(f"{path}: no generated reproduction-status block to update (its markers are missing)")
    before, rest = text.split(STATUS_BEGIN, 1)
    after = rest.split(STATUS_END, 1)[1]
    atomic_write_text(path, before + block + after)
