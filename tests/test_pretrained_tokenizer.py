"""A pretrained Hugging Face tokenizer as the data's vocabulary (``[data] tokenizer = "pretrained"``), so that a
local pretrained GPT-2 decoder reads the ids it was trained on: ids equal to the tokenizer's on PTB, GPT-2's single
special token as BOS, EOS and padding, training from the pretrained weights through ``textvae train``, and eval /
sample from the checkpoint alone. Nothing is downloaded: a byte-level BPE tokenizer and a tiny GPT-2 are built here.
"""

import dataclasses
import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

import textvae
from tests.conftest import REPO, SHARED_DATA
from tests.test_subwords import SENTENCES  # the 144 templated sentences of the subword tests
from textvae import cli
from textvae.config import DataConfig, load_recipe, recipe_from_dict
from textvae.data.corpus import build_vocab, encode_split, line_tokens
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.models import build_model
from textvae.train import train

PTB = SHARED_DATA / "ptb"
END = "<|endoftext|>"  # GPT-2's only special token
GPT2_SHAPE = {"num_layers": 1, "hidden_dim": 16, "num_heads": 2, "max_positions": 64}


def _ptb_lines(split: str, start: int, stop: int) -> list[str]:
    with (PTB / f"ptb.{split}.txt").open(encoding="utf-8") as handle:
        return [line for number, line in enumerate(handle) if start <= number < stop]


def _save_gpt2_tokenizer(directory, lines: list[str]):
    """A byte-level BPE (GPT-2's scheme) trained on ``lines``, with ``<|endoftext|>`` appended as the last id,
    saved as GPT-2's tokenizer class saves it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False))
    bpe.add_special_tokens([END])  # id len − 1, as in GPT-2 (50256)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token=END, eos_token=END, unk_token=END)
    tokenizer.save_pretrained(directory)
    return tokenizer


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """``tokenizer``: a tokenizer directory; ``model``: a GPT-2 directory with the same tokenizer (the hub's
    layout); ``other``: a tokenizer of the same size with other tokens; ``saved``: the GPT-2 weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("pretrained")
    tokenizer = _save_gpt2_tokenizer(root / "tokenizer", _ptb_lines("train", 0, 300))
    other = _save_gpt2_tokenizer(root / "other", _ptb_lines("train", 3000, 3300))
    assert len(other) == len(tokenizer)
    torch.manual_seed(3)
    end = len(tokenizer) - 1
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=end, eos_token_id=end
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():  # LayerNorm gains that a fresh GPT-2 never has (it starts them at 1)
        model.transformer.ln_f.weight.uniform_(1.5, 2.5)
    model.save_pretrained(root / "gpt2")
    tokenizer.save_pretrained(root / "gpt2")
    return SimpleNamespace(
        tokenizer=root / "tokenizer", model=root / "gpt2", other=root / "other", saved=model.state_dict(), root=root
    )


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_the_vocabulary_gives_the_tokenizers_own_ids_on_ptb_sentences(pretrained):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained.tokenizer, local_files_only=True)
    cfg = DataConfig(
        dataset="ptb", root=str(PTB), tokenizer="pretrained", pretrained_tokenizer=str(pretrained.tokenizer)
    )
    vocab = build_vocab(cfg)
    end = tokenizer.convert_tokens_to_ids(END)
    assert end == len(tokenizer) - 1 == 400
    assert vocab.is_pretrained and vocab.is_subword and len(vocab) == len(tokenizer)
    assert vocab.words == tuple(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (end, end, end, end)

    lines = _ptb_lines("valid", 0, 50)
    split = encode_split(cfg, "valid", vocab, Dataset.from_dict({"text": lines}))
    assert len(split) == 50
    for line, row in zip(lines, split.rows(range(50)), strict=True):
        text = " ".join(line_tokens(line, lowercase=False))  # textvae's whitespace tokenization, re-joined
        ids = tokenizer(text)["input_ids"]  # GPT-2's tokenizer adds no specials of its own
        assert row == [end, *ids, end]
        assert len(ids) < len(text)  # merges were used: tokens are pieces, not bytes
        assert vocab.detokenize(row) == text  # the leading <|endoftext|> is BOS, the last one EOS
    assert split.num_words == sum(len(line.split()) + 1 for line in lines)  # per-word PPL still counts words

    truncated = encode_split(
        dataclasses.replace(cfg, max_len=5), "valid", vocab, Dataset.from_dict({"text": lines[:3]})
    )
    for line, row in zip(lines[:3], truncated.rows(range(3)), strict=True):  # max_len counts words, not tokens
        assert row == [end, *tokenizer(" ".join(line.split()[:5]))["input_ids"], end]

    # text spelled like the special token is ordinary text, never a sentence boundary
    spelled = vocab.encode(["a", END, "b"])
    assert end not in spelled and vocab.detokenize(spelled) == f"a {END} b"
    # padding after EOS and sampled rows without BOS decode alike
    assert vocab.detokenize([*split.rows([0])[0], end, end]) == vocab.detokenize(split.rows([0])[0][1:])


def test_the_tokenizer_travels_inside_the_vocabulary_json(pretrained, tmp_path):
    copied = shutil.copytree(pretrained.tokenizer, tmp_path / "tok")
    vocab = build_vocab(DataConfig(dataset="files", tokenizer="pretrained", pretrained_tokenizer=str(copied)))
    serialized = vocab.to_json()
    shutil.rmtree(copied)
    again = Vocab.from_json(serialized)
    assert again == vocab
    sentence = line_tokens(_ptb_lines("test", 0, 1)[0], lowercase=False)
    assert again.encode(sentence) == vocab.encode(sentence) and len(again.encode(sentence)) > 0
    data = json.loads(serialized)
    with pytest.raises(TextVAEError, match="tokens differ from the word list"):
        Vocab.from_json(json.dumps({**data, "words": [*data["words"][:-1], "other"]}))
    with pytest.raises(TextVAEError, match="unreadable serialized tokenizer"):
        Vocab.from_json(json.dumps({**data, "tokenizer": "{not json"}))
    with pytest.raises(TextVAEError, match="special id eos = 401 is not a token id"):
        Vocab.from_json(json.dumps({**data, "special_ids": {**data["special_ids"], "eos": 401}}))


def _write_corpus(root):
    root.mkdir()
    for split, rows in (("train", SENTENCES[:120]), ("valid", SENTENCES[120:132]), ("test", SENTENCES[132:])):
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_textvae_train_starts_from_the_pretrained_gpt2_and_the_checkpoint_needs_no_tokenizer_directory(
    pretrained, tmp_path, capsys
):
    tokenizer_dir = shutil.copytree(pretrained.tokenizer, tmp_path / "tokenizer")
    model_dir = shutil.copytree(pretrained.model, tmp_path / "gpt2")
    corpus = _write_corpus(tmp_path / "corpus")
    recipe_file = tmp_path / "recipe.toml"
    recipe_file.write_text(
        f"""
[data]
dataset = "files"
root = "{corpus}"
cache_dir = "{tmp_path / "cache"}"
tokenizer = "pretrained"
pretrained_tokenizer = "{tokenizer_dir}"

[model]
type = "vae"
latent_dim = 4

[model.encoder]
type = "lstm"
embed_dim = 8
hidden_dim = 8

[model.decoder]
type = "gpt2"
num_layers = 1
hidden_dim = 16
num_heads = 2
max_positions = 64
dropout = 0.0
pretrained = "{model_dir}"

[train]
optimizer = "adam"
lr = 0.003
batch_size = 8
max_steps = 12
log_every_steps = 1
progress_bar = false
threads = 1
max_valid_sentences = 12
"""
    )
    recipe = load_recipe(recipe_file)
    built = build_model(recipe.model, build_vocab(recipe.data)).decoder.gpt2.state_dict()
    for name, value in pretrained.saved.items():  # the decoder starts from the saved weights, every tensor
        torch.testing.assert_close(built[name], value, rtol=0, atol=0, msg=name)

    run = tmp_path / "run"
    assert cli.main(["train", str(recipe_file), "--out", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["event"] == "train"]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) < sum(losses[:3])
    loaded = textvae.load(run, "last")
    gain = loaded.model.decoder.gpt2.transformer.ln_f.weight.detach()
    saved_gain = pretrained.saved["transformer.ln_f.weight"]
    assert (saved_gain - 1).abs().min() > 0.5  # far from what a fresh GPT-2 would start with ...
    assert (gain - saved_gain).abs().max() < 12 * 0.003 * 3  # ... and Adam moved it at most ~lr per step
    assert loaded.vocab.is_pretrained and loaded.vocab == build_vocab(recipe.data)

    # the tokenizer directory goes, and the model directory loses its tokenizer: the checkpoint's vocabulary serves
    shutil.rmtree(tokenizer_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).unlink()
    capsys.readouterr()
    eval_args = ["eval", str(run), "--iw-samples", "3", "--max-sentences", "8", "--json", str(tmp_path / "e.json")]
    assert cli.main([*eval_args, "--generation", "--num-samples", "4"]) == 0
    metrics = json.loads((tmp_path / "e.json").read_text())
    for key in ("elbo", "iw_nll", "ppl_iw", "ppl_iw_word", "kl", "bleu_rec"):
        assert math.isfinite(metrics[key]), key
    assert metrics["num_tokens"] > metrics["num_words"]  # PPL per piece and per word both reported
    capsys.readouterr()
    assert cli.main(["sample", str(run), "-n", "3", "--strategy", "sample", "--max-len", "12"]) == 0
    samples = capsys.readouterr().out.splitlines()
    assert len(samples) == 3
    for text in samples:
        assert END not in text and "Ġ" not in text  # decoded text, not raw byte-level tokens


def test_a_pretrained_decoder_with_another_vocabulary_is_a_one_line_error(pretrained, tmp_path):
    corpus = _write_corpus(tmp_path / "corpus")
    decoder = {"type": "gpt2", **GPT2_SHAPE, "pretrained": str(pretrained.model)}
    encoder = {"type": "lstm", "embed_dim": 4, "hidden_dim": 4}
    model = {"type": "vae", "latent_dim": 2, "encoder": encoder, "decoder": decoder}
    hint = r'set \[data\] tokenizer = "pretrained" and pretrained_tokenizer = ".*gpt2"'
    # a word vocabulary: refused by train's early check, before any data is read
    recipe = recipe_from_dict({"data": {"dataset": "files", "root": str(tmp_path / "nowhere")}, "model": model}, "t")
    with pytest.raises(
        TextVAEError, match=rf"its own tokenizer \(401 tokens\), not those of a textvae word.*{hint}"
    ) as error:
        train(recipe, tmp_path / "run")
    _one_line(error)
    # sentencepiece subwords
    subwords = DataConfig(dataset="files", root=str(corpus), tokenizer="sentencepiece", subword_vocab_size=60)
    with pytest.raises(TextVAEError, match=rf"textvae sentencepiece vocabulary; {hint}") as error:
        build_model(model, build_vocab(subwords))
    _one_line(error)
    # another pretrained tokenizer of the same size
    other = build_vocab(DataConfig(dataset="files", tokenizer="pretrained", pretrained_tokenizer=str(pretrained.other)))
    assert len(other) == 401
    with pytest.raises(TextVAEError, match=rf"token \d+ is .* in the textvae vocabulary: .*{hint}") as error:
        build_model(model, other)
    _one_line(error)
    # the same tokenizer from another directory is the same vocabulary: accepted
    same = build_vocab(
        DataConfig(dataset="files", tokenizer="pretrained", pretrained_tokenizer=str(pretrained.tokenizer))
    )
    assert build_model(model, same).decoder.gpt2.config.vocab_size == 401


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tokenizer": "pretrained"}, r'pretrained_tokenizer: tokenizer = "pretrained" needs a local'),
        ({"pretrained_tokenizer": "DIR"}, r'pretrained_tokenizer: is read only with tokenizer = "pretrained"'),
        ({"tokenizer": "pretrained", "pretrained_tokenizer": "DIR", "max_vocab_size": 100}, "max_vocab_size: does"),
        ({"tokenizer": "pretrained", "pretrained_tokenizer": "DIR", "min_freq": 2}, "min_freq: does not apply"),
        ({"tokenizer": "pretrained", "pretrained_tokenizer": "DIR", "vocab_file": "v.txt"}, "vocab_file: does"),
        ({"tokenizer": "pretrained", "pretrained_tokenizer": "DIR", "subword_model": "bpe"}, "subword_model: does"),
        ({"tokenizer": "pretrained", "pretrained_tokenizer": "DIR", "subword_vocab_size": 50}, "subword_vocab_size"),
    ],
)
def test_settings_that_make_no_sense_with_a_pretrained_tokenizer_are_one_line_errors(settings, message):
    with pytest.raises(TextVAEError, match=rf"t: \[data\]\.{message}") as error:
        recipe_from_dict({"data": {"dataset": "files", **settings}, "model": {"type": "lm", "decoder": {}}}, "t")
    _one_line(error)


def test_a_missing_or_empty_tokenizer_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(TextVAEError, match="is not a directory") as error:
        build_vocab(DataConfig(tokenizer="pretrained", pretrained_tokenizer=str(tmp_path / "missing")))
    _one_line(error)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextVAEError, match="cannot load a tokenizer from") as error:
        build_vocab(DataConfig(tokenizer="pretrained", pretrained_tokenizer=str(tmp_path / "empty")))
    _one_line(error)


def test_the_optimus_recipe_takes_a_local_gpt2_through_three_settings(pretrained):
    """The overrides the recipe documents give GPT-2 small's decoder reading GPT-2's own tokenizer."""
    overrides = [
        "data.tokenizer=pretrained",
        f"data.pretrained_tokenizer={pretrained.model}",
        f"model.decoder.pretrained={pretrained.model}",
    ]
    recipe = load_recipe(REPO / "recipes/transformer/optimus_ptb_gpu.toml", overrides)
    assert (recipe.data.tokenizer, recipe.data.pretrained_tokenizer) == ("pretrained", str(pretrained.model))
    decoder = recipe.model["decoder"]
    assert decoder["pretrained"] == str(pretrained.model)
    small = {"num_layers": 12, "hidden_dim": 768, "num_heads": 12, "max_positions": 1024}  # GPT-2 small's config
    assert {key: decoder[key] for key in small} == small and decoder.get("inner_dim") is None
