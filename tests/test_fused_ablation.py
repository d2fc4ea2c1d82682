"""``textvae ablate --fuse``: which rows fuse, and a fused group's rows against the same rows trained
alone (numbers, run directories, per-row learning-rate decay and stopping, resume after a kill).

Tolerance: a fused row and its unfused run start from the same weights, see the same batches and
the same noise, and differ only in float32 rounding (a batched-matmul LSTM against mkldnn's, sums in
another order): measured over 24-30 Adam steps, their losses and metrics agree to ~1e-6 relative.
1e-4 relative holds that with margin, while a broken fusion (a row seeing another row's noise, a
wrong KL weight) moves these numbers by more than 1e-2 (between seeds the quickstart's IW-NLL moves
±6 nats at 30 steps).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_bad_input import recipe, write_corpus, write_recipe
from textvae.checkpoint import read_checkpoint
from textvae.cli import main
from textvae.config import load_recipe
from textvae.engine.fused_group import FusedGroup
from textvae.errors import TextVAEError
from textvae.faults import ENV_VAR
from textvae.reproduction.ablation import _with_seed, load_ablation, run_ablation
from textvae.reproduction.fused import fuse_wanted, plan_fusion
from textvae.train import train

QUICKSTART = REPO / "recipes" / "quickstart" / "ablation.toml"
METRICS = ("iw_nll", "elbo", "rec", "kl", "mi_full")
RTOL = 1e-4
VARIANTS = [
    {"name": "VAE"},
    {"name": "+annealing", "remedies": [{"type": "kl_annealing", "schedule": "linear", "warmup": 10}]},
    {"name": "+word dropout", "remedies": [{"type": "word_dropout", "keep_prob": 0.5}]},
    {"name": "+free bits", "remedies": [{"type": "free_bits", "threshold": 0.1}]},
    {
        "name": "pretrain + reset",
        "remedies": [{"type": "free_bits", "threshold": 0.1}],
        "strategy": {"type": "pretrain_reset", "pretrain_steps": 8},
    },
    {"name": "LM", "recipe": "lm.toml"},
]


@pytest.fixture
def ablation_file(tmp_path) -> Path:
    """Five fusible rows (one pretrain + reset) and an LM over a tiny model (B=4, E=8, H=8, D=4), 24 Adam
    steps, 15 batches an epoch."""
    corpus = write_corpus(tmp_path / "corpus")
    edits = {
        "train.max_steps": 24,
        "train.epochs": 3,
        "train.checkpoint_every_steps": 5,
        "train.validate_every_steps": 6,
        "train.log_every_steps": 2,
        "model.decoder.dropout_in": 0.3,
        "model.decoder.dropout_out": 0.3,
    }
    write_recipe(tmp_path / "base.toml", recipe(corpus, tmp_path / "cache"), edits)
    write_recipe(tmp_path / "lm.toml", recipe(corpus, tmp_path / "cache", "lm"), edits)
    path = tmp_path / "ablation.toml"
    path.write_text(_variants_toml(), encoding="utf-8")
    return path


def _variants_toml() -> str:
    parts = ['base = "base.toml"', "seeds = [0]"]
    for variant in VARIANTS:
        parts.append(f'\n[[variants]]\nname = "{variant["name"]}"')
        if "recipe" in variant:
            parts.append(f'recipe = "{variant["recipe"]}"')
        for remedy in variant.get("remedies", []):
            parts.append("[[variants.remedies]]")
            parts += [f"{key} = {json.dumps(value)}" for key, value in remedy.items()]
        if "strategy" in variant:
            parts.append("[variants.strategy]")
            parts += [f"{key} = {json.dumps(value)}" for key, value in variant["strategy"].items()]
    return "\n".join(parts) + "\n"


def assert_same_numbers(fused: dict, alone: dict) -> None:
    for key in (key for key in METRICS if key in alone):  # the LM row has no latent metrics
        assert math.isclose(fused[key], alone[key], rel_tol=RTOL, abs_tol=1e-5), (fused["variant"], key)
    assert fused.get("au") == alone.get("au") and fused["train_steps"] == alone["train_steps"]


def test_the_quickstart_plan_fuses_the_vae_rows_and_keeps_the_others_apart():
    variants, _ = load_ablation(QUICKSTART)
    todo = [(v, 0, Path("unused")) for v in variants]
    plan = plan_fusion(todo, _with_seed)
    assert [[v.name for v, _, _ in group] for group in plan.groups] == [
        ["VAE", "+annealing", "+word dropout", "+annealing +word dropout", "+free bits", "+BoW", "+BN-VAE"]
    ]
    assert sorted(v.name for (v, _, _), _ in plan.alone) == ["+IAF", "LM", "aggressive"]
    ptb, _ = load_ablation(REPO / "recipes" / "ptb" / "ablation.toml")  # pretrain + reset fuses too
    plan = plan_fusion([(v, 0, Path("unused")) for v in ptb], _with_seed)
    assert [len(group) for group in plan.groups] == [9]
    assert sorted(v.name for (v, _, _), _ in plan.alone) == ["+IAF", "LSTM-LM", "aggressive (He et al. 2019)"]


def test_seed_replicates_fuse_when_they_share_the_data_seed():
    variants, _ = load_ablation(QUICKSTART)
    vae = [v for v in variants if v.name == "VAE"]
    assert len(plan_fusion([(vae[0], s, Path(f"s{s}")) for s in (0, 1)], _with_seed).groups) == 0
    shared, _ = load_ablation(QUICKSTART, ["train.data_seed=7"])
    vae = [v for v in shared if v.name == "VAE"]
    assert [len(g) for g in plan_fusion([(vae[0], s, Path(f"s{s}")) for s in (0, 1)], _with_seed).groups] == [2]


def test_fuse_plan_prints_the_groups_and_trains_nothing(ablation_file, tmp_path, capsys):
    out = tmp_path / "out"
    main(["ablate", str(ablation_file), "--out", str(out), "--fuse-plan"])
    printed = capsys.readouterr().out
    assert "group 1: 5 rows fused" in printed and "VAE (seed 0), +annealing (seed 0)" in printed
    assert "alone: LM (seed 0): model type 'lm' does not fuse" in printed
    assert not out.exists()
    with pytest.raises(TextVAEError, match="--fuse must be one of"):
        fuse_wanted("yes")


def test_fused_rows_equal_their_unfused_runs_and_keep_the_unfused_layout(ablation_file, tmp_path, capsys):
    fused = run_ablation(ablation_file, tmp_path / "fused", fuse="on", jobs=2)  # the group in one worker
    alone = run_ablation(ablation_file, tmp_path / "alone", fuse="off")
    assert [row.get("fused") for row in fused] == [5, 5, 5, 5, 5, False]
    assert [row.get("fused") for row in alone] == [False] * 6
    for fused_row, alone_row in zip(fused, alone, strict=True):
        assert "error" not in fused_row, fused_row
        assert_same_numbers(fused_row, alone_row)
    run_dir = tmp_path / "fused" / "annealing" / "seed0"
    for name in ("config.json", "vocab.json", "metrics.jsonl", "last.pt", "best.pt", "result.json"):
        assert (run_dir / name).is_file(), name
    assert read_checkpoint(run_dir / "last.pt")["fused_group"] == 5
    assert read_checkpoint(tmp_path / "fused" / "pretrain_reset" / "seed0" / "last.pt")["strategy"]["reset_done"]
    # textvae eval of a fused row's checkpoint gives the row's numbers
    eval_json = tmp_path / "eval.json"
    main(["eval", str(run_dir), "--json", str(eval_json), "--seed", "0"])
    capsys.readouterr()
    evaluated = json.loads(eval_json.read_text(encoding="utf-8"))
    assert evaluated["iw_nll"] == fused[1]["iw_nll"] and evaluated["kl"] == fused[1]["kl"]


def test_each_row_decays_its_learning_rate_and_stops_on_its_own(tmp_path):
    """SGD, an epoch-end validation, the lr halved at an epoch without improvement (patience 0), the
    best weights reloaded, and the run stopped at that decay: the two rows (different learning rates)
    decay and stop at their own epochs (measured: after epochs 3 and 5), each as its unfused run does."""
    corpus = write_corpus(tmp_path / "corpus")
    table = recipe(corpus, tmp_path / "cache")
    edits = {
        "train.max_steps": None,
        "train.epochs": 6,
        "train.optimizer": "sgd",
        "train.lr_decay_patience": 0,
        "train.max_lr_decays": 1,
        "train.checkpoint_every_steps": 7,
        "train.log_every_steps": 3,
        "model.decoder.dropout_in": 0.3,
    }
    del table["train"]["max_steps"]
    paths = []
    for row, lr in enumerate((1.0, 0.2)):
        row_edits = {k: v for k, v in edits.items() if v is not None} | {"train.lr": lr, "train.seed": row}
        row_edits["train.data_seed"] = 0
        paths.append(write_recipe(tmp_path / f"row{row}.toml", table, row_edits))
    recipes = [load_recipe(path) for path in paths]
    group = FusedGroup(recipes, [tmp_path / "f0", tmp_path / "f1"], [False, False])
    results = group.run()
    assert group.lockstep.slots == [1] and group.lockstep.model.rows == 1  # repacked when row 0 stopped
    for row, recipe_ in enumerate(recipes):
        alone = train(recipe_, tmp_path / f"u{row}")
        assert results[row].progress.step == alone.progress.step
        assert results[row].progress.lr_decays == alone.progress.lr_decays
        fused_log = _records(tmp_path / f"f{row}")
        alone_log = _records(tmp_path / f"u{row}")
        assert [(r["event"], r["step"], r.get("lr")) for r in fused_log] == [
            (r["event"], r["step"], r.get("lr")) for r in alone_log
        ]
        for a, b in zip(fused_log, alone_log, strict=True):
            for key in ("loss", "kl", "grad_norm", "grad_norm_encoder", "grad_norm_decoder"):
                assert (key in a) == (key in b), key
                if key in a:  # the gradient norms too: each row's own, before clipping
                    assert math.isclose(a[key], b[key], rel_tol=RTOL, abs_tol=1e-6), (row, key, a, b)
    steps = [r.progress.step for r in results]
    assert steps[0] < steps[1]  # row 0 stopped first; row 1 trained on alone in the group


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if '"event": "train"' in line or '"event": "valid"' in line]


def test_a_killed_fused_ablation_resumes_every_row(ablation_file, tmp_path):
    _killed_ablation(ablation_file, tmp_path / "killed", ["VAE", "+word dropout"], "on")
    assert not (tmp_path / "killed" / "vae" / "seed0" / "result.json").exists()
    assert read_checkpoint(tmp_path / "killed" / "vae" / "seed0" / "last.pt")["progress"]["step"] == 10
    resumed = run_ablation(ablation_file, tmp_path / "killed", fuse="on", only=["VAE", "+word dropout"])
    straight = run_ablation(ablation_file, tmp_path / "straight", fuse="on", only=["VAE", "+word dropout"])
    for a, b in zip(resumed, straight, strict=True):
        assert a["fused"] == b["fused"] == 2
        for key in METRICS:
            assert a[key] == b[key], key
    for slug in ("vae", "word_dropout"):
        last = [read_checkpoint(tmp_path / d / slug / "seed0" / "last.pt")["model"] for d in ("killed", "straight")]
        assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])


def _killed_ablation(ablation_file: Path, out: Path, only: list[str], fuse: str) -> None:
    """``textvae ablate`` killed by SIGKILL right after step 13 (checkpoints at step 10)."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | {ENV_VAR: "after_step:13"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    command = [sys.executable, "-m", "textvae", "ablate", str(ablation_file), "--out", str(out), "--fuse", fuse]
    command += [arg for name in only for arg in ("--only", name)]
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]


def test_rows_begun_alone_resume_into_a_group_only_from_the_same_batch(ablation_file, tmp_path):
    """Two rows killed while training alone (both at step 10) resume as one fused group and end as
    their uninterrupted unfused runs do; a row killed alone beside a fresh one (step 10 against 0)
    cannot join it: both train alone."""
    two = ["VAE", "+free bits"]
    for name in two:  # one at a time, each killed at its own step 13
        _killed_ablation(ablation_file, tmp_path / "both", [name], "off")
    resumed = run_ablation(ablation_file, tmp_path / "both", fuse="on", only=two)
    straight = run_ablation(ablation_file, tmp_path / "straight", fuse="off", only=two)
    assert [row["fused"] for row in resumed] == [2, 2]
    for a, b in zip(resumed, straight, strict=True):
        assert_same_numbers(a, b)
    _killed_ablation(ablation_file, tmp_path / "one", ["VAE"], "off")
    mixed = run_ablation(ablation_file, tmp_path / "one", fuse="on", only=two)
    assert [row["fused"] for row in mixed] == [False, False]
    for a, b in zip(mixed, straight, strict=True):
        assert_same_numbers(a, b)


@pytest.mark.slow
def test_the_quickstart_ablation_fused_equals_unfused(tmp_path):
    """The issue's CI check: quickstart, 30 steps, the fusible rows, a small evaluation."""
    only = ["VAE", "+annealing", "+word dropout", "+annealing +word dropout", "+free bits"]
    settings = ["train.max_steps=30", "train.max_valid_sentences=50", "eval.max_sentences=50", "eval.iw_samples=5"]
    settings.append("eval.iw_chunk_size=5")
    fused = run_ablation(QUICKSTART, tmp_path / "fused", overrides=settings, only=only, fuse="on")
    alone = run_ablation(QUICKSTART, tmp_path / "alone", overrides=settings, only=only, fuse="off")
    assert [row["fused"] for row in fused] == [5] * 5
    for fused_row, alone_row in zip(fused, alone, strict=True):
        assert_same_numbers(fused_row, alone_row)
