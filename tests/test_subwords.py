"""Sentencepiece subwords (BPE and unigram) instead of the word vocabulary: trained on the training
split, round-tripping text, saved with the model, and evaluated with PPL per word and per subword."""

import json
import math

import pytest

import textvae
from textvae.config import DataConfig, recipe_from_dict
from textvae.data.corpus import build_vocab, encode_split, line_tokens, load_text
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.train import train

SENTENCES = [
    f"the {adj} {animal} {verb} over the {thing} ."
    for adj in ("quick", "lazy", "sleepy", "hungry")
    for animal in ("fox", "dog", "rabbit", "hedgehog")
    for verb in ("jumps", "walks", "rolls")
    for thing in ("fence", "river", "hill")
]  # 144 sentences


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("subwords")
    for split, rows in (("train", SENTENCES[:120]), ("valid", SENTENCES[120:132]), ("test", SENTENCES[132:])):
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def _data(corpus, **kwargs) -> DataConfig:
    return DataConfig(dataset="files", root=str(corpus), tokenizer="sentencepiece", **kwargs)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_subword_vocabulary_round_trips_text_and_json(corpus, model_type):
    cfg = _data(corpus, subword_model=model_type, subword_vocab_size=60)
    vocab = build_vocab(cfg)
    assert vocab.is_subword and vocab.words[:4] == ("<pad>", "<s>", "</s>", "<unk>")
    assert 20 < len(vocab) <= 60
    split = encode_split(cfg, "test", vocab)
    texts = [" ".join(line_tokens(line, False)) for line in load_text(cfg, "test")["text"]]
    for row, text in zip(split.rows(range(len(split))), texts, strict=True):
        assert row[0] == vocab.bos_id and row[-1] == vocab.eos_id
        assert vocab.detokenize(row) == text  # pieces decode back to the words
    assert split.num_words == sum(len(t.split()) + 1 for t in texts)  # words + EOS, not pieces
    assert split.lengths.sum() - 2 * len(split) > sum(len(t.split()) for t in texts)  # more pieces than words
    again = Vocab.from_json(vocab.to_json())
    assert again == vocab and again.encode(["hedgehogs", "jump"]) == vocab.encode(["hedgehogs", "jump"])
    assert build_vocab(cfg) == vocab  # training is deterministic


def test_word_and_subword_settings_do_not_mix(corpus):
    with pytest.raises(TextVAEError, match=r"\[data\].max_vocab_size is for word vocabularies"):
        _data(corpus, max_vocab_size=100)
    with pytest.raises(TextVAEError, match=r"\[data\].vocab_file is for word vocabularies"):
        _data(corpus, vocab_file="vocab.txt")
    with pytest.raises(TextVAEError, match="'wordpiece' is not one of"):
        recipe_from_dict(
            {"data": {"dataset": "files", "tokenizer": "sentencepiece", "subword_model": "wordpiece"}}, source="t"
        )


def test_a_damaged_subword_model_in_a_vocabulary_is_a_one_line_error(corpus):
    vocab = build_vocab(_data(corpus, subword_vocab_size=40))
    data = json.loads(vocab.to_json())
    with pytest.raises(TextVAEError, match="base64-encoded sentencepiece model"):
        Vocab.from_json(json.dumps({**data, "sentencepiece": "not base64!"}))
    with pytest.raises(TextVAEError, match="pieces differ from the word list"):
        Vocab.from_json(json.dumps({**data, "words": [*data["words"][:-1], "other"]}))


def test_a_subword_language_model_trains_saves_and_reports_ppl_per_word_and_per_piece(corpus, tmp_path):
    recipe = recipe_from_dict(
        {
            "data": {
                "dataset": "files",
                "root": str(corpus),
                "cache_dir": str(tmp_path / "cache"),
                "tokenizer": "sentencepiece",
                "subword_model": "bpe",
                "subword_vocab_size": 50,
            },
            "model": {"type": "lm", "decoder": {"type": "lstm", "embed_dim": 8, "hidden_dim": 16}},
            "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 8, "max_steps": 30, "progress_bar": False},
        },
        source="test",
    )
    train(recipe, tmp_path / "run")
    loaded = textvae.load(tmp_path / "run")
    assert loaded.vocab.is_subword  # the subword model came back from the checkpoint
    split = encode_split(recipe.data, "test", loaded.vocab)
    result = evaluate(loaded.model, split, loaded.vocab.pad_id, EvalSettings(progress_bar=False)).metrics
    total_nll = result["nll"] * result["num_sentences"]
    assert result["num_words"] == split.num_words < result["num_tokens"]
    assert math.log(result["ppl"]) == pytest.approx(total_nll / result["num_tokens"])
    assert math.log(result["ppl_word"]) == pytest.approx(total_nll / result["num_words"])
    assert result["ppl_word"] > result["ppl"]  # the same NLL spread over fewer units
    for text in loaded.sample(3, seed=0, strategy="sample"):
        assert "▁" not in text and "<s>" not in text  # detokenized, not raw pieces


def test_a_word_vocabulary_detokenizes_to_its_words():
    vocab = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", "a", "b"))
    assert not vocab.is_subword and vocab.detokenize([1, 4, 5, 2, 0]) == "a b"
