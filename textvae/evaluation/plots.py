"""PNG figures of an evaluation (matplotlib, headless): the KL of each latent dimension."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_kl_per_dim(kl_per_dim: Sequence[float], path: Path, title: str, active: Sequence[bool] | None = None) -> None:
    """Bar chart of the mean KL of each latent dimension (nats); active units in a darker colour."""
    figure, axes = plt.subplots(figsize=(max(6.0, 0.25 * len(kl_per_dim) + 2), 3.2))
    colours = ["tab:blue" if active is None or a else "tab:gray" for a in (active or [True] * len(kl_per_dim))]
    axes.bar(range(len(kl_per_dim)), kl_per_dim, color=colours)
    axes.set_xlabel("latent dimension")
    axes.set_ylabel("KL (nats)")
    axes.set_title(title)
    axes.set_xlim(-0.6, len(kl_per_dim) - 0.4)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
