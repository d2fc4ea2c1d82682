"""Evaluate an image model on a split with the measures its capabilities allow (see ``models/base.py``).

Per example (an image, or a sequence for TD-VAE), in nats unless a name says otherwise:
- every honest term of ``LossTerms.terms`` averaged over the examples (``terms``, and each also as
  a top-level key: ``rec``, ``kl``, ...); ``objective``: the mean of the weighted ``LossTerms.loss``.
- with ``log_importance_weights``: ``iw_nll`` = −log (1/K Σ_k w_k), log w_k = log p(x, z_k) −
  log q(z_k|x), z_k ~ q(z|x) (Burda et al. 2015, Eq. 8), drawn in chunks of ``iw_chunk_size`` so
  that memory is bounded by the chunk, not by K; ``elbo`` = (1/K) Σ_k log w_k, the Monte-Carlo
  ELBO on the same samples (so iw_nll ≤ −elbo for every example, by Jensen's inequality);
  ``bits_per_dim`` = iw_nll / (D · ln 2) and ``elbo_bits_per_dim`` = −elbo / (D · ln 2), with
  D = C·H·W (T·C·H·W for a sequence).
- with ``posterior``: ``kl_per_dim`` (closed-form KL(q(z|x) ‖ N(0, I)) per latent dimension, data
  mean) and its sum ``posterior_kl``; ``au`` (Var_x E_q[z_d] ≥ 0.01); ``mi_full`` (Li et al. 2019,
  aggregate posterior over the evaluated set) and ``mi_batch`` (He et al. 2019, per batch).
- with ``reconstruct``: ``recon_mse`` (squared error per pixel) and ``recon_bce``
  (Σ_pixels −[x log r + (1 − x) log(1 − r)] per example, nats) between x and its reconstruction r.
- with ``code_indices``: ``code_counts``, ``codes_used`` and ``codebook_perplexity`` = exp(H(p)),
  p the usage frequency of each code over every code position of the evaluated set.
Every random draw is seeded by ``seed``; the result is reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from textvae import metrics
from textvae.checkpoint import atomic_write_text
from textvae.distributions import DiagGaussian
from textvae.engine.machine import machine_fingerprint
from textvae.evaluation.device import MEMORY_FRACTION, module_device, resolve_device
from textvae.evaluation.metric_table import IMAGE_COLUMNS, Metric, columns
from textvae.evaluation.plots import plot_kl_per_dim
from textvae.image import figures as image_figures
from textvae.image.config import ImageEvalConfig
from textvae.image.data import ImageSplit, load_image_split
from textvae.image.models.base import LossTerms


def columns_for(results: list[dict]) -> list[Metric]:
    """The image columns (``metric_table.IMAGE_COLUMNS``), then one per other honest term the results have
    (a prior's ``prior_nll``, TD-VAE's ``kl_t1``, a penalty ...), so no model's numbers are left out of its table."""
    extra = sorted({name for result in results for name in result.get("terms", {})} - set(IMAGE_COLUMNS))
    return columns((*IMAGE_COLUMNS, *extra))


_PROBABILITY_FLOOR = 1e-6  # reconstructions are clamped to [floor, 1 − floor] before the log of the BCE


class TermTotals:
    """Running sums over batches of ``LossTerms``: the objective and each honest term weighted by the
    batch size (so means are per example, never means of batch means); batch-level scalars (``stats``,
    ``end_of_step``'s) averaged over the batches that reported them. Sums of tensors stay float64
    tensors on their device until ``means`` / ``term_means`` read them (no host synchronisation per batch)."""

    def __init__(self):
        self.examples = 0
        self.objective = 0.0
        self.terms: dict = {}
        self.scalars: dict = {}

    def add(self, out: LossTerms, batch_size: int) -> None:
        self.examples += batch_size
        self.objective = self.objective + out.loss.detach().double() * batch_size
        for name, values in out.terms.items():
            self.terms[name] = self.terms.get(name, 0.0) + values.detach().sum().double()
        self.add_scalars(out.stats)

    def add_scalars(self, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            total, count = self.scalars.get(name, (0.0, 0))
            value = value.detach().double() if isinstance(value, Tensor) else float(value)
            self.scalars[name] = (total + value, count + 1)

    def term_means(self) -> dict[str, float]:
        return {name: float(total) / self.examples for name, total in self.terms.items()}

    def means(self) -> dict[str, float]:
        """``objective``, every term and every scalar (a scalar never hides a term of the same name)."""
        scalars = {name: float(total) / count for name, (total, count) in self.scalars.items()}
        return {**scalars, "objective": float(self.objective) / self.examples, **self.term_means()}


def main_term(terms: Mapping[str, float]) -> str | None:
    """The term a progress bar shows: ``kl`` when the model has one, else its first term."""
    return "kl" if "kl" in terms else next(iter(terms), None)


def validation_loss(term_means: Mapping[str, float], objective: float) -> float:
    """What ``best.pt`` minimizes: −ELBO = rec + kl (honest, whatever β) when the model has both
    terms, else the model's objective (autoencoders, VQ models)."""
    if "rec" in term_means and "kl" in term_means:
        return term_means["rec"] + term_means["kl"]
    return objective


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block on the global RNG seeded with ``seed``, leaving the caller's RNG state untouched
    (models draw their training noise from the global RNG; validation must not shift that stream)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def select_examples(num_examples: int, max_examples: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded subset of ``max_examples`` (sorted)."""
    if max_examples is None or max_examples >= num_examples:
        return np.arange(num_examples)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_examples, size=max_examples, replace=False))


def _batches(split: ImageSplit, indices: np.ndarray, batch_size: int, device) -> Iterator[Tensor]:
    for start in range(0, len(indices), batch_size):
        yield split.images(torch.from_numpy(indices[start : start + batch_size])).to(device)


@torch.no_grad()
def validate_image(
    model, split: ImageSplit, indices: np.ndarray, batch_size: int, step: int, seed: int, device
) -> dict:
    """Mean objective and honest terms over ``indices``, the ``loss`` that selects ``best.pt``
    (``validation_loss``) and, for a model with ``posterior``, He et al.'s minibatch MI and the
    active units (``au``: dimensions whose posterior mean varies by ≥ 0.01 over the examples)."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    totals, mi_weighted, moments = TermTotals(), 0.0, 0.0  # moments: Σ E_q[z_d] and Σ E_q[z_d]², (2, D)
    mi_generator = torch.Generator(device=device).manual_seed(seed)
    with seeded_rng(seed, device):
        for x in _batches(split, indices, batch_size, device):
            totals.add(model.loss_terms(x, step=step), len(x))
            if hasattr(model, "posterior"):
                q = model.posterior(x)
                mean, logvar = q.mean.flatten(1), q.logvar.flatten(1)  # (B, D)
                mi_weighted = mi_weighted + metrics.mutual_info_estimate(mean, logvar, mi_generator) * len(x)
                moments = moments + torch.stack([mean.double().sum(0), (mean.double() ** 2).sum(0)])
    model.train(was_training)
    means = totals.means()
    result = {"loss": validation_loss(totals.term_means(), means["objective"]), **means}
    if hasattr(model, "posterior"):
        result["mi"] = float(mi_weighted) / totals.examples
        n = totals.examples
        if n > 1:
            variances = (moments[1] - moments[0] ** 2 / n) / (n - 1)  # unbiased Var_x(E_q[z_d]), (D,)
            result["au"] = int((variances >= metrics.AU_THRESHOLD).sum())
    return {**result, "num_examples": totals.examples}


def importance_log_weights(model, x: Tensor, num_samples: int, chunk_size: int, generator) -> Tensor:
    """log w_k for K = ``num_samples`` posterior samples, (K, B), asked of the model ``chunk_size`` at a time."""
    chunks = []
    for start in range(0, num_samples, chunk_size):
        count = min(chunk_size, num_samples - start)
        chunks.append(model.log_importance_weights(x, count, generator))  # (count, B)
    return torch.cat(chunks)  # (K, B)


def codebook_usage(counts: Tensor) -> tuple[int, float]:
    """(codes used, perplexity exp(H(p))) of code usage counts (N,): N for uniform use, 1 for a single code."""
    total = counts.sum()
    if total == 0:
        return 0, float("nan")
    p = counts[counts > 0].double() / total
    return int((counts > 0).sum()), math.exp(float(-(p * p.log()).sum()))


def bits_per_dim(nats: float, num_dims: int) -> float:
    """Nats per example → bits per dimension: nats / (D · ln 2)."""
    return nats / (num_dims * math.log(2))


@dataclass
class ImageEvalResult:
    metrics: dict
    means: np.ndarray | None  # (N, D) posterior means in the evaluated order, for a model with ``posterior``
    logvars: np.ndarray | None
    code_counts: Tensor | None  # (N_codes,) usage counts, for a model with ``code_indices``


IW_FLOATS_PER_DIM = 64  # float32 activations an image decoder holds per input dimension and sample (an over-estimate)


def iw_chunk_size(settings: ImageEvalConfig, batch_size: int, num_dims: int, device: torch.device) -> int:
    """Samples per IW pass: ``iw_chunk_size`` off CUDA; on CUDA as many as half the free memory holds
    at ``IW_FLOATS_PER_DIM`` floats per dimension, sample and image, rounded down to ``iw_chunk_size``
    times a power of two (so that a run with a little more or less free memory draws the same chunks)."""
    if device.type != "cuda":
        return settings.iw_chunk_size
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * MEMORY_FRACTION) // (4 * IW_FLOATS_PER_DIM * num_dims * batch_size)
    chunk = settings.iw_chunk_size
    while chunk * 2 <= min(fits, settings.iw_samples):
        chunk *= 2
    return chunk


class _ImageSums:
    """Running sums of an image evaluation, float64 tensors on the device (read once, at the end)."""

    NAMES = ("iw_nll", "iw_nll_sq", "mc_se", "elbo", "mi_batch", "mse", "bce")

    def __init__(self, device: torch.device):
        self.sums = {name: torch.zeros((), dtype=torch.float64, device=device) for name in self.NAMES}
        self.kl_per_dim, self.means, self.logvars, self.codes = None, [], [], []

    def add_posterior(self, q: DiagGaussian, batch_size: int, generator) -> None:
        q = DiagGaussian(q.mean.flatten(1), q.logvar.flatten(1))  # (B, D)
        self.means.append(q.mean)
        self.logvars.append(q.logvar)
        batch_kl = q.kl_per_dim().double().sum(0)  # (D,)
        self.kl_per_dim = batch_kl if self.kl_per_dim is None else self.kl_per_dim + batch_kl
        self.sums["mi_batch"] += metrics.mutual_info_estimate(q.mean, q.logvar, generator) * batch_size

    def add_iw(self, log_weights: Tensor) -> None:
        """IW-NLL (log-sum-exp in float32), its square, the Monte-Carlo s.e. and the ELBO of log w (K, B)."""
        iw_nll = -metrics.iw_log_likelihood(log_weights).double()  # (B,)
        self.sums["iw_nll"] += iw_nll.sum()
        self.sums["iw_nll_sq"] += (iw_nll**2).sum()
        self.sums["elbo"] += log_weights.double().mean(0).sum()
        if log_weights.shape[0] > 1:
            self.sums["mc_se"] += metrics.iw_monte_carlo_se(log_weights).sum().double()

    def add_reconstruction(self, r: Tensor, x: Tensor) -> None:
        r = r.clamp(_PROBABILITY_FLOOR, 1 - _PROBABILITY_FLOOR)  # like x
        self.sums["mse"] += ((r - x) ** 2).flatten(1).mean(1).sum().double()
        self.sums["bce"] += F.binary_cross_entropy(r, x, reduction="none").flatten(1).sum(1).sum().double()


@torch.no_grad()
def evaluate_image(
    model, split: ImageSplit, settings: ImageEvalConfig, *, step: int = 0, device=None, progress_bar: bool = True
) -> ImageEvalResult:
    """Every measure ``model`` allows on ``split`` (module docstring), on ``device`` (default: the
    model's); ``step`` is passed to ``loss_terms``. Sums stay on the device until the end."""
    device = module_device(model) if device is None else torch.device(device)
    model.eval()
    chosen = select_examples(len(split), settings.max_examples, settings.seed)
    num_dims = int(np.prod(split.example_shape))
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    mi_generator = torch.Generator(device=device).manual_seed(settings.seed)  # MI's own stream
    has_iw, has_posterior = hasattr(model, "log_importance_weights"), hasattr(model, "posterior")
    has_reconstruct, has_codes = hasattr(model, "reconstruct"), hasattr(model, "code_indices")
    chunk = iw_chunk_size(settings, settings.batch_size, num_dims, device)
    totals, sums = TermTotals(), _ImageSums(device)
    started = time.perf_counter()
    bar = tqdm(total=len(chosen), desc=f"eval {split.name}", unit="img", disable=None if progress_bar else True)
    with seeded_rng(settings.seed, device):
        for x in _batches(split, chosen, settings.batch_size, device):
            totals.add(model.loss_terms(x, step=step), len(x))
            if has_posterior:
                sums.add_posterior(model.posterior(x), len(x), mi_generator)
            if has_iw:
                sums.add_iw(importance_log_weights(model, x, settings.iw_samples, chunk, generator))  # (K, B)
            if has_reconstruct:
                sums.add_reconstruction(model.reconstruct(x), x)
            if has_codes:
                sums.codes.append(model.code_indices(x).flatten())
            bar.update(len(x))
    bar.close()
    has = {"iw": has_iw, "posterior": has_posterior, "reconstruct": has_reconstruct}
    result = _image_metrics(split, settings, step, totals, sums, has, mi_generator)
    result |= {"iw_chunk_size": chunk, "device": str(device), "eval_seconds": time.perf_counter() - started}
    result |= machine_fingerprint()  # the CPU, its kernels and the threads: what the last digits depend on
    code_counts = torch.bincount(torch.cat(sums.codes)).cpu() if has_codes else None
    if has_codes:
        used, perplexity = codebook_usage(code_counts)
        result |= {"codes_used": used, "codebook_perplexity": perplexity, "code_counts": code_counts.tolist()}
    means = None if not has_posterior else torch.cat(sums.means).cpu().numpy()
    logvars = None if not has_posterior else torch.cat(sums.logvars).cpu().numpy()
    return ImageEvalResult(result, means, logvars, code_counts)


def _image_metrics(split, settings, step, totals: TermTotals, sums: _ImageSums, has: dict, mi_generator) -> dict:
    """The results dict from the device sums (read here, once), without the code usage."""
    n, num_dims = totals.examples, int(np.prod(split.example_shape))
    term_means = totals.term_means()
    result: dict = {
        "kind": "image",
        "split": split.name,
        "num_examples": n,
        "num_dims": num_dims,
        "step": step,
        "seed": settings.seed,
        "objective": float(totals.objective) / n,
        "terms": term_means,
        **term_means,
    }
    mi_full = None
    if has["posterior"]:
        all_means, all_logvars = torch.cat(sums.means), torch.cat(sums.logvars)  # (N, D)
        mi_full = metrics.mutual_info_full(all_means, all_logvars, mi_generator)
    read = {name: float(value) for name, value in sums.sums.items()}
    if has["iw"]:
        iw_mean = read["iw_nll"] / n
        iw_var = max(read["iw_nll_sq"] / n - iw_mean**2, 0.0) * n / (n - 1) if n > 1 else float("nan")
        result |= {
            "iw_nll": iw_mean,
            "iw_nll_se": math.sqrt(iw_var / n) if n > 1 else float("nan"),
            "iw_nll_mc_se": read["mc_se"] / n if settings.iw_samples > 1 else float("nan"),
            "iw_samples": settings.iw_samples,
            "bits_per_dim": bits_per_dim(iw_mean, num_dims),
            "elbo": read["elbo"] / n,
            "elbo_bits_per_dim": bits_per_dim(-read["elbo"] / n, num_dims),
        }
    if has["posterior"]:
        variances = metrics.posterior_mean_variance(all_means).cpu()
        kl_per_dim = sums.kl_per_dim.cpu()
        result |= {
            "latent_dim": all_means.shape[1],
            "kl_per_dim": (kl_per_dim / n).tolist(),
            "posterior_kl": float(kl_per_dim.sum() / n),
            "au": int((variances >= metrics.AU_THRESHOLD).sum()),
            "au_threshold": metrics.AU_THRESHOLD,
            "posterior_mean_variance": variances.tolist(),
            "mi_full": mi_full,
            "mi_batch": read["mi_batch"] / n,
        }
    if has["reconstruct"]:
        result |= {"recon_mse": read["mse"] / n, "recon_bce": read["bce"] / n}
    return result


def evaluate_image_run(
    loaded,
    checkpoint_path: Path,
    settings: ImageEvalConfig,
    json_path: Path,
    *,
    kl_plot_path: Path | None = None,
    data_root: str | None = None,
    figures: bool = True,
    progress_bar: bool = True,
) -> tuple[dict, ImageEvalResult]:
    """Evaluate a loaded image checkpoint (``image.checkpoint.load_image_checkpoint``) with ``settings``, write the
    JSON results and the PNGs beside them (KL per dimension, codebook usage, reconstructions, samples,
    interpolations, the model's own figures); returns (metrics as written, result)."""
    data_cfg = loaded.recipe.data
    if data_root is not None:
        data_cfg = dataclasses.replace(data_cfg, root=data_root)
    device = resolve_device(settings.device)  # eval.device (or --device): auto takes the GPU when there is one
    split = load_image_split(data_cfg, settings.split)
    model = loaded.model.to(device)
    step = int(loaded.payload.get("progress", {}).get("step", 0))
    result = evaluate_image(model, split, settings, step=step, device=device, progress_bar=progress_bar)
    metrics_out = {
        **result.metrics,
        "model": loaded.recipe.model["type"],
        "checkpoint": str(checkpoint_path),
        "config": loaded.recipe.to_dict(),
    }
    prefix = json_path.with_suffix("")
    written: list[str] = []
    if "kl_per_dim" in metrics_out:
        kl_plot_path = kl_plot_path or prefix.with_name(prefix.name + ".kl_per_dim.png")
        active = [v >= metrics_out["au_threshold"] for v in metrics_out["posterior_mean_variance"]]
        title = f"KL per dimension ({settings.split}; AU = {metrics_out['au']})"
        plot_kl_per_dim(metrics_out["kl_per_dim"], kl_plot_path, title, active)
        written.append(str(kl_plot_path))
    if result.code_counts is not None:
        path = prefix.with_name(prefix.name + ".codebook_usage.png")
        image_figures.plot_codebook_usage(result.code_counts, path, metrics_out["codebook_perplexity"])
        written.append(str(path))
    if figures:
        first = select_examples(len(split), settings.max_examples, settings.seed)
        x = split.images(torch.from_numpy(first[: image_figures.FIGURE_EXAMPLES])).to(device)
        generator = torch.Generator(device=device).manual_seed(settings.seed)
        with seeded_rng(settings.seed, device):
            written += [str(p) for p in image_figures.write_figures(model, x, prefix, generator)]
    metrics_out["figures"] = written
    atomic_write_text(json_path, json.dumps(metrics_out, indent=2))
    return metrics_out, result
