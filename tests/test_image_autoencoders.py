"""Deterministic autoencoders: the loss falls on real MNIST, and each penalty equals its formula —
the contractive ‖J‖²_F in closed form and by autograd, k-sparse codes and gradients, KL(ρ‖ρ̂), the
denoising target."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import SHARED_DATA
from textvae import registry
from textvae.errors import TextVAEError

MNIST_SHAPE = (1, 28, 28)
SMALL_SHAPE = (1, 4, 5)  # (C, H, W): H ≠ W so a transposed image fails loudly


def mnist_images(count: int) -> torch.Tensor:
    """The first ``count`` MNIST test images as floats in [0, 1], (count, 1, 28, 28)."""
    with gzip.open(SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read(16 + count * 28 * 28)  # idx3 header: 16 bytes
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, *MNIST_SHAPE)
    return torch.from_numpy(pixels.copy()).float() / 255


def build(spec: dict, image_shape=MNIST_SHAPE):
    torch.manual_seed(0)
    return registry.build("image_model", spec, image_shape=image_shape)


def objective(model, x: torch.Tensor) -> float:
    """The training loss with fixed corruption noise, after any k schedule has ended."""
    torch.manual_seed(123)
    with torch.no_grad():
        return model.loss_terms(x, step=10**6).loss.item()


TINY_SPECS = {
    "ae_bce": {"type": "autoencoder", "code_dim": 8, "hidden_dims": [16]},
    "ae_mse": {"type": "autoencoder", "code_dim": 8, "hidden_dims": [16], "reconstruction": "mse"},
    "ae_conv": {"type": "autoencoder", "code_dim": 8, "hidden_dims": [], "conv_channels": [4, 6]},
    "dae_masking": {"type": "denoising_autoencoder", "code_dim": 16, "mask_probability": 0.3},
    "dae_gaussian": {"type": "denoising_autoencoder", "code_dim": 16, "mask_probability": 0.0, "noise_std": 0.3},
    "sparse_kl": {"type": "sparse_autoencoder", "code_dim": 16},
    "sparse_l1": {"type": "sparse_autoencoder", "code_dim": 16, "penalty": "l1", "sparsity_weight": 0.1},
    "k_sparse": {"type": "k_sparse_autoencoder", "code_dim": 24, "k": 4, "k_start": 12, "k_schedule_steps": 10},
    "cae_closed_form": {"type": "contractive_autoencoder", "code_dim": 16},
    "cae_autograd": {
        "type": "contractive_autoencoder",
        "code_dim": 6,
        "hidden_dims": [12],
        "activation": "tanh",
        "jacobian": "autograd",
    },
}


@pytest.mark.parametrize("name", sorted(TINY_SPECS))
def test_adam_steps_on_one_batch_lower_the_loss(name):
    model = build(TINY_SPECS[name]).train()
    x = mnist_images(32)
    before = objective(model, x)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(25):
        out = model.loss_terms(x, step=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    after = objective(model, x)
    assert after < 0.8 * before, (before, after)
    out = model.loss_terms(x, step=0)
    assert "rec" in out.terms
    for value in out.terms.values():
        assert value.shape == (32,) and torch.isfinite(value).all()
    # the capabilities: images in [0, 1]; decode ∘ encode is reconstruct; codes interpolate
    model.eval()
    with torch.no_grad():
        images = model.reconstruct(x[:3])
        assert images.shape == (3, *MNIST_SHAPE) and images.min() >= 0 and images.max() <= 1
        assert torch.allclose(model.decode(model.encode(x[:3])), images)
        codes = model.encode(x[:2])
        assert model.decode(0.5 * codes[:1] + 0.5 * codes[1:]).shape == (1, *MNIST_SHAPE)


def test_every_autoencoder_builds_with_its_defaults():
    for name in ("autoencoder", "denoising_autoencoder", "sparse_autoencoder", "k_sparse_autoencoder"):
        assert name in registry.names("image_model")
        model = build({"type": name})
        assert model.loss_terms(mnist_images(2)).loss.isfinite()
    assert "contractive_autoencoder" in registry.names("image_model")


# --- contractive ---------------------------------------------------------------------------------


def jacobian_norms(model, x: torch.Tensor) -> torch.Tensor:
    """‖∂h/∂x‖²_F per example from torch.autograd.functional.jacobian, (B,)."""
    norms = []
    for image in x:
        jac = torch.autograd.functional.jacobian(lambda img: model.encode(img.unsqueeze(0)).squeeze(0), image)
        norms.append(jac.pow(2).sum())  # jac: (D, C, H, W)
    return torch.stack(norms)


def test_contractive_closed_form_equals_the_formula_and_the_autograd_jacobian():
    closed = build({"type": "contractive_autoencoder", "code_dim": 7}, SMALL_SHAPE)
    auto = build({"type": "contractive_autoencoder", "code_dim": 7, "jacobian": "autograd"}, SMALL_SHAPE)
    auto.load_state_dict(closed.state_dict())
    with torch.no_grad():
        closed.code_layer.weight.mul_(3.0)  # saturate some units so h(1 − h) varies
        auto.code_layer.weight.mul_(3.0)
    x = torch.rand(3, *SMALL_SHAPE)
    h = closed.encode(x)  # (B, D)
    weight = closed.code_layer.weight  # (D, C·H·W)
    formula = torch.stack(
        [sum((h[b, j] * (1 - h[b, j])) ** 2 * weight[j].pow(2).sum() for j in range(7)) for b in range(3)]
    )
    from_closed = closed.loss_terms(x).terms["contractive"]
    from_auto = auto.loss_terms(x).terms["contractive"]
    reference = jacobian_norms(closed, x)
    assert torch.allclose(from_closed, formula, rtol=1e-5)
    assert torch.allclose(from_closed, reference, rtol=1e-5)
    assert torch.allclose(from_auto, reference, rtol=1e-5)
    # both paths give the same gradient of the penalty w.r.t. the weights (the autograd one is trainable)
    grad_closed = torch.autograd.grad(from_closed.sum(), closed.code_layer.weight)[0]
    grad_auto = torch.autograd.grad(from_auto.sum(), auto.code_layer.weight)[0]
    assert grad_closed.abs().max() > 0
    assert torch.allclose(grad_closed, grad_auto, rtol=1e-4, atol=1e-7)
    out = closed.loss_terms(x)
    assert torch.allclose(out.loss, (out.terms["rec"] + 0.1 * out.terms["contractive"]).mean())


def test_contractive_autograd_on_a_deep_conv_encoder_equals_the_jacobian():
    spec = {
        "type": "contractive_autoencoder",
        "code_dim": 5,
        "hidden_dims": [6],
        "conv_channels": [3],
        "activation": "tanh",
        "jacobian": "autograd",
    }
    model = build(spec, (1, 4, 6))
    x = torch.rand(3, 1, 4, 6)
    with torch.no_grad():  # an evaluator's context: the penalty is still computed
        penalty = model.loss_terms(x).terms["contractive"]
    assert torch.allclose(penalty, jacobian_norms(model, x), rtol=1e-5)
    with pytest.raises(TextVAEError, match="closed-form Jacobian needs one sigmoid layer"):
        build({**spec, "jacobian": "closed_form"}, (1, 4, 6))


# --- k-sparse ------------------------------------------------------------------------------------


def test_k_sparse_keeps_the_k_largest_units_and_gradients_flow_only_through_them():
    model = build({"type": "k_sparse_autoencoder", "code_dim": 12, "k": 3}, SMALL_SHAPE)
    x = torch.rand(4, *SMALL_SHAPE)
    pre = model.pre_activation(x)  # (B, 12)
    code = model.encode(x)
    assert ((code != 0).sum(-1) == 3).all()
    kept = torch.zeros_like(pre, dtype=torch.bool).scatter(-1, pre.topk(3, dim=-1).indices, True)
    assert torch.equal(code != 0, kept)
    assert torch.equal(code[kept], pre[kept])  # kept units are unchanged (no shrinkage)

    captured = []
    model.code_layer.register_forward_hook(
        lambda module, inputs, output: captured.append(output) or output.retain_grad()
    )
    model.loss_terms(x).loss.backward()
    grad = captured[0].grad  # ∂loss/∂z, (B, 12)
    assert (grad[~kept] == 0).all()
    assert (grad[kept] != 0).all()


def test_k_sparse_schedule_goes_from_k_start_to_k_and_stays():
    model = build(
        {"type": "k_sparse_autoencoder", "code_dim": 12, "k": 3, "k_start": 10, "k_schedule_steps": 7}, SMALL_SHAPE
    ).train()
    schedule = [model.current_k(step) for step in range(12)]
    assert schedule[0] == 10 and schedule[7:] == [3] * 5
    assert all(a >= b for a, b in itertools.pairwise(schedule))
    assert len(set(schedule)) > 3  # it decreases gradually, not in one jump
    x = torch.rand(2, *SMALL_SHAPE)
    for step in (0, 3, 9):
        out = model.loss_terms(x, step=step)
        assert out.stats["k"] == schedule[step]
        assert ((model.code(x, step) != 0).sum(-1) == schedule[step]).all()
    model.eval()  # evaluation uses the target k
    assert ((model.code(x, 0) != 0).sum(-1) == 3).all()
    assert model.loss_terms(x, step=0).stats["k"] == 3


# --- sparse --------------------------------------------------------------------------------------


def test_sparse_kl_penalty_equals_the_bernoulli_kl_of_mean_activations():
    model = build({"type": "sparse_autoencoder", "code_dim": 6, "target_activation": 0.05}, SMALL_SHAPE)
    x = torch.rand(5, *SMALL_SHAPE)
    out = model.loss_terms(x)
    rho_hat = model.encode(x).mean(0)  # (D,)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Bernoulli(probs=torch.full_like(rho_hat, 0.05)),
        torch.distributions.Bernoulli(probs=rho_hat),
    ).sum()
    assert out.terms["sparsity"].shape == (5,)
    assert torch.allclose(out.terms["sparsity"], expected.expand(5), rtol=1e-5)
    assert torch.allclose(out.loss, out.terms["rec"].mean() + 3.0 * expected, rtol=1e-5)

    l1 = build({"type": "sparse_autoencoder", "code_dim": 6, "penalty": "l1", "code_activation": "relu"}, SMALL_SHAPE)
    out = l1.loss_terms(x)
    assert torch.allclose(out.terms["sparsity"], l1.encode(x).abs().sum(-1))


@pytest.mark.parametrize("rho", [0.0, 1.0, -0.2, 1.5])
def test_sparse_target_activation_outside_the_unit_interval_is_rejected(rho):
    with pytest.raises(TextVAEError, match=r"target_activation ρ must be in \(0, 1\)"):
        build({"type": "sparse_autoencoder", "target_activation": rho})


# --- denoising -----------------------------------------------------------------------------------


def test_denoising_corrupts_only_the_input_and_targets_the_clean_image():
    model = build({"type": "denoising_autoencoder", "code_dim": 6, "mask_probability": 0.5}, (1, 20, 30)).train()
    x = torch.rand(4, 1, 20, 30) * 0.9 + 0.1  # no zeros, so every masked pixel is visible
    torch.manual_seed(7)
    rec = model.loss_terms(x).terms["rec"]
    torch.manual_seed(7)
    corrupted = model.corrupt(x)
    masked = corrupted == 0
    assert torch.equal(corrupted[~masked], x[~masked])
    assert abs(masked.float().mean().item() - 0.5) < 0.05  # 2400 pixels: SE 0.01
    output = model.decoder(model.code(corrupted))
    clean_target = F.binary_cross_entropy_with_logits(output, x, reduction="none").sum((1, 2, 3))
    noisy_target = F.binary_cross_entropy_with_logits(output, corrupted, reduction="none").sum((1, 2, 3))
    assert torch.allclose(rec, clean_target)
    assert not torch.allclose(rec, noisy_target)

    gaussian = build({"type": "denoising_autoencoder", "mask_probability": 0.0, "noise_std": 0.2}, (1, 20, 30))
    noise = gaussian.train().corrupt(x) - x
    assert abs(noise.std().item() - 0.2) < 0.01
    gaussian.eval()  # evaluation reports the clean reconstruction error
    assert torch.equal(gaussian.corrupt(x), x)


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "k_sparse_autoencoder", "code_dim": 10, "k": 11}, r"k must be in \[1, code_dim = 10\]"),
        ({"type": "k_sparse_autoencoder", "code_dim": 10, "k": 0}, r"k must be in \[1, code_dim = 10\]"),
        ({"type": "k_sparse_autoencoder", "code_dim": 10, "k": 5, "k_start": 4, "k_schedule_steps": 3}, "k_start"),
        ({"type": "k_sparse_autoencoder", "code_dim": 10, "k": 5, "k_start": 8}, "k_schedule_steps ≥ 1"),
        ({"type": "k_sparse_autoencoder", "code_dim": 10, "k": 5, "k_schedule_steps": 8}, "needs k_start"),
        ({"type": "sparse_autoencoder", "code_activation": "relu"}, "needs code_activation 'sigmoid'"),
        ({"type": "sparse_autoencoder", "sparsity_weight": -1.0}, "sparsity_weight"),
        ({"type": "denoising_autoencoder", "mask_probability": 0.0}, "no corruption"),
        ({"type": "denoising_autoencoder", "mask_probability": 1.0}, r"mask_probability must be in \[0, 1\)"),
        ({"type": "denoising_autoencoder", "noise_std": -0.1}, "noise_std"),
        ({"type": "contractive_autoencoder", "contractive_weight": -1.0}, "contractive_weight"),
        ({"type": "autoencoder", "code_dim": 0}, "code_dim must be ≥ 1"),
        ({"type": "autoencoder", "hidden_dims": [0]}, "hidden_dims"),
        ({"type": "autoencoder", "conv_channels": [4, 4, 4]}, "divisible by 8"),
        ({"type": "autoencoder", "activation": "swish"}, "is not one of"),
        ({"type": "autoencoder", "reconstruction": "l1"}, "is not one of"),
    ],
)
def test_bad_values_are_one_line_errors(spec, message):
    with pytest.raises(TextVAEError, match=message) as info:
        build(spec)
    assert "\n" not in str(info.value)
