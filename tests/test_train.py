"""Short real-data training runs: the loss falls, checkpoints round-trip exactly, resume continues exactly."""

import json

import pytest
import torch

from tests.conftest import SHARED_DATA
from textvae.api import load_checkpoint
from textvae.checkpoint import read_checkpoint, write_checkpoint_payload
from textvae.config import recipe_from_dict
from textvae.data.corpus import encode_split
from textvae.errors import TextVAEError
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.train import train


def _ptb_recipe(**train_overrides):
    raw = {
        "data": {"dataset": "ptb", "root": str(SHARED_DATA / "ptb"), "max_len": 30},
        "model": {
            "type": "vae",
            "latent_dim": 8,
            "encoder": {"type": "lstm", "embed_dim": 32, "hidden_dim": 48},
            "decoder": {"type": "lstm", "embed_dim": 32, "hidden_dim": 48, "dropout_in": 0.2},
        },
        "train": {
            "batch_size": 32,
            "optimizer": "adam",
            "lr": 0.003,
            "max_steps": 60,
            "validate_every_steps": 30,
            "max_valid_sentences": 200,
            "log_every_steps": 10,
            "checkpoint_every_steps": 20,
            "progress_bar": False,
            **train_overrides,
        },
    }
    return recipe_from_dict(raw, source="test")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ptb_run") / "run"
    summary = train(_ptb_recipe(), run_dir)
    return run_dir, summary


def test_short_ptb_training_run_loss_falls(trained_run):
    run_dir, summary = trained_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["event"] == "train"]
    valid_losses = [r["loss"] for r in records if r["event"] == "valid"]
    assert len(train_losses) == 6 and len(valid_losses) == 2
    assert train_losses[-1] < train_losses[0] - 10  # nats per sentence
    assert valid_losses[1] < valid_losses[0]
    assert summary.progress.step == 60 and summary.progress.finished
    for name in ("config.json", "vocab.json", "best.pt", "last.pt"):
        assert (run_dir / name).is_file()
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_checkpoint_round_trip_reproduces_evaluation_exactly(trained_run, tmp_path):
    run_dir, _ = trained_run
    settings = EvalSettings(iw_samples=7, iw_chunk_size=3, max_sentences=40, progress_bar=False)
    first = load_checkpoint(run_dir / "best.pt")
    split = encode_split(first.recipe.data, "valid", first.vocab)
    before = evaluate(first.model, split, first.vocab.pad_id, settings).metrics
    # save the loaded weights again under a new name and reload: the numbers must not move at all
    payload = read_checkpoint(run_dir / "best.pt")
    write_checkpoint_payload(tmp_path / "copy.pt", payload)
    second = load_checkpoint(tmp_path / "copy.pt")
    after = evaluate(second.model, split, second.vocab.pad_id, settings).metrics
    for key in ("elbo", "rec", "kl", "kl_per_dim", "iw_nll", "iw_nll_se", "ppl_iw", "au", "mi_batch", "mi_full"):
        assert before[key] == after[key], key


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    full = train(_ptb_recipe(max_steps=40), tmp_path / "full")
    # the same run stopped at step 20 (its checkpoint edited to say it was meant to go on to 40), then resumed
    partial = train(_ptb_recipe(max_steps=20), tmp_path / "partial")
    assert partial.progress.step == 20
    config = json.loads((tmp_path / "partial" / "config.json").read_text())
    config["train"]["max_steps"] = 40
    state = read_checkpoint(tmp_path / "partial" / "last.pt")
    state["config"] = json.dumps(config)
    state["progress"]["finished"] = False
    write_checkpoint_payload(tmp_path / "partial" / "last.pt", state)
    resumed = train(_ptb_recipe(max_steps=40), tmp_path / "partial", resume=True)
    assert resumed.progress.step == 40
    final = read_checkpoint(tmp_path / "partial" / "last.pt")["model"]
    expected = read_checkpoint(tmp_path / "full" / "last.pt")["model"]
    for name, value in expected.items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=0, msg=name)
    assert full.progress.step == 40


def test_resume_ignores_where_the_recipe_came_from_and_runtime_settings(tmp_path):
    """An ablation file edited elsewhere (its variant now at another index), a new description, another
    thread count: the run resumes. A change to what the run computes is refused."""
    first = _ptb_recipe(max_steps=10, validate_every_steps=10, threads=2)
    train(first, tmp_path / "run")
    raw = first.to_dict()
    raw["description"] = "the same run, described again"
    raw["train"]["threads"] = 1
    moved = recipe_from_dict(raw, source="ablation.toml: variant #7")
    assert train(moved, tmp_path / "run", resume=True).progress.step == 10
    raw["train"]["lr"] = 0.1
    with pytest.raises(TextVAEError, match="different config"):
        train(recipe_from_dict(raw, source="x"), tmp_path / "run", resume=True)
