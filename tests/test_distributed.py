"""``torchrun --nproc_per_node=2 -m textvae train`` (gloo, CPU) against one process on the same global batch.

The two processes split every global batch of 8 sentences 4 + 4 and DistributedDataParallel
averages their gradients, with each rank's loss scaled so the average is the gradient of the
global batch's mean loss. Stated tolerances:
- a model without randomness (the LSTM LM, dropout 0): weights equal to the single-process run
  within 1e-5 absolute after 16 Adam steps (only float summation order differs);
- the VAE: every process draws its own z noise, so the two runs differ by Monte-Carlo noise,
  which Adam turns into steps of the size of the learning rate for the encoder's tiny gradients:
  the logged training and validation losses stay within 5% of the single-process run's (measured:
  at most 2.1%). With the noise made identical in both (z = mean + 0.3·std, a hand check on
  2026-11-25) the VAE's weights matched within 1e-5 too.
Rank 0 alone writes: one ``metrics.jsonl`` line per logged step, whole checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_bad_input import recipe, write_corpus, write_recipe
from textvae.checkpoint import read_checkpoint
from textvae.faults import ENV_VAR

EDITS = {
    "train.batch_size": 8,
    "train.max_steps": 16,
    "train.epochs": 3,
    "train.log_every_steps": 4,
    "train.validate_every_steps": 8,
    "train.checkpoint_every_steps": 8,
    "eval.max_sentences": 8,
}


def _run(args: list, processes: int, fault: str | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "textvae"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        launcher += ["-m", "textvae"]
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | {"OMP_NUM_THREADS": "1"}
    if fault is not None:
        env[ENV_VAR] = fault
    return subprocess.run(
        [*launcher, "train", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    return write_corpus(root / "corpus")


def _train_both(tmp_path: Path, corpus: Path, model: str) -> tuple[Path, Path]:
    recipe_path = write_recipe(tmp_path / f"{model}.toml", recipe(corpus, tmp_path / "cache", model), EDITS)
    single, double = tmp_path / "one", tmp_path / "two"
    first = _run([recipe_path, "--out", single], processes=1)
    assert first.returncode == 0, first.stderr
    second = _run([recipe_path, "--out", double], processes=2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("trained 16 steps") == 1  # rank 0 reports, once
    return single, double


def _records(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def _assert_rank0_wrote_once(run_dir: Path) -> None:
    steps = [r["step"] for r in _records(run_dir, "train")]
    assert steps == [4, 8, 12, 16]
    assert [r["step"] for r in _records(run_dir, "valid")] == [8, 16]
    assert read_checkpoint(run_dir / "last.pt")["progress"]["step"] == 16
    assert not list(run_dir.glob(".*.tmp"))


def test_two_processes_train_the_language_model_exactly_like_one(tmp_path, corpus):
    single, double = _train_both(tmp_path, corpus, "lm")
    _assert_rank0_wrote_once(double)
    one, two = read_checkpoint(single / "last.pt")["model"], read_checkpoint(double / "last.pt")["model"]
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=0, atol=1e-5, msg=name)
    for a, b in zip(_records(single, "valid"), _records(double, "valid"), strict=True):
        assert b["num_sentences"] == a["num_sentences"]  # validation covers the same sentences, split over ranks
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    for a, b in zip(_records(single, "train"), _records(double, "train"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)  # sums and counts over both ranks
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # of the all-reduced gradients


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory, corpus) -> tuple[Path, Path]:
    return _train_both(tmp_path_factory.mktemp("vae"), corpus, "vae")


def test_two_processes_train_the_vae_like_one_within_monte_carlo_noise(vae_runs):
    single, double = vae_runs
    _assert_rank0_wrote_once(double)
    for event in ("train", "valid"):
        for a, b in zip(_records(single, event), _records(double, event), strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=0.05)


def test_a_strategy_that_cannot_run_distributed_is_a_one_line_error(tmp_path, corpus):
    edits = {**EDITS, "strategy.type": "aggressive"}
    recipe_path = write_recipe(tmp_path / "agg.toml", recipe(corpus, tmp_path / "cache", "vae"), edits)
    result = _run([recipe_path, "--out", tmp_path / "run"], processes=2)
    assert result.returncode != 0
    assert "textvae: error: strategy 'aggressive' does not support torchrun" in result.stderr
    # torchrun itself reports a failed child with its own traceback; none may come from textvae's code
    assert f'File "{REPO / "textvae"}' not in result.stderr
    assert result.stderr.count("textvae: error:") == 2  # each process says it once
    assert not (tmp_path / "run").exists()


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_one(tmp_path, vae_runs):
    """Both processes die after step 10 (last checkpoint at step 8); torchrun --resume continues
    with every rank's own RNG state and ends bit-for-bit where the uninterrupted 2-process run did."""
    _, double = vae_runs
    recipe_path = double.parent / "vae.toml"
    run_dir = tmp_path / "killed"
    killed = _run([recipe_path, "--out", run_dir], processes=2, fault="after_step:10")
    assert killed.returncode != 0
    assert read_checkpoint(run_dir / "last.pt")["progress"]["step"] == 8
    resumed = _run([recipe_path, "--out", run_dir, "--resume"], processes=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final, expected = read_checkpoint(run_dir / "last.pt"), read_checkpoint(double / "last.pt")
    for name, value in expected["model"].items():
        torch.testing.assert_close(final["model"][name], value, rtol=0, atol=0, msg=name)
    assert _records(run_dir, "valid") == _records(double, "valid")
