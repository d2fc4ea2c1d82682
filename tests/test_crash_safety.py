"""A training run killed with SIGKILL anywhere resumes to exactly the result of an uninterrupted run.

Each run is the real command line (``python -m textvae train``) in a subprocess on the deterministic
CPU path (one thread). The kill comes either from inside, at a named point (``TEXTVAE_FAULT``, see
``textvae.faults``: after a given step, or halfway through writing a file), or from outside, at
whatever moment a poll of ``metrics.jsonl`` happens to see. After every kill:
- every checkpoint on disk reads back whole (no half-written file under a final name);
- ``train --resume`` (or a plain restart, when the kill came before the first checkpoint) finishes;
- the final weights are bit-for-bit those of the uninterrupted run, and so are the validation records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_bad_input import recipe, write_corpus, write_recipe
from textvae.checkpoint import previous_path, read_checkpoint, write_checkpoint_payload
from textvae.faults import ENV_VAR

MAX_STEPS = 24


def _train(args: list, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if fault is not None:
        env[ENV_VAR] = fault
    return subprocess.run(
        [sys.executable, "-m", "textvae", "train", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The corpus, the recipe (dropout on, so RNG state matters) and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("crash")
    corpus = write_corpus(root / "corpus")
    edits = {
        "train.max_steps": MAX_STEPS,
        "train.epochs": 3,  # 15 batches per epoch: the run crosses epoch boundaries
        "train.checkpoint_every_steps": 5,
        "train.validate_every_steps": 6,
        "train.log_every_steps": 2,
        "model.decoder.dropout_in": 0.3,
        "model.decoder.dropout_out": 0.3,
    }
    recipe_path = write_recipe(root / "recipe.toml", recipe(corpus, root / "cache"), edits)
    reference = root / "reference"
    result = _train([recipe_path, "--out", reference])
    assert result.returncode == 0, result.stderr
    return recipe_path, reference


def _valid_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == "valid"]


def _assert_all_checkpoints_readable(run_dir: Path) -> None:
    for path in run_dir.glob("*.pt"):
        read_checkpoint(path)  # raises on a half-written or damaged file


def _resume_and_compare(recipe_path: Path, run_dir: Path, reference: Path) -> None:
    _assert_all_checkpoints_readable(run_dir)
    resume = ["--resume"] if (run_dir / "last.pt").is_file() else []
    result = _train([recipe_path, "--out", run_dir, *resume])
    assert result.returncode == 0, result.stderr
    final = read_checkpoint(run_dir / "last.pt")
    expected = read_checkpoint(reference / "last.pt")
    assert final["progress"] == expected["progress"]
    for name, value in expected["model"].items():
        torch.testing.assert_close(final["model"][name], value, rtol=0, atol=0, msg=name)
    assert _valid_records(run_dir) == _valid_records(reference)
    assert not list(run_dir.glob(".*.tmp"))  # what a killed writer left behind is cleaned up on resume


# writes 1 and 2 are config.json and vocab.json; then last.pt at steps 5, 10, ..., best.pt at validations
FAULTS = [
    "after_step:3",  # before the first checkpoint: nothing to resume, the run starts over
    "after_step:5",  # right after the first checkpoint
    "after_step:13",  # between checkpoints, after a validation
    "after_step:16",  # in the second epoch (15 batches per epoch)
    "checkpoint_write:1",  # halfway through config.json
    "checkpoint_write:3",  # halfway through the first last.pt
    "checkpoint_write:6",  # halfway through a later checkpoint, with .prev copies around
]


@pytest.mark.parametrize("fault", FAULTS)
def test_killed_at_a_named_point_resumes_to_the_uninterrupted_result(setup, tmp_path, fault):
    recipe_path, reference = setup
    run_dir = tmp_path / "run"
    killed = _train([recipe_path, "--out", run_dir], fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _resume_and_compare(recipe_path, run_dir, reference)


def _kill_when(recipe_path: Path, run_dir: Path, metric_lines: int) -> None:
    """Start training and SIGKILL it from outside as soon as ``metrics.jsonl`` has this many lines."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    process = subprocess.Popen(
        [sys.executable, "-m", "textvae", "train", str(recipe_path), "--out", str(run_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_bytes().splitlines()) >= metric_lines:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_killed_from_outside_at_arbitrary_moments_resumes_to_the_uninterrupted_result(setup, tmp_path):
    recipe_path, reference = setup
    points = [2, 6, 11]  # metrics lines seen when the kill is sent (the process runs on meanwhile)

    def one(lines: int) -> None:
        run_dir = tmp_path / f"run_{lines}"
        _kill_when(recipe_path, run_dir, lines)
        _resume_and_compare(recipe_path, run_dir, reference)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, points))


def test_damaged_last_checkpoint_falls_back_to_the_previous_one_with_a_warning(setup, tmp_path):
    recipe_path, reference = setup
    run_dir = tmp_path / "run"
    killed = _train([recipe_path, "--out", run_dir], fault="after_step:12")
    assert killed.returncode == -signal.SIGKILL
    assert previous_path(run_dir / "last.pt").is_file()
    data = bytearray((run_dir / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: torch may still read the file, the checksum does not match
    (run_dir / "last.pt").write_bytes(bytes(data))
    result = _train([recipe_path, "--out", run_dir, "--resume"])
    assert result.returncode == 0, result.stderr
    assert "last.pt: corrupt" in result.stderr and "using the previous checkpoint" in result.stderr
    final = read_checkpoint(run_dir / "last.pt")
    expected = read_checkpoint(reference / "last.pt")
    for name, value in expected["model"].items():
        torch.testing.assert_close(final["model"][name], value, rtol=0, atol=0, msg=name)


def test_resume_with_every_checkpoint_damaged_is_a_one_line_error(setup, tmp_path):
    recipe_path, _ = setup
    run_dir = tmp_path / "run"
    assert _train([recipe_path, "--out", run_dir], fault="after_step:12").returncode == -signal.SIGKILL
    for path in (run_dir / "last.pt", previous_path(run_dir / "last.pt")):
        path.write_bytes(path.read_bytes()[:100])
    result = _train([recipe_path, "--out", run_dir, "--resume"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("textvae: error:")
    assert "last.pt: corrupt or unreadable checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_non_finite_losses_are_skipped_counted_and_stop_training_after_too_many(setup, tmp_path):
    """A checkpoint whose weights are NaN from some step on: every batch is skipped, training stops
    after ``max_nonfinite_in_a_row`` with a one-line error, and the good checkpoints stay as they were."""
    recipe_path, _ = setup
    run_dir = tmp_path / "run"
    assert _train([recipe_path, "--out", run_dir], fault="after_step:12").returncode == -signal.SIGKILL
    state = read_checkpoint(run_dir / "last.pt")  # step 10
    name = next(key for key in state["model"] if key.endswith("output.bias"))
    state["model"][name][0] = float("nan")  # every logit row gets a NaN: every loss is NaN
    write_checkpoint_payload(run_dir / "last.pt", state)
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.pt")}
    result = _train([recipe_path, "--out", run_dir, "--resume", "--set", "train.max_nonfinite_in_a_row=4"])
    assert result.returncode == 2, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("textvae: error: training stopped after step 10: 4 batches in a row")
    assert "Traceback" not in result.stderr
    assert result.stderr.count("non-finite loss or gradient after step 10") == 4
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.pt")} == before
    skipped = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["in_a_row"] for r in skipped if r["event"] == "skipped"] == [1, 2, 3, 4]
