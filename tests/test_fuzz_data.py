"""Property-based tests (hypothesis) of the data layer: vocabulary, tokenization, encoding, bucketing, collation
and text files, on arbitrary Unicode, blank lines and very long lines.

Lines are drawn from a pool of awkward tokens (the special spellings ``<pad>``/``<s>``/``</s>``/``<unk>``/``_UNK``,
combining marks, emoji with modifiers and ZWJ, RTL text and marks, zero-width characters, a BOM, characters whose
lowercase is longer) and arbitrary text, joined by every kind of Unicode whitespace. The in-memory tests feed
``datasets.Dataset`` objects straight to ``build_vocab``/``encode_split`` (the real code path after loading); the
file tests go through ``check_text_file`` and the ``files`` corpus loader.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from textvae.config import DataConfig
from textvae.data.batching import bucketed_batches, collate, iterate_batches
from textvae.data.corpus import (
    bible_tokenize,
    build_vocab,
    check_text_file,
    encode_split,
    line_tokens,
    load_text,
    sentence_tokens,
)
from textvae.data.vocab import BOS, EOS, KNOWN_UNK_SPELLINGS, PAD, Vocab
from textvae.errors import TextVAEError

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEDIUM = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AWKWARD_TOKENS = (
    PAD,
    BOS,
    EOS,
    "<unk>",
    "_UNK",
    "the",
    "The",
    "THE",
    "a",
    "b",
    "don't",
    "'",
    "...",
    "e\u0301",  # e + combining acute
    "\u0301",  # a lone combining mark
    "👍🏽",  # emoji + skin tone modifier
    "👨\u200d👩\u200d👧",  # ZWJ sequence
    "🇫🇷",
    "שלום",
    "مرحبا",
    "\u200fאבג\u200e",  # RTL / LTR marks
    "a\u200bb",  # zero-width space (not whitespace for str.split)
    "\ufeffthe",  # BOM glued to a word
    "İstanbul",  # lowercases to 'i' + combining dot: longer
    "ß",
    "ΣΑΣ",
    "ǅ",
    "ﬃ",
    "\x00",
    "x" * 300,
)
# Every character that str.split() (and re's \s) treats as whitespace; "\t" also starts a label prefix.
SEPARATORS = (" ", "  ", "\t", "\u00a0", "\u1680", "\u2003", "\u2028", "\u2029", "\u3000", "\x1c", "\x85", "\v", "\f")
NEWLINES = ("\n", "\r", "\r\n")


def _no_whitespace(text: str) -> str:
    return "".join(c for c in text if not c.isspace())


tokens = st.one_of(
    st.sampled_from(AWKWARD_TOKENS),
    st.text(min_size=1, max_size=8).map(_no_whitespace).filter(bool),
)


@st.composite
def lines(draw, file_safe: bool = False) -> str:
    """One corpus line: words with mixed separators, raw text, blank, or very long (thousands of tokens)."""
    separators = SEPARATORS if file_safe else SEPARATORS + NEWLINES
    kind = draw(st.sampled_from(("words", "words", "raw", "blank", "long", "long_token")))
    if kind == "words":
        pairs = draw(st.lists(st.tuples(tokens, st.sampled_from(separators)), max_size=15))
        lead = draw(st.sampled_from(("", *separators)))
        line = lead + "".join(t + s for t, s in pairs)
    elif kind == "raw":
        line = draw(st.text(max_size=40))
    elif kind == "blank":
        line = "".join(draw(st.lists(st.sampled_from(separators), max_size=5)))
    elif kind == "long":
        pool = draw(st.lists(tokens, min_size=1, max_size=6))
        line = " ".join(itertools.islice(itertools.cycle(pool), draw(st.integers(1000, 6000))))
    else:
        line = draw(tokens) * draw(st.integers(500, 3000))
    if file_safe:  # the files loader splits on universal newlines, so a line cannot hold one
        line = line.replace("\r", "").replace("\n", "")
    return line


def text_dataset(texts: list[str]):
    return datasets.Dataset.from_dict({"text": texts}, features=datasets.Features({"text": datasets.Value("string")}))


def expected_unk(counts: Counter) -> str:
    return next((u for u in KNOWN_UNK_SPELLINGS if u in counts), KNOWN_UNK_SPELLINGS[0])


def check_vocab_contract(vocab: Vocab, counts: Counter, max_size: int | None, min_freq: int) -> None:
    """Specials at 0..3, the ranked words obey min_freq, max_size and the (count desc, word asc) order."""
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.words[:4] == (PAD, BOS, EOS, expected_unk(counts))
    ranked = vocab.words[4:]
    assert len(set(vocab.words)) == len(vocab.words)
    assert ranked and set(ranked) <= set(counts)
    assert all(counts[w] >= min_freq for w in ranked)
    assert max_size is None or len(ranked) <= max_size
    keys = [(-counts[w], w) for w in ranked]
    assert keys == sorted(keys)
    eligible = {w for w, c in counts.items() if c >= min_freq} - set(vocab.words[:4])
    left_out = eligible - set(ranked)
    if left_out:  # only because of max_size, and only words ranked after every kept word
        assert max_size is not None and len(ranked) == max_size
        assert min((-counts[w], w) for w in left_out) > keys[-1]
    else:
        assert set(ranked) == eligible


# ----------------------------------------------------------------------------------------------------------------
# Vocabulary


@FAST
@given(
    corpus=st.lists(st.lists(tokens, max_size=12), max_size=12),
    max_size=st.none() | st.integers(1, 12),
    min_freq=st.integers(1, 3),
    queries=st.lists(tokens, max_size=10),
)
def test_vocab_build_encode_decode_and_json_round_trip(corpus, max_size, min_freq, queries):
    counts = Counter(t for sentence in corpus for t in sentence)
    eligible = {w for w, c in counts.items() if c >= min_freq} - {PAD, BOS, EOS, expected_unk(counts)}
    if not eligible:
        with pytest.raises(TextVAEError, match="vocabulary is empty"):
            Vocab.build(counts, max_size=max_size, min_freq=min_freq)
        return
    vocab = Vocab.build(counts, max_size=max_size, min_freq=min_freq)
    check_vocab_contract(vocab, counts, max_size, min_freq)
    ranked = set(vocab.words[4:])

    for i, word in enumerate(vocab.words[4:], start=4):  # every vocabulary word is its own id and back
        assert vocab.encode([word]) == [i]
        assert vocab.decode([i]) == [word]
    for sentence in [*corpus, queries]:  # unknown words, and text spelled like a special marker, become unk
        ids = vocab.encode(sentence)
        assert len(ids) == len(sentence) and all(0 <= i < len(vocab) for i in ids)
        assert [i for i, t in zip(ids, sentence, strict=True) if t not in ranked] == [
            vocab.unk_id for t in sentence if t not in ranked
        ]
        expected = [t if t in ranked else vocab.unk for t in sentence]
        assert vocab.decode([vocab.bos_id, *ids, vocab.eos_id, vocab.pad_id, *ids]) == expected

    again = Vocab.from_json(vocab.to_json())
    assert again == vocab and again.words == vocab.words
    assert all(again.encode([w]) == vocab.encode([w]) for w in [*vocab.words, *queries])
    assert json.loads(vocab.to_json()) == {"words": list(vocab.words)}


@FAST
@given(words=st.lists(st.text(max_size=6), max_size=10))
def test_vocab_from_json_accepts_a_valid_word_list_and_rejects_the_rest_with_a_one_line_error(words):
    payload = json.dumps({"words": [PAD, BOS, EOS, *words]})
    if len(words) >= 2 and len(set(words)) == len(words) and not {PAD, BOS, EOS} & set(words):
        vocab = Vocab.from_json(payload)
        assert vocab.words == (PAD, BOS, EOS, *words) and vocab.unk == words[0]
        assert Vocab.from_json(vocab.to_json()) == vocab
    else:
        with pytest.raises(TextVAEError) as caught:
            Vocab.from_json(payload)
        assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------------------------------
# Tokenization


@FAST
@given(line=lines(), lowercase=st.booleans(), label=st.text(max_size=5).filter(lambda s: "\t" not in s))
def test_line_tokens_are_non_blank_whitespace_free_and_idempotent(line, lowercase, label):
    words = line_tokens(line, lowercase)
    assert all(w and not any(c.isspace() for c in w) for w in words)
    assert line_tokens(" ".join(words), lowercase) == words  # tokenizing the tokens changes nothing
    assert line_tokens(" ".join(words), False) == words
    text = line.split("\t", 1)[1] if "\t" in line else line
    assert words == (text.lower() if lowercase else text).split()
    if "\t" not in line:
        assert line_tokens(f"{label}\t{line}", lowercase) == words  # a label prefix is dropped
    cfg = DataConfig(dataset="files", lowercase=lowercase)
    assert sentence_tokens(cfg, line) == words  # a user's sentence is tokenized like a corpus line


@FAST
@given(line=lines(), lowercase=st.booleans())
def test_bible_tokens_are_non_blank_whitespace_free_idempotent_and_match_the_corpus_lines(line, lowercase):
    words = bible_tokenize(line)
    assert all(w and not any(c.isspace() for c in w) for w in words)
    assert all(w == w.lower() for w in words)
    assert bible_tokenize(" ".join(words)) == words
    assert "".join(words) == "".join(line.lower().split())  # only whitespace is dropped, nothing else
    # the bible corpus lines are the space-joined tokens, read back by line_tokens: a sentence typed by a user
    # must become the same tokens as the corpus line of the same verse
    cfg = DataConfig(dataset="bible", lowercase=lowercase)
    assert sentence_tokens(cfg, line) == words == line_tokens(" ".join(words), lowercase)


# ----------------------------------------------------------------------------------------------------------------
# Encoding and the whole pipeline up to batches


@MEDIUM
@given(
    texts=st.lists(lines(), max_size=10),
    lowercase=st.booleans(),
    max_len=st.none() | st.integers(1, 12),
    max_vocab_size=st.none() | st.integers(1, 10),
    min_freq=st.integers(1, 2),
    batch_size=st.integers(1, 5),
    shuffle=st.booleans(),
)
def test_encode_split_lengths_truncation_ids_and_batches(
    texts, lowercase, max_len, max_vocab_size, min_freq, batch_size, shuffle
):
    cfg = DataConfig(
        dataset="files", lowercase=lowercase, max_len=max_len, max_vocab_size=max_vocab_size, min_freq=min_freq
    )
    data = text_dataset(texts)
    sentences = [line_tokens(t, lowercase) for t in texts]
    counts = Counter(w for s in sentences for w in s)
    try:
        vocab = build_vocab(cfg, data)
    except TextVAEError as err:  # only when no training word can enter the vocabulary
        event("no vocabulary")
        assert "\n" not in str(err)
        assert not {w for w, c in counts.items() if c >= min_freq} - {PAD, BOS, EOS, expected_unk(counts)}
        return
    check_vocab_contract(vocab, counts, max_vocab_size, min_freq)
    assert build_vocab(cfg, data) == vocab  # deterministic

    kept = [s for s in sentences if s]
    if not kept:
        event("no sentence")
        with pytest.raises(TextVAEError, match="no non-blank line"):
            encode_split(cfg, "train", vocab, data)
        return
    split = encode_split(cfg, "train", vocab, data)
    event("encoded, some truncated" if split.num_truncated else "encoded")
    cut = [s if max_len is None else s[:max_len] for s in kept]
    assert len(split) == len(kept) and split.num_blank == len(texts) - len(kept)
    assert split.num_truncated == sum(max_len is not None and len(s) > max_len for s in kept)
    assert split.lengths.tolist() == [len(s) + 2 for s in cut]
    assert max_len is None or split.lengths.max() <= max_len + 2
    assert split.num_words == sum(len(s) + 1 for s in cut)
    rows = split.rows(range(len(split)))
    ranked = set(vocab.words[4:])
    for row, words in zip(rows, cut, strict=True):
        assert row[0] == vocab.bos_id and row[-1] == vocab.eos_id and len(row) == len(words) + 2
        assert all(0 <= i < len(vocab) for i in row)
        assert not {vocab.pad_id, vocab.bos_id, vocab.eos_id} & set(row[1:-1])  # markers only at the ends
        assert vocab.decode(row) == [w if w in ranked else vocab.unk for w in words]

    batches = bucketed_batches(split.lengths, batch_size, shuffle=shuffle, seed=3, epoch=1)
    seen = []
    for batch in iterate_batches(split, batches, vocab.pad_id):
        assert len(batch) <= batch_size
        for b, index in enumerate(batch.indices.tolist()):
            assert batch.tokens[b, : batch.lengths[b]].tolist() == rows[index]
        seen += batch.indices.tolist()
    assert sorted(seen) == list(range(len(split)))


# ----------------------------------------------------------------------------------------------------------------
# Bucketing


@st.composite
def length_arrays(draw) -> np.ndarray:
    if draw(st.booleans()):
        return np.asarray(draw(st.lists(st.integers(1, 5000), min_size=1, max_size=200)), dtype=np.int64)
    n = draw(st.integers(1, 30_000))  # long splits: generated by numpy, hypothesis chooses size and spread
    high = draw(st.integers(2, 2000))
    return np.random.default_rng(draw(st.integers(0, 2**32))).integers(1, high, size=n)


@FAST
@given(
    lengths=length_arrays(),
    batch_size=st.integers(1, 700),
    pool_batches=st.integers(1, 60),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 1000),
)
def test_bucketed_batches_partition_the_split(lengths, batch_size, pool_batches, shuffle, seed, epoch):
    kwargs = {"shuffle": shuffle, "seed": seed, "epoch": epoch, "pool_batches": pool_batches}
    batches = bucketed_batches(lengths, batch_size, **kwargs)
    n = len(lengths)
    sizes = np.array([len(b) for b in batches], dtype=np.int64)
    assert np.all((sizes >= 1) & (sizes <= batch_size))
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(n))  # every index exactly once
    rising = np.diff(lengths[flat]) >= 0
    rising[np.cumsum(sizes)[:-1] - 1] = True  # between two batches, lengths may fall
    assert rising.all()  # each batch is sorted by length
    pool = n if not shuffle else batch_size * pool_batches
    starts = range(0, n, pool)
    assert len(batches) == sum(-(-min(pool, n - s) // batch_size) for s in starts)
    assert np.sum(sizes < batch_size) <= len(starts)  # at most one short batch per pool
    if not shuffle:
        assert np.all(np.diff(lengths[flat]) >= 0)  # the whole split sorted by length
    again = bucketed_batches(lengths, batch_size, **kwargs)  # a function of (seed, epoch) only
    assert [len(b) for b in again] == sizes.tolist() and np.array_equal(np.concatenate(again), flat)


@FAST
@given(
    lengths=st.lists(st.integers(1, 50), min_size=40, max_size=400).map(np.asarray),
    batch_size=st.integers(1, 10),
    seed=st.integers(0, 2**31),
)
def test_shuffled_bucketed_batches_change_with_the_epoch(lengths, batch_size, seed):
    assume(len(lengths) >= 4 * batch_size)  # at least 4 batches: 8 epochs in the same order would be a bug
    orders = [np.concatenate(bucketed_batches(lengths, batch_size, shuffle=True, seed=seed, epoch=e)) for e in range(8)]
    assert any(not np.array_equal(orders[0], order) for order in orders[1:])


# ----------------------------------------------------------------------------------------------------------------
# Collation


@FAST
@given(
    rows=st.lists(st.lists(st.integers(0, 60), min_size=1, max_size=40), min_size=1, max_size=12),
    pad_id=st.integers(0, 60),
    offset=st.integers(0, 10**6),
)
def test_collate_pads_keeps_lengths_and_masks_exactly_the_real_tokens(rows, pad_id, offset):
    indices = np.arange(offset, offset + len(rows))[::-1].copy()
    batch = collate(rows, indices, pad_id)
    width = max(len(r) for r in rows)
    assert batch.tokens.shape == (len(rows), width) and batch.tokens.dtype == torch.long
    assert batch.lengths.tolist() == [len(r) for r in rows]
    assert batch.indices.tolist() == indices.tolist() and len(batch) == len(rows)
    assert batch.decoder_inputs.shape == batch.targets.shape == batch.target_mask.shape == (len(rows), width - 1)
    assert batch.num_target_tokens == int(batch.target_mask.sum()) == sum(len(r) - 1 for r in rows)
    for b, row in enumerate(rows):
        assert batch.tokens[b, : len(row)].tolist() == row  # unpadded rows round-trip
        assert (batch.tokens[b, len(row) :] == pad_id).all()  # padded with pad_id
        mask = batch.target_mask[b]
        assert mask.tolist() == [t < len(row) - 1 for t in range(width - 1)]
        assert batch.targets[b][mask].tolist() == row[1:]  # w_1 .. w_n EOS
        assert batch.decoder_inputs[b][mask].tolist() == row[:-1]  # BOS w_1 .. w_n
        assert (batch.targets[b][~mask] == pad_id).all()


# ----------------------------------------------------------------------------------------------------------------
# Text files


def write_lines(path: Path, texts: list[str], newline: str, trailing: bool) -> list[str]:
    """Write ``texts`` as UTF-8 lines; the lines a line reader gets back."""
    path.write_bytes((newline.join(texts) + (newline if trailing else "")).encode("utf-8"))
    back = list(texts)
    if not trailing and back and back[-1] == "":  # no final newline: a last empty line does not exist
        back.pop()
    return back


@FILES
@given(
    texts=st.lists(lines(file_safe=True), min_size=1, max_size=8),
    newline=st.sampled_from(("\n", "\r\n")),
    trailing=st.booleans(),
    lowercase=st.booleans(),
)
def test_utf8_files_load_back_with_the_same_lines(texts, newline, trailing, lowercase):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = write_lines(root / "train.txt", texts, newline, trailing)
        cfg = DataConfig(dataset="files", root=str(root), cache_dir=str(root / "cache"), lowercase=lowercase)
        non_blank = sum(bool(t.strip()) for t in expected)
        if not non_blank:
            with pytest.raises(TextVAEError, match="empty"):
                check_text_file(root / "train.txt")
            with pytest.raises(TextVAEError, match="empty"):
                load_text(cfg, "train")
            return
        assert check_text_file(root / "train.txt") == non_blank
        loaded = load_text(cfg, "train")
        assert list(loaded["text"]) == expected
        counts = Counter(w for t in expected for w in line_tokens(t, lowercase))
        if not set(counts) - {PAD, BOS, EOS, expected_unk(counts)}:
            with pytest.raises(TextVAEError):
                build_vocab(cfg)
            return
        vocab = build_vocab(cfg)
        assert vocab == build_vocab(cfg, text_dataset(expected))  # the file changes nothing
        split = encode_split(cfg, "train", vocab)
        memory = encode_split(cfg, "train", vocab, text_dataset(expected))
        assert split.rows(range(len(split))) == memory.rows(range(len(memory)))
        assert (split.num_blank, split.num_truncated) == (memory.num_blank, memory.num_truncated)


INVALID_UTF8 = (
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",
    b"\xc3(",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
)


@MEDIUM
@given(
    before=st.lists(st.text(max_size=10).map(lambda s: s.replace("\n", "")), max_size=4),
    broken=st.tuples(st.text(max_size=6), st.sampled_from(INVALID_UTF8), st.binary(max_size=6)),
    after=st.lists(st.binary(max_size=10), max_size=3),
)
def test_non_utf8_files_are_a_one_line_error(before, broken, after):
    head, bad, tail = broken
    raw = [t.encode("utf-8") for t in before]
    raw.append(head.replace("\n", "").encode("utf-8") + bad + tail.replace(b"\n", b""))
    raw += [b.replace(b"\n", b"") for b in after]
    assume(not all(_is_utf8(b) for b in raw))  # a truncated sequence followed by the right bytes is valid
    first_bad = 1 + next(i for i, b in enumerate(raw) if not _is_utf8(b))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train.txt").write_bytes(b"\n".join(raw) + b"\n")
        cfg = DataConfig(dataset="files", root=str(root), cache_dir=str(root / "cache"))
        for call in (
            lambda: check_text_file(root / "train.txt"),
            lambda: load_text(cfg, "train"),
            lambda: build_vocab(cfg),
            lambda: build_vocab(DataConfig(dataset="bible", vocab_file=str(root / "train.txt"))),
        ):
            with pytest.raises(TextVAEError) as caught:
                call()
            message = str(caught.value)
            assert "\n" not in message and f"train.txt:{first_bad}: line is not UTF-8" in message


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@MEDIUM
@given(
    entries=st.lists(st.tuples(tokens, st.sampled_from(("", " ", "\t", "\u3000"))), min_size=1, max_size=15),
    max_vocab_size=st.none() | st.integers(1, 10),
)
def test_a_vocab_file_keeps_its_order_of_first_occurrence(entries, max_vocab_size):
    words = [w for w, _ in entries]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.txt"
        path.write_text("".join(f"{pad}{w}{pad}\n" for w, pad in entries), encoding="utf-8")
        cfg = DataConfig(dataset="files", vocab_file=str(path), max_vocab_size=max_vocab_size)
        unk = expected_unk(Counter(words))
        expected = [w for w in dict.fromkeys(words) if w not in (PAD, BOS, EOS, unk)][:max_vocab_size]
        if not expected:
            with pytest.raises(TextVAEError, match="vocabulary is empty"):
                build_vocab(cfg)
            return
        vocab = build_vocab(cfg)
    assert vocab.words == (PAD, BOS, EOS, unk, *expected)
