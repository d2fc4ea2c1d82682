"""The train record's gradient norms: ‖g‖₂ before clipping, of every parameter and of the encoder and the
decoder apart, the mean over a record's steps, from the host step and from the sync-free (graphed) step."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.test_graph_step import _batches, _model, _Train
from textvae.cuda.sync_free_step import SyncFreeStep, text_loss_fn
from textvae.engine.distributed import SINGLE_PROCESS
from textvae.engine.state import make_optimizer
from textvae.engine.step import StepOutcome
from textvae.engine.train_record import NORMS, TrainWindow, norm_keys
from textvae.strategies import StandardStrategy, StepContext, remedy_loss

CLIP = 0.01  # far below these gradients' norms: every step clips


def _norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params if p.grad is not None])))


def _expected_norms(model, batch, seed: int) -> dict[str, float]:
    """The norms of one step's gradients, computed apart on a copy of the model (nothing clipped)."""
    twin = copy.deepcopy(model)
    torch.manual_seed(seed)
    loss, _ = remedy_loss(StepContext(twin, None, None, 0, 2, lambda: None), batch)
    loss.backward()
    return {
        "grad_norm": _norm(twin.parameters()),
        "grad_norm_encoder": _norm(twin.encoder.parameters()),
        "grad_norm_decoder": _norm(twin.decoder.parameters()),
    }


def test_the_host_step_reports_the_norms_before_clipping_and_the_record_their_mean(vocab):
    model = _model(vocab, [])
    optimizer = make_optimizer(model, _Train("sgd", 0.5))
    window = TrainWindow(torch.device("cpu"), norm_keys(model))
    assert window.norms == NORMS
    expected = []
    for i, batch in enumerate(_batches(vocab)):
        expected.append(_expected_norms(model, batch, seed=i))
        torch.manual_seed(i)
        context = StepContext(model, optimizer, CLIP, i, 2, lambda: None)
        terms, updated = StandardStrategy().train_step(context, batch)
        assert updated
        for key, value in expected[-1].items():
            assert float(context.grad_norms[key]) == pytest.approx(value, rel=1e-5), key
        assert expected[-1]["grad_norm"] > 10 * CLIP  # so the step clipped: the norms were taken before
        window.add_step(StepOutcome(updated, terms, len(batch), batch.num_target_tokens, grad_norms=context.grad_norms))
    means, _ = window.report(SINGLE_PROCESS, elapsed=1.0)
    for key in NORMS:
        assert means[key] == pytest.approx(sum(e[key] for e in expected) / len(expected), rel=1e-5)
    assert means["grad_norm"] ** 2 >= means["grad_norm_encoder"] ** 2  # the parts are parts of the whole


def test_a_skipped_step_adds_no_norm_and_a_model_without_an_encoder_reports_none(vocab, tiny_lm):
    window = TrainWindow(torch.device("cpu"), norm_keys(tiny_lm))
    assert window.norms == ("grad_norm", "grad_norm_decoder")
    assert "grad_norm" not in window.report(SINGLE_PROCESS, elapsed=1.0)[0]  # no step measured yet
    assert window.totals()["norm_steps"] == 0


def test_the_sync_free_step_keeps_the_same_norms_on_the_device(vocab):
    # the graphed step's logic, run on the CPU: the norms land in StepState.sums, read only on request
    model = _model(vocab, [])
    expected = _expected_norms(model, _batches(vocab)[0], seed=0)
    step = SyncFreeStep(model, make_optimizer(model, _Train("sgd", 0.5)), text_loss_fn(model), grad_clip=CLIP)
    torch.manual_seed(0)
    step(_batches(vocab)[0])
    sums = step.state.read().sums
    assert sums["norm_steps"] == 1
    for key, value in expected.items():
        assert sums[key] == pytest.approx(value, rel=1e-5), key
    window = TrainWindow(torch.device("cpu"), norm_keys(model), step.state.sums)  # the graphed window
    assert window.totals()["norm_steps"] == 0  # a new record starts from zero


def test_a_training_run_logs_the_norms_in_metrics_jsonl_and_tensorboard(tmp_path):
    from tests.test_engine import LOGGED, small_corpus, text_recipe
    from tests.test_tensorboard import read_events, scalars
    from textvae.train import train

    recipe = text_recipe(small_corpus(tmp_path / "corpus"), "files", max_steps=10, tensorboard=True, **LOGGED)
    train(recipe, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trains = [r for r in records if r["event"] == "train"]
    assert trains and all(r[key] > 0 for r in trains for key in NORMS)
    events = read_events(tmp_path / "run")  # the event files, read back with TensorBoard's own reader
    for key in NORMS:
        logged = scalars(events, f"train/{key}")
        assert logged[trains[-1]["step"]] == pytest.approx(trains[-1][key], rel=1e-6)  # float32 in the event file
