"""Bouncing-digit sequences ("moving MNIST", Srivastava et al. 2015), generated on the fly from MNIST images.

Choices, so that small frames (16 or 20 pixels, trainable on a CPU) still show legible digits:

* **Digit patch.** Each digit is the central 24×24 of its 28×28 MNIST image: the 2-pixel border is
  almost always blank (on the training set 0.3% of the ink is lost on average, none for 88% of the
  digits), so the ink is as large as in Srivastava et al.'s 28×28 patches. The patch is scaled by
  area averaging to ``digit_size(image_size) = min(24, ⌊5·image_size/8⌋)`` pixels:
  16 → 10, 20 → 12, 32 → 20, 64 → 24 (the original size).
* **Motion.** The top-left corner of each digit starts uniformly in the free square
  [0, L]² with L = image_size − digit_size, moves in a uniform random direction at a constant
  speed of L/5 pixels per frame (Srivastava et al. used L/10 on 64-pixel frames; a faster crossing
  gives several bounces in a 20-frame sequence), and is reflected at the borders
  (p → −p or p → 2L − p, the velocity component flips sign). The corner is rounded to whole pixels
  when drawn, so a digit never leaves the frame.
* **Overlap.** Digits are combined by the pixelwise maximum, values in [0, 1] (uint8 / 255).
* **Randomness** comes only from ``generator``, drawn in a fixed order (digit indices, start
  positions, directions), so the same seed gives the same sequences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from textvae.errors import TextVAEError

MNIST_SIZE = 28
PATCH_BORDER = 2  # pixels cropped from each side of a 28×28 MNIST image (blank in nearly all digits)
FRAMES_PER_CROSSING = 5  # a digit crosses its free range L in this many frames: speed L/5 per frame
MIN_IMAGE_SIZE = 8  # digit_size 5, free range 3: the smallest frame where motion is visible
SEQUENCES_PER_CHUNK = 512  # sequences drawn at once; bounds the index tensors' memory, not the result


def digit_size(image_size: int) -> int:
    """The side of a digit patch in a frame of ``image_size`` pixels: min(24, ⌊5·image_size/8⌋)."""
    return min(MNIST_SIZE - 2 * PATCH_BORDER, 5 * image_size // 8)


def make_moving_mnist(
    digits: torch.Tensor,
    num_sequences: int,
    seq_len: int,
    image_size: int,
    num_digits: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Sequences of ``num_digits`` MNIST digits bouncing in a square frame.

    ``digits``: uint8 (N, 28, 28) MNIST images, each sequence's digits drawn uniformly from them.
    Returns float (num_sequences, seq_len, 1, image_size, image_size) in [0, 1].
    """
    _check_arguments(digits, num_sequences, seq_len, image_size, num_digits, generator)
    size = digit_size(image_size)
    free_range = image_size - size

    chosen = torch.randint(digits.shape[0], (num_sequences, num_digits), generator=generator)  # (N, K)
    corners = _bouncing_corners(num_sequences, seq_len, num_digits, free_range, generator)  # (N, T, K, 2)
    patches = _digit_patches(digits[chosen.flatten()], size).view(num_sequences, num_digits, size, size)

    frames = torch.zeros(num_sequences, seq_len, image_size, image_size)  # (N, T, S, S)
    for start in range(0, num_sequences, SEQUENCES_PER_CHUNK):
        stop = min(start + SEQUENCES_PER_CHUNK, num_sequences)
        frames[start:stop] = _draw(patches[start:stop], corners[start:stop], image_size)
    return frames.unsqueeze(2)  # (N, T, 1, S, S)


def _check_arguments(
    digits: Tensor, num_sequences: int, seq_len: int, image_size: int, num_digits: int, generator: torch.Generator
) -> None:
    if not isinstance(digits, Tensor) or digits.dtype != torch.uint8 or digits.dim() != 3:
        raise TextVAEError("moving MNIST: digits must be a uint8 tensor (N, 28, 28)")
    if tuple(digits.shape[1:]) != (MNIST_SIZE, MNIST_SIZE) or digits.shape[0] == 0:
        raise TextVAEError(f"moving MNIST: digits must be (N, 28, 28) with N ≥ 1, got {tuple(digits.shape)}")
    for name, value, least in (
        ("num_sequences", num_sequences, 1),
        ("seq_len", seq_len, 1),
        ("num_digits", num_digits, 1),
        ("image_size", image_size, MIN_IMAGE_SIZE),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise TextVAEError(f"moving MNIST: {name} must be an integer ≥ {least}, got {value!r}")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TextVAEError("moving MNIST: generator must be a CPU torch.Generator")


def _bouncing_corners(
    num_sequences: int, seq_len: int, num_digits: int, free_range: int, generator: torch.Generator
) -> Tensor:
    """Integer top-left corners (N, T, K, 2) (row, column) in [0, free_range], reflected at the borders."""
    position = torch.rand(num_sequences, num_digits, 2, generator=generator) * free_range  # (N, K, 2)
    angle = torch.rand(num_sequences, num_digits, generator=generator) * (2 * math.pi)  # (N, K)
    speed = free_range / FRAMES_PER_CROSSING
    velocity = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1) * speed  # (N, K, 2)
    corners = []
    for _ in range(seq_len):
        corners.append(position.round().long())
        position = position + velocity
        # speed < free_range, so one reflection always brings the corner back into [0, L]
        below, above = position < 0, position > free_range
        position = torch.where(below, -position, position)
        position = torch.where(above, 2 * free_range - position, position)
        velocity = torch.where(below | above, -velocity, velocity)
    return torch.stack(corners, dim=1)  # (N, T, K, 2)


def _digit_patches(images: Tensor, size: int) -> Tensor:
    """uint8 (M, 28, 28) → float (M, size, size) in [0, 1]: central 24×24, area-averaged to ``size``."""
    border = PATCH_BORDER
    patches = images[:, border:-border, border:-border].float().div(255.0).unsqueeze(1)  # (M, 1, 24, 24)
    if patches.shape[-1] != size:
        patches = F.interpolate(patches, size=(size, size), mode="area")  # (M, 1, size, size)
    return patches.squeeze(1)


def _draw(patches: Tensor, corners: Tensor, image_size: int) -> Tensor:
    """Paste patches (n, K, d, d) at corners (n, T, K, 2) into frames (n, T, S, S), combining by max."""
    n, seq_len, num_digits, _ = corners.shape
    size = patches.shape[-1]
    offsets = torch.arange(size)
    sequence_index = torch.arange(n).view(n, 1, 1, 1)
    time_index = torch.arange(seq_len).view(1, seq_len, 1, 1)
    frames = torch.zeros(n, seq_len, image_size, image_size)  # (n, T, S, S)
    for k in range(num_digits):
        rows = corners[:, :, k, 0].view(n, seq_len, 1, 1) + offsets.view(1, 1, size, 1)  # (n, T, d, 1)
        cols = corners[:, :, k, 1].view(n, seq_len, 1, 1) + offsets.view(1, 1, 1, size)  # (n, T, 1, d)
        placed = torch.zeros_like(frames)
        placed[sequence_index, time_index, rows, cols] = patches[:, k].unsqueeze(1).expand(n, seq_len, size, size)
        frames = torch.maximum(frames, placed)
    return frames
