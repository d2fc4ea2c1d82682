"""The text family's train record: what one step adds to it, and the means it reports.

A train record covers the optimizer steps since the last one (the window). Its sums are one float64
tensor on the device (``SUM_NAMES``), added to by the host step (``TrainWindow.add_step``) and by the
graphed step itself (``textvae.cuda.sync_free_step``), and read only when a record is written:

- loss, rec and KL per sentence (loss = rec + KL, the honest −ELBO, never the remedies' objective),
  and tokens per second;
- the gradient norm ‖g‖₂ before clipping, of every trained parameter (``grad_norm``) and of the
  encoder's and the decoder's apart (``grad_norm_encoder``, ``grad_norm_decoder``; He et al. 2019's
  lagging encoder shows in that split), each the mean over the window's steps. A step that updates
  several times (aggressive training) reports its last update, the one the step is counted for.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from textvae.engine import distributed
from textvae.engine.step import StepOutcome

TERM_SUMS = ("loss", "rec", "kl", "sentences", "tokens")
NORMS = ("grad_norm", "grad_norm_encoder", "grad_norm_decoder")
SUM_NAMES = (*TERM_SUMS, *NORMS, "norm_steps")  # norm_steps: the steps whose norms are in the sums
PARTS = ("encoder", "decoder")  # the model's submodules whose gradient norms are recorded apart


def norm_keys(model: nn.Module) -> tuple[str, ...]:
    """The norms a record of this model reports: the total, and each of ``PARTS`` the model has."""
    parts = [part for part in PARTS if isinstance(getattr(model, part, None), nn.Module)]
    return ("grad_norm", *(f"grad_norm_{part}" for part in parts))


def part_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``grad_norm_<part>`` → the parameters of that part (``PARTS``) of the model."""
    return {f"grad_norm_{part}": list(getattr(model, part).parameters()) for part in PARTS if hasattr(model, part)}


def grad_norms(parts: Mapping[str, Sequence[nn.Parameter]], total: Tensor) -> dict[str, Tensor]:
    """``total`` (‖g‖₂ of the step's parameters, before clipping) and ‖g‖₂ of each part's gradients:
    0-dim device tensors, nothing read. A part without gradients this step (a frozen decoder) is 0."""
    norms = {"grad_norm": total.detach()}
    for key, params in parts.items():
        grads = [p.grad for p in params if p.grad is not None]
        norms[key] = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros_like(norms["grad_norm"])
    return norms


def term_sums(rec: Tensor, kl: Tensor, sentences: Tensor, tokens: Tensor) -> Tensor:
    """One batch's (len(TERM_SUMS),) float64 sums from its honest terms rec, kl (B,) and its counts (0-dim)."""
    rec, kl = rec.detach().sum(), kl.detach().sum()
    counts = torch.stack([sentences.to(torch.float64), tokens.to(torch.float64)])
    return torch.cat([torch.stack([rec + kl, rec, kl]).double(), counts])  # (5,)


def norm_sums(norms: Mapping[str, Tensor] | None, like: Tensor) -> Tensor:
    """(len(NORMS) + 1,) float64: the step's norms (0 where absent) and 1 (the step counts), or zeros."""
    if not norms:
        return torch.zeros(len(NORMS) + 1, dtype=torch.float64, device=like.device)
    values = [norms.get(key, torch.zeros_like(norms["grad_norm"])).to(torch.float64) for key in NORMS]
    return torch.stack([*values, torch.ones_like(values[0])])


class TrainWindow:
    """The sums of the steps since the last train record, one float64 tensor on the device (``SUM_NAMES``).

    A host step's terms and norms are added here (``add_step``); with ``sums`` given (the graphed step's
    ``StepState.sums``) the graphed steps add theirs on the device, and the progress bar shows the last
    record's values instead of reading the device at every step."""

    def __init__(self, device: torch.device, norms: Sequence[str], sums: Tensor | None = None):
        self.live = sums is None  # the host's own sums: the progress bar may read them
        self.sums = torch.zeros(len(SUM_NAMES), dtype=torch.float64, device=device) if sums is None else sums
        self.sums.zero_()
        self.norms = tuple(norms)
        self.started = time.perf_counter()
        self._shown: dict[str, str] = {}

    def add_step(self, outcome: StepOutcome) -> None:
        """A host step's sums (a graphed step, ``terms`` None, added its own on the device)."""
        terms = outcome.terms
        if terms is None:
            return
        counts = torch.tensor([float(outcome.examples), float(outcome.tokens)], dtype=torch.float64)
        sentences, tokens = counts.to(terms.rec.device)
        step = term_sums(terms.rec, terms.kl, sentences, tokens)
        self.sums.add_(torch.cat([step, norm_sums(outcome.grad_norms, step)]))

    def totals(self) -> dict[str, float]:
        """The sums as Python numbers (a read of the device)."""
        return dict(zip(SUM_NAMES, self.sums.tolist(), strict=True))

    def postfix(self, elapsed: float) -> dict[str, str]:
        if not self.live:
            return self._shown
        sums = self.totals()
        return {
            "tok_s": f"{sums['tokens'] / max(elapsed, 1e-9):.0f}",
            "loss": f"{sums['loss'] / sums['sentences']:.2f}",
            "kl": f"{sums['kl'] / sums['sentences']:.3f}",
        }

    def report(self, dist: distributed.Context, elapsed: float) -> tuple[dict[str, float], dict[str, float]]:
        """Per-sentence means of loss, rec and KL over every process's sentences, the mean gradient
        norms over the window's steps, and tokens/s."""
        totals = dict(zip(SUM_NAMES, distributed.sum_across(dist, self.sums.tolist()), strict=True))
        sentences = max(totals["sentences"], 1.0)
        means = {key: totals[key] / sentences for key in ("loss", "rec", "kl")}
        if totals["norm_steps"] > 0:
            means |= {key: totals[key] / totals["norm_steps"] for key in self.norms}
        rate = {"tokens_per_s": totals["tokens"] / max(elapsed, 1e-9)}
        self._shown = {"tok_s": f"{rate['tokens_per_s']:.0f}", "loss": f"{means['loss']:.2f}"}
        return means, rate
