"""textvae.models.dropout: nn.Dropout's distribution with a mask drawn from 32-bit integers."""

from __future__ import annotations

import math

import pytest
import torch

from textvae.models.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.75, 0.999])
def test_each_element_is_kept_with_probability_keep(keep):
    torch.manual_seed(0)
    draws = 400_000
    kept = keep_mask((draws,), keep).double().mean().item()
    assert abs(kept - keep) < 5 * math.sqrt(keep * (1 - keep) / draws)


def test_mask_elements_are_independent_of_their_neighbours():
    """Two elements share one 64-bit draw: their masks must still be independent."""
    torch.manual_seed(1)
    mask = keep_mask((200_000, 2), 0.5).double()
    both = (mask[:, 0] * mask[:, 1]).mean().item()
    assert abs(both - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 200_000)


def test_kept_elements_are_scaled_by_one_over_keep_and_the_gradient_is_the_mask():
    torch.manual_seed(2)
    x = torch.randn(7, 33, requires_grad=True)
    out = dropout(x, 0.3)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)


def test_eval_mode_and_p_zero_are_the_identity_and_p_one_drops_everything():
    x = torch.randn(4, 5)
    layer = Dropout(0.5).eval()
    assert layer(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_the_same_seed_draws_the_same_mask_and_the_next_draw_differs():
    x = torch.ones(64, 64)
    layer = Dropout(0.5).train()
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_dropout_keeps_nn_dropout_arguments_and_state():
    layer = Dropout(0.25)
    assert isinstance(layer, torch.nn.Dropout) and layer.p == 0.25
    assert layer.state_dict() == {}
