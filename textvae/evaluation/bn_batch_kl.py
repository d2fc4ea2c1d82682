"""The quantity Zhu et al. 2020's BN-VAE bound is about: the KL under batch statistics.

The bound (../shared/papers.md §9) is a statement about the batch-normalized posterior means the
training objective sees. Per dimension d, over one training batch of size B,

    μ'_d = γ · (μ_d − mean_B[μ_d]) / sqrt(Var_B[μ_d] + ε) + β_d,
    mean_B[μ'_d²] = γ² · Var_B[μ_d] / (Var_B[μ_d] + ε) + β_d²,

and since KL(q(z|x) ‖ N(0, I)) = ½ Σ_d (μ'_d² + σ_d² − log σ_d² − 1) ≥ ½ Σ_d μ'_d² (Eq. 6),
the KL averaged over a batch is at least D · γ² · Var_B / (Var_B + ε) / 2 ≈ D · γ² / 2. It can fail
only through ε (an encoder whose means vary by less than ε within a batch).

``batch_statistics_kl`` measures that KL as training forms the batches: the recipe's batch size and
length bucketing over the whole training split (one epoch's partition), BatchNorm on each batch's
own statistics, dropout off, and BatchNorm's running statistics not updated. A batch of one
sentence has no batch variance (BatchNorm rejects it); it is left out and counted.

The test-time KL (``kl`` of an evaluation) uses the *running* statistics instead, which the bound
does not cover: when the pre-BN means of the test sentences vary less than the running variance
says (``bn_eval_variance_ratio`` < 1), the test-time means have a spread below γ and the test-time
KL can sit below D · γ² / 2 with the training-time KL above it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from textvae.data.batching import bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit
from textvae.remedies.bn_vae import BNVAE

log = logging.getLogger(__name__)


def bn_norms(model: nn.Module) -> list[nn.BatchNorm1d]:
    """The BatchNorm of every BN-VAE remedy of ``model`` (none for a model without one)."""
    return [remedy.norm for remedy in getattr(model, "remedies", ()) if isinstance(remedy, BNVAE)]


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """The model in evaluation mode (dropout off) except BN-VAE's BatchNorm, which normalizes by each
    batch's own statistics without updating its running statistics; the modes are restored after."""
    norms = bn_norms(model)
    was_training = model.training
    saved = [(norm.training, norm.track_running_stats) for norm in norms]
    model.eval()
    for norm in norms:
        norm.train()  # batch statistics ...
        norm.track_running_stats = False  # ... and the running ones passed as None: never updated
    try:
        yield
    finally:
        model.train(was_training)
        for norm, (training, track) in zip(norms, saved, strict=True):
            norm.train(training)
            norm.track_running_stats = track


@torch.no_grad()
def batch_statistics_kl(
    model: nn.Module,
    split: EncodedSplit,
    pad_id: int,
    batch_size: int,
    *,
    seed: int,
    epoch: int = 0,
    pool_batches: int | None = None,
) -> dict[str, float | int]:
    """The mean KL per sentence over ``split`` (the training split) cut into batches exactly as
    training epoch ``epoch`` of seed ``seed`` cuts it, under ``batch_statistics``. Returns
    ``kl_batch_stats`` (nats), the sentences it covers and the ones left out (batches of one)."""
    device = next(model.parameters()).device
    batches = bucketed_batches(
        split.lengths, batch_size, shuffle=True, seed=seed, epoch=epoch, pool_batches=pool_batches
    )
    kept = [b for b in batches if len(b) > 1]
    total = torch.zeros(model.latent_dim, dtype=torch.float64, device=device)  # (D,)
    with batch_statistics(model):
        for batch in iterate_batches(split, kept, pad_id):
            posterior = model.infer(batch.to_device(device)).posterior  # (B, D) parameters
            total += posterior.kl_per_dim().sum(0).double()  # (D,)
    covered = int(sum(len(b) for b in kept))
    return {
        "kl_batch_stats": float(total.sum()) / covered,
        "kl_batch_stats_sentences": covered,
        "kl_batch_stats_left_out": len(split) - covered,
    }


@torch.no_grad()
def eval_variance_ratio(
    model: nn.Module, split: EncodedSplit, indices: np.ndarray, pad_id: int, batch_size: int
) -> float:
    """How much the pre-BN posterior means of ``indices`` vary against BatchNorm's running variance:
    the mean over dimensions of Var_test[μ_d] / running_var_d (the first BN-VAE remedy's BatchNorm).
    Below 1, the test-time normalized means have a spread below γ (the test-time KL's shortfall)."""
    norm = bn_norms(model)[0]
    captured: list[torch.Tensor] = []
    hook = norm.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0].double()))
    device = next(model.parameters()).device
    model.eval()
    order = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    try:
        for batch in iterate_batches(split, order, pad_id):
            model.infer(batch.to_device(device))
    finally:
        hook.remove()
    means = torch.cat(captured)  # (N, D) pre-BN posterior means
    return float((means.var(dim=0, unbiased=True) / norm.running_var.double()).mean())
