"""VQ-VAE: the EMA codebook equations, the commitment and codebook terms and where their gradients go,
the straight-through estimator, dead-code restart, usage perplexity, and a loss that falls on MNIST."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import SHARED_DATA
from textvae import registry
from textvae.errors import TextVAEError
from textvae.image.data import load_digits
from textvae.image.models.quantizer import VectorQuantizer, usage_perplexity
from textvae.image.models.vqvae import VQVAE

TINY = {"hidden_dim": 16, "residual_hidden_dim": 8, "num_residual_blocks": 1, "code_dim": 6, "num_codes": 11}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared, busy machine more threads make these tiny models slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mnist_batch(count: int) -> torch.Tensor:
    """The first ``count`` MNIST test images, (count, 1, 28, 28) in [0, 1]."""
    images, _ = load_digits(SHARED_DATA / "mnist", "test")
    return images[:count, None].float() / 255.0


def grid(vectors: list[list[float]], height: int, width: int) -> torch.Tensor:
    """Row vectors (B·h·w, D), batch-major then raster order → z_e (B, D, h, w)."""
    flat = torch.tensor(vectors)
    return flat.view(-1, height, width, flat.shape[1]).permute(0, 3, 1, 2).contiguous()


def test_ema_update_matches_appendix_a1_by_hand():
    decay, epsilon = 0.9, 0.01
    quantizer = VectorQuantizer(3, 2, "ema", ema_decay=decay, ema_epsilon=epsilon, dead_code_restart=False)
    codebook = [[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]]
    quantizer.codebook.copy_(torch.tensor(codebook))
    quantizer.ema_sum.copy_(torch.tensor(codebook))
    # four vectors: two nearest code 0, two nearest code 1, none nearest code 2
    vectors = [[0.1, -0.1], [0.9, 1.2], [1.1, 0.8], [0.2, 0.1]]
    quantizer.train()
    out = quantizer(grid(vectors, 2, 2))
    assert out.codes.flatten().tolist() == [0, 1, 1, 0]

    counts = [2, 2, 0]  # n_i
    sums = [[0.1 + 0.2, -0.1 + 0.1], [0.9 + 1.1, 1.2 + 0.8], [0.0, 0.0]]  # Σ_{j: k_j = i} z_e,j
    expected_count = [decay * 1.0 + (1 - decay) * n for n in counts]  # N_i, from N = 1
    expected_sum = [
        [decay * e + (1 - decay) * s for e, s in zip(ei, si, strict=True)]
        for ei, si in zip(codebook, sums, strict=True)
    ]
    total = sum(expected_count)
    smoothed = [(n + epsilon) / (total + 3 * epsilon) * total for n in expected_count]
    expected_codebook = [[m / ns for m in mi] for mi, ns in zip(expected_sum, smoothed, strict=True)]

    torch.testing.assert_close(quantizer.ema_count, torch.tensor(expected_count))
    torch.testing.assert_close(quantizer.ema_sum, torch.tensor(expected_sum))
    torch.testing.assert_close(quantizer.codebook, torch.tensor(expected_codebook))
    assert out.codebook is None  # the EMA variant has no codebook term

    quantizer.eval()
    before = quantizer.codebook.clone()
    quantizer(grid(vectors, 2, 2))
    torch.testing.assert_close(quantizer.codebook, before, rtol=0, atol=0)  # no update outside training


def tiny_vqvae(**overrides) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE((1, 28, 28), **{**TINY, **overrides})


def test_commitment_and_codebook_terms_and_where_their_gradients_go():
    model = tiny_vqvae(codebook_update="gradient", commitment_weight=0.25)
    x = mnist_batch(3)
    out = model.loss_terms(x)

    z_e = model.encoder(x)  # (B, D, h, w)
    vectors = z_e.permute(0, 2, 3, 1).reshape(-1, 6)
    nearest = model.quantizer.codebook[torch.cdist(vectors, model.quantizer.codebook).argmin(1)]  # (B·h·w, D)
    by_hand = (vectors - nearest).pow(2).view(3, -1).sum(1)  # ‖z_e − e‖² per image
    torch.testing.assert_close(out.terms["commitment"], by_hand)
    torch.testing.assert_close(out.terms["codebook"], by_hand)
    expected_loss = (out.terms["rec"] + out.terms["codebook"] + 0.25 * out.terms["commitment"]).mean()
    torch.testing.assert_close(out.loss, expected_loss)

    encoder, decoder = list(model.encoder.parameters()), list(model.decoder.parameters())
    codebook = [model.quantizer.codebook]

    def gradient_mass(term: torch.Tensor, parameters: list[torch.Tensor]) -> float:
        grads = torch.autograd.grad(term.sum(), parameters, retain_graph=True, allow_unused=True)
        return sum(0.0 if g is None else float(g.abs().sum()) for g in grads)

    commitment, codebook_term = out.terms["commitment"], out.terms["codebook"]
    assert gradient_mass(commitment, encoder) > 0  # ‖z_e − sg[e]‖²: into the encoder only
    assert gradient_mass(commitment, codebook) == 0 and gradient_mass(commitment, decoder) == 0
    assert gradient_mass(codebook_term, codebook) > 0  # ‖sg[z_e] − e‖²: into the codebook only
    assert gradient_mass(codebook_term, encoder) == 0 and gradient_mass(codebook_term, decoder) == 0


def test_straight_through_passes_the_decoder_gradient_to_the_encoder_unchanged():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(5, 3, "gradient")
    z_e = torch.randn(2, 3, 4, 5, requires_grad=True)
    out = quantizer(z_e)
    torch.testing.assert_close(out.straight_through, quantizer.embed(out.codes))  # the value is e_k
    upstream = torch.randn_like(z_e)
    (out.straight_through * upstream).sum().backward()
    torch.testing.assert_close(z_e.grad, upstream)  # ∂/∂z_e is the identity

    model = tiny_vqvae()
    rec = model.loss_terms(mnist_batch(3)).terms["rec"]
    first_encoder_conv = model.encoder.layers[0].weight
    (gradient,) = torch.autograd.grad(rec.sum(), [first_encoder_conv])
    assert float(gradient.abs().sum()) > 0  # the reconstruction term trains the encoder


@pytest.mark.parametrize("update", ["ema", "gradient"])
def test_a_code_unused_for_long_enough_is_restarted_onto_an_encoder_output(update):
    quantizer = VectorQuantizer(4, 2, update, restart_unused_after=2)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]]))
    if update == "ema":
        quantizer.ema_sum.copy_(quantizer.codebook)
    vectors = [[0.1, 0.0], [0.9, 0.1], [0.1, 0.9], [0.0, 0.1], [1.1, 0.0], [0.0, 1.2]]
    z_e = grid(vectors, 2, 3)  # (1, 2, 2, 3): uses codes 0, 1, 2 and never code 3
    quantizer.batches_unused.zero_()  # as if the codebook had been in use
    quantizer.train()
    quantizer(z_e)
    assert quantizer.restart_dead_codes() == 0  # unused for one batch only
    quantizer(z_e)
    assert quantizer.batches_unused.tolist() == [0, 0, 0, 2]
    assert quantizer.restart_dead_codes() == 1
    moved = quantizer.codebook[3]
    assert any(torch.allclose(moved, torch.tensor(v)) for v in vectors)  # onto one of the batch's outputs
    assert quantizer.batches_unused[3] == 0
    if update == "ema":
        assert quantizer.ema_count[3] == 1.0
        torch.testing.assert_close(quantizer.ema_sum[3], moved)
    assert quantizer.restart_dead_codes() == 0  # nothing left to restart without a new batch


def test_the_first_training_step_moves_the_codes_the_first_batch_did_not_choose():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(6, 3, "ema", restart_unused_after=50)
    z_e = torch.randn(2, 3, 2, 2) + 5.0  # far from the initial codes: all nearest the same one
    quantizer.train()
    out = quantizer(z_e)
    assert out.codes_used == 1
    assert quantizer.restart_dead_codes() == 5
    vectors = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    restarted = [k for k in range(6) if k != int(out.codes[0, 0, 0])]
    assert all(torch.isclose(vectors, quantizer.codebook[k]).all(1).any() for k in restarted)

    switched_off = VectorQuantizer(6, 3, "ema", dead_code_restart=False, restart_unused_after=50)
    switched_off.train()
    switched_off(z_e)
    assert switched_off.restart_dead_codes() == 0


def test_model_reports_restarted_codes_after_the_step():
    model = tiny_vqvae(restart_unused_after=1)
    model.train()
    model.loss_terms(mnist_batch(4))
    used = int((model.quantizer.batches_unused == 0).sum())
    assert model.end_of_step(1) == {"codes_restarted": float(11 - used)}
    model.eval()
    model.loss_terms(mnist_batch(4))  # evaluation neither counts usage nor offers restarts
    assert model.end_of_step(2) == {"codes_restarted": 0.0}


def test_perplexity_is_the_exponential_of_the_usage_entropy():
    quantizer = VectorQuantizer(4, 2, "gradient")
    codebook = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor(codebook))
    picks = [0, 0, 0, 1, 2, 2]  # usage 3/6, 1/6, 2/6, 0
    out = quantizer(grid([codebook[k] for k in picks], 2, 3))
    assert out.codes.flatten().tolist() == picks
    entropy = -sum(p * math.log(p) for p in (3 / 6, 1 / 6, 2 / 6))
    assert out.perplexity == pytest.approx(math.exp(entropy))
    assert out.codes_used == 3
    assert usage_perplexity(torch.arange(7), 7) == pytest.approx(7.0)
    assert usage_perplexity(torch.zeros(9, dtype=torch.long), 7) == pytest.approx(1.0)


def test_capabilities_have_the_right_shapes_and_ranges():
    model = tiny_vqvae().eval()
    x = mnist_batch(3)
    codes = model.code_indices(x)
    assert codes.shape == (3, 7, 7) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 11
    images = model.reconstruct(x)
    assert images.shape == x.shape and float(images.min()) >= 0 and float(images.max()) <= 1
    z_e = model.encode(x)
    assert z_e.shape == (3, 6, 7, 7)
    torch.testing.assert_close(model.decode(z_e), images)  # decode quantizes z_e first


@pytest.mark.parametrize(("update", "reconstruction"), [("ema", "bernoulli"), ("gradient", "mse")])
def test_a_few_steps_lower_the_loss_on_a_small_mnist_batch(update, reconstruction):
    model = tiny_vqvae(codebook_update=update, reconstruction=reconstruction, restart_unused_after=3)
    x = mnist_batch(8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(20):
        out = model.loss_terms(x, step=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.end_of_step(step)
        losses.append(float(out.loss.detach()))
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3


def test_bad_constructor_values_are_one_line_user_errors():
    with pytest.raises(TextVAEError, match="multiples of 4"):
        registry.build("image_model", {"type": "vqvae"}, image_shape=(1, 30, 30))
    with pytest.raises(TextVAEError, match="num_codes"):
        registry.build("image_model", {"type": "vqvae", "num_codes": 1}, image_shape=(1, 28, 28))
    with pytest.raises(TextVAEError, match="ema_decay"):
        registry.build("image_model", {"type": "vqvae", "ema_decay": 1.0}, image_shape=(1, 28, 28))
    with pytest.raises(TextVAEError, match="restart_unused_after"):
        registry.build("image_model", {"type": "vqvae", "restart_unused_after": 0}, image_shape=(1, 28, 28))
