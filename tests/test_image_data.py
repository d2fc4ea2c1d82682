"""MNIST / Fashion-MNIST / moving-MNIST loading from the staged idx files: shapes, splits,
binarization (dynamic for training, fixed for valid/test), subsets and one-line errors."""

from __future__ import annotations

import gzip
import math
import struct

import pytest
import torch

from tests.conftest import SHARED_DATA
from textvae.errors import TextVAEError
from textvae.image import data as image_data
from textvae.image.config import ImageDataConfig
from textvae.image.data import (
    NUM_TRAIN,
    batch_generator,
    epoch_order,
    image_shape,
    load_digits,
    load_image_split,
)

MNIST = SHARED_DATA / "mnist"
FASHION = SHARED_DATA / "fashion-mnist"


def test_load_digits_reads_the_official_files():
    images, labels = load_digits(MNIST, "train")
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))
    assert images.float().mean() / 255 == pytest.approx(0.1307, abs=5e-4)  # the usual MNIST normalization mean
    test_images, test_labels = load_digits(MNIST, "test")
    assert test_images.shape == (10_000, 28, 28) and test_labels.shape == (10_000,)
    fashion, fashion_labels = load_digits(FASHION, "train")
    assert fashion.shape == (60_000, 28, 28) and set(fashion_labels.tolist()) == set(range(10))
    assert fashion.float().mean() / 255 == pytest.approx(0.2860, abs=5e-4)  # Fashion-MNIST's mean
    images[0, 0, 0] = 77  # a caller's copy: the cached arrays stay as read
    assert load_digits(MNIST, "train")[0][0, 0, 0] == 0


def test_splits_are_the_first_50k_the_last_10k_and_the_official_test_set():
    images, labels = load_digits(MNIST, "train")
    train = load_image_split(ImageDataConfig(root=str(MNIST)), "train")
    valid = load_image_split(ImageDataConfig(root=str(MNIST)), "valid")
    test = load_image_split(ImageDataConfig(root=str(MNIST)), "test")
    assert (len(train), len(valid), len(test)) == (NUM_TRAIN, 10_000, 10_000)
    assert torch.equal(train.pixels[:, 0], images[:NUM_TRAIN]) and torch.equal(valid.labels, labels[NUM_TRAIN:])
    assert torch.equal(test.pixels[:, 0], load_digits(MNIST, "test")[0])
    x = valid.images(torch.tensor([0, 3]))
    assert x.shape == (2, 1, 28, 28) and x.dtype == torch.float32 and x.min() >= 0 and x.max() == 1.0
    assert torch.equal(x[1, 0], images[NUM_TRAIN + 3].float() / 255)  # grey levels without binarize


def test_dynamic_binarization_draws_fresh_pixels_for_every_epoch_and_batch():
    split = load_image_split(ImageDataConfig(root=str(MNIST), binarize=True), "train")
    indices = torch.arange(200)
    epoch0 = split.images(indices, batch_generator(seed=0, epoch=0, batch=3))
    again = split.images(indices, batch_generator(seed=0, epoch=0, batch=3))
    epoch1 = split.images(indices, batch_generator(seed=0, epoch=1, batch=3))
    assert set(epoch0.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(epoch0, again)  # (seed, epoch, batch) decides the draw: a resumed run sees the same pixels
    assert not torch.equal(epoch0, epoch1)
    grey = split.pixels[indices].float() / 255
    # E[Bernoulli(p)] = p: the binary mean matches the grey mean within 5 standard errors
    se = math.sqrt(float((grey * (1 - grey)).sum())) / grey.numel()
    assert abs(float(epoch0.mean() - grey.mean())) < 5 * se


def test_valid_and_test_binarization_is_fixed_across_loads():
    cfg = ImageDataConfig(root=str(MNIST), binarize=True)
    first = load_image_split(cfg, "test")
    image_data._load_digits_cached.cache_clear()  # read the files again
    second = load_image_split(cfg, "test")
    assert not first.dynamic_binarization and torch.equal(first.pixels, second.pixels)
    assert set(first.pixels.unique().tolist()) == {0, 1} and first.pixel_max == 1.0
    assert torch.equal(first.images(torch.arange(5)), second.images(torch.arange(5), torch.Generator()))
    grey = load_image_split(ImageDataConfig(root=str(MNIST)), "test").pixels.float() / 255
    se = math.sqrt(float((grey * (1 - grey)).sum())) / grey.numel()
    assert abs(float(first.pixels.float().mean() - grey.mean())) < 5 * se
    other_seed = load_image_split(ImageDataConfig(root=str(MNIST), binarize=True, seed=1), "test")
    assert not torch.equal(first.pixels, other_seed.pixels)


def test_max_train_examples_is_a_seeded_subset_of_the_training_split():
    cfg = ImageDataConfig(root=str(MNIST), max_train_examples=500)
    subset = load_image_split(cfg, "train")
    assert len(subset) == 500 and torch.equal(subset.pixels, load_image_split(cfg, "train").pixels)
    full = load_digits(MNIST, "train")[0]
    train_rows = {bytes(row.flatten().tolist()) for row in full[:NUM_TRAIN]}
    assert all(bytes(row.flatten().tolist()) in train_rows for row in subset.pixels)  # never a valid image
    other = load_image_split(ImageDataConfig(root=str(MNIST), max_train_examples=500, seed=3), "train")
    assert not torch.equal(subset.pixels, other.pixels)
    assert len(load_image_split(ImageDataConfig(root=str(MNIST), max_train_examples=500), "valid")) == 10_000


def test_epoch_order_is_a_seeded_permutation_per_epoch():
    batches = epoch_order(103, 10, seed=0, epoch=0)
    assert [len(b) for b in batches] == [10] * 10 + [3]
    assert sorted(torch.cat(batches).tolist()) == list(range(103))
    assert all(torch.equal(a, b) for a, b in zip(batches, epoch_order(103, 10, 0, 0), strict=True))
    assert not torch.equal(torch.cat(batches), torch.cat(epoch_order(103, 10, 0, 1)))


def test_moving_mnist_draws_each_split_from_its_own_digits(monkeypatch):
    from textvae.image import moving_mnist

    calls = []
    real = moving_mnist.make_moving_mnist

    def recording(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(moving_mnist, "make_moving_mnist", recording)
    cfg = ImageDataConfig(
        dataset="moving-mnist",
        root=str(MNIST),
        seq_len=4,
        image_size=16,
        num_digits=2,
        num_train_sequences=6,
        num_valid_sequences=5,
        num_test_sequences=3,
    )
    splits = {name: load_image_split(cfg, name) for name in ("train", "valid", "test")}
    assert {name: s.pixels.shape for name, s in splits.items()} == {
        "train": (6, 4, 1, 16, 16),
        "valid": (5, 4, 1, 16, 16),
        "test": (3, 4, 1, 16, 16),
    }
    official_train, official_test = load_digits(MNIST, "train")[0], load_digits(MNIST, "test")[0]
    assert torch.equal(calls[0]["digits"], official_train[:NUM_TRAIN])
    assert torch.equal(calls[1]["digits"], official_train[NUM_TRAIN:])
    assert torch.equal(calls[2]["digits"], official_test)
    assert image_shape(cfg) == (1, 16, 16) and splits["valid"].example_shape == (4, 1, 16, 16)
    assert torch.equal(splits["valid"].pixels, load_image_split(cfg, "valid").pixels)  # seeded
    binary = load_image_split(ImageDataConfig(**{**cfg.__dict__, "binarize": True}), "test")
    assert set(binary.pixels.unique().tolist()) <= {0, 1} and binary.images(torch.arange(2)).shape == (2, 4, 1, 16, 16)


def _write_idx(path, header: bytes, payload: bytes) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(header + payload)


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(TextVAEError, match=r"train-images-idx3-ubyte\.gz: file not found \(expected a gzipped idx"):
        load_image_split(ImageDataConfig(root=str(tmp_path)), "valid")
    monkeypatch.chdir(tmp_path)  # the default roots are relative to the working directory
    with pytest.raises(TextVAEError, match=r"fashion-mnist files not found in \.\./shared/data/fashion-mnist"):
        load_image_split(ImageDataConfig(dataset="fashion-mnist"), "test")
    with pytest.raises(TextVAEError, match=r"data\.root directory not found"):
        load_image_split(ImageDataConfig(root=str(tmp_path / "nowhere")), "test")

    images, labels = tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, struct.pack(">BBBBi", 0, 0, 8, 1, 2), bytes([3, 4]))
    images.write_bytes(b"not gzip at all")
    with pytest.raises(TextVAEError, match="corrupt or not gzip"):
        load_digits(tmp_path, "test")
    _write_idx(images, struct.pack(">BBBBi", 0, 0, 8, 1, 2), bytes(2))  # a label file where images belong
    with pytest.raises(TextVAEError, match="bad idx header, expected 3 dimensions"):
        load_digits(tmp_path, "test")
    _write_idx(images, struct.pack(">BBBBiii", 0, 0, 8, 3, 2, 28, 28), bytes(28 * 28))  # one image short
    with pytest.raises(TextVAEError, match="file truncated or corrupt"):
        load_digits(tmp_path, "test")
    _write_idx(images, struct.pack(">BBBBiii", 0, 0, 8, 3, 3, 28, 28), bytes(3 * 28 * 28))
    with pytest.raises(TextVAEError, match=r"3 images but t10k-labels-idx1-ubyte\.gz has 2 labels"):
        load_digits(tmp_path, "test")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"seq_len": 5}, "seq_len: is a moving-mnist option"),
        ({"max_train_examples": 0}, "max_train_examples: must be ≥ 1"),
    ],
)
def test_bad_data_settings_are_rejected(fields, message):
    with pytest.raises(TextVAEError, match=message):
        ImageDataConfig(**fields)
