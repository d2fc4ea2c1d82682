"""Length-bucketed batches: sentences of similar length go together, so little compute is padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Batch:
    """Padded token ids: row b is BOS w_1 .. w_n EOS PAD ..."""

    tokens: Tensor  # (B, T) int64
    lengths: Tensor  # (B,) tokens incl. BOS and EOS
    indices: Tensor  # (B,) positions of these sentences in their split

    @property
    def decoder_inputs(self) -> Tensor:
        return self.tokens[:, :-1]  # (B, T-1): BOS w_1 .. w_n

    @property
    def targets(self) -> Tensor:
        return self.tokens[:, 1:]  # (B, T-1): w_1 .. w_n EOS

    @property
    def target_mask(self) -> Tensor:
        steps = torch.arange(self.tokens.shape[1] - 1, device=self.tokens.device)
        return steps.unsqueeze(0) < (self.lengths - 1).unsqueeze(1)  # (B, T-1)

    @property
    def num_target_tokens(self) -> int:
        return int((self.lengths - 1).sum())

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.tokens.to(device), self.lengths.to(device), self.indices.to(device))

    def to_device(self, device: torch.device) -> Batch:
        """The batch on ``device``; to a GPU through pinned host memory without waiting: the copy is
        queued behind the work before it instead of making the host wait for that work (a graphed
        step's or an evaluation batch's host work then overlaps the device's)."""
        if device.type != "cuda":
            return self.to(device)
        tensors = (self.tokens, self.lengths, self.indices)
        return Batch(*(t.pin_memory().to(device, non_blocking=True) for t in tensors))


def collate(rows: Sequence[Sequence[int]], indices: Sequence[int], pad_id: int) -> Batch:
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    tokens = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for b, row in enumerate(rows):
        tokens[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return Batch(tokens, lengths, torch.as_tensor(list(indices), dtype=torch.long))


def bucketed_batches(
    lengths: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    pool_batches: int | None = None,
) -> list[np.ndarray]:
    """Index batches of similar lengths.

    Without shuffling: the whole split sorted by length (stable), cut into batches. With
    shuffling: a seeded permutation (a function of ``seed`` and ``epoch`` only, so a resumed run
    sees the same order), cut into pools of ``pool_batches`` batches (default: one pool, the whole
    split), each pool sorted by length and cut into batches, and the batches shuffled. With one
    pool, nearly every batch holds sentences of one length, drawn at random among those of that
    length, as in He et al. 2019's code: on PTB 0.1% of the tokens a batch computes are padding,
    against 3.8% with pools of 50 batches.
    """
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    pool = max(1, n if pool_batches is None else batch_size * pool_batches)
    batches = []
    for start in range(0, n, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def iterate_batches(split, batch_indices: Sequence[np.ndarray], pad_id: int, start: int = 0) -> Iterator[Batch]:
    """Collate the batches of ``split`` (an EncodedSplit) from position ``start`` on."""
    for indices in batch_indices[start:]:
        yield collate(split.rows(indices), indices, pad_id)
