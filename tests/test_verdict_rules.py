"""The rules a verdict follows (textvae.verdicts, textvae.evaluation.bn_batch_kl): the BN-VAE bound on the
KL under batch statistics, checks that say when they apply, seeds that can disagree, and re-rendering
under the recipe's current citation."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_ablation import SENTENCES, _write_ablation, corpus  # noqa: F401 (the fixture)
from textvae.config import ReferenceConfig
from textvae.reproduction.ablation import load_ablation, run_ablation, write_results
from textvae.reproduction.tables import summarize
from textvae.verdicts import reference_spec, verdict

ROOT = Path(__file__).resolve().parents[1]

BN_VARIANT = """
[[variants]]
name = "+BN-VAE, eps = {eps}"
[variants.paper]
paper = "Zhu et al. 2020"
table = "§3"
row = "BN-VAE"
tag = "V-calc"
expect = ["kl_batch_stats >= latent_dim * gamma**2 / 2"]
[[variants.remedies]]
type = "bn_vae"
gamma = 0.6
eps = {eps}
[variants.model.encoder]
weight_init_range = 0.5  # means that vary well above ε = 1e-10 within a batch from the start
"""


def _spec(declared=None, **fields):
    base = {"paper": "He et al. 2019", "table": "Table 1", "row": "VAE", "tag": "V-text"}
    recipe = {"data": {"dataset": "ptb"}, "train": {"epochs": 40, "max_minutes": 6.5}, "model": {"latent_dim": 4}}
    return reference_spec(ReferenceConfig(**{**base, **fields}), recipe, declared)


# ---- rule 1: the BN-VAE bound is checked on the KL under batch statistics ----


class _Split:
    """The part of an EncodedSplit that batching reads: lengths and rows."""

    def __init__(self, rows):
        self._rows, self.lengths = rows, np.array([len(r) for r in rows])

    def __len__(self):
        return len(self._rows)

    def rows(self, indices):
        return [self._rows[i] for i in indices]


@pytest.mark.parametrize(("eps", "status"), [(1e-10, "reproduced"), (1e4, "not reproduced")])
def test_the_bn_vae_bound_is_checked_on_the_kl_under_batch_statistics(tmp_path, corpus, eps, status):  # noqa: F811
    """A large ε shrinks the normalized means' batch spread below γ: the bound's check fails."""
    path = _write_ablation(tmp_path, corpus, BN_VARIANT.format(eps=eps))
    name = f"+BN-VAE, eps = {eps}"
    [row] = run_ablation(path, tmp_path / "out", seeds=[0], only=[name])
    bound = 3 * 0.6**2 / 2  # latent_dim 3 (the tiny recipe), γ = 0.6
    assert row["kl_batch_stats_sentences"] + row["kl_batch_stats_left_out"] == len(SENTENCES)
    assert (row["kl_batch_stats"] >= bound) == (status == "reproduced")
    assert row["verdict"]["status"] == status and "kl_batch_stats = " in row["verdict"]["reason"]
    assert row["bn_eval_variance_ratio"] > 0
    table = (tmp_path / "out" / "results.md").read_text()
    assert "KL(batch stats)" in table or "kl_batch_stats" in table


def test_batch_statistics_use_each_batch_and_leave_the_running_statistics_alone(vocab, tiny_vae):
    """The KL under batch statistics equals the KL of means normalized by hand per batch; dropout is
    off (two passes agree), the running statistics and the modes are untouched."""
    from tests.conftest import tiny_vae_spec
    from textvae.data.batching import bucketed_batches, iterate_batches
    from textvae.evaluation.bn_batch_kl import batch_statistics, batch_statistics_kl
    from textvae.models import build_model

    torch.manual_seed(0)
    spec = tiny_vae_spec(dropout_in=0.5)
    model = build_model(spec, vocab, [{"type": "bn_vae", "gamma": 0.6, "eps": 1e-5}]).train()
    norm = model.remedies[0].norm
    rows = [[1, *np.random.default_rng(i).integers(4, len(vocab), size=2 + i % 5).tolist(), 2] for i in range(11)]
    split = _Split(rows)
    before = (norm.running_mean.clone(), norm.running_var.clone(), int(norm.num_batches_tracked))
    first = batch_statistics_kl(model, split, vocab.pad_id, 4, seed=3)
    second = batch_statistics_kl(model, split, vocab.pad_id, 4, seed=3)
    assert first == second  # dropout off
    assert model.training and norm.training  # modes restored
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])
    assert int(norm.num_batches_tracked) == before[2]
    batches = [b for b in bucketed_batches(split.lengths, 4, shuffle=True, seed=3) if len(b) > 1]
    total = 0.0
    with batch_statistics(model), torch.no_grad():
        for batch in iterate_batches(split, batches, vocab.pad_id):
            raw, _ = model.encoder(batch.tokens, batch.lengths)
            mean = raw.mean
            normalized = (mean - mean.mean(0)) / torch.sqrt(mean.var(0, unbiased=False) + 1e-5)
            shifted = 0.6 * normalized + model.remedies[0].shift
            total += float((0.5 * (shifted**2 + raw.logvar.exp() - raw.logvar - 1)).sum())
    assert first["kl_batch_stats"] == pytest.approx(total / first["kl_batch_stats_sentences"], rel=1e-5)
    assert first["kl_batch_stats_left_out"] == len(rows) - first["kl_batch_stats_sentences"]


# ---- rule 2: checks say when they apply ----


def test_a_capped_row_is_not_comparable_at_convergence_and_still_judged_at_any_budget():
    spec = _spec(expect=["kl < 0.1"], expect_at_convergence=["iw_nll <= lm_nll + 1"])
    capped = {"train_steps": 48250, "train_epochs": 37, "stopped_on_time": True}
    held = verdict(spec, {"kl": 0.01, "iw_nll": 102.2}, lm_nll=100.0, budget=capped)
    assert held.status == "not comparable"
    assert "not comparable at this budget (checks at convergence): iw_nll <= lm_nll + 1" in held.reason
    assert "wall-clock cap (train.max_minutes = 6.5)" in held.reason and "holds: kl < 0.1" in held.reason
    failed = verdict(spec, {"kl": 0.5, "iw_nll": 102.2}, lm_nll=100.0, budget=capped)
    assert failed.status == "not reproduced" and "fails: kl < 0.1" in failed.reason  # any budget: judged
    finished = {**capped, "stopped_on_time": False}
    assert verdict(spec, {"kl": 0.01, "iw_nll": 102.2}, lm_nll=100.0, budget=finished).status == "not reproduced"
    assert verdict(spec, {"kl": 0.01, "iw_nll": 100.5}, lm_nll=100.0, budget=finished).status == "reproduced"


def test_a_budget_set_at_run_time_is_not_the_recipes_stopping_rule(tmp_path, corpus):  # noqa: F811
    """The recipe's own max_steps is the row's stopping rule; a --set of max_steps is a cap."""
    variant = '[[variants]]\nname = "cited"\n[variants.paper]\npaper = "P"\ntable = "T"\nrow = "R"\ntag = "V-text"\n'
    variant += 'expect = ["kl >= 0"]\nexpect_at_convergence = ["au >= 0"]\n[variants.train]\nlr = 0.02\n'
    path = _write_ablation(tmp_path, corpus, variant)
    own = next(v for v in load_ablation(path)[0] if v.name == "cited").paper
    capped = next(v for v in load_ablation(path, ["train.max_steps=4"])[0] if v.name == "cited").paper
    assert own["declared"] == {"epochs": 100, "max_steps": 6} and capped["setting"]["max_steps"] == 4
    measured, budget = {"kl": 0.2, "au": 1}, {"train_steps": 4}
    assert verdict(own, measured, budget={"train_steps": 6}).status == "reproduced"
    result = verdict(capped, measured, budget=budget)
    assert result.status == "not comparable" and "max_steps = 4 set at run time (the recipe's: 6)" in result.reason
    assert "holds: kl >= 0" in result.reason


# ---- rule 3: seeds can disagree ----


def _rows(kls, spec):
    return [
        {"variant": "VAE", "seed": s, "kl": kl, "au": 0, "train_steps": 1000, "paper": spec} for s, kl in enumerate(kls)
    ]


@pytest.mark.parametrize(
    ("kls", "status", "detail"),
    [
        ([0.02, 0.03, 0.01], "reproduced", "3 of 3 seeds hold"),
        ([0.02, 0.3, 0.01], "inconclusive", "2 of 3 seeds hold"),
        ([0.2, 0.3, 0.4], "not reproduced", "0 of 3 seeds hold"),
    ],
)
def test_each_seed_is_judged_and_seeds_that_disagree_are_inconclusive(tmp_path, kls, status, detail):
    spec = _spec(expect=["kl < 0.1"])
    [line] = summarize(_rows(kls, spec))
    assert line["verdict"]["status"] == status and line["verdict"]["detail"] == detail
    assert f"seed 1: {'reproduced' if kls[1] < 0.1 else 'not reproduced'}" in line["verdict"]["reason"]
    mean_status = "reproduced" if np.mean(kls) < 0.1 else "not reproduced"
    assert f"the seeds' mean: {mean_status}" in line["verdict"]["reason"]  # the mean shown beside
    write_results(tmp_path, _rows(kls, spec))
    assert f"| {status} ({detail}) |" in (tmp_path / "results.md").read_text()


def test_every_seed_is_evaluated_on_the_same_sentences(tmp_path, corpus):  # noqa: F811
    """eval.seed fixes the subset; the training seed draws the estimators' samples."""
    from textvae.api import load_checkpoint
    from textvae.data.corpus import encode_split
    from textvae.evaluation.evaluate import EvalSettings, evaluate
    from textvae.reproduction.ablation import _with_seed

    path = _write_ablation(tmp_path, corpus)
    recipe = load_ablation(path)[0][0].recipe
    assert _with_seed(recipe, 7).eval.seed == recipe.eval.seed and _with_seed(recipe, 7).train.seed == 7
    rows = run_ablation(path, tmp_path / "out", seeds=[0, 1], only=["LM"])
    assert {r["eval_subset_seed"] for r in rows} == {recipe.eval.seed}
    loaded = load_checkpoint(tmp_path / "out" / "lm" / "seed0" / "best.pt")
    split = encode_split(recipe.data, "test", loaded.vocab)
    distinct = [" ".join(map(str, split.rows([i])[0])) for i in range(len(split))]
    assert len(set(distinct)) > 5

    def nll(seed, subset_seed):
        settings = EvalSettings(max_sentences=5, seed=seed, subset_seed=subset_seed, progress_bar=False)
        return evaluate(loaded.model, split, loaded.vocab.pad_id, settings).metrics["nll"]

    assert nll(1, 0) == nll(2, 0)  # the LM is exact: the same sentences give the same NLL
    assert nll(1, 0) != nll(1, 1)


# ---- rule 4: re-rendering applies the recipe's current citation ----


def test_a_corrected_citation_reaches_an_old_results_file(tmp_path, monkeypatch):
    """Rows frozen with the old BN-VAE check (on the test-time kl) re-render under today's check on
    kl_batch_stats, which they did not record: not comparable, not recorded."""
    from textvae.cli import main

    monkeypatch.chdir(ROOT)
    variants = load_ablation(ROOT / "recipes" / "quickstart" / "ablation.toml")[0]
    run = tmp_path / "run"
    run.mkdir()
    rows = []
    for v in variants:
        paper = dict(v.paper)
        if v.name == "+BN-VAE":  # the citation as it was frozen before 2026-12-07
            paper = {**paper, "expect": ["kl >= latent_dim * gamma**2 / 2"], "finding": "KL ≥ D·γ²/2"}
            paper.pop("declared")
        metrics = {"nll": 124.0} if v.name == "LM" else {"iw_nll": 124.5, "kl": 2.9, "au": 3}
        rows.append({"variant": v.name, "seed": 0, **metrics, "paper": paper, "train_steps": 1000})
    write_results(run, rows)
    (run / "ablation.json").write_text(json.dumps({"source": "recipes/quickstart/ablation.toml"}))
    old = json.loads((run / "results.json").read_text())
    assert next(r for r in old if r["variant"] == "+BN-VAE")["verdict"]["status"] == "reproduced"
    assert main(["report", str(run)]) == 0
    new = {r["variant"]: r for r in json.loads((run / "results.json").read_text())}
    bn = new["+BN-VAE"]
    assert bn["paper"]["expect"] == ["kl_batch_stats >= latent_dim * gamma**2 / 2"] and bn["kl"] == 2.9
    assert bn["verdict"]["status"] == "not comparable"
    assert bn["verdict"]["reason"].startswith("not recorded: kl_batch_stats")
    assert "**not comparable**: not recorded: kl_batch_stats" in (run / "results.md").read_text()
