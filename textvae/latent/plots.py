"""Figures of the latent space (matplotlib, headless, written atomically): a homotopy's sentences
with their log-likelihood, and per-label codes in 2-D (PCA) with the attribute directions."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from textvae.checkpoint import atomic_write_bytes
from textvae.latent.attributes import AttributeVectors


def _save(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_bytes(Path(path), buffer.getvalue())


def plot_homotopy(weights: Sequence[float], sentences: Sequence[str], log_likelihoods: Sequence[float], path: Path):
    """The path z(t) = (1 − t) μ₁ + t μ₂ (Bowman et al. 2016): each decoded sentence at its t, and
    log p(x_t | z(t)) of that sentence (nats) as a curve beside it."""
    count = len(sentences)
    figure, (curve, text) = plt.subplots(
        1, 2, figsize=(11, 0.55 * count + 1.5), gridspec_kw={"width_ratios": [1, 3]}, sharey=True
    )
    positions = list(range(count))[::-1]  # first sentence on top
    curve.plot(log_likelihoods, positions, marker="o")
    curve.set_xlabel("log p(x | z) (nats)")
    curve.set_yticks(positions, [f"t = {w:.2f}" for w in weights])
    curve.grid(alpha=0.3)
    for y, sentence, score in zip(positions, sentences, log_likelihoods, strict=True):
        text.text(0.0, y, f"{textwrap.shorten(sentence, 110)}   ({score:.1f})", va="center", fontsize=9)
    text.set_axis_off()
    text.set_ylim(-0.5, count - 0.5)
    figure.suptitle("homotopy between two posterior means: decoded sentence and its log-likelihood")
    figure.tight_layout()
    _save(figure, path)


def pca_2d(codes: Tensor) -> tuple[Tensor, Tensor]:
    """The mean (D,) and the first two principal directions (D, 2) of codes (N, D)."""
    center = codes.mean(0)
    _, _, vh = torch.linalg.svd(codes - center, full_matrices=False)  # vh (min(N, D), D)
    return center, vh[:2].T


def plot_attribute_codes(codes: Tensor, labels: Sequence[str], vectors: AttributeVectors, path: Path) -> None:
    """Posterior means (N, D) projected on their first two principal components, one colour per label,
    the label means marked and the first attribute vector drawn from its source mean as an arrow."""
    codes = codes.float().cpu()
    center, basis = pca_2d(codes)
    points = (codes - center) @ basis  # (N, 2)
    means = (vectors.means - center) @ basis  # (L, 2)
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    for index, label in enumerate(vectors.labels):
        rows = torch.tensor([lab == label for lab in labels])
        axes.scatter(points[rows, 0], points[rows, 1], s=4, alpha=0.3, color=f"C{index}", label=f"label {label}")
        axes.scatter(means[index, 0], means[index, 1], s=120, marker="X", color=f"C{index}", edgecolor="black")
    source, target = vectors.labels[0], vectors.labels[1]
    start, end = means[0], means[1]
    axes.annotate(
        "",
        xy=(float(end[0]), float(end[1])),
        xytext=(float(start[0]), float(start[1])),
        arrowprops={"arrowstyle": "->", "lw": 2, "color": "black"},
    )
    axes.set_title(f"posterior means, PCA; arrow: {source}_to_{target}")
    axes.set_xlabel("PC 1")
    axes.set_ylabel("PC 2")
    axes.legend(markerscale=3)
    figure.tight_layout()
    _save(figure, path)
