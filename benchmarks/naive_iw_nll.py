"""IW-NLL the way published text-VAE code computes it: one sentence at a time, 100 samples per pass.

The baseline ``textvae bench`` times the toolkit's importance-weighted evaluation against. For
each sentence x (a batch of one, as He et al. 2019's ``calc_iwnll`` does): the encoder once; then
in chunks of ``chunk_size`` samples, z_k ~ q(z|x), the sentence repeated once per sample through
the whole decoder (embedding, input projection of [e_t; z_k], LSTM, all V logits), and

    log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x),    IW-NLL(x) = −log (1/K Σ_k w_k)

(Burda et al. 2015). Plain PyTorch on ``reference_step.ReferenceVAE``, in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


@torch.no_grad()
def sentence_log_weights(
    model, tokens: Tensor, num_samples: int, chunk_size: int, generator: torch.Generator | None = None
) -> Tensor:
    """log w_k for one sentence ``tokens`` (T,) = BOS w_1 .. w_n EOS: (K,)."""
    tokens = tokens.unsqueeze(0)  # (1, T)
    lengths = torch.tensor([tokens.shape[1]], device=tokens.device)
    mean, logvar = model.posterior(tokens, lengths)  # (1, D) each
    std = torch.exp(0.5 * logvar)
    chunks = []
    for start in range(0, num_samples, chunk_size):
        count = min(chunk_size, num_samples - start)
        eps = torch.randn((count, mean.shape[1]), generator=generator, device=mean.device)
        z = mean + eps * std  # (c, D)
        log_px_z = -model.reconstruction_nll(tokens.expand(count, -1), lengths.expand(count), z)  # (c,)
        log_pz = (-0.5 * (LOG_2PI + z**2)).sum(-1)
        log_qz = (-0.5 * (LOG_2PI + logvar + eps**2)).sum(-1)
        chunks.append(log_px_z + log_pz - log_qz)
    return torch.cat(chunks)  # (K,)


def iw_nll(model, sentences: list[Tensor], num_samples: int = 500, chunk_size: int = 100, seed: int = 0) -> Tensor:
    """IW-NLL of each sentence (nats), (N,): one sentence at a time."""
    model.eval()
    generator = torch.Generator(device=sentences[0].device).manual_seed(seed)
    values = []
    for tokens in sentences:
        log_weights = sentence_log_weights(model, tokens, num_samples, chunk_size, generator)
        values.append(-(torch.logsumexp(log_weights, 0) - math.log(num_samples)))
    return torch.stack(values)
