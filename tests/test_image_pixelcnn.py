"""Gated PixelCNN: masks causal in raster order and free of the blind spot, the causal attention block,
and the ``vqvae_prior`` stage-2 model: reading stage 1, its NLL, training, sampling, user errors."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import pytest
import torch

from tests.test_image_vqvae import mnist_batch, one_thread  # noqa: F401 (an autouse fixture)
from textvae import registry
from textvae.errors import TextVAEError
from textvae.image.checkpoint import load_image_checkpoint, save_image_checkpoint
from textvae.image.config import image_recipe_from_dict
from textvae.image.models.pixelcnn import (
    CausalSelfAttention,
    GatedPixelCNN,
    VQVAEPrior,
    horizontal_mask,
    vertical_mask,
)

TINY_VQVAE = {
    "type": "vqvae",
    "hidden_dim": 16,
    "residual_hidden_dim": 8,
    "num_residual_blocks": 1,
    "code_dim": 6,
    "num_codes": 13,
}
TINY_PRIOR = {"channels": 16, "num_layers": 3, "kernel_size": 3}


def save_stage_one_run(run_dir: Path, spec: dict, model: torch.nn.Module) -> Path:
    """A run directory as image training leaves it: config.json and best.pt (with its recipe)."""
    run_dir.mkdir(parents=True)
    recipe = image_recipe_from_dict({"model": spec}, source="stage-1 test recipe")
    (run_dir / "config.json").write_text(json.dumps(recipe.to_dict()))
    save_image_checkpoint(run_dir / "best.pt", recipe=recipe, model=model)
    return run_dir


def dependencies(network, channels: int, height: int, width: int) -> torch.Tensor:
    """(L, L) bool, L = h·w in raster order: [i, j] = the logits at position i depend on input j."""
    torch.manual_seed(1)
    embedded = torch.randn(1, channels, height, width, dtype=torch.float64, requires_grad=True)
    outputs = network(embedded)  # (1, C', h, w)
    projection = torch.randn(outputs.shape[1], dtype=torch.float64)
    rows = []
    for i in range(height * width):
        row, col = divmod(i, width)
        (grad,) = torch.autograd.grad(outputs[0, :, row, col] @ projection, embedded, retain_graph=True)
        rows.append(grad[0].abs().sum(0).flatten() > 0)  # (L,)
    return torch.stack(rows)


def strictly_earlier(length: int) -> torch.Tensor:
    return torch.ones(length, length).tril(-1).bool()  # [i, j] = j < i


def test_masks_type_a_excludes_the_current_position_and_b_includes_it():
    assert horizontal_mask(5, "A").tolist() == [[1, 1, 0, 0, 0]]
    assert horizontal_mask(5, "B").tolist() == [[1, 1, 1, 0, 0]]
    assert vertical_mask(3).tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0]]  # the row itself, used shifted down


def test_gated_stacks_see_exactly_the_earlier_positions_without_a_blind_spot():
    # 5 layers of 3×3 cover a 4×5 map: the logits at i depend on every j < i and on nothing else
    network = GatedPixelCNN(num_codes=7, channels=16, num_layers=5, kernel_size=3).double()
    found = dependencies(network.logits_from_embedded, 16, 4, 5)
    assert torch.equal(found, strictly_earlier(20))


def test_the_default_prior_depth_sees_every_earlier_code_of_a_7x7_map():
    defaults = {name: p.default for name, p in inspect.signature(VQVAEPrior).parameters.items()}
    layers, kernel = defaults["num_layers"], defaults["kernel_size"]
    network = GatedPixelCNN(num_codes=7, channels=16, num_layers=layers, kernel_size=kernel).double()
    found = dependencies(network.logits_from_embedded, 16, 7, 7)
    assert torch.equal(found, strictly_earlier(49))


def test_a_shallow_stack_is_causal_and_sees_above_right():
    network = GatedPixelCNN(num_codes=7, channels=16, num_layers=2, kernel_size=3).double()
    height, width = 5, 6
    found = dependencies(network.logits_from_embedded, 16, height, width)
    assert not (found & ~strictly_earlier(height * width)).any()  # never the current or a later position
    for row in range(1, height):
        for col in range(width - 2):
            i = row * width + col
            assert found[i, i - 1] or col == 0  # left
            assert found[i, i - width + 1]  # above-right
            assert found[i, i - width + 2]  # two to the right one row up: the original PixelCNN's blind spot


def test_causal_attention_reads_the_current_and_all_earlier_positions_only():
    torch.manual_seed(0)
    attention = CausalSelfAttention(channels=8, heads=2, num_positions=12).double()
    found = dependencies(attention, 8, 3, 4)
    assert torch.equal(found, torch.ones(12, 12).tril().bool())  # j ≤ i, all of them


def test_attention_reaches_past_the_convolutions_and_the_network_stays_causal():
    height, width = 5, 6
    local = GatedPixelCNN(num_codes=7, channels=16, num_layers=1, kernel_size=3).double()
    torch.manual_seed(0)
    attending = GatedPixelCNN(
        num_codes=7, channels=16, num_layers=1, kernel_size=3, attention_heads=2, num_positions=height * width
    ).double()
    without = dependencies(local.logits_from_embedded, 16, height, width)
    found = dependencies(attending.logits_from_embedded, 16, height, width)
    last = height * width - 1
    assert not without[last, 0] and found[last, 0]  # the first code reaches the last position only by attention
    assert not (found & ~strictly_earlier(height * width)).any()


def test_condition_enters_every_position():
    torch.manual_seed(0)
    network = GatedPixelCNN(num_codes=7, channels=8, num_layers=2, kernel_size=3, condition_channels=4)
    codes = torch.randint(7, (2, 3, 4))
    condition = torch.randn(2, 4, 3, 4)
    changed = network(codes, condition) - network(codes, condition + 1.0)  # (2, 7, 3, 4)
    assert (changed.abs().sum(1) > 0).all()


@pytest.fixture
def stage_one_run(tmp_path):
    torch.manual_seed(0)
    spec = {**TINY_VQVAE, "restart_unused_after": 1}
    model = registry.build("image_model", spec, image_shape=(1, 28, 28))
    model.train()
    model.loss_terms(mnist_batch(16))  # one EMA step, then every unused code onto an encoder output:
    model.end_of_step(0)  # varied codes to model, without training stage 1
    return save_stage_one_run(tmp_path / "vqvae_run", spec, model)


def build_prior(run: Path, image_shape=(1, 28, 28)):
    torch.manual_seed(0)
    spec = {"type": "vqvae_prior", "vqvae_run": str(run), **TINY_PRIOR}
    return registry.build("image_model", spec, image_shape=image_shape, load_run=load_image_checkpoint)


def test_a_uniform_prior_costs_log_k_nats_per_code(stage_one_run):
    prior = build_prior(stage_one_run)
    with torch.no_grad():
        prior.prior.head[-1].weight.zero_()
        prior.prior.head[-1].bias.zero_()
    out = prior.loss_terms(mnist_batch(3))
    torch.testing.assert_close(out.terms["prior_nll"], torch.full((3,), 49 * math.log(13)))
    assert out.stats["bits_per_code"] == pytest.approx(math.log2(13))


def test_training_the_prior_lowers_its_nll_and_leaves_stage_one_frozen(stage_one_run):
    prior = build_prior(stage_one_run)
    stage_one = {k: v.clone() for k, v in prior.vqvae.state_dict().items()}
    x = mnist_batch(8)
    assert len(prior.vqvae.code_indices(x).unique()) > 3  # the codes vary
    optimizer = torch.optim.Adam([p for p in prior.parameters() if p.requires_grad], lr=1e-2)
    prior.train()
    assert not prior.vqvae.training
    losses = []
    for step in range(30):
        out = prior.loss_terms(x, step=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    for name, value in prior.vqvae.state_dict().items():
        torch.testing.assert_close(value, stage_one[name], rtol=0, atol=0, msg=name)


def test_samples_are_images_decoded_from_codes_in_range(stage_one_run):
    prior = build_prior(stage_one_run).eval()
    images = prior.sample(4, torch.Generator().manual_seed(3))
    assert images.shape == (4, 1, 28, 28)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    torch.testing.assert_close(images, prior.sample(4, torch.Generator().manual_seed(3)))  # the generator decides

    codes = prior.prior.sample(6, (7, 7), torch.Generator().manual_seed(4))
    assert codes.shape == (6, 7, 7) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 13
    with torch.no_grad():  # a prior certain of code 5 everywhere: sampling follows the logits
        prior.prior.head[-1].weight.zero_()
        prior.prior.head[-1].bias.fill_(-30.0)
        prior.prior.head[-1].bias[5] = 30.0
    assert (prior.prior.sample(2, (7, 7), torch.Generator().manual_seed(5)) == 5).all()


def test_stage_one_trained_on_other_images_is_a_one_line_error(stage_one_run):
    with pytest.raises(TextVAEError, match=r"trained on images of shape \(1, 28, 28\), this data has \(1, 32, 32\)"):
        build_prior(stage_one_run, image_shape=(1, 32, 32))


def test_stage_one_that_is_missing_or_not_a_vqvae_is_a_one_line_error(tmp_path):
    with pytest.raises(TextVAEError, match="no such run directory") as missing:
        build_prior(tmp_path / "nowhere")
    assert "\n" not in str(missing.value)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(TextVAEError, match=r"no best\.pt"):
        build_prior(tmp_path / "empty_run")
    spec = {"type": "vqvae2", "hidden_dim": 8, "residual_hidden_dim": 4, "code_dim": 4, "num_codes": 5}
    other = registry.build("image_model", spec, image_shape=(1, 28, 28))
    run = save_stage_one_run(tmp_path / "vqvae2_run", spec, other)
    with pytest.raises(TextVAEError, match="'vqvae2' model, not 'vqvae'") as wrong:
        build_prior(run)
    assert "\n" not in str(wrong.value)
