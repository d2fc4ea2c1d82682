"""The bench's corpora: PTB (or a small synthetic one, for tests) and a copy 10× larger, and the
training batches every measurement draws from them."""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from textvae.config import DataConfig
from textvae.data.batching import Batch, bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit, build_vocab, encode_split, load_text
from textvae.errors import TextVAEError

from .models import Sizes
from .references import REPO

log = logging.getLogger(__name__)

DEFAULT_PTB = REPO.parent / "shared" / "data" / "ptb"


@dataclass
class Corpus:
    name: str
    data: DataConfig
    vocab: object
    train: EncodedSplit
    test: EncodedSplit


def load_corpus(name: str, data: DataConfig) -> Corpus:
    train_text = load_text(data, "train")
    vocab = build_vocab(data, train_text)
    train = encode_split(data, "train", vocab, train_text)
    test = encode_split(data, "test", vocab)
    log.info("%s: vocabulary %d, train %d sentences, test %d", name, len(vocab), len(train), len(test))
    return Corpus(name, data, vocab, train, test)


def write_lines(path: Path, lines) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def synthetic_base(directory: Path, sentences: int) -> None:
    """A small random corpus (tests): ``sentences`` lines of 3–14 words over 40 words."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    for split, count in (("train", sentences), ("valid", sentences // 5), ("test", sentences // 5)):
        lines = (" ".join(rng.choices(words, k=rng.randint(3, 14))) for _ in range(count))
        write_lines(directory / f"{split}.txt", lines)


def scaled_corpus(base: DataConfig, directory: Path, scale: int) -> DataConfig:
    """``scale`` × the base corpus: each split's sentences drawn with replacement (seeded)."""
    rng = random.Random(0)
    for split in ("train", "valid", "test"):
        lines = [line for line in load_text(base, split)["text"] if line.strip()]
        write_lines(directory / f"{split}.txt", (rng.choice(lines) for _ in range(scale * len(lines))))
    return DataConfig(dataset="files", root=str(directory), cache_dir=str(directory / "cache"))


def train_batches(corpus: Corpus, sizes: Sizes, count: int, device: torch.device) -> list[Batch]:
    """The first ``count`` batches of the seeded epoch-0 order, collated and on the device."""
    order = bucketed_batches(corpus.train.lengths, sizes.batch_size, shuffle=True, seed=0, epoch=0)
    order = list(itertools.islice(itertools.cycle(order), count))
    return [batch.to(device) for batch in iterate_batches(corpus.train, order, corpus.vocab.pad_id)]


def load_corpora(sizes: Sizes, scratch: Path, data_root: Path | None, scaled: bool = True) -> dict[str, Corpus]:
    """The base corpus (PTB under ``data_root``, or a synthetic one when ``sizes.synthetic_base``)
    and (``scaled``) the scaled copy, in that order; their files written under ``scratch``."""
    if sizes.synthetic_base:
        (scratch / "base").mkdir()
        synthetic_base(scratch / "base", sizes.synthetic_base)
        base_data = DataConfig(dataset="files", root=str(scratch / "base"), cache_dir=str(scratch / "base_cache"))
        base_name = "synthetic"
    else:
        root = Path(data_root) if data_root is not None else DEFAULT_PTB
        if not (root / "ptb.train.txt").is_file():
            raise TextVAEError(
                f"{root}: no ptb.train.txt; pass --data-root DIR with the PTB files (data_scripts/prepare_ptb.py)"
            )
        base_data = DataConfig(dataset="ptb", root=str(root))
        base_name = "ptb"
    if not scaled:
        return {base_name: load_corpus(base_name, base_data)}
    (scratch / "scaled").mkdir()
    scaled_data = scaled_corpus(base_data, scratch / "scaled", sizes.corpus_scale)
    scaled_name = f"{base_name}_x{sizes.corpus_scale}"
    return {base_name: load_corpus(base_name, base_data), scaled_name: load_corpus(scaled_name, scaled_data)}
