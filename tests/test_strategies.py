import copy

import torch

from tests.conftest import tiny_vae_spec
from textvae.models import build_model
from textvae.strategies import AggressiveInference, PretrainThenReset, StandardStrategy, StepContext


def _setup(vocab, batch, step=0, lr=0.1):
    torch.manual_seed(0)
    model = build_model(tiny_vae_spec(weight_init_range=0.3), vocab).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    context = StepContext(model, optimizer, 5.0, step, 10, lambda: batch)
    return model, optimizer, context


def _changed(before, model, prefix):
    return any(not torch.equal(before[n], p) for n, p in model.state_dict().items() if n.startswith(prefix))


def test_standard_step_updates_everything(vocab, batch):
    model, _, context = _setup(vocab, batch)
    before = copy.deepcopy(model.state_dict())
    terms, updated = StandardStrategy().train_step(context, batch)
    assert updated and terms.rec.shape == (3,)
    assert _changed(before, model, "encoder.") and _changed(before, model, "decoder.")


def test_aggressive_outer_update_touches_only_the_decoder(vocab, batch):
    model, _, context = _setup(vocab, batch)
    before = copy.deepcopy(model.state_dict())
    strategy = AggressiveInference(max_inner_steps=0)
    strategy.train_step(context, batch)
    assert not _changed(before, model, "encoder.") and _changed(before, model, "decoder.")


def test_aggressive_inner_loop_updates_the_encoder_until_the_loss_stops_improving(vocab, batch):
    model, _, context = _setup(vocab, batch)
    calls = []
    context.random_batch = lambda: calls.append(1) or batch
    before = copy.deepcopy(model.state_dict())
    strategy = AggressiveInference(max_inner_steps=12, check_every=3)
    strategy.train_step(context, batch)
    assert (3 <= len(calls) <= 12 and len(calls) % 3 == 0) or len(calls) == 12
    assert _changed(before, model, "encoder.")


def test_aggressive_mode_ends_when_validation_mi_falls(vocab, batch):
    strategy = AggressiveInference()
    strategy.after_validation({"mi": 0.5})
    strategy.after_validation({"mi": 0.7})
    assert strategy.active
    strategy.after_validation({"mi": 0.6})
    assert not strategy.active
    restored = AggressiveInference()
    restored.load_state_dict(strategy.state_dict())
    assert not restored.active
    model, _, context = _setup(vocab, batch)
    before = copy.deepcopy(model.state_dict())
    strategy.train_step(context, batch)  # now a standard joint step
    assert _changed(before, model, "encoder.") and _changed(before, model, "decoder.")


def test_pretraining_is_a_deterministic_autoencoder_then_the_decoder_is_reset(vocab, batch):
    model, _, context = _setup(vocab, batch, step=0)
    strategy = PretrainThenReset(pretrain_steps=2)
    logvar_before = model.encoder.to_params.weight.detach().clone()
    strategy.train_step(context, batch)
    # only reconstruction from the posterior mean is trained: logvar's output rows get no gradient
    latent = model.latent_dim
    assert torch.equal(model.encoder.to_params.weight[latent:], logvar_before[latent:])
    assert not torch.equal(model.encoder.to_params.weight[:latent], logvar_before[:latent])
    encoder_before = copy.deepcopy(model.encoder.state_dict())
    decoder_before = copy.deepcopy(model.decoder.state_dict())
    context.step = 2
    _, updated = strategy.train_step(context, batch)
    assert strategy.reset_done and updated
    moved = [n for n, p in model.decoder.state_dict().items() if (p - decoder_before[n]).abs().max() > 0.05]
    assert len(moved) >= 3  # fresh draws, not one small SGD step
    assert all(torch.allclose(p, encoder_before[n], atol=0.05) for n, p in model.encoder.state_dict().items())
