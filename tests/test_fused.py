"""The fused model (textvae.models.fused) against the unfused rows it stacks: forward terms, gradients
and 10 optimizer steps, SGD with clipping and Adam, with every fusible remedy and each row's noise
drawn as its unfused run draws it; a non-finite step in one row leaves the other rows exact.

Tolerances. In float64 the fused and unfused computations differ only in the order of float
operations (a batched matmul instead of mkldnn's LSTM, one log-softmax over all positions instead of
the real ones, per-row norms summed in another order): after 10 steps every weight agrees to 1e-10
(measured: at most 5e-12, in the BN-VAE row), so a wrong term, weight, schedule value, mask, draw or
clip (a clip threshold rounded to float32 moved a weight by 1e-7) fails.
In float32 (what training runs) the forward terms and gradients agree to 1e-5 relative, and the
weights after 10 steps to 2e-5 absolute (measured: 3e-6; weights are O(0.1-1) and a wrong update is
off by ~lr = 1e-2). BN-VAE is left out of the float32 10-step comparison: its backward divides by
the batch std of μ (~0.06 here) and cancels terms (the gradient of μ's bias is zero in exact
arithmetic), so float32 rounding alone (1e-3 of the row's largest gradient at the first step,
measured) moves its encoder by up to 1e-2 in 10 steps; its float64 check and its float32 gradient
check stand.
"""

from __future__ import annotations

import copy

import pytest
import torch

from textvae.data.batching import collate
from textvae.data.vocab import Vocab
from textvae.engine.state import make_optimizer
from textvae.errors import TextVAEError
from textvae.models import build_model
from textvae.models.fused.noise import RowNoise
from textvae.models.fused.optimizer import FusedOptimizer
from textvae.models.fused.remedies import RowObjective, RowRemedies
from textvae.models.fused.step import RowPhases, fused_train_step
from textvae.models.fused.vae import FusedVAE
from textvae.objective import elbo_terms
from textvae.remedies.base import training_objective
from textvae.strategies import PretrainThenReset, StandardStrategy, StepContext

WORDS = ("a", "b", "c", "d", "e", "f", "g")  # V = 11 with the 4 specials
SPEC = {
    "type": "vae",
    "latent_dim": 4,
    "encoder": {"type": "lstm", "embed_dim": 5, "hidden_dim": 6, "weight_init_range": 0.3},
    "decoder": {
        "type": "lstm",
        "embed_dim": 5,
        "hidden_dim": 7,
        "dropout_in": 0.3,
        "dropout_out": 0.2,
        "weight_init_range": 0.3,
    },
}
ROWS = {  # name: (seed, remedies)
    "vae": (0, []),
    "annealing": (1, [{"type": "kl_annealing", "schedule": "linear", "warmup": 6, "start": 0.1}]),
    "word_dropout": (2, [{"type": "word_dropout", "keep_prob": 0.5}]),
    "anneal_wd": (
        3,
        [{"type": "kl_annealing", "schedule": "sigmoid", "midpoint": 4, "steepness": 0.7}, {"type": "word_dropout"}],
    ),
    "cyclical_beta": (
        4,
        [{"type": "kl_annealing", "schedule": "cyclical", "total": 8, "cycles": 2}, {"type": "beta", "beta": 0.4}],
    ),
    "free_bits": (5, [{"type": "free_bits", "threshold": 0.05}]),
    "free_bits_total": (6, [{"type": "free_bits", "threshold": 0.3, "mode": "total"}]),
    "free_bits_mask": (7, [{"type": "free_bits", "threshold": 0.02, "mode": "dimension_mask"}]),
    "bow": (8, [{"type": "bow_loss", "hidden_dim": 9, "weight": 0.7}]),
    "bn_vae": (9, [{"type": "bn_vae", "gamma": 0.6, "eps": 1e-6}]),
    # pretrain + reset (Li et al. 2019): PRETRAIN_STEPS autoencoder steps, then the decoder redrawn
    "pretrain_reset": (10, [{"type": "free_bits", "threshold": 0.05}]),
}
PRETRAIN_STEPS = 4


def strategy_of(name: str):
    return PretrainThenReset(PRETRAIN_STEPS) if name == "pretrain_reset" else StandardStrategy()


@pytest.fixture
def vocab() -> Vocab:
    return Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *WORDS))


def batches(count: int = 10, size: int = 5) -> list:
    generator = torch.Generator().manual_seed(11)
    out = []
    for step in range(count):
        lengths = torch.randint(1, 8, (size,), generator=generator).tolist()
        lengths[step % size] = 7  # T = 9 with BOS and EOS
        rows = [[1, *torch.randint(4, 11, (n,), generator=generator).tolist(), 2] for n in lengths]
        out.append(collate(rows, list(range(size)), 0))
    return out


def unfused_rows(vocab, names, dtype=torch.float32):
    """Each row built as its unfused run builds it (seed, then the weights), and the RNG state after."""
    models, states = [], []
    for name in names:
        seed, remedies = ROWS[name]
        torch.manual_seed(seed)
        models.append(build_model(SPEC, vocab, remedies).to(dtype).train())
        states.append(torch.get_rng_state())
    return models, states


def unfused_loss(model, batch, step, steps_per_epoch=4):
    out = model(batch)
    terms = elbo_terms(out)
    objective = training_objective(model.remedies, out, terms, batch, step=step, steps_per_epoch=steps_per_epoch)
    return objective.loss(), out, terms


def close(actual, expected, rtol, atol=0.0) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


ALL = list(ROWS)


def test_forward_terms_and_gradients_equal_the_unfused_rows(vocab):
    models, states = unfused_rows(vocab, ALL)
    fused = FusedVAE.from_models(models)
    batch = batches(1)[0]
    noise = RowNoise(states, torch.device("cpu"))
    objective = RowObjective(fused.remedies, torch.device("cpu"))
    keep = [row.keep_prob for row in fused.remedies]
    drawn = noise.draw(batch.decoder_inputs, 4, fused.dims, fused.dropout, keep, fused.protected, torch.float32)
    out = fused.train()(batch, drawn)
    objective.set_step(3, 4)
    loss = objective.loss(out.rec, out.kl_per_dim, out.bow)
    loss.sum().backward()
    fused_grads = {name: p.grad for name, p in fused.named_parameters()}
    for row, (model, state) in enumerate(zip(models, states, strict=True)):
        torch.set_rng_state(state)
        row_loss, row_out, terms = unfused_loss(model, batch, 3)
        row_loss.backward()
        close(out.rec[row], terms.rec, 1e-5)
        # BN-VAE divides μ by its batch std (~0.06 here): 1e-5 absolute covers the rounding it amplifies
        close(out.kl_per_dim[row], terms.kl_per_dim, 1e-5, 1e-5)
        close(out.mean[row], row_out.posterior.mean, 1e-5, 1e-5)
        close(loss[row], row_loss, 1e-5)
        grads = {name: p.grad for name, p in model.named_parameters()}
        scale = max(float(g.abs().max()) for g in grads.values())
        # BN-VAE's backward divides by the batch std of μ and cancels the gradient of μ's mean (zero
        # in exact arithmetic): there float32 rounding reaches ~1e-3 of the row's largest gradient
        atol = (2e-3 if ALL[row] == "bn_vae" else 1e-6) * scale
        for fused_name, name in fused.names[row].items():
            if name in grads:
                close(fused_grads[fused_name][row], grads[name], 1e-4, atol)
        # the BoW head of a row without one, and the BN shift of a row without BN-VAE, get nothing
        for fused_name in ("bow_out.weight", "bn_shift"):
            if fused_name not in fused.names[row]:
                assert not fused_grads[fused_name][row].any()


def test_the_noise_is_the_unfused_runs_draw_for_draw(vocab):
    """Zero-tolerance check of the draws: each row's rec equals its unfused rec computed from the same
    weights in float64, so a draw in another order or shape (a different mask) fails by far."""
    models, states = unfused_rows(vocab, ["vae", "anneal_wd", "word_dropout"], torch.float64)
    fused = FusedVAE.from_models(models)
    batch = batches(1)[0]
    noise = RowNoise(states, torch.device("cpu"))
    for _ in range(2):  # the second step continues each row's stream
        keep = [row.keep_prob for row in fused.remedies]
        drawn = noise.draw(batch.decoder_inputs, 4, fused.dims, fused.dropout, keep, fused.protected, torch.float64)
        out = fused(batch, drawn)
        for row, model in enumerate(models):
            torch.set_rng_state(states[row])
            rec = model(batch).rec
            states[row] = torch.get_rng_state()
            close(out.rec[row], rec.detach(), 1e-12)
        assert [s.equal(g) for s, g in zip(states, noise.states(), strict=True)] == [True] * 3


def train_both(vocab, names, optimizer: str, lr: float, clip, dtype, steps: int = 10, weight_decay: float = 0.0):
    """10 steps of the unfused rows (the engine's optimizer and each row's strategy) and of the fused model."""
    models, states = unfused_rows(vocab, names, dtype)
    fused = FusedVAE.from_models(models)
    fused_strategies = [strategy_of(name) for name in names]
    phases = RowPhases(fused_strategies, [copy.deepcopy(model) for model in models])  # its own copies to redraw
    cfg = type("Cfg", (), {"optimizer": optimizer, "lr": lr, "momentum": 0.0, "weight_decay": weight_decay})
    optimizers = [make_optimizer(model, cfg) for model in models]
    rows = len(names)
    fused_optimizer = FusedOptimizer(
        list(fused.parameters()), optimizer, [lr] * rows, [clip] * rows, [weight_decay] * rows
    )
    objective = RowObjective(fused.remedies, torch.device("cpu"))
    noise = RowNoise(states, torch.device("cpu"))
    data = batches(steps)
    strategies = [strategy_of(name) for name in names]
    for step, batch in enumerate(data):
        for row, model in enumerate(models):
            torch.set_rng_state(states[row])
            context = StepContext(model, optimizers[row], clip, step, 4, lambda: None)
            _, updated = strategies[row].train_step(context, batch)
            assert updated
            states[row] = torch.get_rng_state()
        steps_now = [step] * len(names)
        result = fused_train_step(fused, fused_optimizer, objective, noise, batch, steps_now, 4, phases=phases)
        assert result.updated.all()
    assert [getattr(s, "reset_done", None) for s in fused_strategies] == [
        getattr(s, "reset_done", None) for s in strategies
    ]
    return models, fused, fused_optimizer


def assert_rows_equal(models, fused, names, atol: float, bn_atol: float) -> None:
    for row, model in enumerate(models):
        expected = model.state_dict()
        for name, value in fused.row_state_dict(row).items():
            if value.is_floating_point():
                close(value, expected[name], 0.0, bn_atol if names[row] == "bn_vae" else atol)
            else:
                assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize("optimizer,lr,clip,decay", [("sgd", 1.0, 0.5, 0.0), ("adam", 1e-2, 0.3, 1e-2)])
def test_ten_steps_equal_the_unfused_rows_in_float64(vocab, optimizer, lr, clip, decay):
    models, fused, _ = train_both(vocab, ALL, optimizer, lr, clip, torch.float64, weight_decay=decay)
    assert_rows_equal(models, fused, ALL, 1e-10, 1e-10)


FLOAT32_ROWS = ["vae", "anneal_wd", "cyclical_beta", "free_bits_total", "bow", "pretrain_reset"]


@pytest.mark.parametrize("optimizer,lr,clip", [("sgd", 1.0, 0.5), ("adam", 1e-2, 5.0)])
def test_ten_steps_equal_the_unfused_rows_in_float32(vocab, optimizer, lr, clip):
    models, fused, _ = train_both(vocab, FLOAT32_ROWS, optimizer, lr, clip, torch.float32)
    assert_rows_equal(models, fused, FLOAT32_ROWS, 2e-5, 2e-5)


def test_a_row_state_dict_loads_into_its_unfused_model(vocab):
    models, _ = unfused_rows(vocab, ["bow", "bn_vae", "vae"])
    fused = FusedVAE.from_models(models)
    for row, model in enumerate(models):
        _, remedies = ROWS[["bow", "bn_vae", "vae"][row]]
        fresh = build_model(SPEC, vocab, remedies)
        fresh.load_state_dict(fused.row_state_dict(row), strict=True)
        for name, value in fresh.state_dict().items():
            assert torch.equal(value, model.state_dict()[name])


def test_a_non_finite_row_is_skipped_and_leaves_the_others_exact(vocab, monkeypatch):
    names = ["vae", "annealing", "bn_vae", "bow"]

    def run(poison_at: int | None):
        models, states = unfused_rows(vocab, names)
        fused = FusedVAE.from_models(models)
        optimizer = FusedOptimizer(list(fused.parameters()), "adam", [1e-2] * 4, [1.0] * 4)
        objective = RowObjective(fused.remedies, torch.device("cpu"))
        noise = RowNoise(states, torch.device("cpu"))
        snapshots = []
        for step, batch in enumerate(batches(4)):
            if step == poison_at:  # row 1's KL weight is nan at this step: its loss is not finite
                monkeypatch.setattr(fused.remedies[1], "kl_weight", lambda *_: float("nan"))
            before = (
                fused.row_state_dict(1),
                [m[1].clone() for m in optimizer.exp_avg],
                [t.clone() for t in optimizer.steps],
            )
            result = fused_train_step(fused, optimizer, objective, noise, batch, [step] * 4, 4)
            if step == poison_at:
                monkeypatch.undo()
                assert result.updated.tolist() == [True, False, True, True]
                after = fused.row_state_dict(1)
                assert all(torch.equal(after[k], v) for k, v in before[0].items() if "running" not in k)
                assert all(torch.equal(m[1], b) for m, b in zip(optimizer.exp_avg, before[1], strict=True))
                for steps, steps_before in zip(optimizer.steps, before[2], strict=True):
                    assert torch.equal(steps, steps_before + torch.tensor([1, 0, 1, 1]))
            snapshots.append({n: p.detach().clone() for n, p in fused.named_parameters()})
        return snapshots

    clean, poisoned = run(None), run(2)
    for step in range(4):
        for name, value in clean[step].items():
            others = [0, 2, 3]
            assert torch.equal(poisoned[step][name][others], value[others]), (step, name)
            if step < 2:
                assert torch.equal(poisoned[step][name][1], value[1])


def test_rows_that_cannot_fuse_are_a_one_line_error(vocab):
    models, _ = unfused_rows(vocab, ["vae"])
    torch.manual_seed(0)
    iaf = build_model(SPEC, vocab, [{"type": "iaf", "steps": 1, "hidden_dim": 3}])
    with pytest.raises(TextVAEError, match="does not fuse"):
        FusedVAE.from_models([models[0], iaf])
    wider = build_model({**SPEC, "latent_dim": 5}, vocab)
    with pytest.raises(TextVAEError, match="different model shapes"):
        FusedVAE.from_models([models[0], wider])
    assert RowRemedies.of([]).kl_weight(5, 4) == 1.0
