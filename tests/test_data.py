from collections import Counter

import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from textvae.config import DataConfig
from textvae.data.batching import bucketed_batches
from textvae.data.corpus import bible_tokenize, build_vocab, encode_split, load_text
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError


@pytest.mark.parametrize("unk", ["<unk>", "_UNK"])
def test_a_corpus_unk_spelling_is_kept_as_the_unk_token(unk):
    vocab = Vocab.build(Counter({"a": 3, unk: 2, "b": 1}))
    assert vocab.unk == unk and vocab.words.count(unk) == 1
    assert vocab.encode(["a", "zzz", unk]) == [vocab.words.index("a"), vocab.unk_id, vocab.unk_id]


def test_vocab_max_size_min_freq_order_and_json_round_trip():
    counts = Counter({"x": 5, "y": 5, "z": 2, "w": 1})
    assert Vocab.build(counts).words[4:] == ("x", "y", "z", "w")  # by count, ties alphabetical
    assert Vocab.build(counts, max_size=2).words[4:] == ("x", "y")
    assert Vocab.build(counts, min_freq=2).words[4:] == ("x", "y", "z")
    vocab = Vocab.build(counts)
    assert Vocab.from_json(vocab.to_json()) == vocab
    ids = [vocab.bos_id, *vocab.encode(["y", "w"]), vocab.eos_id, vocab.pad_id]
    assert vocab.decode(ids) == ["y", "w"]


def test_bucketed_batches_cover_every_sentence_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(3, 60, size=1003)
    batches = bucketed_batches(lengths, 32, shuffle=True, seed=1, epoch=0, pool_batches=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    padding = sum(int(lengths[b].max() * len(b) - lengths[b].sum()) for b in batches)
    random_padding = sum(
        int(lengths[b].max() * len(b) - lengths[b].sum()) for b in np.array_split(np.arange(1003), len(batches))
    )
    assert padding < 0.2 * random_padding
    again = bucketed_batches(lengths, 32, shuffle=True, seed=1, epoch=0, pool_batches=10)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))  # a function of (seed, epoch)
    other = bucketed_batches(lengths, 32, shuffle=True, seed=1, epoch=1, pool_batches=10)
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(batches, other, strict=False))


def test_default_bucketing_sorts_the_whole_split_so_batches_hold_one_length():
    """One pool (the default): a batch spans a run of the length-sorted split, so each boundary
    between two lengths lies inside at most one batch; and the epoch still changes the batches."""
    lengths = np.random.default_rng(0).integers(3, 60, size=1003)
    batches = bucketed_batches(lengths, 32, shuffle=True, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1003))
    boundaries_inside = sum(len(set(lengths[b].tolist())) - 1 for b in batches)
    assert boundaries_inside <= len(set(lengths.tolist())) - 1
    pooled = bucketed_batches(lengths, 32, shuffle=True, seed=1, epoch=0, pool_batches=10)
    assert sum(len(set(lengths[b].tolist())) - 1 for b in pooled) > boundaries_inside
    other = bucketed_batches(lengths, 32, shuffle=True, seed=1, epoch=1)
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(batches, other, strict=False))


def test_files_corpus_with_labels_truncation_and_blank_lines(tmp_path):
    (tmp_path / "train.txt").write_text("1\tthe cat sat\n\n2\tthe dog sat down today\nthe cat\n")
    (tmp_path / "valid.txt").write_text("the cat sat\n")
    (tmp_path / "test.txt").write_text("a new word\n")
    cfg = DataConfig(dataset="files", root=str(tmp_path), max_len=3, cache_dir=str(tmp_path / "cache"))
    vocab = build_vocab(cfg)
    assert "1" not in vocab.words and "the" in vocab.words
    train = encode_split(cfg, "train", vocab)
    assert len(train) == 3 and train.num_blank == 1 and train.num_truncated == 1
    assert train.lengths.tolist() == [5, 5, 4]  # BOS + ≤ 3 words + EOS
    assert train.num_words == (3 + 1) + (3 + 1) + (2 + 1)  # words + EOS per sentence
    test = encode_split(cfg, "test", vocab)
    assert test.rows([0])[0] == [vocab.bos_id, vocab.unk_id, vocab.unk_id, vocab.unk_id, vocab.eos_id]


def test_unknown_split_and_dataset_are_errors(tmp_path):
    with pytest.raises(TextVAEError, match="unknown split"):
        load_text(DataConfig(dataset="bible"), "training")
    with pytest.raises(TextVAEError, match="unknown dataset"):
        load_text(DataConfig(dataset="wikitext"), "train")


def test_bible_embedded_corpus_has_the_documented_split():
    cfg = DataConfig(dataset="bible")
    sizes = {split: len(load_text(cfg, split)) for split in ("train", "valid", "test")}
    assert sizes == {"train": 24883, "valid": 3110, "test": 3110}
    assert bible_tokenize("And God said, Let there be light: and there was light.") == [
        "and",
        "god",
        "said",
        ",",
        "let",
        "there",
        "be",
        "light",
        ":",
        "and",
        "there",
        "was",
        "light",
        ".",
    ]


def test_ptb_matches_the_standard_counts():
    cfg = DataConfig(dataset="ptb", root=str(SHARED_DATA / "ptb"))
    vocab = build_vocab(cfg)
    assert len(vocab) == 10_002  # 9,999 types incl. <unk> + pad, bos, eos (the usual 10k counts <eos>)
    test = encode_split(cfg, "test", vocab)
    assert len(test) == 3761 and test.num_words == 78669 + 3761


def test_yahoo_with_its_distributed_vocabulary():
    root = SHARED_DATA / "yahoo"
    cfg = DataConfig(dataset="yahoo", root=str(root), vocab_file=str(root / "vocab.txt"))
    vocab = build_vocab(cfg)
    assert len(vocab) == 20_000 and vocab.unk == "_UNK"  # 19,996 words + _UNK in the file, + pad, bos, eos
    assert vocab.words[4:7] == ("why", "is", "the")  # the file's order is kept
    valid = encode_split(cfg, "valid", vocab)
    assert len(valid) == 10_000 and valid.num_words == 790_680 + 10_000
    with pytest.raises(TextVAEError, match=r"yahoo\.train\.txt: corpus file not found"):
        load_text(cfg, "train")  # only valid and test are staged here


def test_a_missing_vocab_file_is_a_one_line_error(tmp_path):
    cfg = DataConfig(dataset="bible", vocab_file=str(tmp_path / "nope.txt"))
    with pytest.raises(TextVAEError, match=r"nope\.txt: corpus file not found"):
        build_vocab(cfg)
