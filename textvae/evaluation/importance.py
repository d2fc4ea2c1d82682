"""Importance sampling for IW-NLL (Burda et al. 2015): K draws z_k ~ q(z|x), then the decoder on them.

log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x); IW-NLL = −log (1/K Σ_k w_k). The draws are made
``chunk_size`` at a time (the random stream does not depend on the decoder passes), the decoder
runs on as many samples at a time as memory allows, and on a GPU several batches' draws are merged
into one decoder pass (``Pending``, ``merge_pending``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from textvae.data.batching import Batch
from textvae.distributions import standard_normal_log_prob
from textvae.evaluation.device import decoder_autocast


@dataclass
class ImportanceDraws:
    """K samples z_k ~ q(z|x) of a batch and their log densities, drawn before any decoder pass."""

    z: torch.Tensor  # (K, B, D)
    log_prior: torch.Tensor  # (K, B): log N(z_k; 0, I)
    log_q: torch.Tensor  # (K, B): log q(z_k|x), with a posterior flow's log-determinant


def draw_importance_samples(model, inference, num_samples: int, chunk_size: int, generator) -> ImportanceDraws:
    """K = ``num_samples`` draws from q(z|x), ``chunk_size`` per call of the posterior (so the random
    stream, hence the numbers, do not depend on how the decoder passes are sized)."""
    zs, priors, log_qs = [], [], []
    for start in range(0, num_samples, chunk_size):
        count = min(chunk_size, num_samples - start)
        z, log_q_per_dim = model.sample_latent(inference, count, generator)  # (c, B, D) each
        zs.append(z)
        priors.append(standard_normal_log_prob(z))
        log_qs.append(log_q_per_dim.sum(-1))
    return ImportanceDraws(torch.cat(zs), torch.cat(priors), torch.cat(log_qs))


def importance_log_weights(
    model,
    batch,
    inference,
    num_samples: int,
    chunk_size: int,
    generator,
    *,
    pass_samples: int | None = None,
    precision: str = "fp32",
    host_lengths: np.ndarray | None = None,
    logit_rows: int | None = None,
) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x) for K samples z_k ~ q(z|x): (K, B), float32.

    The encoder ran once (``inference``); the samples are drawn ``chunk_size`` at a time and the
    decoder runs on ``pass_samples`` of them at a time (default ``chunk_size``), so memory does not
    grow with K. With a posterior flow, q(z|x) includes its log-determinant.
    """
    draws = draw_importance_samples(model, inference, num_samples, chunk_size, generator)
    log_px_z = decoder_log_likelihood(
        model, batch, draws.z, pass_samples or chunk_size, precision, host_lengths, logit_rows
    )
    return log_px_z + draws.log_prior - draws.log_q


def decoder_log_likelihood(
    model, batch, z: torch.Tensor, pass_samples: int, precision: str, host_lengths=None, logit_rows=None
) -> torch.Tensor:
    """log p(x|z_k) for z (K, B, D), ``pass_samples`` samples per decoder pass: (K, B), float32."""
    parts = [
        samples_log_likelihood(model, batch, chunk, host_lengths, logit_rows, precision)
        for chunk in z.split(pass_samples)
    ]
    return torch.cat(parts).float()


def samples_log_likelihood(
    model,
    batch,
    z: torch.Tensor,
    host_lengths: np.ndarray | None = None,
    logit_rows: int | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """log p(x|z_k) for z (K, B, D): (K, B), what ``model.log_likelihood(batch, z)`` gives. A model with a
    faster way to score many samples answers it itself (``SequenceVAE.samples_log_likelihood``)."""
    answer = getattr(model, "samples_log_likelihood", None)
    if answer is not None:
        return answer(batch, z, host_lengths=host_lengths, logit_rows=logit_rows, precision=precision)
    with decoder_autocast(precision, z.device):
        return model.log_likelihood(batch, z).float()


@dataclass
class Pending:
    """A batch whose samples are drawn and whose decoder pass waits for more rows (on a GPU)."""

    batch: Batch  # on the device
    host_lengths: np.ndarray  # (B,)
    draws: ImportanceDraws


def merge_pending(pending: list[Pending], pad_id: int) -> tuple[Batch, np.ndarray, ImportanceDraws]:
    """One batch of every pending batch's sentences (padded to the longest), its lengths and draws."""
    if len(pending) == 1:
        return pending[0].batch, pending[0].host_lengths, pending[0].draws
    width = max(p.batch.tokens.shape[1] for p in pending)
    tokens = torch.cat([F.pad(p.batch.tokens, (0, width - p.batch.tokens.shape[1]), value=pad_id) for p in pending])
    batch = Batch(tokens, torch.cat([p.batch.lengths for p in pending]), torch.cat([p.batch.indices for p in pending]))
    fields = ("z", "log_prior", "log_q")
    draws = ImportanceDraws(*(torch.cat([getattr(p.draws, f) for p in pending], dim=1) for f in fields))
    return batch, np.concatenate([p.host_lengths for p in pending]), draws
