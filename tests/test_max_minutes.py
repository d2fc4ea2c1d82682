"""train.max_minutes: a wall-clock cap that ends a run like max_steps, said in metrics.jsonl and progress."""

from __future__ import annotations

import json

import pytest

from tests.test_engine import PTB, text_recipe
from textvae.checkpoint import read_checkpoint
from textvae.engine.run_dir import without_runtime_keys
from textvae.errors import TextVAEError
from textvae.train import train


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_run_past_its_minutes_stops_at_the_next_log_step_and_says_so(tmp_path):
    recipe = text_recipe(PTB, max_steps=12, log_every_steps=4, max_valid_sentences=40, max_minutes=1e-9)
    summary = train(recipe, tmp_path / "run")
    assert summary.progress.step == 4  # the first log step, not max_steps
    assert summary.progress.stopped_on_time and summary.progress.finished
    saved = read_checkpoint(tmp_path / "run" / "last.pt")["progress"]
    assert saved["stopped_on_time"] and saved["finished"]
    stopped = [r for r in records(tmp_path / "run") if r["event"] == "stopped"]
    assert stopped == [{"event": "stopped", "step": 4, "stopped_on_time": True, "max_minutes": 1e-9}]
    assert records(tmp_path / "run")[-1]["event"] == "valid"  # the final weights were validated


def test_a_generous_cap_changes_nothing(tmp_path):
    plain = train(text_recipe(PTB, max_steps=8, log_every_steps=4, max_valid_sentences=40), tmp_path / "a")
    capped = train(
        text_recipe(PTB, max_steps=8, log_every_steps=4, max_valid_sentences=40, max_minutes=600), tmp_path / "b"
    )
    assert capped.progress.step == plain.progress.step == 8
    assert not capped.progress.stopped_on_time
    keep = ("event", "step", "loss", "rec", "kl")
    assert [{k: r.get(k) for k in keep} for r in records(tmp_path / "a")] == [
        {k: r.get(k) for k in keep} for r in records(tmp_path / "b")
    ]


def test_a_run_may_resume_with_another_cap():
    """max_minutes says how a run executes, not what it computes: --resume may add, change or drop it."""
    plain, capped = text_recipe(PTB), text_recipe(PTB, max_minutes=5)
    assert without_runtime_keys(plain.to_dict()) == without_runtime_keys(capped.to_dict())


@pytest.mark.parametrize("value", [0, -1.0])
def test_a_cap_must_be_positive(value):
    with pytest.raises(TextVAEError, match="max_minutes"):
        text_recipe(PTB, max_minutes=value)
