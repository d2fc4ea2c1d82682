"""Training strategies: how one training step uses a batch. Changing the loop itself is not a hook.

- ``standard``: one joint update of all parameters on the remedies' objective.
- ``aggressive`` (He et al. 2019, Algorithm 1): before each update of the generative model, the
  inference network alone is updated on fresh random batches until its loss stops improving
  (checked every ``check_every`` inner steps, at most ``max_inner_steps``); then the decoder alone
  is updated on the batch. Aggressive mode ends for good at the first validation whose mutual
  information I(x; z) is lower than the previous one.
- ``pretrain_reset`` (Li et al. 2019): the first ``pretrain_steps`` steps train a deterministic
  autoencoder (z = the posterior mean, objective = reconstruction only); then the decoder is
  re-initialized (and its optimizer state dropped) and training goes on as a VAE with the
  recipe's remedies (the paper uses free bits).

Every strategy reports the honest terms of the batch it trained on; reported metrics never come
from its objective.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from textvae.engine import distributed
from textvae.engine.train_record import grad_norms, part_parameters
from textvae.objective import ElboTerms, elbo_terms
from textvae.registry import register
from textvae.remedies.base import training_objective

log = logging.getLogger(__name__)


@dataclass
class StepContext:
    model: nn.Module  # the model itself (its parts, remedies and methods)
    optimizer: torch.optim.Optimizer
    grad_clip: float | None
    step: int  # optimizer steps taken so far
    steps_per_epoch: int
    random_batch: Callable[[], object]  # a fresh batch of random training sentences
    forward: nn.Module | None = None  # what to call for a forward pass: the DistributedDataParallel wrapper, if any
    loss_scale: float = 1.0  # world_size · n_rank / n_global under torch.distributed (see textvae.engine.distributed)
    dist: distributed.Context = distributed.SINGLE_PROCESS
    # set by each apply_update: ‖g‖₂ before clipping, all and per part (textvae.engine.train_record)
    grad_norms: dict[str, torch.Tensor] | None = None


def remedy_loss(ctx: StepContext, batch) -> tuple[torch.Tensor, ElboTerms]:
    """The remedies' objective on one batch, and the honest terms it was built from."""
    out = (ctx.forward or ctx.model)(batch)
    terms = elbo_terms(out)
    objective = training_objective(
        ctx.model.remedies, out, terms, batch, step=ctx.step, steps_per_epoch=ctx.steps_per_epoch
    )
    return objective.loss(), terms


def apply_update(ctx: StepContext, loss: torch.Tensor, only: set[int] | None = None) -> bool:
    """Backward, clip, step; ``only`` restricts the update to these parameters (by id).

    Returns False, with nothing changed, when the loss or a gradient is not finite (on any rank).
    """
    ctx.optimizer.zero_grad(set_to_none=True)
    if not distributed.all_ranks_agree(ctx.dist, bool(torch.isfinite(loss))):
        return False
    (loss * ctx.loss_scale if ctx.loss_scale != 1.0 else loss).backward()
    params = [p for p in ctx.model.parameters() if p.grad is not None]
    if only is not None:
        for param in params:
            if id(param) not in only:
                param.grad = None  # torch optimizers skip parameters without a gradient
        params = [p for p in params if id(p) in only]
    total_norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # before clipping
    ctx.grad_norms = grad_norms(part_parameters(ctx.model), total_norm)
    clip_scale = _clip_or_fold(params, ctx.grad_clip, ctx.optimizer, total_norm)
    if clip_scale is None:
        ctx.optimizer.zero_grad(set_to_none=True)
        return False
    if clip_scale < 1.0:
        with _scaled_lr(ctx.optimizer, clip_scale):
            ctx.optimizer.step()
    else:
        ctx.optimizer.step()
    return True


def lr_scaling_is_clipping(optimizer: torch.optim.Optimizer) -> bool:
    """Whether multiplying the learning rate by s is the same update as multiplying the gradients by
    s: plain SGD, p ← p − lr·g, without momentum or weight decay (both see the gradient itself)."""
    return type(optimizer) is torch.optim.SGD and all(
        group["momentum"] == 0 and group["weight_decay"] == 0 for group in optimizer.param_groups
    )


@contextmanager
def _scaled_lr(optimizer: torch.optim.Optimizer, scale: float):
    """Every group's learning rate times ``scale`` inside the block, restored after it."""
    saved = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * scale
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, saved, strict=True):
            group["lr"] = lr


def _clip_or_fold(
    params: list[nn.Parameter], grad_clip: float | None, optimizer: torch.optim.Optimizer, total_norm: torch.Tensor
):
    """Clip the gradients to norm ``grad_clip`` (if set). Returns None when a gradient is not finite,
    else the scale still to apply through the learning rate (1.0: nothing left to apply).

    The total norm ``total_norm`` (‖g‖₂ of ``params``, logged in the train record) answers the
    finiteness question too: a finite norm means finite gradients. Only a non-finite norm (an inf or nan, or
    finite gradients whose squares overflow) needs the elementwise check, which then sees the
    clipped gradients, just as when checking came first: inf·0 and nan stay non-finite, finite
    values scaled by 0 are finite (that update is zero, as before).

    Nothing is scaled when the scale (``clip_grad_norm_``'s max_norm / (norm + 1e-6)) is at least 1:
    multiplying every gradient by 1 is a pass over all of them (1% of a PTB step). For plain SGD
    (``lr_scaling_is_clipping``) a scale below 1 is returned, to be applied through the learning
    rate, and the gradients are left unclipped; otherwise the gradients are scaled in place.
    """
    if grad_clip is None:
        return 1.0 if bool(torch.isfinite(total_norm)) or _all_finite(params) else None
    if torch.isfinite(total_norm):
        scale = grad_clip / (float(total_norm) + 1e-6)
        if scale >= 1.0:
            return 1.0
        if lr_scaling_is_clipping(optimizer):
            return scale
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, total_norm)
        return 1.0
    torch.nn.utils.clip_grads_with_norm_(params, grad_clip, total_norm)
    return 1.0 if _all_finite(params) else None


def _all_finite(params: list[nn.Parameter]) -> bool:
    return all(bool(torch.isfinite(p.grad).all()) for p in params)


class Strategy:
    """The standard step; subclasses change what a step does. State must be plain data (for checkpoints)."""

    needs_latent = False  # True when the strategy trains an inference network
    supports_distributed = False  # True when every rank makes the same forward/backward calls in a step
    # True when ``needs_host_step`` says when a step is the standard step, which textvae.cuda.sync_free_step runs
    # without host synchronisation and textvae.cuda.graph_cache captures as a CUDA graph
    supports_cuda_graphs = False

    def train_step(self, ctx: StepContext, batch) -> tuple[ElboTerms, bool]:
        loss, terms = remedy_loss(ctx, batch)
        return terms, apply_update(ctx, loss)

    def needs_host_step(self, step: int) -> bool:
        """Whether the step after ``step`` optimizer steps must be ``train_step`` (the host decides
        something); False: it is the standard step (``textvae.cuda.graph_stepper`` may capture it)."""
        return True

    def after_validation(self, valid: dict) -> None:
        """Called with every validation result (keys loss, rec, kl, ppl, mi)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@register("strategy", "standard")
class StandardStrategy(Strategy):
    supports_distributed = True
    supports_cuda_graphs = True

    def needs_host_step(self, step: int) -> bool:
        return False


def inference_parameter_ids(model: nn.Module) -> set[int]:
    """The inference network: the encoder and the remedies that belong to q(z|x) (BN-VAE, IAF)."""
    ids = {id(p) for p in model.encoder.parameters()}
    for remedy in model.remedies:
        if remedy.part_of_inference:
            ids |= {id(p) for p in remedy.parameters()}
    return ids


@contextmanager
def only_these_require_grad(model: nn.Module, ids: set[int]):
    """For the duration, the parameters outside ``ids`` (by id) do not require a gradient.

    An update restricted to ``ids`` discards the other gradients anyway; not asking for them lets
    autograd skip their work: the decoder's weight gradients in an encoder update, the whole
    encoder backward pass in a decoder update. The updated parameters' gradients are unchanged.
    """
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    for param in frozen:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in frozen:
            param.requires_grad_(True)


@register("strategy", "aggressive")
class AggressiveInference(Strategy):
    needs_latent = True
    supports_cuda_graphs = True  # once aggressive mode has ended: standard steps

    def __init__(self, max_inner_steps: int = 100, check_every: int = 15):
        self.max_inner_steps, self.check_every = max_inner_steps, check_every
        self.active, self.previous_mi = True, -math.inf

    def train_step(self, ctx: StepContext, batch) -> tuple[ElboTerms, bool]:
        if not self.active:
            return super().train_step(ctx, batch)
        encoder_ids = inference_parameter_ids(ctx.model)
        previous, current, tokens = math.inf, 0.0, 0
        for inner in range(1, self.max_inner_steps + 1):
            inner_batch = ctx.random_batch()
            with only_these_require_grad(ctx.model, encoder_ids):
                loss, terms = remedy_loss(ctx, inner_batch)
                apply_update(ctx, loss, only=encoder_ids)
            current += float((terms.rec + terms.kl).detach().sum())
            tokens += int(terms.num_tokens.sum())
            if inner % self.check_every == 0:
                current /= tokens  # per token, as He et al. 2019 compare it
                if current >= previous:
                    break
                previous, current, tokens = current, 0.0, 0
        decoder_ids = {id(p) for p in ctx.model.parameters()} - encoder_ids
        with only_these_require_grad(ctx.model, decoder_ids):
            loss, terms = remedy_loss(ctx, batch)
            return terms, apply_update(ctx, loss, only=decoder_ids)

    def needs_host_step(self, step: int) -> bool:
        return self.active  # the inner loop's stopping test reads the loss on the host

    def after_validation(self, valid: dict) -> None:
        if self.active and valid["mi"] < self.previous_mi:
            self.active = False
            log.info("aggressive training ends: validation MI fell from %.3f to %.3f", self.previous_mi, valid["mi"])
        self.previous_mi = valid["mi"]

    def state_dict(self) -> dict:
        return {"active": self.active, "previous_mi": self.previous_mi}

    def load_state_dict(self, state: dict) -> None:
        self.active, self.previous_mi = state["active"], state["previous_mi"]


@register("strategy", "pretrain_reset")
class PretrainThenReset(Strategy):
    needs_latent = True
    supports_cuda_graphs = True  # after the reset: standard steps

    def __init__(self, pretrain_steps: int):
        self.pretrain_steps = pretrain_steps
        self.reset_done = False

    def train_step(self, ctx: StepContext, batch) -> tuple[ElboTerms, bool]:
        if ctx.step < self.pretrain_steps:
            inference = ctx.model.infer(batch)
            rec = ctx.model.reconstruction_nll(batch, inference.posterior.mean)  # a deterministic autoencoder
            terms = ElboTerms(
                rec, inference.posterior.kl_per_dim().sum(-1), inference.posterior.kl_per_dim(), batch.lengths - 1
            )
            return terms, apply_update(ctx, rec.mean())
        if not self.reset_done:
            decoder = ctx.model.decoder
            decoder.reinitialize()
            for param in decoder.parameters():
                ctx.optimizer.state.pop(param, None)
            self.reset_done = True
            log.info("step %d: autoencoder pretraining done, decoder re-initialized", ctx.step)
        return super().train_step(ctx, batch)

    def needs_host_step(self, step: int) -> bool:
        return step < self.pretrain_steps or not self.reset_done  # the autoencoder steps, then the reset

    def state_dict(self) -> dict:
        return {"reset_done": self.reset_done}

    def load_state_dict(self, state: dict) -> None:
        self.reset_done = state["reset_done"]
