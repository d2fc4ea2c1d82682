"""MNIST, Fashion-MNIST and moving MNIST from local files: splits, binarization, training batches.

Files are the four idx files of each dataset, gzipped (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``), read
from a local folder only; nothing is ever downloaded. torchvision's MNIST readers expect the
files already unpacked (``read_image_file`` opens the raw path), so the idx format is parsed here
from the decompressed bytes: a 4-byte magic (two zero bytes, the type code 0x08 = unsigned byte,
the number of dimensions), the dimensions as big-endian int32, then the data.

Splits: ``train`` = the first 50,000 images of the official training set, ``valid`` = its last
10,000, ``test`` = the official test set. Moving MNIST draws each split's sequences from that
split's digits (``textvae.image.moving_mnist.make_moving_mnist``), so no test digit is seen in training.

Binarization (``binarize = true``): every training batch draws fresh Bernoulli pixels with the
grey levels as probabilities (dynamic binarization), from a generator seeded by (seed, epoch,
batch), so a resumed run draws the same pixels; valid and test are binarized once, with a fixed
seed (Burda et al. 2015), so every evaluation sees the same binary images.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from textvae.errors import TextVAEError
from textvae.image.config import ImageDataConfig

# where each dataset is looked for when data.root is not set (relative paths: to the working directory)
DEFAULT_ROOTS = {
    "mnist": ("../shared/data/mnist",),
    "fashion-mnist": ("../shared/data/fashion-mnist", "/usr/share/datasets/fashion-mnist"),  # Debian package
}
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLITS = ("train", "valid", "test")
NUM_TRAIN = 50_000  # the official training set's first 50,000 images; its last 10,000 are the valid split
DIGIT_SIDE = 28
_UNSIGNED_BYTE = 0x08  # the idx type code of uint8 data
_SPLIT_CODES = {name: number for number, name in enumerate(SPLITS)}
_FIXED_BINARIZATION = 1  # stream ids of derived_seed, so that no two uses share a random stream
_SUBSET = 2
_MOVING = 3
_EPOCH_ORDER = 4
_BATCH_PIXELS = 5


def derived_seed(*parts: int) -> int:
    """A 32-bit seed for one random stream, mixed from integers (numpy's SeedSequence): distinct
    tuples give independent streams, unlike ``seed + epoch`` arithmetic."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _read_idx(path: Path, expected_dims: int, what: str) -> np.ndarray:
    """An idx file of uint8 data with ``expected_dims`` dimensions, gunzipped; one-line errors."""
    expected = f"a gzipped idx file of {what}"
    if not path.is_file():
        raise TextVAEError(f"{path}: file not found (expected {expected})")
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as err:
        raise TextVAEError(f"{path}: corrupt or not gzip ({err}); expected {expected}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UNSIGNED_BYTE or data[3] != expected_dims:
        raise TextVAEError(f"{path}: not {expected} (bad idx header, expected {expected_dims} dimensions of uint8)")
    header = 4 + 4 * expected_dims
    if len(data) < header:
        raise TextVAEError(f"{path}: truncated idx header; expected {expected}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=expected_dims, offset=4))
    if len(data) - header != int(np.prod(shape)):
        raise TextVAEError(
            f"{path}: {len(data) - header} data bytes for shape {shape} ({int(np.prod(shape))} expected); "
            f"file truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_digits(root: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """The official ``train`` or ``test`` file pair of MNIST or Fashion-MNIST in ``root``:
    images uint8 (N, 28, 28) and labels int64 (N,)."""
    if split not in FILES:
        raise TextVAEError(f"unknown file split {split!r}; choose 'train' or 'test'")
    images, labels = _load_digits_cached(str(Path(root).resolve()), split)
    return images.clone(), labels.clone()


@functools.lru_cache(maxsize=4)
def _load_digits_cached(root: str, split: str) -> tuple[Tensor, Tensor]:
    image_file, label_file = (Path(root) / name for name in FILES[split])
    images = _read_idx(image_file, 3, "28×28 images")
    labels = _read_idx(label_file, 1, "labels")
    if images.shape[1:] != (DIGIT_SIDE, DIGIT_SIDE):
        raise TextVAEError(f"{image_file}: images are {images.shape[1:]}, expected 28×28")
    if len(images) != len(labels):
        raise TextVAEError(f"{image_file}: {len(images)} images but {label_file.name} has {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def resolve_root(cfg: ImageDataConfig) -> Path:
    """The folder holding the dataset's files: ``data.root``, else the first default folder that has them."""
    digits = "mnist" if cfg.dataset == "moving-mnist" else cfg.dataset
    if cfg.root is not None:
        root = Path(cfg.root)
        if not root.is_dir():
            raise TextVAEError(f"{root}: data.root directory not found (dataset {cfg.dataset!r})")
        return root
    candidates = [Path(p) for p in DEFAULT_ROOTS[digits]]
    for root in candidates:
        if (root / FILES["train"][0]).is_file():
            return root
    tried = ", ".join(str(p) for p in candidates)
    raise TextVAEError(
        f"{digits} files not found in {tried} (expected {FILES['train'][0]} and the other idx .gz files); set data.root"
    )


def image_shape(cfg: ImageDataConfig) -> tuple[int, int, int]:
    """(C, H, W) of one image (one frame for moving MNIST), known before any file is read."""
    if cfg.dataset == "moving-mnist":
        return (1, cfg.image_size, cfg.image_size)
    return (1, DIGIT_SIDE, DIGIT_SIDE)


@dataclass
class ImageSplit:
    """One split in memory. ``pixels`` is (N, C, H, W), or (N, T, C, H, W) for sequences, and an
    image is ``pixels.float() / pixel_max``: uint8 grey levels (255), uint8 {0, 1} after a fixed
    binarization (1), or float frames in [0, 1] (1)."""

    name: str
    pixels: Tensor
    pixel_max: float
    labels: Tensor | None  # (N,) class labels; None for sequences
    dynamic_binarization: bool  # draw Bernoulli pixels afresh for every batch (the training split)

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def example_shape(self) -> tuple[int, ...]:
        """(C, H, W), or (T, C, H, W) for sequences."""
        return tuple(self.pixels.shape[1:])

    def images(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Float images in [0, 1] for ``indices``; with dynamic binarization, Bernoulli draws from ``generator``."""
        images = self.pixels[indices].float() / self.pixel_max  # (B, C, H, W) or (B, T, C, H, W)
        if self.dynamic_binarization:
            images = torch.bernoulli(images, generator=generator)
        return images


def load_image_split(cfg: ImageDataConfig, split: str) -> ImageSplit:
    """The ``train``, ``valid`` or ``test`` split of ``cfg.dataset``, subset and binarized as configured."""
    if split not in SPLITS:
        raise TextVAEError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    root = resolve_root(cfg)
    file_split = "test" if split == "test" else "train"
    digits, labels = load_digits(root, file_split)
    if split != "test":
        if len(digits) <= NUM_TRAIN:
            raise TextVAEError(
                f"{root / FILES['train'][0]}: {len(digits)} images; expected the 60,000 of the official set"
            )
        part = slice(0, NUM_TRAIN) if split == "train" else slice(NUM_TRAIN, None)
        digits, labels = digits[part], labels[part]
    if cfg.dataset == "moving-mnist":
        from textvae.image.moving_mnist import make_moving_mnist

        generator = torch.Generator().manual_seed(derived_seed(cfg.seed, _MOVING, _SPLIT_CODES[split]))
        num_sequences = getattr(cfg, f"num_{split}_sequences")
        frames = make_moving_mnist(
            digits=digits,
            num_sequences=num_sequences,
            seq_len=cfg.seq_len,
            image_size=cfg.image_size,
            num_digits=cfg.num_digits,
            generator=generator,
        )  # (N, T, 1, S, S) float in [0, 1]
        pixels, pixel_max, labels = frames, 1.0, None
    else:
        pixels, pixel_max = digits.unsqueeze(1), 255.0  # (N, 1, 28, 28) uint8
    if split == "train" and cfg.max_train_examples is not None and cfg.max_train_examples < len(pixels):
        subset_generator = torch.Generator().manual_seed(derived_seed(cfg.seed, _SUBSET))
        chosen = torch.randperm(len(pixels), generator=subset_generator)[: cfg.max_train_examples].sort().values
        pixels, labels = pixels[chosen], None if labels is None else labels[chosen]
    dynamic = cfg.binarize and split == "train"
    if cfg.binarize and split != "train":
        pixels, pixel_max = (
            fixed_binarization(pixels, pixel_max, derived_seed(cfg.seed, _FIXED_BINARIZATION, _SPLIT_CODES[split])),
            1.0,
        )
    return ImageSplit(split, pixels, pixel_max, labels, dynamic)


def fixed_binarization(pixels: Tensor, pixel_max: float, seed: int) -> Tensor:
    """One Bernoulli draw per pixel with the grey level as probability, from ``seed``: uint8 {0, 1}."""
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(pixels.float() / pixel_max, generator=generator).to(torch.uint8)


def epoch_order(num_examples: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    """The training batches of one epoch: a seeded permutation cut into ``batch_size`` pieces
    (the last may be smaller). The same (seed, epoch) gives the same batches, so resuming at
    batch b of an epoch continues with exactly the batches the interrupted run would have seen."""
    generator = torch.Generator().manual_seed(derived_seed(seed, _EPOCH_ORDER, epoch))
    return list(torch.randperm(num_examples, generator=generator).split(batch_size))


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The generator of one training batch's Bernoulli pixels (dynamic binarization)."""
    return torch.Generator().manual_seed(derived_seed(seed, _BATCH_PIXELS, epoch, batch))
