"""Evaluate a model on a split: honest ELBO terms, IW-NLL, PPL, KL per dimension, AU and MI.

Definitions (nats; per sentence unless a name says otherwise), following He et al. 2019:
- ``rec``: −log p(x|z) with one z ~ q(z|x) per sentence; ``kl``: KL(q(z|x) || N(0, I)) in closed
  form; ``elbo`` = −(rec + kl), averaged over sentences.
- ``iw_nll``: −log (1/K Σ_k p(x, z_k) / q(z_k|x)), z_k ~ q(z|x) (Burda et al. 2015), averaged.
- ``ppl_elbo`` = exp(Σ (rec + kl) / Σ tokens), ``ppl_iw`` = exp(Σ iw_nll / Σ tokens), where
  tokens are words + EOS (BOS is never predicted).
- ``au``: dimensions with Var_x(E_q[z_d]) ≥ 0.01; ``mi_batch`` (He et al. 2019, aggregate posterior
  per evaluation minibatch) and ``mi_full`` (Li et al. 2019, over the whole evaluated set).
  With a posterior flow (IAF), AU and MI are measured on the Gaussian q0(z0|x) the flow starts
  from (its mean and variance); ELBO, KL and IW-NLL use the full flow posterior.
Every random draw comes from one generator on the model's device seeded with ``seed``, so a result
is reproducible on that device. Everything runs where the model is (``eval_device``): sums stay tensors
there and are read once at the end; on a GPU several batches share one IW decoder pass.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from textvae import metrics
from textvae.data.batching import bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit
from textvae.engine.machine import machine_fingerprint
from textvae.errors import TextVAEError
from textvae.evaluation.device import (
    PRECISIONS,
    device_index,
    logit_chunk_rows,
    matmul_precision,
    module_device,
    pass_rows,
)
from textvae.evaluation.importance import (
    Pending,
    decoder_log_likelihood,
    draw_importance_samples,
    importance_log_weights,
    merge_pending,
)
from textvae.evaluation.validation import select_sentences
from textvae.objective import elbo_terms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    iw_samples: int = 500
    iw_chunk_size: int = 100  # samples drawn per call (the random stream); on a CPU also per decoder pass
    batch_size: int = 32  # sentences per encoder pass (and per minibatch of He et al.'s MI)
    max_sentences: int | None = None
    seed: int = 0  # the random draws (z, MI); also the subset's unless ``subset_seed`` is given
    progress_bar: bool = True
    matmul_precision: str = "fp32"  # fp32 | tf32 | bf16 (``eval_device.matmul_precision``)
    mi_samples: int = 1  # z draws per sentence for both MI estimators; 1 = He et al. 2019's protocol
    subset_seed: int | None = None  # the seed of the ``max_sentences`` subset; None: ``seed``

    def __post_init__(self):
        for name in ("iw_samples", "iw_chunk_size", "batch_size", "mi_samples"):
            if getattr(self, name) < 1:
                raise TextVAEError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise TextVAEError(f"max-sentences must be ≥ 1, got {self.max_sentences}")
        if self.matmul_precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            raise TextVAEError(f"matmul-precision must be one of {choices}, got {self.matmul_precision!r}")


@dataclass
class EvalResult:
    metrics: dict
    means: np.ndarray | None  # (N, D) posterior means, rows in the split's order
    logvars: np.ndarray | None


@torch.no_grad()
def evaluate(model, split: EncodedSplit, pad_id: int, settings: EvalSettings = EvalSettings()) -> EvalResult:
    """Every metric of the module docstring, computed on the model's device (move the model first):
    sums stay tensors there and are read once at the end."""
    model.eval()
    device = module_device(model)
    subset_seed = settings.seed if settings.subset_seed is None else settings.subset_seed
    chosen = select_sentences(split, settings.max_sentences, subset_seed)
    lengths = split.lengths[chosen]
    batches = [chosen[b] for b in bucketed_batches(lengths, settings.batch_size, shuffle=False)]
    started = time.perf_counter()
    bar = tqdm(
        total=len(chosen), desc=f"eval {split.name}", unit="sent", disable=None if settings.progress_bar else True
    )
    with matmul_precision(settings.matmul_precision, device):
        if model.has_latent:
            result = _evaluate_vae(model, split, batches, chosen, pad_id, settings, device, bar)
        else:
            result = _evaluate_lm(model, split, batches, pad_id, device, bar)
    bar.close()
    if model.has_latent and settings.matmul_precision != "fp32":
        result.metrics["matmul_precision_check"] = precision_check(model, split, batches[0], pad_id, settings)
    _add_per_word_perplexity(result.metrics, int(split.words_per_sentence[chosen].sum()) + len(chosen))
    result.metrics["eval_seconds"] = time.perf_counter() - started
    result.metrics["subset_seed"] = subset_seed
    result.metrics["split"] = split.name
    result.metrics["device"] = str(device)
    result.metrics["matmul_precision"] = settings.matmul_precision
    result.metrics |= machine_fingerprint()  # the CPU, its kernels and the threads: what the last digits depend on
    return result


def _add_per_word_perplexity(result: dict, num_words: int) -> None:
    """PPL per word: exp(Σ NLL / Σ (words + EOS)), beside the PPL per token (exp(Σ NLL / Σ (tokens + EOS))).

    The two are equal for a word vocabulary; with subwords the per-token PPL is per piece and the
    per-word one is the number comparable across tokenizations (same NLL, the corpus's word count)."""
    n = result["num_sentences"]
    result["num_words"] = num_words
    if result["kind"] == "lm":
        result["ppl_word"] = metrics.perplexity(result["nll"] * n, num_words)
    else:
        result["ppl_iw_word"] = metrics.perplexity(result["iw_nll"] * n, num_words)
        result["ppl_elbo_word"] = metrics.perplexity(-result["elbo"] * n, num_words)


def _evaluate_lm(model, split, batches, pad_id, device, bar) -> EvalResult:
    total_nll = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = torch.zeros((), dtype=torch.long, device=device)
    num_sentences = 0
    for batch in iterate_batches(split, batches, pad_id):
        out = model(batch.to_device(device))
        total_nll += out.rec.sum().double()
        total_tokens += out.num_tokens.sum()
        num_sentences += len(batch)
        bar.update(len(batch))
    nll, tokens = float(total_nll), int(total_tokens)  # the one read of the device
    return EvalResult(
        metrics={
            "kind": "lm",
            "nll": nll / num_sentences,
            "ppl": metrics.perplexity(nll, tokens),
            "num_sentences": num_sentences,
            "num_tokens": tokens,
        },
        means=None,
        logvars=None,
    )


class _VaeSums:
    """Running sums of a VAE evaluation, as float64 / int64 tensors on the device (read once, at the end)."""

    NAMES = ("rec", "kl", "iw_nll", "iw_nll_sq", "mc_se", "mc_var", "mi_batch")

    def __init__(self, latent_dim: int, device: torch.device):
        self.sums = {name: torch.zeros((), dtype=torch.float64, device=device) for name in self.NAMES}
        self.kl_per_dim = torch.zeros(latent_dim, dtype=torch.float64, device=device)
        self.tokens = torch.zeros((), dtype=torch.long, device=device)
        self.mi_terms: list[torch.Tensor] = []  # per-draw terms of He et al.'s MI, (S, B) per batch

    def add_iw(self, log_weights: torch.Tensor) -> None:
        """The IW-NLL of each sentence of a pass from its log weights (K, B): log-sum-exp in float32."""
        log_weights = log_weights.float()
        iw_nll = -metrics.iw_log_likelihood(log_weights)  # (B,)
        self.sums["iw_nll"] += iw_nll.sum().double()
        self.sums["iw_nll_sq"] += (iw_nll.double() ** 2).sum()
        if log_weights.shape[0] > 1:
            se = metrics.iw_monte_carlo_se(log_weights).double()  # (B,)
            self.sums["mc_se"] += se.sum()
            self.sums["mc_var"] += (se**2).sum()  # the draws of different sentences are independent

    def read(self) -> tuple[dict[str, float], np.ndarray, int]:
        return {k: float(v) for k, v in self.sums.items()}, self.kl_per_dim.cpu().numpy(), int(self.tokens)


def _flush(model, pending: list[Pending], pad_id: int, settings: EvalSettings, plan: tuple, sums: _VaeSums) -> None:
    """The decoder passes of the pending batches (merged into one batch of sentences), their IW sums."""
    budget, logit_rows = plan
    batch, host_lengths, draws = merge_pending(pending, pad_id)
    num_samples = draws.z.shape[0]
    pass_samples = settings.iw_chunk_size if budget is None else max(1, min(num_samples, budget // len(batch)))
    log_px_z = decoder_log_likelihood(
        model, batch, draws.z, pass_samples, settings.matmul_precision, host_lengths, logit_rows
    )
    sums.add_iw(log_px_z + draws.log_prior - draws.log_q)
    pending.clear()


def _evaluate_vae(model, split, batches, chosen, pad_id, settings, device, bar) -> EvalResult:
    """Per batch: the encoder once, the ELBO terms with one z, He et al.'s MI, K draws of z; the
    decoder passes of IW-NLL run on the CPU per batch in chunks of ``iw_chunk_size`` samples, on a
    GPU on several batches at once, as many (sample, sentence) rows as its free memory allows."""
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    means = torch.zeros(len(chosen), model.latent_dim, device=device)
    logvars = torch.zeros(len(chosen), model.latent_dim, device=device)
    sums = _VaeSums(model.latent_dim, device)
    plan = (pass_rows(model, device, int(split.lengths[chosen].max())), logit_chunk_rows(model, device))
    pending: list[Pending] = []
    for indices, host_batch in zip(batches, iterate_batches(split, batches, pad_id), strict=True):
        batch = host_batch.to_device(device)
        inference = model.infer(batch)  # the encoder runs once per sentence
        terms = elbo_terms(model(batch, generator=generator, inference=inference))
        posterior = inference.posterior  # with a flow: the Gaussian it starts from (AU and MI use it)
        rows = device_index(np.searchsorted(chosen, indices), device)  # rows of the outputs
        means[rows], logvars[rows] = posterior.mean, posterior.logvar
        sums.sums["rec"] += terms.rec.sum().double()
        sums.sums["kl"] += terms.kl.sum().double()
        sums.kl_per_dim += terms.kl_per_dim.sum(0).double()
        sums.tokens += terms.num_tokens.sum()
        mi = metrics.mutual_info_estimate(
            posterior.mean, posterior.logvar, generator, samples=settings.mi_samples, terms=sums.mi_terms
        )
        sums.sums["mi_batch"] += mi * len(batch)
        draws = draw_importance_samples(model, inference, settings.iw_samples, settings.iw_chunk_size, generator)
        pending.append(Pending(batch, split.lengths[indices], draws))
        pending_rows = sum(len(p.batch) for p in pending) * settings.iw_samples
        if plan[0] is None or pending_rows + len(batch) * settings.iw_samples > plan[0]:
            _flush(model, pending, pad_id, settings, plan, sums)
        bar.update(len(batch))
    if pending:
        _flush(model, pending, pad_id, settings, plan, sums)
    return _vae_result(sums, means, logvars, generator, settings)


def _vae_result(sums: _VaeSums, means, logvars, generator, settings: EvalSettings) -> EvalResult:
    """The metrics dict from the device sums (read here, once) and the posterior parameters."""
    n = means.shape[0]
    full_terms: list[torch.Tensor] = []
    mi_full = metrics.mutual_info_full(means, logvars, generator, samples=settings.mi_samples, terms=full_terms)
    totals, kl_per_dim, total_tokens = sums.read()
    iw_mean = totals["iw_nll"] / n
    iw_var = max(totals["iw_nll_sq"] / n - iw_mean**2, 0.0) * n / (n - 1) if n > 1 else float("nan")
    variances = metrics.posterior_mean_variance(means).cpu()
    result = {
        "kind": "vae",
        "elbo": -(totals["rec"] + totals["kl"]) / n,
        "rec": totals["rec"] / n,
        "kl": totals["kl"] / n,
        "kl_per_dim": (kl_per_dim / n).tolist(),
        "iw_nll": iw_mean,
        "iw_nll_se": math.sqrt(iw_var / n) if n > 1 else float("nan"),
        "iw_nll_mc_se": totals["mc_se"] / n if settings.iw_samples > 1 else float("nan"),
        # the Monte-Carlo s.e. of iw_nll itself (the mean over these sentences): sqrt(Σ se_i²) / N
        "iw_nll_mean_mc_se": math.sqrt(totals["mc_var"]) / n if settings.iw_samples > 1 else float("nan"),
        "iw_samples": settings.iw_samples,
        "ppl_elbo": metrics.perplexity(totals["rec"] + totals["kl"], total_tokens),
        "ppl_iw": metrics.perplexity(totals["iw_nll"], total_tokens),
        "au": int((variances >= metrics.AU_THRESHOLD).sum()),
        "au_threshold": metrics.AU_THRESHOLD,
        "posterior_mean_variance": variances.tolist(),
        "mi_batch": totals["mi_batch"] / n,
        "mi_full": mi_full,
        "mi_batch_se": float(metrics.mutual_info_se(torch.cat(sums.mi_terms, dim=1))),  # Monte-Carlo SE
        "mi_full_se": float(metrics.mutual_info_se(full_terms[0])),
        "mi_samples": settings.mi_samples,  # 1: He et al. 2019's protocol
        "num_sentences": n,
        "num_tokens": total_tokens,
        "seed": settings.seed,
    }
    return EvalResult(result, means.cpu().numpy(), logvars.cpu().numpy())


@torch.no_grad()
def precision_check(model, split: EncodedSplit, indices: np.ndarray, pad_id: int, settings: EvalSettings) -> dict:
    """IW-NLL of the sentences ``indices`` (one batch) at fp32 and at ``settings.matmul_precision``,
    with the same draws of z: how far the reduced precision moves each sentence's IW-NLL (nats)."""
    device = module_device(model)
    batch = next(iterate_batches(split, [indices], pad_id)).to_device(device)
    values = {}
    for precision in ("fp32", settings.matmul_precision):
        generator = torch.Generator(device=device).manual_seed(settings.seed)
        with matmul_precision(precision, device):
            log_weights = importance_log_weights(
                model,
                batch,
                model.infer(batch),
                settings.iw_samples,
                settings.iw_chunk_size,
                generator,
                precision=precision,
                host_lengths=split.lengths[indices],
            )
        values[precision] = -metrics.iw_log_likelihood(log_weights.float()).double()  # (B,)
    difference = values[settings.matmul_precision] - values["fp32"]
    return {
        "precision": settings.matmul_precision,
        "sentences": len(batch),
        "iw_samples": settings.iw_samples,
        "max_abs_diff": float(difference.abs().max()),
        "mean_diff": float(difference.mean()),
    }
