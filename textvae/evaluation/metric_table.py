"""Every reported metric described once: its key in a results dict, its title, digits, unit and direction.

The ablation tables, ``textvae report``, the verdicts, the image evaluation and the CLI all read
their columns from ``METRICS``; a new metric is one line here. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str  # its name in a results dict (and in a verdict's checks)
    title: str  # a table's column header
    digits: int  # decimals printed
    unit: str  # "nats", "bits/dim", "s", or "" (a ratio or a count)
    higher_is_better: bool | None  # None: neither on its own (KL, the ELBO's parts, time)
    count: bool = False  # a count (AU): one value is printed as the integer it is

    def cell(self, value: Any, std: float | None = None) -> str:
        """``12.34`` (or ``12.34 ± 0.56`` with a std over seeds); — when there is no value."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        digits = 0 if self.count and std is None else self.digits
        return f"{float(value):.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


_ALL = (
    Metric("iw_nll", "IW-NLL", 2, "nats", False),
    Metric("bits_per_dim", "bits/dim", 4, "bits/dim", False),
    Metric("nll", "NLL (LM)", 2, "nats", False),
    Metric("ppl_elbo", "PPL(ELBO)", 2, "", False),
    Metric("ppl_iw", "PPL(IW)", 2, "", False),
    Metric("ppl", "PPL (LM)", 2, "", False),
    Metric("elbo", "ELBO", 2, "nats", True),
    Metric("rec", "Rec", 2, "nats", None),
    Metric("kl", "KL", 3, "nats", None),
    Metric("kl_batch_stats", "KL(batch stats)", 3, "nats", None),  # BN-VAE: the KL of Zhu et al. 2020's bound
    Metric("mi_batch", "MI(batch)", 3, "nats", True),
    Metric("mi_full", "MI(full)", 3, "nats", True),
    Metric("au", "AU", 1, "", True, count=True),
    Metric("recon_mse", "Rec MSE", 4, "", False),
    Metric("recon_bce", "Rec BCE", 2, "nats", False),
    Metric("codebook_perplexity", "Codebook PPL", 1, "", True),
    Metric("train_seconds", "train s", 0, "s", None),
    # generation (textvae eval --generation, --code-use: textvae.evaluation.code_use)
    Metric("bleu_rec", "BLEU(rec)", 2, "", True),
    Metric("keep_rate", "keeps a content word", 3, "", True),
    Metric("overlap_own", "overlap own", 2, "", True),
    Metric("overlap_other", "overlap other", 2, "", None),
    Metric("homotopy_distinct_mean", "homotopy sentences", 2, "", True),
    Metric("homotopy_three_or_more", "homotopies ≥ 3", 2, "", True),
)
METRICS: dict[str, Metric] = {metric.key: metric for metric in _ALL}

# what a verdict may check and an ablation row keeps: the measured metrics (not ppl_elbo, not time)
CHECKABLE = (
    *("iw_nll", "ppl_iw", "elbo", "rec", "kl", "mi_batch", "mi_full", "au", "nll", "ppl"),
    *("bits_per_dim", "recon_mse", "recon_bce", "codebook_perplexity"),
    "kl_batch_stats",  # BN-VAE rows: the KL under batch statistics over the training batches
)
IMAGE_ONLY = ("bits_per_dim", "recon_mse", "recon_bce", "codebook_perplexity")  # a text row has none of these
MI_KEYS = ("mi_batch", "mi_full")  # each comes with its Monte-Carlo standard error, ``<key>_se``

# the columns of each table, in order
ABLATION_COLUMNS = (
    *("iw_nll", "bits_per_dim", "nll", "ppl_iw", "ppl", "elbo", "rec", "kl", "kl_batch_stats", "mi_batch"),
    *("mi_full", "au"),
    *("recon_mse", "recon_bce", "codebook_perplexity", "train_seconds"),
)
EVAL_COLUMNS = (
    *("elbo", "rec", "kl", "iw_nll", "nll", "ppl_elbo", "ppl_iw", "ppl", "au", "mi_batch", "mi_full"),
    *("bleu_rec", "keep_rate", "overlap_own", "overlap_other", "homotopy_distinct_mean", "homotopy_three_or_more"),
)
IMAGE_COLUMNS = (
    *("iw_nll", "bits_per_dim", "elbo", "rec", "kl", "au", "mi_full"),
    *("recon_mse", "recon_bce", "codebook_perplexity"),
)


def title(key: str) -> str:
    """A metric's title; an undescribed key (a model's own term) is its own title."""
    return METRICS[key].title if key in METRICS else key


def columns(keys: tuple[str, ...] | list[str]) -> list[Metric]:
    """The metrics of these keys; a key not described here is an honest term in nats, 3 digits."""
    return [METRICS.get(key) or Metric(key, key, 3, "nats", None) for key in keys]
