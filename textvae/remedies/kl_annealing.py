"""KL annealing: the KL term's weight grows from (near) 0 to 1 over training.

Schedules (the weight w multiplies the KL term of the objective; reported numbers are unaffected):

- ``linear`` (He et al. 2019): w(t) = min(1, start + (1 − start) · t / warmup).
- ``sigmoid`` (Bowman et al. 2016, "logistic"): w(t) = 1 / (1 + exp(−steepness · (t − midpoint))).
- ``cyclical`` (Fu et al. 2019, Eq. 6): training is split into ``cycles`` periods of length
  P = ``total`` / ``cycles``; with τ = (t mod P) / P, w = f(τ / ratio) while τ ≤ ``ratio`` and 1
  after, f linear, cosine (½ − ½ cos πu) or sigmoid (1 / (1 + exp(−12 (u − ½)))). With
  ``zero_ratio`` > 0 the first part of each period has w = 0 and the ramp starts after it
  (the Optimus variant, Li et al. 2020). After ``total``, w = 1.

t counts optimizer steps, or epochs (fractional: step / steps per epoch) when ``unit = "epoch"``.
``step`` may be a float64 tensor on the device (``textvae.cuda.sync_free_step``): the weight is then a device
tensor computed by the same float64 operations, so a captured step follows the schedule without
reading the step back (``weight_tensor``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from textvae.errors import TextVAEError
from textvae.objective import ElboTerms, Objective
from textvae.registry import register
from textvae.remedies.base import REMEDY_CONTEXT, Remedy

_USES = {
    "linear": {"warmup", "start"},
    "sigmoid": {"midpoint", "steepness"},
    "cyclical": {"total", "cycles", "ratio", "shape", "zero_ratio"},
}


@register("remedy", "kl_annealing", context=REMEDY_CONTEXT)
class KLAnnealing(Remedy):
    def __init__(
        self,
        schedule: Literal["linear", "sigmoid", "cyclical"] = "linear",
        unit: Literal["step", "epoch"] = "step",
        warmup: float | None = None,  # linear: time to reach 1 (He et al. 2019: 10 epochs)
        start: float | None = None,  # linear: the weight at t = 0 (He et al. 2019: 0.1)
        midpoint: float | None = None,  # sigmoid: t where w = ½ (Bowman et al. 2016: 2,500 steps)
        steepness: float | None = None,  # sigmoid: slope k (Bowman et al. 2016: 0.0025)
        total: float | None = None,  # cyclical: length of the cyclical part of training
        cycles: int | None = None,  # cyclical: M (Fu et al. 2019: 4)
        ratio: float | None = None,  # cyclical: R, fraction of each period spent increasing (0.5)
        shape: Literal["linear", "cosine", "sigmoid"] | None = None,  # cyclical: the ramp's shape
        zero_ratio: float | None = None,  # cyclical: fraction of each period held at w = 0 (Optimus: 0.5)
    ):
        super().__init__()
        given = {name for name, value in locals().items() if value is not None and name in set().union(*_USES.values())}
        stray = sorted(given - _USES[schedule])
        if stray:
            raise TextVAEError(f"kl_annealing: {stray[0]!r} does not apply to the {schedule!r} schedule")
        self.schedule, self.unit = schedule, unit
        self.warmup = 10.0 if warmup is None else warmup
        self.start = 0.0 if start is None else start
        self.midpoint = 2500.0 if midpoint is None else midpoint
        self.steepness = 0.0025 if steepness is None else steepness
        self.total, self.cycles = total, 4 if cycles is None else cycles
        self.ratio = 0.5 if ratio is None else ratio
        self.shape = shape or "linear"
        self.zero_ratio = 0.0 if zero_ratio is None else zero_ratio
        if schedule == "linear" and (self.warmup <= 0 or not 0 <= self.start <= 1):
            raise TextVAEError("kl_annealing: linear needs warmup > 0 and 0 ≤ start ≤ 1")
        if schedule == "cyclical":
            if self.total is None or self.total <= 0 or self.cycles < 1:
                raise TextVAEError("kl_annealing: cyclical needs total > 0 and cycles ≥ 1")
            if not 0 <= self.zero_ratio < self.ratio <= 1:
                raise TextVAEError("kl_annealing: cyclical needs 0 ≤ zero_ratio < ratio ≤ 1")

    def weight(self, t: float) -> float:
        """The KL weight at time t (steps or epochs)."""
        if self.schedule == "linear":
            return min(1.0, self.start + (1.0 - self.start) * t / self.warmup)
        if self.schedule == "sigmoid":
            return 1.0 / (1.0 + math.exp(-self.steepness * (t - self.midpoint)))
        if t >= self.total:
            return 1.0
        period = self.total / self.cycles
        tau = (t % period) / period
        if tau < self.zero_ratio:
            return 0.0
        if tau > self.ratio:
            return 1.0
        u = (tau - self.zero_ratio) / (self.ratio - self.zero_ratio)
        if self.shape == "cosine":
            return 0.5 - 0.5 * math.cos(math.pi * u)
        if self.shape == "sigmoid":
            return 1.0 / (1.0 + math.exp(-12.0 * (u - 0.5)))
        return u

    def weight_tensor(self, t: Tensor) -> Tensor:
        """``weight(t)`` for a 0-dim float64 tensor t, as a tensor on t's device, without reading t.

        The same IEEE float64 operations as ``weight`` (min → clamp, % → fmod for t ≥ 0, branches →
        ``torch.where``); exp and cos come from torch instead of libm (equal within 1 ulp)."""
        one = torch.ones_like(t)
        if self.schedule == "linear":
            return torch.clamp(self.start + (1.0 - self.start) * t / self.warmup, max=1.0)
        if self.schedule == "sigmoid":
            return 1.0 / (1.0 + torch.exp(-self.steepness * (t - self.midpoint)))
        period = self.total / self.cycles
        tau = torch.fmod(t, period) / period
        u = (tau - self.zero_ratio) / (self.ratio - self.zero_ratio)
        if self.shape == "cosine":
            ramp = 0.5 - 0.5 * torch.cos(math.pi * u)
        elif self.shape == "sigmoid":
            ramp = 1.0 / (1.0 + torch.exp(-12.0 * (u - 0.5)))
        else:
            ramp = u
        ramp = torch.where(tau > self.ratio, one, torch.where(tau < self.zero_ratio, torch.zeros_like(t), ramp))
        return torch.where(t >= self.total, one, ramp)

    def adjust(self, objective: Objective, terms: ElboTerms, *, step, steps_per_epoch) -> Objective:
        """``step`` and ``steps_per_epoch``: ints, or float64 device tensors (a sync-free step)."""
        if isinstance(step, Tensor):
            t = step / steps_per_epoch if self.unit == "epoch" else step
            weight = self.weight_tensor(t)
        else:
            weight = self.weight(step / steps_per_epoch if self.unit == "epoch" else float(step))
        objective.weights["kl"] = objective.weights.get("kl", 1.0) * weight
        return objective
