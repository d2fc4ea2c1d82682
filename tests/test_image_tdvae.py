"""TD-VAE: honest per-sequence terms, (t1, t2) sampling, causal beliefs, loss finite and falling, rollouts."""

from __future__ import annotations

import pytest
import torch

from tests.test_image_moving_mnist import mnist_digits
from textvae import registry
from textvae.errors import TextVAEError
from textvae.image.moving_mnist import make_moving_mnist

FRAME = (1, 12, 12)  # (C, H, W) of one frame
TINY = {"latent_dim": 4, "belief_dim": 6, "hidden_dim": 32, "state_hidden_dim": 10, "max_jump": 3}


def build(**overrides):
    torch.manual_seed(0)
    return registry.build("image_model", {"type": "tdvae", **TINY, **overrides}, image_shape=FRAME)


def sequences(batch: int = 3, seq_len: int = 7, seed: int = 0) -> torch.Tensor:
    """Moving MNIST (B, T, 1, 12, 12) from real digits."""
    return make_moving_mnist(mnist_digits(20), batch, seq_len, FRAME[-1], 1, torch.Generator().manual_seed(seed))


def test_terms_are_per_sequence_and_beta_changes_only_the_loss():
    x = sequences()
    torch.manual_seed(1)
    plain = build().loss_terms(x, step=0)
    torch.manual_seed(1)
    weighted = build(beta=0.25).loss_terms(x, step=0)
    assert set(plain.terms) == {"rec", "kl_t1", "kl_t2"}
    for name, value in plain.terms.items():
        assert value.shape == (3,)
        assert torch.isfinite(value).all()
        assert torch.equal(value, weighted.terms[name])  # the same samples: honest terms ignore beta
    rec, kl = plain.terms["rec"], plain.terms["kl_t1"] + plain.terms["kl_t2"]
    assert torch.allclose(plain.loss, (rec + kl).mean())
    assert torch.allclose(weighted.loss, (rec + 0.25 * kl).mean())
    assert (rec > 0).all()  # a Bernoulli NLL summed over 144 pixels


def test_time_pairs_respect_max_jump_and_cover_every_jump():
    model = build(pairs_per_sequence=5)
    t1, t2 = model.sample_time_pairs(400, 7, generator=torch.Generator().manual_seed(0))
    assert t1.shape == t2.shape == (400, 5)
    jump = t2 - t1
    assert (t1 >= 0).all() and (t2 <= 6).all()
    assert set(jump.unique().tolist()) == {1, 2, 3}  # every jump in [1, max_jump], nothing else
    assert set(t1.unique().tolist()) == set(range(6))
    assert set(t2.unique().tolist()) == set(range(1, 7))
    # a sequence shorter than max_jump + 1 caps the jump at T − 1
    t1, t2 = model.sample_time_pairs(200, 3, generator=torch.Generator().manual_seed(1))
    assert set((t2 - t1).unique().tolist()) == {1, 2}
    assert (t1 == 0)[(t2 - t1) == 2].all()


def test_beliefs_are_causal():
    model = build()
    x = sequences()
    changed = x.clone()
    changed[:, 4:] = torch.rand_like(changed[:, 4:])
    before, after = model.beliefs(x), model.beliefs(changed)
    assert torch.equal(before[:, :4], after[:, :4])  # b_t depends on x_1..x_t only
    assert not torch.allclose(before[:, 4], after[:, 4])


def test_loss_finite_and_falling_with_adam():
    x = sequences(batch=8, seq_len=8)
    model = build(pairs_per_sequence=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(2)
    losses = []
    for step in range(40):
        out = model.loss_terms(x, step=step)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)


def test_figures_rows_hold_the_truth_above_rollouts_in_unit_range():
    model = build()
    x = sequences(batch=4, seq_len=9)
    grids = model.figures(x, torch.Generator().manual_seed(0), num_sequences=2, num_rollouts=3, context_len=3)
    assert set(grids) == {"jumpy_rollout_jump1", "jumpy_rollout_jump3"}
    one, three = grids["jumpy_rollout_jump1"], grids["jumpy_rollout_jump3"]
    assert one.shape == (2 * 4, 3 + 6, *FRAME)  # (sequences · (1 + rollouts), context + (T − context) // 1)
    assert three.shape == (2 * 4, 3 + 2, *FRAME)  # jumps of 3 from frame 2: frames 5 and 8
    for grid in (one, three):
        assert grid.min() >= 0 and grid.max() <= 1
        for s in range(2):
            block = grid[4 * s : 4 * (s + 1)]  # truth row, then 3 rollouts
            assert torch.equal(block[:, :3], x[s, :3].expand(4, -1, -1, -1, -1))  # context in every row
    assert torch.equal(one[0, 3:], x[0, 3:])
    assert torch.equal(three[4, 3:], x[1, [5, 8]])
    assert not torch.allclose(one[1, 3:], one[2, 3:])  # rollouts are samples, not copies


def test_predict_is_a_seeded_rollout_in_unit_range():
    model = build()
    context = sequences(batch=2, seq_len=4)
    first = model.predict(context, 5, torch.Generator().manual_seed(7), jump=2)
    again = model.predict(context, 5, torch.Generator().manual_seed(7), jump=2)
    other = model.predict(context, 5, torch.Generator().manual_seed(8), jump=2)
    assert first.shape == (2, 5, *FRAME)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert model.reconstruct(context).shape == context.shape
    with pytest.raises(TextVAEError):
        model.predict(context, 5, torch.Generator(), jump=4)  # beyond max_jump


def test_unconditioned_transition_is_the_papers_form():
    model = build(condition_on_jump=False)
    assert model.jump_features(torch.tensor([1, 3])).shape == (2, 0)
    x = sequences(seq_len=9)
    assert torch.isfinite(model.loss_terms(x).loss)
    assert set(model.figures(x, torch.Generator().manual_seed(0))) == {"jumpy_rollout_jump1"}


@pytest.mark.parametrize("bad", [{"latent_dim": 0}, {"max_jump": 0}, {"pairs_per_sequence": 0}, {"beta": -1.0}])
def test_bad_settings_raise(bad):
    with pytest.raises(TextVAEError):
        build(**bad)


def test_bad_input_shapes_raise():
    model = build()
    with pytest.raises(TextVAEError):
        model.loss_terms(torch.rand(3, 1, 12, 12))  # one image, not a sequence
    with pytest.raises(TextVAEError):
        model.loss_terms(torch.rand(3, 1, *FRAME))  # a single frame has no (t1, t2) pair
