"""An epoch's batches cut from one flat token table (textvae.data.token_table) are collate's batches,
value for value; the engine's loop around a no-op step runs (its time is measured by textvae bench)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from textvae.bench.engine_loop import bench_engine_loop
from textvae.data.batching import bucketed_batches, collate
from textvae.data.corpus import EncodedSplit
from textvae.data.token_table import TokenTable, epoch_batches

PAD = 0


def split_of(rows: list[list[int]], arrow: bool) -> EncodedSplit:
    lengths = np.array([len(r) for r in rows])
    dataset = Dataset.from_dict({"ids": rows, "length": lengths.tolist()}) if arrow else _Rows(rows)
    return EncodedSplit("train", dataset, lengths, 0, 0)


class _Rows:
    """Rows without an Arrow table: ``rows()`` indexes it as it indexes a datasets.Dataset."""

    def __init__(self, rows):
        self.rows = rows

    def __getitem__(self, indices):
        return {"ids": [self.rows[i] for i in indices]}


@pytest.mark.parametrize("arrow", [True, False])
def test_epoch_batches_equal_collate(arrow):
    rng = np.random.default_rng(3)
    rows = [[1, *rng.integers(4, 11, size=int(n)).tolist(), 2] for n in rng.integers(0, 9, size=37)]
    split = split_of(rows, arrow)
    table = TokenTable.from_split(split)
    batches = bucketed_batches(split.lengths, 5, shuffle=True, seed=7, epoch=1, pool_batches=2)
    cut = epoch_batches(table, batches, PAD, start=2)
    assert len(cut) == len(batches) - 2
    for indices, batch in zip(batches[2:], cut, strict=True):
        expected = collate([rows[i] for i in indices], indices, PAD)
        for name in ("tokens", "lengths", "indices"):
            got, want = getattr(batch, name), getattr(expected, name)
            assert got.dtype == want.dtype == torch.int64
            assert torch.equal(got, want), name
        assert batch.num_target_tokens == expected.num_target_tokens


def test_a_sliced_arrow_column_keeps_its_rows():
    rows = [[1, 5, 2], [1, 6, 7, 2], [1, 2], [1, 8, 9, 10, 2]]
    dataset = Dataset.from_dict({"ids": rows}).select(range(1, 4)).flatten_indices()
    split = EncodedSplit("train", dataset, np.array([len(r) for r in rows[1:]]), 0, 0)
    batch = TokenTable.from_split(split).padded(np.array([2, 0]), PAD)
    assert batch.tokens.tolist() == [[1, 8, 9, 10, 2], [1, 6, 7, 2, PAD]]


def test_the_engine_loop_around_a_no_op_step_runs():
    result = bench_engine_loop(steps=12, rounds=1)
    assert result["steps"] == 12 and len(result["rounds_ms_per_step"]) == 1 and result["ms_per_step"] > 0
