"""Image recipes: the text side's TOML conventions (strict keys, ``base``, ``--set``) with image tables.

An image recipe has the tables ``[data]`` (``ImageDataConfig``), ``[model]`` (a registered
``image_model``, checked against its constructor's signature), ``[train]`` (the text side's
``TrainConfig``, unchanged), ``[eval]`` (``ImageEvalConfig``) and an optional ``[reference]``,
plus ``description`` and ``base``. A recipe *is* an image recipe when its ``[model].type`` names a
registered ``image_model``. ``vae`` names a model of both families: such a recipe is an image
recipe when its ``[data]`` names an image dataset (``dataset = "mnist"``) or has an image-only key
(``binarize``, ...); otherwise it stays a text recipe. ``textvae.families.load_any_recipe`` reads either
kind; the text loader ``textvae.config.load_recipe`` is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from textvae import registry
from textvae.config import (
    _AT_LEAST_ONE,
    _NON_NEGATIVE,
    DataConfig,
    ReferenceConfig,
    TrainConfig,
    _check_ranges,
    _dataclass_from,
)
from textvae.errors import TextVAEError

IMAGE_DATASETS = ("mnist", "fashion-mnist", "moving-mnist")


@dataclass(frozen=True)
class ImageDataConfig:
    """Which images, and how they are presented to the model.

    ``mnist`` and ``fashion-mnist`` are the 28×28 idx files (``.gz``) in ``root``; ``moving-mnist``
    generates sequences of bouncing digits from the MNIST files in ``root``
    (``textvae.image.moving_mnist``). ``root = None`` looks in the default folders
    (``textvae.image.data.DEFAULT_ROOTS``). Splits: train = the first 50,000 official training
    images, valid = the last 10,000, test = the official test set.
    """

    dataset: Literal["mnist", "fashion-mnist", "moving-mnist"] = "mnist"
    root: str | None = None  # folder of the idx .gz files; None = the default folders
    binarize: bool = False  # Bernoulli pixels: a fresh draw per training batch, one fixed draw for valid/test
    seed: int = 0  # the fixed valid/test binarization, the max_train_examples subset, moving-MNIST sequences
    max_train_examples: int | None = None  # a seeded subset of the training split (small CPU runs)
    # moving-mnist only
    seq_len: int = 20  # frames per sequence
    image_size: int = 64  # frame side in pixels
    num_digits: int = 2  # digits bouncing in each sequence
    num_train_sequences: int = 10_000
    num_valid_sequences: int = 1_000
    num_test_sequences: int = 1_000

    def __post_init__(self):
        counts = ("max_train_examples", "seq_len", "image_size", "num_digits")
        counts += ("num_train_sequences", "num_valid_sequences", "num_test_sequences")
        _check_ranges(self, {**dict.fromkeys(counts, _AT_LEAST_ONE), "seed": _NON_NEGATIVE})
        if self.dataset != "moving-mnist":
            for name in _MOVING_MNIST_KEYS:
                if getattr(self, name) != _FIELD_DEFAULTS[name]:
                    raise TextVAEError(f"{name}: is a moving-mnist option; dataset is {self.dataset!r}")


_MOVING_MNIST_KEYS = ("seq_len", "image_size", "num_digits", "num_train_sequences")
_MOVING_MNIST_KEYS += ("num_valid_sequences", "num_test_sequences")
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ImageDataConfig)}
_IMAGE_ONLY_DATA_KEYS = set(_FIELD_DEFAULTS) - {f.name for f in dataclasses.fields(DataConfig)}


@dataclass(frozen=True)
class ImageEvalConfig:
    """Defaults for ``textvae eval`` on an image run; each can be overridden on its command line."""

    split: Literal["valid", "test"] = "test"
    iw_samples: int = 1000  # K of the importance-weighted bound; Burda et al. 2015 report K = 5000
    iw_chunk_size: int = 100  # samples per decoder pass; memory is bounded by this, not by K
    batch_size: int = 100  # images per encoder pass
    max_examples: int | None = None  # a seeded subset of the split; None = all of it
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU when CUDA is available

    def __post_init__(self):
        counts = ("iw_samples", "iw_chunk_size", "batch_size", "max_examples")
        _check_ranges(self, {**dict.fromkeys(counts, _AT_LEAST_ONE), "seed": _NON_NEGATIVE})


@dataclass(frozen=True)
class ImageRecipe:
    data: ImageDataConfig
    model: dict[str, Any]  # a validated "image_model" component table
    train: TrainConfig
    eval: ImageEvalConfig
    reference: ReferenceConfig
    source: str  # the recipe file it came from

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as plain data (saved with every run and checkpoint)."""
        return {
            "data": dataclasses.asdict(self.data),
            "model": self.model,
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
            "reference": dataclasses.asdict(self.reference),
            "source": self.source,
        }


_SECTIONS = {"data": ImageDataConfig, "train": TrainConfig, "eval": ImageEvalConfig, "reference": ReferenceConfig}
_TOP_LEVEL = ["base", "description", "data", "model", "train", "eval", "reference"]


def is_image_config(raw: Mapping[str, Any]) -> bool:
    """Whether recipe tables (or a run's saved config) describe an image model."""
    model = raw.get("model")
    name = model.get("type") if isinstance(model, Mapping) else None
    if not isinstance(name, str) or name not in registry.names("image_model"):
        return False
    if name not in registry.names("model"):
        return True
    # a name of both families (``vae``): the data decides, by an image dataset or an image-only key
    data = raw.get("data")
    if not isinstance(data, Mapping):
        return False
    image_only = {f.name for f in dataclasses.fields(ImageDataConfig)} - {
        f.name for f in dataclasses.fields(DataConfig)
    }
    return data.get("dataset") in IMAGE_DATASETS or bool(image_only & set(data))


def image_recipe_from_dict(raw: Mapping[str, Any], source: str) -> ImageRecipe:
    """Validate plain data (a parsed image recipe, or the ``config`` saved in an image run)."""
    raw = dict(raw)
    for key in ("base", "description", "source"):
        raw.pop(key, None)
    unknown = sorted(set(raw) - set(_TOP_LEVEL))
    if unknown:
        raise TextVAEError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP_LEVEL)}")
    sections = {name: _dataclass_from(cls, raw.get(name, {}), f"{source}: [{name}]") for name, cls in _SECTIONS.items()}
    if "model" not in raw:
        raise TextVAEError(
            f"{source}: missing [model] table; image model types: {', '.join(registry.names('image_model'))}"
        )
    model = registry.validate("image_model", raw["model"], f"{source}: [model]")
    return ImageRecipe(model=model, source=source, **sections)
