import math

import pytest
import torch

from textvae.errors import TextVAEError
from textvae.objective import ElboTerms, Objective
from textvae.remedies.kl_annealing import KLAnnealing
from textvae.remedies.kl_weight import BetaWeight


def test_linear_schedule_of_he_et_al():
    schedule = KLAnnealing("linear", unit="epoch", start=0.1, warmup=10)
    assert schedule.weight(0) == pytest.approx(0.1)
    assert schedule.weight(5) == pytest.approx(0.55)
    assert schedule.weight(10) == 1.0 and schedule.weight(25) == 1.0


def test_sigmoid_schedule_of_bowman_et_al():
    schedule = KLAnnealing("sigmoid", midpoint=2500, steepness=0.0025)
    assert schedule.weight(2500) == pytest.approx(0.5)
    assert schedule.weight(0) == pytest.approx(1 / (1 + math.exp(6.25)))
    assert schedule.weight(10_000) > 0.999


@pytest.mark.parametrize(
    "shape,quarter", [("linear", 0.5), ("cosine", 0.5), ("sigmoid", 0.5)]
)  # a quarter into a period with ratio 0.5 is the ramp's midpoint
def test_cyclical_schedule_of_fu_et_al(shape, quarter):
    schedule = KLAnnealing("cyclical", total=400, cycles=4, ratio=0.5, shape=shape)
    period_start = [0, 100, 200, 300]
    for start in period_start:
        assert schedule.weight(start) == pytest.approx(0.0, abs=0.01)
        assert schedule.weight(start + 25) == pytest.approx(quarter, abs=1e-9)
        assert schedule.weight(start + 60) == 1.0  # past R = 0.5 of the period
    assert schedule.weight(400) == 1.0 and schedule.weight(1000) == 1.0
    assert schedule.weight(10) < schedule.weight(20) < schedule.weight(40)


def test_cyclical_zero_phase_of_optimus():
    schedule = KLAnnealing("cyclical", total=100, cycles=1, ratio=0.75, zero_ratio=0.5)
    assert schedule.weight(10) == 0.0 and schedule.weight(49) == 0.0
    assert schedule.weight(62.5) == pytest.approx(0.5)
    assert schedule.weight(80) == 1.0


def test_epoch_unit_uses_the_fraction_of_epochs():
    schedule = KLAnnealing("linear", unit="epoch", start=0.0, warmup=2)
    terms = ElboTerms(torch.ones(3), torch.ones(3), torch.ones(3, 1), torch.ones(3))
    objective = schedule.adjust(Objective.negative_elbo(terms), terms, step=50, steps_per_epoch=100)
    assert objective.weights["kl"] == pytest.approx(0.25)


def test_annealing_and_beta_multiply_in_either_order():
    terms = ElboTerms(torch.ones(3), torch.full((3,), 2.0), torch.ones(3, 2), torch.ones(3))
    anneal, beta = KLAnnealing("linear", warmup=100), BetaWeight(0.4)
    one = beta.adjust(
        anneal.adjust(Objective.negative_elbo(terms), terms, step=30, steps_per_epoch=10),
        terms,
        step=30,
        steps_per_epoch=10,
    )
    two = anneal.adjust(
        beta.adjust(Objective.negative_elbo(terms), terms, step=30, steps_per_epoch=10),
        terms,
        step=30,
        steps_per_epoch=10,
    )
    assert one.weights["kl"] == pytest.approx(0.12) and two.weights["kl"] == pytest.approx(0.12)
    assert float(one.loss()) == pytest.approx(1 + 0.12 * 2)


def test_parameters_of_another_schedule_are_rejected():
    with pytest.raises(TextVAEError, match="'cycles' does not apply"):
        KLAnnealing("linear", cycles=4)
    with pytest.raises(TextVAEError, match="cyclical needs total"):
        KLAnnealing("cyclical")
