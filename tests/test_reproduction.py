"""Verdicts from published values and findings (textvae.verdicts), and the recipes' citations."""

import re
from pathlib import Path

import pytest

from textvae.config import ReferenceConfig, read_toml
from textvae.errors import TextVAEError
from textvae.families import load_any_recipe
from textvae.reproduction.ablation import load_ablation
from textvae.verdicts import mi_is_noise, reference_spec, run_check, verdict

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT.parent / "shared" / "papers.md"


def _spec(**fields):
    base = {"paper": "He et al. 2019", "table": "Table 1", "row": "VAE", "tag": "V-text"}
    recipe = {"data": {"dataset": "yahoo"}, "train": {"epochs": 100}, "model": {"latent_dim": 4}}
    recipe["remedies"] = [{"type": "bn_vae", "gamma": 0.5}]
    return reference_spec(ReferenceConfig(**{**base, **fields}), recipe)


@pytest.mark.parametrize(("measured", "status"), [(329.79, "reproduced"), (329.81, "not reproduced")])
def test_a_published_value_is_reproduced_within_its_tolerance_only(measured, status):
    spec = _spec(expected={"iw_nll": 328.8}, tolerance={"iw_nll": 1.0}, dataset="yahoo", epochs=100)
    result = verdict(spec, {"iw_nll": measured})
    assert result.status == status
    assert f"iw_nll {measured:.2f} vs 328.80 ± 1" in result.reason


def test_published_values_on_other_data_or_a_smaller_budget_are_not_comparable():
    spec = _spec(expected={"kl": 0.0}, tolerance={"kl": 0.1}, dataset="ptb", epochs=100)
    result = verdict(spec, {"kl": 0.0})
    assert result.status == "not comparable" and "data yahoo, the paper's ptb" in result.reason
    capped = {**spec, "dataset": "yahoo", "setting": {**spec["setting"], "max_steps": 1000}}
    assert verdict(capped, {"kl": 0.0}).status == "not comparable"
    assert verdict({**spec, "dataset": "yahoo"}, {"kl": 0.0}).status == "reproduced"
    assert verdict(spec, None).status == "not run"
    assert verdict({}, {"kl": 0.0}) is None  # a row that cites nothing has no verdict


@pytest.mark.parametrize(("kl", "status"), [(0.51, "reproduced"), (0.49, "not reproduced")])
def test_a_finding_is_checked_at_any_budget_with_the_recipe_settings(kl, status):
    spec = _spec(expect=["kl >= latent_dim * gamma**2 / 2"], dataset="ptb")  # 4 · 0.25 / 2 = 0.5
    result = verdict(spec, {"kl": kl}, budget={"train_steps": (1000.0, 0.0)})
    assert result.status == status
    assert "gamma = 0.500" in result.reason and "after 1000 steps" in result.reason
    assert "the paper's ptb" in result.reason


def test_the_collapse_finding_uses_the_language_model_row():
    spec = _spec(expect=["kl < 0.1", "au == 0", "iw_nll <= lm_nll + 1"])
    assert verdict(spec, {"kl": 0.0, "au": 0, "iw_nll": 100.9}, lm_nll=100.0).status == "reproduced"
    assert verdict(spec, {"kl": 0.0, "au": 0, "iw_nll": 101.1}, lm_nll=100.0).status == "not reproduced"
    assert verdict(spec, {"kl": 0.0, "au": 1, "iw_nll": 100.0}, lm_nll=100.0).status == "not reproduced"
    without_lm = verdict(spec, {"kl": 0.0, "au": 0, "iw_nll": 100.0})
    assert without_lm.status == "not comparable"  # a needed number missing: never a silent pass
    assert without_lm.reason.startswith("not recorded: iw_nll <= lm_nll + 1 (no language-model row")
    assert "holds: kl < 0.1" in without_lm.reason


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expected": {"kl": 0.0}, "tolerance": {"kl": 0.1}, "tag": ""}, "tag"),
        ({"expected": {"kl": 0.0}, "tolerance": {"kl": 0.1}, "tag": "UNVERIFIED"}, "sanity check"),
        ({"expected": {"kl": 0.0}}, "tolerance"),
        ({"expected": {"klx": 0.0}, "tolerance": {"klx": 0.1}}, "not a metric"),
        ({"expect": ["kl"]}, "comparison"),
        ({"expect": ["kl < bogus"]}, "unknown name"),
        ({"expect": ["kl < __import__('os').getpid()"]}, "only numbers"),
        ({"expect": ["kl < 'a'"]}, "not a number"),
    ],
)
def test_a_bad_reference_is_a_one_line_error(fields, message):
    base = {"paper": "P", "table": "T", "row": "R", "tag": "V-text"}
    with pytest.raises(TextVAEError, match=message):
        ReferenceConfig(**{**base, **fields})


def test_checks_evaluate_arithmetic_and_chained_comparisons():
    assert run_check("0 <= kl < latent_dim * threshold", {"kl": 0.5, "latent_dim": 4, "threshold": 0.25})
    assert not run_check("-kl > -0.1", {"kl": 0.2})
    assert run_check("kl < 0.1", {}) is None


def test_an_mi_estimate_is_noise_within_two_standard_errors_of_zero_or_above_the_kl():
    assert mi_is_noise(0.1, 0.06, 1.0) and not mi_is_noise(0.13, 0.06, 1.0)
    assert mi_is_noise(0.854, 0.5, 0.042)  # the collapsed GPU rows of the issue: MI above the KL
    assert not mi_is_noise(0.854, None, None)


def _cited_references():
    """(file, reference table) for every recipe [reference] and ablation variant paper under recipes/."""
    for path in sorted((ROOT / "recipes").rglob("*.toml")):
        raw = read_toml(path)
        if "variants" in raw:
            for variant in load_ablation(path)[0]:
                if variant.paper:
                    yield f"{path.name}: {variant.name}", variant.paper
        elif any(raw.get("reference", {}).get(k) for k in ("expected", "expect", "expect_at_convergence")):
            yield path.name, reference_spec(load_any_recipe(path).reference, {})


def test_every_cited_row_carries_a_tag_from_the_papers_legend():
    legend = PAPERS.read_text(encoding="utf-8").split("## Sources")[0]
    tags = set(re.findall(r"\*\*\[(V-[a-z0-9]+)\]\*\*", legend))
    assert tags == {"V-text", "V-code", "V-2nd", "V-calc"}
    cited = list(_cited_references())
    assert len(cited) >= 20
    for where, spec in cited:
        assert spec["tag"] in tags, where
        assert spec["paper"] and spec["table"] and spec["row"], where


def _ablation_results(tmp_path, kl_by_variant, source="recipes/quickstart/ablation.toml"):
    """A results directory as `textvae ablate` writes it, for the quickstart's variants, without training."""
    from textvae.reproduction.ablation import load_ablation, write_results

    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for v in load_ablation(ROOT / "recipes" / "quickstart" / "ablation.toml")[0]:
        kl = kl_by_variant.get(v.name, 1.0)
        metrics = {"iw_nll": 124.0, "kl": kl, "au": 3, "kl_per_dim": [kl / 16] * 16}
        metrics = {"nll": 124.25} if v.name == "LM" else metrics
        rows.append({"variant": v.name, "seed": 0, **metrics, "paper": v.paper, "train_steps": 1000, "device": "cpu"})
    write_results(run, rows)
    (run / "ablation.json").write_text(f'{{"source": "{source}"}}')
    return run


def test_the_status_table_matches_the_results_files_it_was_built_from(tmp_path, monkeypatch):
    import json

    from textvae.reproduction.status import STATUS_BEGIN, STATUS_END, status_markdown, status_rows

    monkeypatch.chdir(ROOT)
    run = _ablation_results(tmp_path, {"VAE": 0.02, "+annealing": 0.5})
    saved = {r["variant"]: r for r in json.loads((run / "results.json").read_text())}
    assert saved["VAE"]["verdict"]["status"] == "not reproduced"  # AU 3: not collapsed
    assert (
        saved["+annealing"]["verdict"]["status"] == "not reproduced"
        and "kl = 0.500" in saved["+annealing"]["verdict"]["reason"]
    )
    assert saved["+free bits"]["verdict"]["status"] == "reproduced"
    assert "verdict" not in saved["LM"] and "verdict" not in saved["+BoW"]  # they cite no published row
    assert (run / "active_units.png").stat().st_size > 1000  # final KL and AU, published values and verdicts

    table = status_rows(Path("recipes"), [run])
    measured = [t for t in table if t.get("line")]
    assert {t["variant"] for t in measured} == {v for v, r in saved.items() if "verdict" in r}
    for entry in measured:
        assert entry["source"] == "recipes/quickstart/ablation.toml"
        assert entry["verdict"] == saved[entry["variant"]]["verdict"]
    assert all(t["verdict"]["status"] == "not run" for t in table if not t.get("line"))
    text = status_markdown(table)
    assert text.startswith(STATUS_BEGIN) and text.endswith(STATUS_END)
    assert "| `recipes/quickstart/ablation.toml` | +annealing |" in text and "KL 0.500" in text
    counts = {s: sum(t["verdict"]["status"] == s for t in table) for s in ("reproduced", "not reproduced", "not run")}
    assert (
        f"{len(table)} cited rows: {counts['reproduced']} reproduced, {counts['not reproduced']} not reproduced" in text
    )


def test_report_reproduction_rewrites_the_readme_block_and_rejects_a_bad_directory(tmp_path, monkeypatch):
    from textvae.cli import main
    from textvae.reproduction.status import STATUS_BEGIN, STATUS_END

    monkeypatch.chdir(ROOT)
    run = _ablation_results(tmp_path, {})
    readme = tmp_path / "README.md"
    readme.write_text(f"# before\n{STATUS_BEGIN}\nold\n{STATUS_END}\nafter\n")
    assert main(["report", "--reproduction", "recipes", str(run), "--update", str(readme)]) == 0
    text = readme.read_text()
    assert (
        text.startswith("# before\n") and text.endswith("after\n") and "\nold\n" not in text and "| +BN-VAE |" in text
    )
    assert main(["report", "--reproduction", "recipes", str(tmp_path)]) == 2  # no results.json there
    (tmp_path / "plain.md").write_text("no markers\n")
    assert main(["report", "--reproduction", "recipes", "--update", str(tmp_path / "plain.md")]) == 2


def test_the_readmes_hold_the_status_generated_from_the_committed_results(monkeypatch):
    from textvae.reproduction.status import status_markdown, status_rows

    monkeypatch.chdir(ROOT)
    runs = sorted(p.parent for p in Path("recipes/results").glob("*/results.json"))
    block = status_markdown(status_rows(Path("recipes"), runs))
    for readme in ("docs/recipes.md", "recipes/README.md"):
        assert block in (ROOT / readme).read_text(encoding="utf-8"), f"{readme}: regenerate its status block"


def test_report_of_eval_results_shows_the_published_row_and_the_verdict(tmp_path):
    import json

    from textvae.cli import main
    from textvae.config import load_recipe
    from textvae.reproduction.tables import markdown_table

    config = load_recipe(ROOT / "recipes" / "yahoo" / "lstm_vae.toml").to_dict()
    result = {"kind": "vae", "iw_nll": 329.5, "kl": 0.05, "mi_batch": 0.02, "mi_batch_se": 0.03, "config": config}
    table = markdown_table([("yahoo_vae", result)])
    assert "| published | verdict |" in table and "IW-NLL 328.8, KL 0, MI(batch) 0 [V-text] | reproduced |" in table
    assert "0.020 †" in table  # within two standard errors of 0
    worse = markdown_table([("yahoo_vae", {**result, "iw_nll": 330.1})])
    assert "| not reproduced |" in worse and "iw_nll 330.10 vs 328.80 ± 1" in worse
    path = tmp_path / "eval_test.json"
    path.write_text(json.dumps(result))
    assert main(["report", str(path)]) == 0
