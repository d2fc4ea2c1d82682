"""Moving MNIST: shapes and range, determinism, digits kept in frame, bounces at the borders, max overlap."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_DATA
from textvae.errors import TextVAEError
from textvae.image.moving_mnist import FRAMES_PER_CROSSING, digit_size, make_moving_mnist


def mnist_digits(count: int = 50) -> torch.Tensor:
    """The first ``count`` MNIST test images, uint8 (count, 28, 28)."""
    with gzip.open(SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read(16 + count * 28 * 28)
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, 28, 28).copy())


def square_digit(value: int = 255) -> torch.Tensor:
    """One uint8 (1, 28, 28) "digit" that fills its patch, so its drawn corner is exact."""
    return torch.full((1, 28, 28), value, dtype=torch.uint8)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def corner_track(frames: torch.Tensor) -> torch.Tensor:
    """Top-left corner (T, 2) of the ink of one square digit in frames (T, 1, S, S)."""
    ink = frames[:, 0] > 0  # (T, S, S)
    rows = ink.any(dim=2).float().argmax(dim=1)  # first row with ink, (T,)
    cols = ink.any(dim=1).float().argmax(dim=1)  # first column with ink, (T,)
    return torch.stack([rows, cols], dim=1)


def test_shape_range_and_real_digits_visible():
    x = make_moving_mnist(
        mnist_digits(), num_sequences=5, seq_len=9, image_size=16, num_digits=2, generator=generator(0)
    )
    assert x.shape == (5, 9, 1, 16, 16)
    assert x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert (x.amax(dim=(2, 3, 4)) > 0.5).all()  # every frame shows ink


def test_same_seed_same_sequences_other_seed_different():
    digits = mnist_digits()
    first = make_moving_mnist(digits, 4, 6, 20, 1, generator(3))
    again = make_moving_mnist(digits, 4, 6, 20, 1, generator(3))
    other = make_moving_mnist(digits, 4, 6, 20, 1, generator(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(("image_size", "size"), [(16, 10), (20, 12), (32, 20), (64, 24)])
def test_digits_are_scaled_and_never_leave_the_frame(image_size, size):
    assert digit_size(image_size) == size
    x = make_moving_mnist(square_digit(), 6, 25, image_size, 1, generator(1))
    # all size × size pixels of the square are drawn in every frame: nothing is clipped at a border
    assert ((x > 0).sum(dim=(2, 3, 4)) == size * size).all()
    real = make_moving_mnist(mnist_digits(1), 3, 25, image_size, 1, generator(1))
    mass = real.sum(dim=(2, 3, 4))  # (N, T): the same digit everywhere, so the same ink in every frame
    assert torch.allclose(mass, mass[:1, :1].expand_as(mass), rtol=1e-5)


def test_a_digit_moves_at_constant_speed_and_turns_back_only_at_the_borders():
    image_size = 64
    free_range = image_size - digit_size(image_size)  # 40 pixels
    speed = free_range / FRAMES_PER_CROSSING  # 8 pixels per frame
    x = make_moving_mnist(square_digit(), 40, 30, image_size, 1, generator(2))
    reversals = 0
    for sequence in x:
        track = corner_track(sequence)  # (T, 2)
        assert track.min() >= 0 and track.max() <= free_range
        for axis in range(2):
            position = track[:, axis].tolist()
            steps = [b - a for a, b in itertools.pairwise(position)]
            assert max(abs(s) for s in steps) <= speed + 1
            for t in range(1, len(steps)):
                if steps[t - 1] * steps[t] < 0:  # the velocity component flipped sign at frame t
                    reversals += 1
                    turning_point = position[t]
                    assert turning_point >= free_range - speed - 1 or turning_point <= speed + 1
    assert reversals > 40  # the digits did bounce, many times


def test_overlapping_digits_combine_by_maximum():
    grey = square_digit(128)  # two 10×10 squares in a 16×16 frame always overlap
    x = make_moving_mnist(grey, 3, 5, 16, 2, generator(5))
    # a sum would give 256/255 (or 1 after clipping) where the squares overlap
    assert torch.allclose(torch.unique(x), torch.tensor([0.0, 128 / 255]))


@pytest.mark.parametrize(
    ("digits", "kwargs"),
    [
        (torch.zeros(3, 28, 28), {}),  # float, not uint8
        (torch.zeros(3, 32, 32, dtype=torch.uint8), {}),
        (torch.zeros(0, 28, 28, dtype=torch.uint8), {}),
        (None, {"image_size": 6}),
        (None, {"num_digits": 0}),
        (None, {"seq_len": 0}),
        (None, {"num_sequences": 2.5}),
    ],
)
def test_bad_arguments_raise_one_line_errors(digits, kwargs):
    arguments = {"num_sequences": 2, "seq_len": 3, "image_size": 16, "num_digits": 1} | kwargs
    digits = square_digit() if digits is None else digits
    with pytest.raises(TextVAEError) as info:
        make_moving_mnist(digits, generator=generator(0), **arguments)
    assert "\n" not in str(info.value)
