"""Validation during training: the sums of what a validation record reports, then its means.

Fast (no importance sampling): mean −ELBO (or NLL) per sentence, KL, PPL, He et al. 2019's minibatch
MI and, for a VAE, AU and KL per dimension, the live collapse diagnostics. The sums are read once per
validation and may be summed across processes (``validation_from_sums`` turns them into means).
"""

from __future__ import annotations

import numpy as np
import torch

from textvae import metrics
from textvae.data.batching import bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit
from textvae.evaluation.device import module_device
from textvae.objective import elbo_terms


def select_sentences(split: EncodedSplit, max_sentences: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded subset of ``max_sentences`` (sorted)."""
    if max_sentences is None or max_sentences >= len(split):
        return np.arange(len(split))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(split), size=max_sentences, replace=False))


VALIDATION_SUMS = ("rec", "kl", "tokens", "sentences", "mi_weighted")
# per latent dimension (lists of D sums, a VAE only): KL_d, and E_q[z_d] and its square for AU's variance
VALIDATION_VECTORS = ("kl_per_dim", "mean", "mean_sq")


@torch.no_grad()
def validation_sums(
    model, split: EncodedSplit, pad_id: int, batch_size: int, indices: np.ndarray, seed: int, device=None
) -> dict[str, float]:
    """Sums over ``indices`` of what validation reports (``VALIDATION_SUMS``): summed across
    processes under torch.distributed, then turned into means by ``validation_from_sums``."""
    was_training = model.training
    model.eval()
    device = module_device(model) if device is None else torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    # MI draws from its own stream (on a CPU the shared one, as always), so rec and KL see the same z
    mi_generator = generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed)
    batches = [indices[b] for b in bucketed_batches(split.lengths[indices], batch_size, shuffle=False)]
    totals = {key: torch.zeros((), dtype=torch.float64, device=device) for key in ("rec", "kl", "mi_weighted")}
    tokens, sentences = torch.zeros((), dtype=torch.long, device=device), 0
    vectors: dict[str, torch.Tensor] = {}
    for batch in iterate_batches(split, batches, pad_id):
        out = model(batch.to_device(device), generator=generator)
        terms = elbo_terms(out)
        totals["rec"] += terms.rec.sum().double()
        totals["kl"] += terms.kl.sum().double()
        tokens += terms.num_tokens.sum()
        sentences += len(batch)
        if out.posterior is not None:
            mi = metrics.mutual_info_estimate(out.posterior.mean, out.posterior.logvar, mi_generator)
            totals["mi_weighted"] += mi * len(batch)
            mean = out.posterior.mean.double()  # (B, D)
            for key, value in zip(VALIDATION_VECTORS, (terms.kl_per_dim.double(), mean, mean**2), strict=True):
                vectors[key] = value.sum(0) + vectors.get(key, 0.0)  # (D,) on the device
    read = {key: float(value) for key, value in totals.items()}  # the one read of the device
    read |= {"tokens": float(int(tokens)), "sentences": float(sentences)}
    sums = {key: read[key] for key in VALIDATION_SUMS}
    model.train(was_training)
    return sums | {key: value.tolist() for key, value in vectors.items()}


def validation_from_sums(sums: dict) -> dict:
    """Mean −ELBO (or NLL) per sentence, KL, PPL and MI from ``validation_sums`` (of one or all ranks);
    for a VAE also ``au`` (dimensions whose posterior means vary by ≥ 0.01 over the sentences, from
    the sums of E_q[z_d] and its square) and ``kl_per_dim``, the live collapse diagnostics."""
    sentences = sums["sentences"]
    result = {
        "loss": (sums["rec"] + sums["kl"]) / sentences,
        "rec": sums["rec"] / sentences,
        "kl": sums["kl"] / sentences,
        "ppl": metrics.perplexity(sums["rec"] + sums["kl"], int(sums["tokens"])),
        "mi": sums["mi_weighted"] / sentences,  # He et al. 2019's minibatch estimator; 0 for a language model
        "num_sentences": int(sentences),
    }
    if "mean" in sums and sentences > 1:
        pairs = zip(sums["mean"], sums["mean_sq"], strict=True)
        variances = [(sq - m * m / sentences) / (sentences - 1) for m, sq in pairs]  # unbiased Var_x(E_q[z_d])
        result["au"] = sum(v >= metrics.AU_THRESHOLD for v in variances)
        result["kl_per_dim"] = [v / sentences for v in sums["kl_per_dim"]]
    return result


def validation_loss(model, split: EncodedSplit, pad_id: int, batch_size: int, indices: np.ndarray, seed: int) -> dict:
    """Fast validation during training: mean −ELBO (or NLL) per sentence, KL, PPL and MI; no IW."""
    return validation_from_sums(validation_sums(model, split, pad_id, batch_size, indices, seed))
