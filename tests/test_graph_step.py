"""The sync-free step (textvae.cuda.sync_free_step) against the host-synchronised step of textvae.strategies."""

import math

import pytest
import torch

from tests.conftest import tiny_vae_spec
from textvae.cuda.sync_free_step import SyncFreeStep, text_loss_fn
from textvae.data.batching import collate
from textvae.engine.state import make_optimizer
from textvae.engine.step import StepOutcome
from textvae.engine.train_record import TrainWindow, norm_keys
from textvae.models import build_model
from textvae.remedies.kl_annealing import KLAnnealing
from textvae.strategies import StandardStrategy, StepContext

REMEDIES = {
    "none": [],
    "annealing": [{"type": "kl_annealing", "warmup": 3.0, "start": 0.1}],
    "epoch_annealing": [{"type": "kl_annealing", "unit": "epoch", "warmup": 1.5}],
    "word_dropout": [{"type": "word_dropout", "keep_prob": 0.6}],
    "free_bits": [{"type": "free_bits", "threshold": 0.05}],
    "bn_vae": [{"type": "bn_vae", "gamma": 0.7}],
    "bow": [{"type": "bow_loss", "hidden_dim": 8}],
    "iaf": [{"type": "iaf", "steps": 2, "hidden_dim": 8}],
    "stack": [
        {"type": "kl_annealing", "schedule": "sigmoid", "midpoint": 2.0, "steepness": 0.7},
        {"type": "beta", "beta": 0.5},
    ],
}


class _Train:  # the fields of TrainConfig that make_optimizer reads
    def __init__(self, optimizer, lr):
        self.optimizer, self.lr, self.momentum, self.weight_decay = optimizer, lr, 0.0, 0.0


def _model(vocab, remedies):
    torch.manual_seed(0)
    spec = tiny_vae_spec(weight_init_range=0.4, dropout_in=0.3, dropout_out=0.2)
    return build_model(spec, vocab, remedies).train()


def _batches(vocab):
    rows = [[1, 4, 5, 6, 7, 8, 2], [1, 9, 10, 2], [1, 4, 2]]
    same_length = [[1, 4, 5, 2], [1, 6, 7, 2], [1, 8, 9, 2]]
    return [collate(rows, [0, 1, 2], vocab.pad_id), collate(same_length, [3, 4, 5], vocab.pad_id)]


def _run_host_steps(vocab, remedies, optimizer_name, lr, grad_clip, steps, nan_at=()):
    model = _model(vocab, remedies)
    optimizer = make_optimizer(model, _Train(optimizer_name, lr))
    strategy, skipped, done = StandardStrategy(), 0, 0
    batches = _batches(vocab)
    for i in range(steps):
        torch.manual_seed(100 + i)
        context = StepContext(model, optimizer, grad_clip, done, 2, lambda: None)
        if i in nan_at:
            _poison(model, True)
        _, updated = strategy.train_step(context, batches[i % 2])
        _poison(model, False)
        done, skipped = done + updated, skipped + (not updated)
    return model, optimizer, done, skipped


def _run_sync_free_steps(vocab, remedies, optimizer_name, lr, grad_clip, steps, nan_at=()):
    model = _model(vocab, remedies)
    optimizer = make_optimizer(model, _Train(optimizer_name, lr))
    step = SyncFreeStep(model, optimizer, text_loss_fn(model), grad_clip=grad_clip, steps_per_epoch=2)
    batches = _batches(vocab)
    for i in range(steps):
        torch.manual_seed(100 + i)
        if i in nan_at:
            _poison(model, True)
        step(batches[i % 2])
        _poison(model, False)
    return model, optimizer, step


_SAVED = {}


def _poison(model, on):
    """A non-finite forward pass: the encoder's output bias is nan while ``on``."""
    bias = model.encoder.to_params.bias
    with torch.no_grad():
        if on:
            _SAVED["bias"] = bias.clone()
            bias[0] = math.nan
        elif "bias" in _SAVED:
            bias.copy_(_SAVED.pop("bias"))


@pytest.mark.parametrize("remedy", sorted(REMEDIES))
@pytest.mark.parametrize("optimizer_name,lr,grad_clip", [("sgd", 1.0, 0.5), ("sgd", 0.3, None), ("adam", 3e-3, 0.5)])
def test_same_weights_as_the_host_step(vocab, remedy, optimizer_name, lr, grad_clip):
    """Bit for bit: same seeds, same batches, 5 steps (clipping acts at c = 0.5 with these weights)."""
    host, host_opt, done, _ = _run_host_steps(vocab, REMEDIES[remedy], optimizer_name, lr, grad_clip, 5)
    free, free_opt, step = _run_sync_free_steps(vocab, REMEDIES[remedy], optimizer_name, lr, grad_clip, 5)
    for (name, a), b in zip(host.state_dict().items(), free.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    counts = step.state.read()
    assert counts.steps == done == 5 and counts.skipped == 0
    assert host_opt.param_groups[0]["lr"] == free_opt.param_groups[0]["lr"] == lr  # floats between steps


def test_clipping_acts_in_the_test_setting(vocab):
    model = _model(vocab, [])
    state = SyncFreeStep(model, make_optimizer(model, _Train("sgd", 1.0)), None, grad_clip=None).state
    text_loss_fn(model)(_batches(vocab)[0], state)[0].backward()
    assert torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]) > 0.5


@pytest.mark.parametrize("optimizer_name,lr", [("sgd", 1.0), ("adam", 3e-3)])
def test_a_non_finite_batch_is_skipped_and_counted_as_on_the_host(vocab, optimizer_name, lr):
    host, _, done, skipped = _run_host_steps(vocab, REMEDIES["annealing"], optimizer_name, lr, 0.5, 6, (2, 3))
    free, free_opt, step = _run_sync_free_steps(vocab, REMEDIES["annealing"], optimizer_name, lr, 0.5, 6, (2, 3))
    for (name, a), b in zip(host.state_dict().items(), free.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    counts = step.state.read()
    assert (counts.steps, counts.skipped, counts.longest_skip_run, counts.skipped_in_a_row) == (done, skipped, 2, 0)
    assert (done, skipped) == (4, 2)
    if optimizer_name == "adam":  # the skipped updates left Adam's step count alone
        assert all(s["step"].item() == 4 for s in free_opt.state.values())


def test_sums_are_the_host_windows_sums(vocab):
    # the train record's sums, gradient norms included, are the same numbers from both steps
    model = _model(vocab, [])
    optimizer = make_optimizer(model, _Train("sgd", 0.5))
    step = SyncFreeStep(model, optimizer, text_loss_fn(model), grad_clip=5.0)
    model_b = _model(vocab, [])
    strategy, optimizer_b = StandardStrategy(), make_optimizer(model_b, _Train("sgd", 0.5))
    window = TrainWindow(torch.device("cpu"), norm_keys(model_b))
    for i, batch in enumerate(_batches(vocab) * 2):
        torch.manual_seed(i)
        step(batch)
        torch.manual_seed(i)
        context = StepContext(model_b, optimizer_b, 5.0, i, 2, lambda: None)
        terms, updated = strategy.train_step(context, batch)
        window.add_step(StepOutcome(updated, terms, len(batch), batch.num_target_tokens, grad_norms=context.grad_norms))
    assert step.state.read().sums == window.totals()
    assert window.totals()["norm_steps"] == 4 and window.totals()["grad_norm_encoder"] > 0
    step.state.reset_sums()
    assert step.state.read().sums["loss"] == 0.0


def test_a_learning_rate_changed_on_the_host_reaches_the_device(vocab):
    model = _model(vocab, [])
    optimizer = make_optimizer(model, _Train("sgd", 1.0))
    step = SyncFreeStep(model, optimizer, text_loss_fn(model), grad_clip=None)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
    step(_batches(vocab)[0])
    scheduler.step(1.0)
    scheduler.step(2.0)  # no improvement: halved
    assert optimizer.param_groups[0]["lr"] == 0.5
    before = [p.detach().clone() for p in model.parameters()]
    step(_batches(vocab)[0])
    assert step.state.step_lr[0].item() == 0.5
    grads = [p.grad for p in model.parameters()]
    for b, p, g in zip(before, model.parameters(), grads, strict=True):
        assert torch.equal(p.detach(), b.add(g, alpha=-0.5))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": "linear", "warmup": 7.0, "start": 0.1},
        {"schedule": "linear", "unit": "epoch", "warmup": 2.5},
        {"schedule": "sigmoid", "midpoint": 20.0, "steepness": 0.3},
        {"schedule": "cyclical", "total": 40.0, "cycles": 3, "ratio": 0.6},
        {"schedule": "cyclical", "total": 40.0, "cycles": 4, "ratio": 0.5, "zero_ratio": 0.25, "shape": "cosine"},
        {"schedule": "cyclical", "total": 40.0, "cycles": 2, "ratio": 0.7, "shape": "sigmoid"},
    ],
)
def test_schedules_as_tensors_equal_the_float_schedules(kwargs):
    schedule = KLAnnealing(**kwargs)
    steps_per_epoch = 7
    for step in range(0, 60):
        t = step / steps_per_epoch if schedule.unit == "epoch" else float(step)
        expected = schedule.weight(t)
        step_t = torch.tensor(float(step), dtype=torch.float64)
        if schedule.unit == "epoch":
            step_t = step_t / torch.tensor(float(steps_per_epoch), dtype=torch.float64)
        got = schedule.weight_tensor(step_t).item()
        if kwargs.get("shape") in ("cosine", "sigmoid") or kwargs["schedule"] == "sigmoid":
            assert got == pytest.approx(expected, rel=4e-16, abs=1e-300), step  # torch's exp/cos vs libm: ≤ 1 ulp
        else:
            assert got == expected, step
