"""textvae.models.cross_entropy: the fused output layer + cross-entropy and its reused logit buffers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from textvae.models import cross_entropy
from textvae.models.cross_entropy import linear_cross_entropy


def _check(layer, rows: int, chunk_rows: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, layer.in_features, generator=generator, requires_grad=True)
    targets = torch.randint(layer.out_features, (rows,), generator=generator)
    upstream = torch.rand(rows, generator=generator)
    plain = F.cross_entropy(layer(hidden), targets, reduction="none")
    want = torch.autograd.grad((plain * upstream).sum(), (hidden, layer.weight, layer.bias))
    fused = linear_cross_entropy(hidden, layer, targets, chunk_rows=chunk_rows)
    got = torch.autograd.grad((fused * upstream).sum(), (hidden, layer.weight, layer.bias))
    torch.testing.assert_close(fused, plain)
    for got_grad, want_grad in zip(got, want, strict=True):
        torch.testing.assert_close(got_grad, want_grad)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, layer, targets), plain.detach())


def test_reused_buffers_give_every_call_its_own_right_answer(monkeypatch):
    """Larger, smaller, then larger again, with evaluation calls between: a buffer handed back by one
    call and taken by the next must not carry anything over."""
    monkeypatch.setattr(cross_entropy, "_POOL_ROWS", 8)
    monkeypatch.setattr(cross_entropy, "_POOL", cross_entropy._BufferPool(cross_entropy.POOL_BYTES))
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 13)
    for seed, (rows, chunk_rows) in enumerate([(20, 6), (7, 3), (33, 8), (1, 1), (20, 20)]):
        _check(layer, rows, chunk_rows, seed)
    assert 1 <= len(cross_entropy._POOL.free) <= 2  # about one buffer of the largest call's size, not one per call


def test_no_rows_give_no_loss_and_zero_gradients():
    layer = torch.nn.Linear(4, 9)
    hidden = torch.zeros(0, 4, requires_grad=True)
    nll = linear_cross_entropy(hidden, layer, torch.zeros(0, dtype=torch.long))
    assert nll.shape == (0,)
    grad_weight, grad_bias = torch.autograd.grad(nll.sum(), (layer.weight, layer.bias))
    assert not grad_weight.any() and not grad_bias.any()


def test_the_pool_keeps_no_more_than_its_budget():
    pool = cross_entropy._BufferPool(max_bytes=100 * 4)
    like = torch.zeros(1)
    first, second = pool.take(60, like), pool.take(60, like)
    pool.give_back(first)
    pool.give_back(second)  # 120 floats would pass the budget of 100
    assert len(pool.free) == 1
    assert pool.take(50, like) is first
    assert pool.take(80, like).numel() == 80  # nothing free fits: a new buffer


def _padded_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` (c, V) as ``_logit_scratch`` holds them: (c, W) with −inf padding columns."""
    scratch, _ = cross_entropy._logit_scratch(logits.shape[0], logits.shape[1], logits)
    scratch[:, : logits.shape[1]] = logits
    return scratch


def test_a_target_probability_below_the_smallest_float_still_gives_the_exact_loss():
    """p_y = exp(−200) underflows float32: −log p_y would be inf, the loss must be 200 (+ log Σ)."""
    width = 21  # not a multiple of 16: padding columns exist
    logits = torch.zeros(3, width)
    logits[0, 5] = 200.0  # target 0 of row 0 is exp(−200) below the rest
    logits[1, 2] = -200.0  # row 1's target itself is tiny
    logits[2] = torch.linspace(-3, 3, width)  # an ordinary row
    targets = torch.tensor([[0], [2], [7]])
    want = F.cross_entropy(logits, targets.squeeze(1), reduction="none")
    want_probs = torch.softmax(logits, dim=1)
    assert torch.isfinite(want).all() and want[0] > 199 and want[1] > 199
    for sync_free in (False, True):
        scratch = _padded_logits(logits)
        out = torch.full_like(scratch, float("nan"))
        nll = cross_entropy._softmax_rows(scratch, targets, width, out, sync_free)
        torch.testing.assert_close(nll, want)
        torch.testing.assert_close(out[:, :width], want_probs)
        assert not out[:, width:].any()  # the padding's probability is exactly zero


def test_huge_logits_train_with_finite_loss_and_the_plain_gradients():
    """A layer whose logits are hundreds apart: the fused loss and gradients equal the plain ones."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 19)
    with torch.no_grad():
        layer.weight.mul_(400.0)
    _check(layer, rows=12, chunk_rows=5, seed=3)


def test_the_dense_path_a_graph_can_capture_gives_the_masked_sums():
    """dense=True (every position through the output layer, padding zeroed): bit for bit when nothing
    is padded; equal up to rounding with padding, gradients included."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 13)
    hidden = torch.randn(3, 5, 6, requires_grad=True)  # (B, T, H)
    targets = torch.randint(0, 13, (3, 5))
    full = torch.ones(3, 5, dtype=torch.bool)
    padded = torch.arange(5) < torch.tensor([[5], [2], [3]])
    for mask, exact in ((full, True), (padded, False)):
        results = []
        for dense in (False, True):
            hidden.grad, layer.weight.grad = None, None
            nll = cross_entropy.sequence_nll(layer, hidden, targets, mask, dense=dense)  # (B,)
            nll.sum().backward()
            results.append((nll.detach(), hidden.grad.clone(), layer.weight.grad.clone()))
        for sparse_value, dense_value in zip(*results, strict=True):
            if exact:
                assert torch.equal(sparse_value, dense_value)
            else:
                torch.testing.assert_close(sparse_value, dense_value, rtol=1e-6, atol=1e-6)
        assert torch.equal(results[1][1][~mask], torch.zeros_like(results[1][1][~mask]))  # padding: no gradient
