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
Every random draw comes from one generator seeded with ``seed``, so a result is reproducible.
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
from textvae.cross_entropy import token_nll
from textvae.data.batching import bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit
from textvae.distributions import standard_normal_log_prob
from textvae.errors import TextVAEError
from textvae.objective import elbo_terms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    iw_samples: int = 500
    iw_chunk_size: int = 100
    batch_size: int = 32
    max_sentences: int | None = None
    seed: int = 0
    progress_bar: bool = True

    def __post_init__(self):
        for name in ("iw_samples", "iw_chunk_size", "batch_size"):
            if getattr(self, name) < 1:
                raise TextVAEError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise TextVAEError(f"max-sentences must be ≥ 1, got {self.max_sentences}")


def select_sentences(split: EncodedSplit, max_sentences: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded subset of ``max_sentences`` (sorted)."""
    if max_sentences is None or max_sentences >= len(split):
        return np.arange(len(split))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(split), size=max_sentences, replace=False))


@dataclass
class EvalResult:
    metrics: dict
    means: np.ndarray | None  # (N, D) posterior means, rows in the split's order
    logvars: np.ndarray | None


@torch.no_grad()
def evaluate(model, split: EncodedSplit, pad_id: int, settings: EvalSettings = EvalSettings()) -> EvalResult:
    model.eval()
    chosen = select_sentences(split, settings.max_sentences, settings.seed)
    lengths = split.lengths[chosen]
    batches = [chosen[b] for b in bucketed_batches(lengths, settings.batch_size, shuffle=False)]
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    bar = tqdm(
        total=len(chosen), desc=f"eval {split.name}", unit="sent", disable=None if settings.progress_bar else True
    )
    if model.has_latent:
        result = _evaluate_vae(model, split, batches, chosen, pad_id, settings, generator, bar)
    else:
        result = _evaluate_lm(model, split, batches, pad_id, bar)
    bar.close()
    _add_per_word_perplexity(result.metrics, int(split.words_per_sentence[chosen].sum()) + len(chosen))
    result.metrics["eval_seconds"] = time.perf_counter() - started
    result.metrics["split"] = split.name
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


def _evaluate_lm(model, split, batches, pad_id, bar) -> EvalResult:
    total_nll, total_tokens, num_sentences = 0.0, 0, 0
    for batch in iterate_batches(split, batches, pad_id):
        out = model(batch)
        total_nll += float(out.rec.sum())
        total_tokens += int(out.num_tokens.sum())
        num_sentences += len(batch)
        bar.update(len(batch))
    return EvalResult(
        metrics={
            "kind": "lm",
            "nll": total_nll / num_sentences,
            "ppl": metrics.perplexity(total_nll, total_tokens),
            "num_sentences": num_sentences,
            "num_tokens": total_tokens,
        },
        means=None,
        logvars=None,
    )


def importance_log_weights(model, batch, inference, num_samples: int, chunk_size: int, generator) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) − log q(z_k|x) for K samples z_k ~ q(z|x): (K, B).

    The encoder ran once (``inference``); the decoder runs on ``chunk_size`` samples at a time, so
    memory does not grow with K. With a posterior flow, q(z|x) includes its log-determinant.
    """
    chunks = []
    for start in range(0, num_samples, chunk_size):
        count = min(chunk_size, num_samples - start)
        z, log_q_per_dim = model.sample_latent(inference, count, generator)  # (c, B, D) each
        log_px_z = samples_log_likelihood(model, batch, z)  # (c, B)
        chunks.append(log_px_z + standard_normal_log_prob(z) - log_q_per_dim.sum(-1))
    return torch.cat(chunks)  # (K, B)


def samples_log_likelihood(model, batch, z: torch.Tensor) -> torch.Tensor:
    """log p(x|z_k) for z (K, B, D): (K, B), what ``model.log_likelihood(batch, z)`` gives.

    For a ``SequenceVAE`` whose decoder can share work across samples (``sample_hidden_steps``, the
    LSTM decoder), the decoder steps through time on all K·B rows at once and each step's real
    tokens go straight through the output layer, so memory is one step of hidden states and one
    chunk of logits, whatever the sentence length."""
    from textvae.models.vae import SequenceVAE  # the model package imports this module's neighbours

    decoder = getattr(model, "decoder", None)
    steps = getattr(decoder, "sample_hidden_steps", None)
    if steps is None or type(model).log_likelihood is not SequenceVAE.log_likelihood:
        return model.log_likelihood(batch, z)
    num_samples, batch_size, _ = z.shape
    log_px_z = z.new_zeros(num_samples, batch_size)  # (K, B)
    targets = batch.targets  # (B, T)
    target_lengths = batch.lengths - 1  # (B,)
    shortest = int(target_lengths.min())  # steps at which every sentence has a target (one host sync)
    for t, hidden in enumerate(steps(batch.decoder_inputs, z)):  # hidden (K, B, H)
        if t < shortest:  # every sentence: no copy
            step_hidden = hidden.reshape(-1, hidden.shape[-1])  # (K·B, H)
            nll = token_nll(decoder.logits, step_hidden, targets[:, t].repeat(num_samples))  # (K·B,)
            log_px_z.sub_(nll.view(num_samples, batch_size))
            continue
        present = (target_lengths > t).nonzero().squeeze(1)  # sentences with a target at step t, (b,)
        if present.numel() == 0:
            break
        step_hidden = hidden.index_select(1, present).reshape(-1, hidden.shape[-1])  # (K·b, H)
        nll = token_nll(decoder.logits, step_hidden, targets[present, t].repeat(num_samples))  # (K·b,)
        log_px_z.index_add_(1, present, nll.view(num_samples, -1), alpha=-1.0)
    return log_px_z


def _evaluate_vae(model, split, batches, chosen, pad_id, settings, generator, bar) -> EvalResult:
    position = {int(i): p for p, i in enumerate(chosen)}  # split index → row in the outputs
    latent_dim = model.latent_dim
    means = torch.zeros(len(chosen), latent_dim)
    logvars = torch.zeros(len(chosen), latent_dim)
    sums = {"rec": 0.0, "kl": 0.0, "iw_nll": 0.0, "iw_nll_sq": 0.0, "mc_se": 0.0}
    kl_per_dim = torch.zeros(latent_dim, dtype=torch.float64)
    total_tokens, num_sentences, mi_batch_weighted = 0, 0, 0.0
    for batch in iterate_batches(split, batches, pad_id):
        inference = model.infer(batch)  # the encoder runs once per sentence
        terms = elbo_terms(model(batch, generator=generator, inference=inference))
        posterior = inference.posterior  # with a flow: the Gaussian it starts from (AU and MI use it)
        rows = torch.tensor([position[int(i)] for i in batch.indices])
        means[rows], logvars[rows] = posterior.mean, posterior.logvar
        sums["rec"] += float(terms.rec.sum())
        sums["kl"] += float(terms.kl.sum())
        kl_per_dim += terms.kl_per_dim.sum(0).double()
        total_tokens += int(terms.num_tokens.sum())
        num_sentences += len(batch)
        mi_batch_weighted += metrics.mutual_info_minibatch(posterior.mean, posterior.logvar, generator) * len(batch)

        log_weights = importance_log_weights(
            model, batch, inference, settings.iw_samples, settings.iw_chunk_size, generator
        )
        iw_nll = -metrics.iw_log_likelihood(log_weights)  # (B,)
        sums["iw_nll"] += float(iw_nll.sum())
        sums["iw_nll_sq"] += float((iw_nll.double() ** 2).sum())
        if settings.iw_samples > 1:
            sums["mc_se"] += float(metrics.iw_monte_carlo_se(log_weights).sum())
        bar.update(len(batch))
        bar.set_postfix(iw_nll=f"{sums['iw_nll'] / num_sentences:.2f}", kl=f"{sums['kl'] / num_sentences:.2f}")

    n = num_sentences
    iw_mean = sums["iw_nll"] / n
    iw_var = max(sums["iw_nll_sq"] / n - iw_mean**2, 0.0) * n / (n - 1) if n > 1 else float("nan")
    variances = metrics.posterior_mean_variance(means)
    result = {
        "kind": "vae",
        "elbo": -(sums["rec"] + sums["kl"]) / n,
        "rec": sums["rec"] / n,
        "kl": sums["kl"] / n,
        "kl_per_dim": (kl_per_dim / n).tolist(),
        "iw_nll": iw_mean,
        "iw_nll_se": math.sqrt(iw_var / n) if n > 1 else float("nan"),
        "iw_nll_mc_se": sums["mc_se"] / n if settings.iw_samples > 1 else float("nan"),
        "iw_samples": settings.iw_samples,
        "ppl_elbo": metrics.perplexity(sums["rec"] + sums["kl"], total_tokens),
        "ppl_iw": metrics.perplexity(sums["iw_nll"], total_tokens),
        "au": int((variances >= metrics.AU_THRESHOLD).sum()),
        "au_threshold": metrics.AU_THRESHOLD,
        "posterior_mean_variance": variances.tolist(),
        "mi_batch": mi_batch_weighted / n,
        "mi_full": metrics.mutual_info_full(means, logvars, generator),
        "num_sentences": n,
        "num_tokens": total_tokens,
        "seed": settings.seed,
    }
    return EvalResult(result, means.numpy(), logvars.numpy())


VALIDATION_SUMS = ("rec", "kl", "tokens", "sentences", "mi_weighted")


@torch.no_grad()
def validation_sums(
    model, split: EncodedSplit, pad_id: int, batch_size: int, indices: np.ndarray, seed: int, device=None
) -> dict[str, float]:
    """Sums over ``indices`` of what validation reports (``VALIDATION_SUMS``): summed across
    processes under torch.distributed, then turned into means by ``validation_from_sums``."""
    was_training = model.training
    model.eval()
    device = torch.device("cpu") if device is None else torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    mi_generator = generator if device.type == "cpu" else torch.Generator().manual_seed(seed)  # MI runs on CPU
    batches = [indices[b] for b in bucketed_batches(split.lengths[indices], batch_size, shuffle=False)]
    sums = dict.fromkeys(VALIDATION_SUMS, 0.0)
    for batch in iterate_batches(split, batches, pad_id):
        out = model(batch.to(device), generator=generator)
        terms = elbo_terms(out)
        sums["rec"] += float(terms.rec.sum())
        sums["kl"] += float(terms.kl.sum())
        sums["tokens"] += int(terms.num_tokens.sum())
        sums["sentences"] += len(batch)
        if out.posterior is not None:
            mi = metrics.mutual_info_minibatch(out.posterior.mean.cpu(), out.posterior.logvar.cpu(), mi_generator)
            sums["mi_weighted"] += mi * len(batch)
    model.train(was_training)
    return sums


def validation_from_sums(sums: dict[str, float]) -> dict:
    """Mean −ELBO (or NLL) per sentence, KL, PPL and MI from ``validation_sums`` (of one or all ranks)."""
    sentences = sums["sentences"]
    return {
        "loss": (sums["rec"] + sums["kl"]) / sentences,
        "rec": sums["rec"] / sentences,
        "kl": sums["kl"] / sentences,
        "ppl": metrics.perplexity(sums["rec"] + sums["kl"], int(sums["tokens"])),
        "mi": sums["mi_weighted"] / sentences,  # He et al. 2019's minibatch estimator; 0 for a language model
        "num_sentences": int(sentences),
    }


def validation_loss(model, split: EncodedSplit, pad_id: int, batch_size: int, indices: np.ndarray, seed: int) -> dict:
    """Fast validation during training: mean −ELBO (or NLL) per sentence, KL, PPL and MI; no IW."""
    return validation_from_sums(validation_sums(model, split, pad_id, batch_size, indices, seed))
