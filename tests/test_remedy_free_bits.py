import pytest
import torch

from textvae.objective import ElboTerms, Objective
from textvae.remedies.free_bits import FreeBits
from textvae.remedies.kl_annealing import KLAnnealing


def _terms(kl_per_dim):
    return ElboTerms(torch.zeros(kl_per_dim.shape[0]), kl_per_dim.sum(-1), kl_per_dim, torch.ones(3))


def test_per_dimension_free_bits_is_kingma_eq_15_with_zero_gradient_below_lambda():
    kl_per_dim = torch.tensor([[0.1, 2.0, 0.3, 1.0], [0.2, 3.0, 0.1, 0.2], [0.0, 1.0, 0.2, 0.3]], requires_grad=True)
    remedy = FreeBits(threshold=0.5)
    objective = remedy.adjust(
        Objective.negative_elbo(_terms(kl_per_dim)), _terms(kl_per_dim), step=0, steps_per_epoch=1
    )
    # batch means per dimension: 0.1, 2.0, 0.2, 0.5 → max(λ, ·) = 0.5, 2.0, 0.5, 0.5
    assert float(objective.loss()) == pytest.approx(0.5 + 2.0 + 0.5 + 0.5)
    objective.loss().backward()
    assert torch.all(kl_per_dim.grad[:, [0, 2, 3]] == 0)  # at or below λ: no gradient (0.5 is not above 0.5)
    assert torch.allclose(kl_per_dim.grad[:, 1], torch.full((3,), 1 / 3))


def test_total_threshold_and_li_et_al_mask():
    kl_per_dim = torch.tensor([[0.1, 0.2], [0.1, 0.4], [0.1, 0.0]])  # mean KL 0.3
    total = FreeBits(threshold=1.0, mode="total").clamped_kl(kl_per_dim)
    assert torch.allclose(total, torch.ones(3))
    assert float(FreeBits(threshold=0.25, mode="total").clamped_kl(kl_per_dim).mean()) == pytest.approx(0.3)
    masked = FreeBits(threshold=0.15, mode="dimension_mask").clamped_kl(kl_per_dim)  # dim 0 (0.1) left out
    assert torch.allclose(masked, kl_per_dim[:, 1])


def test_free_bits_and_annealing_compose_in_either_order():
    kl_per_dim = torch.tensor([[0.1, 2.0], [0.2, 3.0], [0.0, 1.0]])
    terms = _terms(kl_per_dim)
    free, anneal = FreeBits(threshold=0.5), KLAnnealing("linear", warmup=10)
    a = anneal.adjust(
        free.adjust(Objective.negative_elbo(terms), terms, step=4, steps_per_epoch=1), terms, step=4, steps_per_epoch=1
    )
    b = free.adjust(
        anneal.adjust(Objective.negative_elbo(terms), terms, step=4, steps_per_epoch=1),
        terms,
        step=4,
        steps_per_epoch=1,
    )
    assert float(a.loss()) == pytest.approx(float(b.loss())) == pytest.approx(0.4 * (0.5 + 2.0))
    assert torch.equal(terms.kl, kl_per_dim.sum(-1))  # the honest term is untouched
