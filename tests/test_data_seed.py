"""train.data_seed: the batch order apart from train.seed (seed replicates that share it see the same
batches); unset, it follows seed, so every earlier run trains and resumes as before."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import REPO
from textvae.config import load_recipe
from textvae.engine.distributed import SINGLE_PROCESS
from textvae.engine.run_dir import without_runtime_keys
from textvae.errors import TextVAEError
from textvae.train import TextFamily

QUICKSTART = REPO / "recipes" / "quickstart" / "vae.toml"


def first_batches(*overrides: str, count: int = 5) -> list[np.ndarray]:
    family = TextFamily(load_recipe(QUICKSTART, list(overrides)), SINGLE_PROCESS)
    family.load_data(None)
    _, batches = family.epoch(1, 0)
    return [next(batches).batch.indices.numpy() for _ in range(count)]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_data_seed_sets_the_batch_order_apart_from_the_seed():
    default = first_batches("train.seed=0")
    assert same(default, first_batches("train.seed=0", "train.data_seed=0"))  # unset = follows the seed
    assert not same(default, first_batches("train.seed=1"))
    shared = first_batches("train.seed=0", "train.data_seed=9")
    assert same(shared, first_batches("train.seed=1", "train.data_seed=9"))
    assert not same(shared, default)


def test_a_run_saved_before_data_seed_existed_resumes():
    recipe = load_recipe(QUICKSTART)
    saved = json.loads(json.dumps(recipe.to_dict()))
    del saved["train"]["data_seed"]  # a config.json written before the key
    assert without_runtime_keys(saved) == without_runtime_keys(recipe.to_dict())
    other = load_recipe(QUICKSTART, ["train.data_seed=3"])
    assert without_runtime_keys(saved) != without_runtime_keys(other.to_dict())


def test_a_negative_data_seed_is_a_one_line_error():
    with pytest.raises(TextVAEError, match="data_seed: must be ≥ 0"):
        load_recipe(QUICKSTART, ["train.data_seed=-1"])
