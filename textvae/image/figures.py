"""Image grids of a trained model (PNG, torchvision's ``save_image``) and the codebook-usage histogram.

Each figure is drawn only when the model has the capability it needs (``models/base.py``):
- ``reconstructions``: originals in one row, their reconstructions in the row below
  (for sequences: one row of frames per sequence, its reconstruction under it);
- ``samples``: images from the prior (``sample``);
- ``interpolations``: one row per pair of test images, decoded at evenly spaced points of the
  straight line between their codes (``encode``/``decode``), the two ends included;
- every grid the model's own ``figures(x, generator)`` returns, as ``<name>.png``.
File names are ``<prefix>.<figure>.png`` (the prefix is the results file without ``.json``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from textvae.evaluation.plots import plt  # matplotlib with the headless backend already chosen

FIGURE_EXAMPLES = 16  # test images the figures start from: reconstructions, 8 interpolation pairs, model figures
_PAD_VALUE = 0.5  # grey lines between the tiles, visible on black and on white images


def save_grid(images: Tensor, path: Path, columns: int) -> Path:
    """Tile images (N, C, H, W) in [0, 1] into rows of ``columns`` and write a PNG."""
    save_image(images.detach().float().clamp(0, 1).cpu(), path, nrow=columns, padding=2, pad_value=_PAD_VALUE)
    return path


def _frames(images: Tensor) -> tuple[Tensor, int | None]:
    """(N, C, H, W) → itself; a sequence batch (N, T, C, H, W) → its frames (N·T, C, H, W) and T."""
    if images.dim() == 5:
        return images.flatten(0, 1), images.shape[1]
    return images, None


def reconstruction_grid(model, x: Tensor) -> tuple[Tensor, int]:
    """Originals above reconstructions: (2N, C, H, W) with N columns, or for sequences
    (2·N·T, C, H, W) with T columns (each sequence's frames, then its reconstruction)."""
    reconstructed = model.reconstruct(x)
    if x.dim() == 5:
        rows = torch.stack([x, reconstructed.reshape(x.shape)], dim=1)  # (N, 2, T, C, H, W)
        return rows.flatten(0, 2), x.shape[1]
    return torch.cat([x, reconstructed.reshape(x.shape)]), x.shape[0]


def interpolation_grid(model, x: Tensor, steps: int) -> tuple[Tensor, int]:
    """One row per pair (x[0], x[1]), (x[2], x[3]), ...: ``steps`` decodings along the line between
    their codes, (pairs · steps, C, H, W) with ``steps`` columns."""
    pairs = x.shape[0] // 2
    codes = model.encode(x[: 2 * pairs])  # (2P, ...)
    first, second = codes[0::2], codes[1::2]  # (P, ...) each
    weights = torch.linspace(0, 1, steps, device=codes.device).view(1, steps, *([1] * (codes.dim() - 1)))
    points = (1 - weights) * first.unsqueeze(1) + weights * second.unsqueeze(1)  # (P, steps, ...)
    decoded = model.decode(points.flatten(0, 1))  # (P·steps, C, H, W)
    return _frames(decoded)[0], steps


@torch.no_grad()
def write_figures(
    model, x: Tensor, prefix: Path, generator: torch.Generator, num_samples: int = 64, interpolation_steps: int = 10
) -> list[Path]:
    """Every grid the model's capabilities allow, from the test images ``x``; returns the PNG paths."""
    model.eval()
    prefix = Path(prefix)

    def path(name: str) -> Path:
        return prefix.with_name(f"{prefix.name}.{name}.png")

    written = []
    if hasattr(model, "reconstruct"):
        images, columns = reconstruction_grid(model, x[: 4 if x.dim() == 5 else FIGURE_EXAMPLES])
        written.append(save_grid(images, path("reconstructions"), columns))
    if hasattr(model, "sample"):
        written.append(save_samples(model, num_samples, generator, path("samples")))
    if hasattr(model, "encode") and hasattr(model, "decode") and x.dim() == 4 and x.shape[0] >= 2:
        images, columns = interpolation_grid(model, x, interpolation_steps)
        written.append(save_grid(images, path("interpolations"), columns))
    if hasattr(model, "figures"):
        for name, grid in model.figures(x, generator).items():  # (rows, cols, C, H, W)
            written.append(save_grid(grid.flatten(0, 1), path(name), grid.shape[1]))
    return written


@torch.no_grad()
def save_samples(model, num: int, generator: torch.Generator, path: Path) -> Path:
    """``num`` samples from the model's prior as a square-ish grid (one row per sequence for sequences)."""
    samples = model.sample(num, generator)  # (N, C, H, W) or (N, T, C, H, W)
    frames, sequence_length = _frames(samples)
    columns = sequence_length or max(1, round(num**0.5))
    return save_grid(frames, path, columns)


def plot_codebook_usage(counts: Tensor, path: Path, perplexity: float) -> None:
    """Bar chart of how often each code was chosen, most used first, with the usage perplexity."""
    ordered = counts.sort(descending=True).values.double()
    used = int((counts > 0).sum())
    figure, axes = plt.subplots(figsize=(7.0, 3.2))
    axes.bar(range(len(ordered)), (ordered / max(ordered.sum(), 1)).tolist(), width=1.0, color="tab:blue")
    axes.set_xlabel("code (sorted by use)")
    axes.set_ylabel("fraction of positions")
    axes.set_title(f"codebook usage: {used} codes used, perplexity {perplexity:.1f}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
