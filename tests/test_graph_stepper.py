"""The graphed step inside the engine (textvae.cuda.graph_stepper), on a CPU with a simulated capture:
the same weights and metrics.jsonl as the host-synchronised step, skipped steps settled at events,
resume, and when train.cuda_graphs turns graphs on."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from tests.test_engine import LOGGED, PTB, golden_run, metrics_records, run_fingerprint, text_recipe
from textvae import train as text_train
from textvae.checkpoint import read_checkpoint, write_checkpoint_payload
from textvae.cuda import graph_cache, graph_stepper
from textvae.cuda.graph_stepper import GraphStepper
from textvae.engine import distributed
from textvae.errors import TextVAEError
from textvae.strategies import AggressiveInference, StandardStrategy, Strategy
from textvae.train import StrategyStepper, train


def _sync_free_steps(stepper) -> int:
    """Steps that went through the graph cache: replayed, or uncaptured (warm-up)."""
    return stepper.graphed.replays + sum(stepper.graphed.eager_steps.values())


def _simulated_capture():
    return lambda run, static_batch: lambda: run(static_batch)


@pytest.fixture
def graphs(monkeypatch):
    """Every text run takes the graphed path; the capture replays the step body on the static batch."""
    monkeypatch.setattr(text_train, "cuda_graphs_decision", lambda *args: True)
    monkeypatch.setattr(graph_cache, "cuda_capture", _simulated_capture)


def test_cuda_graphs_auto_is_on_only_where_the_step_captures():
    model = torch.nn.Module()
    cpu, cuda, single = torch.device("cpu"), torch.device("cuda"), distributed.SINGLE_PROCESS
    assert graph_stepper.graph_obstacles(cuda, single, StandardStrategy(), model) == []
    assert graph_stepper.cuda_graphs_decision("auto", cuda, single, StandardStrategy(), model)
    assert not graph_stepper.cuda_graphs_decision("auto", cpu, single, StandardStrategy(), model)
    assert not graph_stepper.cuda_graphs_decision(False, cuda, single, StandardStrategy(), model)
    assert graph_stepper.graph_obstacles(cuda, single, Strategy(), model)  # a strategy that never says
    with pytest.raises(TextVAEError, match="cuda_graphs = true: the device is cpu"):
        graph_stepper.cuda_graphs_decision(True, cpu, single, StandardStrategy(), model)


@pytest.mark.parametrize("name", ["ptb_sgd", "epochs_lr_decay"])
def test_graphed_runs_equal_the_host_step_runs(name, tmp_path, monkeypatch):
    """Weights, best.pt and metrics.jsonl bit for bit (lr decay, best-weight reloads, checkpoints)."""
    (tmp_path / "host").mkdir()
    (tmp_path / "graphed").mkdir()
    host = run_fingerprint(golden_run(name, tmp_path / "host"))
    monkeypatch.setattr(text_train, "cuda_graphs_decision", lambda *args: True)
    monkeypatch.setattr(graph_cache, "cuda_capture", _simulated_capture)
    assert run_fingerprint(golden_run(name, tmp_path / "graphed")) == host


def _poisoning(monkeypatch, stepper_class, at: set[int]):
    """The k-th call of ``stepper_class.step`` (k in ``at``) trains on a nan encoder bias."""
    original, calls = stepper_class.step, {"n": 0}

    def step(self, batch, step_count):
        bias = (
            self.model.encoder.to_params.bias if hasattr(self, "model") else self.sync_free.model.encoder.to_params.bias
        )
        saved = bias.detach().clone()
        poisoned = calls["n"] in at
        calls["n"] += 1
        if poisoned:
            with torch.no_grad():
                bias[0] = math.nan
        try:
            return original(self, batch, step_count)
        finally:
            with torch.no_grad():
                bias.copy_(saved)

    monkeypatch.setattr(stepper_class, "step", step)


def test_skipped_batches_are_counted_and_logged_like_the_host_steps(tmp_path, monkeypatch):
    recipe = text_recipe(PTB, max_steps=20, **LOGGED)
    with monkeypatch.context() as patch:
        _poisoning(patch, StrategyStepper, {3, 4, 11})
        host = train(recipe, tmp_path / "host")
    with monkeypatch.context() as patch:
        patch.setattr(text_train, "cuda_graphs_decision", lambda *args: True)
        patch.setattr(graph_cache, "cuda_capture", _simulated_capture)
        _poisoning(patch, GraphStepper, {3, 4, 11})
        graphed = train(recipe, tmp_path / "graphed")
    assert host.progress.skipped_steps == graphed.progress.skipped_steps == 3
    assert host.progress.step == graphed.progress.step == 20
    host_weights = read_checkpoint(tmp_path / "host" / "last.pt")["model"]
    graphed_weights = read_checkpoint(tmp_path / "graphed" / "last.pt")["model"]
    assert all(torch.equal(host_weights[k], graphed_weights[k]) for k in host_weights)
    train_records = [
        [r for r in metrics_records(tmp_path / run) if r["event"] != "skipped"] for run in ("host", "graphed")
    ]
    assert train_records[0] == train_records[1]  # the same steps logged, validated, with the same means
    skipped = [r for r in metrics_records(tmp_path / "graphed") if r["event"] == "skipped"]
    assert sum(r["count"] for r in skipped) == 3


def test_too_many_skipped_batches_in_a_row_stop_a_graphed_run(tmp_path, monkeypatch, graphs):
    _poisoning(monkeypatch, GraphStepper, {2, 3, 4})
    with pytest.raises(TextVAEError, match="3 batches in a row gave a non-finite loss"):
        train(text_recipe(PTB, max_steps=20, max_nonfinite_in_a_row=3, **LOGGED), tmp_path / "run")


def test_a_resumed_graphed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, graphs):
    annealing = ({"type": "kl_annealing", "schedule": "linear", "warmup": 15},)
    full = train(text_recipe(PTB, remedies=annealing, max_steps=24, **LOGGED), tmp_path / "full")
    train(text_recipe(PTB, remedies=annealing, max_steps=12, **LOGGED), tmp_path / "partial")
    config = json.loads((tmp_path / "partial" / "config.json").read_text())
    config["train"]["max_steps"] = 24
    state = read_checkpoint(tmp_path / "partial" / "last.pt")
    state["config"], state["progress"]["finished"] = json.dumps(config), False
    write_checkpoint_payload(tmp_path / "partial" / "last.pt", state)
    resumed = train(text_recipe(PTB, remedies=annealing, max_steps=24, **LOGGED), tmp_path / "partial", resume=True)
    assert resumed.progress.step == full.progress.step == 24
    final = read_checkpoint(tmp_path / "partial" / "last.pt")["model"]
    expected = read_checkpoint(tmp_path / "full" / "last.pt")["model"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)


@pytest.mark.parametrize("strategy", ["aggressive", "pretrain_reset"])
def test_host_phases_then_graphed_standard_steps_equal_the_host_run(strategy, tmp_path, monkeypatch):
    """Aggressive mode (ended at the first validation here) and autoencoder pretraining run on the
    host, the standard steps after them graphed: the weights and metrics of the host run."""
    if strategy == "aggressive":
        spec, remedies = {"type": "aggressive", "max_inner_steps": 4, "check_every": 2}, ()
        monkeypatch.setattr(AggressiveInference, "after_validation", lambda self, valid: setattr(self, "active", False))
    else:
        spec, remedies = {"type": "pretrain_reset", "pretrain_steps": 6}, ({"type": "free_bits", "threshold": 0.1},)
    settings = {**LOGGED, "validate_every_steps": 5}

    def recipe():
        base = text_recipe(PTB, remedies=remedies, max_steps=16, **settings)
        return dataclasses.replace(base, strategy=spec)

    train(recipe(), tmp_path / "host")
    replays = []  # graph-cache steps seen at each settle
    with monkeypatch.context() as patch:
        patch.setattr(text_train, "cuda_graphs_decision", lambda *args: True)
        patch.setattr(graph_cache, "cuda_capture", _simulated_capture)
        original = GraphStepper.settle
        patch.setattr(
            GraphStepper, "settle", lambda self, *a: replays.append(_sync_free_steps(self)) or original(self, *a)
        )
        train(recipe(), tmp_path / "graphed")
    assert max(replays) > 0  # standard steps went through the graph cache after the host phase
    assert run_fingerprint(tmp_path / "graphed") == run_fingerprint(tmp_path / "host")


def test_cuda_graphs_true_without_cuda_fails_before_any_data_is_read(tmp_path):
    with pytest.raises(TextVAEError, match=r"train\.cuda_graphs = true: the device is cpu"):
        train(text_recipe(tmp_path / "no such corpus", max_steps=2, cuda_graphs=True), tmp_path / "run")
    assert not (tmp_path / "run" / "vocab.json").exists()
