"""VQ-VAE-2: map shapes at both levels, the top codes conditioning the bottom quantization, the loss
terms, training, and the two-level prior (conditioning, training, sampling, figures)."""

from __future__ import annotations

import pytest
import torch

from tests.test_image_pixelcnn import save_stage_one_run
from tests.test_image_vqvae import mnist_batch, one_thread  # noqa: F401 (an autouse fixture)
from textvae import registry
from textvae.errors import TextVAEError
from textvae.image.checkpoint import load_image_checkpoint
from textvae.image.models.vqvae2 import VQVAE2

TINY = {"hidden_dim": 16, "residual_hidden_dim": 8, "num_residual_blocks": 1, "code_dim": 6, "num_codes": 11}
TINY_PRIOR = {"channels": 16, "num_layers": 2, "kernel_size": 3, "attention_heads": 2}


def tiny_vqvae2(image_shape=(1, 28, 28), **overrides) -> VQVAE2:
    torch.manual_seed(0)
    return registry.build("image_model", {"type": "vqvae2", **TINY, **overrides}, image_shape=image_shape)


@pytest.mark.parametrize(
    ("image_shape", "bottom_downsample", "bottom", "top"),
    [((1, 28, 28), 4, (7, 7), (4, 4)), ((1, 28, 28), 2, (14, 14), (7, 7)), ((3, 32, 24), 4, (8, 6), (4, 3))],
)
def test_vqvae2_shapes(image_shape, bottom_downsample, bottom, top):
    model = tiny_vqvae2(image_shape, bottom_downsample=bottom_downsample).eval()
    x = torch.rand(2, *image_shape)
    top_q, bottom_q = model.quantize(x)
    assert top_q.straight_through.shape == (2, 6, *top) and top_q.codes.shape == (2, *top)
    assert bottom_q.straight_through.shape == (2, 6, *bottom) and bottom_q.codes.shape == (2, *bottom)
    assert model.top_shape == top and model.bottom_shape == bottom
    indices = model.code_indices(x)
    top_count = top[0] * top[1]
    assert indices.shape == (2, top_count + bottom[0] * bottom[1])
    assert int(indices[:, :top_count].max()) < 11 and int(indices[:, top_count:].min()) >= 11
    assert int(indices.max()) < model.num_codes == 22
    assert model.reconstruct(x).shape == x.shape
    assert model.figures(x, torch.Generator())["levels"].shape == (4, 2, *image_shape)


def test_top_codes_condition_the_bottom_quantization_and_reconstruction():
    model = tiny_vqvae2(codebook_update="gradient")
    out = model.loss_terms(mnist_batch(3))
    top_encoder = list(model.top_encoder.parameters())
    grads = torch.autograd.grad(out.terms["commitment_bottom"].sum(), top_encoder, retain_graph=True)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # the bottom z_e is computed from the top codes
    grads = torch.autograd.grad(out.terms["rec"].sum(), top_encoder)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # the decoder reads the top codes (straight through)
    expected = out.terms["rec"] + out.terms["codebook_top"] + out.terms["codebook_bottom"]
    expected = expected + 0.25 * (out.terms["commitment_top"] + out.terms["commitment_bottom"])
    torch.testing.assert_close(out.loss, expected.mean())
    assert set(out.stats) == {"perplexity_top", "perplexity_bottom", "codes_used_top", "codes_used_bottom"}


def test_a_few_steps_lower_the_vqvae2_loss():
    model = tiny_vqvae2(restart_unused_after=3)
    x = mnist_batch(8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(20):
        out = model.loss_terms(x, step=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        restarted = model.end_of_step(step)
        losses.append(float(out.loss.detach()))
    assert set(restarted) == {"codes_restarted_top", "codes_restarted_bottom"}
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3


def test_bad_sizes_are_one_line_user_errors():
    with pytest.raises(TextVAEError, match="multiples of 4"):
        tiny_vqvae2((1, 30, 30))
    with pytest.raises(TextVAEError, match="too small"):
        tiny_vqvae2((1, 4, 4))
    with pytest.raises(TextVAEError, match="not one of 2, 4"):
        tiny_vqvae2(bottom_downsample=8)


@pytest.fixture
def stage_one_run(tmp_path):
    spec = {"type": "vqvae2", **TINY, "restart_unused_after": 1}
    model = tiny_vqvae2(restart_unused_after=1)
    model.train()
    model.loss_terms(mnist_batch(16))  # one EMA step, then every unused code onto an encoder output
    model.end_of_step(0)
    return save_stage_one_run(tmp_path / "vqvae2_run", spec, model)


def build_prior(run):
    torch.manual_seed(0)
    spec = {"type": "vqvae2_prior", "vqvae2_run": str(run), **TINY_PRIOR}
    return registry.build("image_model", spec, image_shape=(1, 28, 28), load_run=load_image_checkpoint)


def test_the_bottom_prior_is_conditioned_on_the_top_codes(stage_one_run):
    prior = build_prior(stage_one_run).eval()
    assert prior.top_prior.attention is not None and prior.bottom_prior.attention is None
    bottom = torch.zeros(2, 7, 7, dtype=torch.long)
    top = torch.zeros(2, 4, 4, dtype=torch.long)
    other_top = top.clone()
    other_top[:, 0, 0] = 3
    logits = prior.bottom_prior(bottom, prior.top_condition(top))
    other = prior.bottom_prior(bottom, prior.top_condition(other_top))
    assert not torch.allclose(logits[:, :, 0, 0], other[:, :, 0, 0])  # the first bottom code already sees the top


def test_training_both_priors_lowers_the_nll_and_stage_one_stays_frozen(stage_one_run):
    prior = build_prior(stage_one_run)
    frozen = {k: v.clone() for k, v in prior.vqvae2.state_dict().items()}
    x = mnist_batch(8)
    optimizer = torch.optim.Adam([p for p in prior.parameters() if p.requires_grad], lr=1e-2)
    prior.train()
    assert not prior.vqvae2.training
    losses = []
    for step in range(20):
        out = prior.loss_terms(x, step=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    torch.testing.assert_close(out.terms["prior_nll"], out.terms["prior_nll_top"] + out.terms["prior_nll_bottom"])
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    for name, value in prior.vqvae2.state_dict().items():
        torch.testing.assert_close(value, frozen[name], rtol=0, atol=0, msg=name)


def test_prior_samples_and_figures_have_the_right_shapes(stage_one_run):
    prior = build_prior(stage_one_run).eval()
    images = prior.sample(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 28, 28)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    top = prior.top_prior.sample(3, (4, 4), torch.Generator().manual_seed(1))
    bottom = prior.sample_bottom(top, torch.Generator().manual_seed(2))
    assert top.shape == (3, 4, 4) and bottom.shape == (3, 7, 7)
    for codes in (top, bottom):
        assert int(codes.min()) >= 0 and int(codes.max()) < 11
    grids = prior.figures(mnist_batch(2), torch.Generator().manual_seed(3))
    assert grids["bottom_resampled"].shape == (5, 2, 1, 28, 28)


def test_a_vqvae_run_is_not_a_vqvae2_run(tmp_path):
    spec = {"type": "vqvae", **TINY}
    model = registry.build("image_model", spec, image_shape=(1, 28, 28))
    run = save_stage_one_run(tmp_path / "vqvae_run", spec, model)
    with pytest.raises(TextVAEError, match="'vqvae' model, not 'vqvae2'"):
        build_prior(run)
