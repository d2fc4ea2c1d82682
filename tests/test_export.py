"""textvae export: a run as config.json + model.safetensors + vocab + model card, loaded back with the
same encodings and evaluation; damaged and foreign weight files are one-line errors; the files a
command writes next to a model go to a user cache folder when the model's folder is read-only."""

import json

import pytest
import torch

import textvae
from tests.conftest import REPO
from tests.test_cli import DECODER, ENCODER, TRAINING
from textvae.cli import main

SENTENCES = ["and god said", "let there be light ."]
EVAL = ["--split", "valid", "--max-sentences", "30", "--iw-samples", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny quickstart VAE trained, evaluated, then exported: (run, export)."""
    root = tmp_path_factory.mktemp("export")
    sets = [arg for item in ENCODER + DECODER + TRAINING for arg in ("--set", item)]
    run, out = root / "run", root / "exported"
    assert main(["train", str(REPO / "recipes/quickstart/vae.toml"), "--out", str(run), *sets]) == 0
    assert main(["eval", str(run), *EVAL]) == 0
    assert main(["export", str(run), str(out)]) == 0
    return run, out


def read_eval(path):
    result = json.loads(path.read_text(encoding="utf-8"))
    result["config"].pop("source")  # where the recipe was read from: the checkpoint, or the exported config.json
    return {k: v for k, v in result.items() if k not in ("checkpoint", "eval_seconds")}


def test_the_exported_directory_holds_the_recipe_weights_vocab_and_a_model_card(exported):
    run, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "vocab.json"]
    assert json.loads((out / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    assert (out / "vocab.json").read_text() == (run / "vocab.json").read_text()
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as weights:  # readable without textvae
        assert weights.metadata()["format"] == "textvae-export-1"
        assert weights.metadata()["textvae_version"] == textvae.__version__
        names = set(weights.keys())
    best = torch.load(run / "best.pt", weights_only=True)  # the envelope only: the names come from the model
    assert names and best["format"] == "textvae-checkpoint-2"
    assert names == set(textvae.load(run).model.state_dict())

    card = (out / "README.md").read_text()
    result = json.loads((run / "eval_valid.json").read_text())
    for heading in ("## Recipe", "## Data", "## Training budget", "## Evaluation", "## Reproduce", "## Use"):
        assert heading in card
    assert f"textvae {textvae.__version__}" in card and "not resumable" in card
    assert f"| valid | {result['elbo']:.2f} |" in card  # the eval table of the exported weights
    assert f"Active units: **{result['au']}** of 4" in card
    assert f"| 3 | {result['kl_per_dim'][3]:.4f} |" in card
    assert "textvae train recipes/quickstart/vae.toml --out RUN" in card or "recipes/quickstart/vae.toml" in card
    assert "--set model.latent_dim=4" in card and "--set train.max_steps=6" in card
    assert "published" not in card  # recipes/quickstart/vae.toml cites no published row (its ablation does)


def test_the_card_of_a_recipe_that_cites_a_published_row_shows_it_and_the_verdict():
    from textvae.config import load_recipe
    from textvae.hub.card import model_card

    recipe = load_recipe(REPO / "recipes" / "yahoo" / "lstm_vae.toml")
    result = {"kind": "vae", "iw_nll": 329.5, "kl": 0.05, "mi_batch": 0.01, "au": 0, "kl_per_dim": [0.05] + [0.0] * 31}
    result |= {"config": recipe.to_dict(), "iw_samples": 500, "posterior_mean_variance": [0.0] * 32}
    card = model_card("yahoo", recipe, 20001, {"step": 10}, "best", [("test", result)], None, ["config.json"])
    assert "| split | KL | IW-NLL | AU | MI(batch) | published | verdict |" in card  # what the citation checks
    assert "| test | 0.050 | 329.50 | 0 | 0.010 | IW-NLL 328.8, KL 0, MI(batch) 0 [V-text] | reproduced |" in card
    del result["mi_batch"]  # a number the citation needs and the evaluation did not record
    card = model_card("yahoo", recipe, 20001, {"step": 10}, "best", [("test", result)], None, ["config.json"])
    assert "**not comparable**: not recorded: mi_batch" in card
    assert "Active units: **0** of 32" in card and "| 0 | 0.0500 | 0.0000 | no |" in card


def test_the_reproduce_command_resolves_to_the_exported_recipe(exported, monkeypatch):
    from textvae.config import load_recipe

    _, out = exported
    card = (out / "README.md").read_text()
    command = card[card.index("```bash\n") + 8 :].split("\ntextvae eval", 1)[0].replace(" \\\n", " ").split()
    recipe_file, sets = command[2], [command[i + 1] for i, word in enumerate(command) if word == "--set"]
    monkeypatch.chdir(REPO)
    again = load_recipe(recipe_file, sets).to_dict()
    assert json.loads(json.dumps(again)) == {**json.loads((out / "config.json").read_text()), "source": recipe_file}


def test_an_export_loads_with_the_same_encodings_generations_and_evaluation(exported, tmp_path, capsys):
    run, out = exported
    original, copy = textvae.load(run), textvae.load(out)
    a, b = original.encode(SENTENCES), copy.encode(SENTENCES)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.logvar, b.logvar)
    assert copy.sample(3, seed=5, strategy="sample") == original.sample(3, seed=5, strategy="sample")
    assert copy.reconstruct(SENTENCES) == original.reconstruct(SENTENCES)
    assert copy.interpolate(*SENTENCES, steps=3) == original.interpolate(*SENTENCES, steps=3)

    assert main(["eval", str(out), *EVAL, "--json", str(tmp_path / "eval.json")]) == 0
    assert read_eval(tmp_path / "eval.json") == read_eval(run / "eval_valid.json")

    for command in (["sample", "-n", "2"], ["reconstruct", *SENTENCES], ["interpolate", *SENTENCES, "--steps", "3"]):
        printed = []
        for folder in (run, out):
            capsys.readouterr()
            assert main([command[0], str(folder), *command[1:]]) == 0
            printed.append(capsys.readouterr().out)
        assert printed[0] == printed[1] and printed[0]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("in the beginning\nand god said\nlet there be light\namen\n")
    printed = []
    for folder in (run, out):
        capsys.readouterr()
        assert main(["neighbours", str(folder), "god said", "--corpus", str(corpus), "-k", "2"]) == 0
        printed.append(capsys.readouterr().out)
        assert main(["generate", str(folder), "--num", "3", "--out", str(tmp_path / f"{folder.name}.jsonl")]) == 0
    assert printed[0] == printed[1]
    assert list((out / "neighbours").glob("*.pt"))  # the cache goes next to the exported model
    lines = [json.loads(x) for x in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert lines == [json.loads(x) for x in (tmp_path / "exported.jsonl").read_text().splitlines()]


def test_an_export_is_not_resumable_and_needs_an_empty_target(exported, capsys):
    run, out = exported
    recipe = str(REPO / "recipes/quickstart/vae.toml")
    for argv in (["train", recipe, "--out", str(out), "--resume"], ["train", recipe, "--out", str(out)]):
        assert main(argv) == 2
        assert "not resumable" in capsys.readouterr().err
    assert main(["export", str(run), str(out)]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert main(["export", str(out), str(out.parent / "again")]) == 2  # an export is not a run directory
    assert not (out.parent / "again").exists()


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("textvae: error: ")
    return err


def test_a_damaged_or_foreign_model_file_is_a_one_line_error(exported, tmp_path, capsys):
    import shutil

    from safetensors.torch import save_file

    _, out = exported
    data = (out / "model.safetensors").read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], "damaged"),
        "a changed byte": (data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:], "checksum mismatch"),
        "not safetensors": (b"PK\x03\x04 a zip file, not weights", "damaged or not a safetensors file"),
        "empty": (b"", "damaged or not a safetensors file"),
    }
    for name, (content, message) in cases.items():
        folder = tmp_path / name.replace(" ", "_")
        shutil.copytree(out, folder)
        (folder / "model.safetensors").write_bytes(content)
        assert message in _one_line_error(capsys, ["sample", str(folder)]), name

    foreign = tmp_path / "foreign"
    shutil.copytree(out, foreign)
    save_file({"weight": torch.zeros(3, 3)}, foreign / "model.safetensors")  # somebody else's model
    assert "not a textvae export" in _one_line_error(capsys, ["eval", str(foreign)])

    from textvae.hub.model_dir import weights_bytes

    other = tmp_path / "other_shape"
    shutil.copytree(out, other)
    (other / "model.safetensors").write_bytes(weights_bytes(torch.nn.Linear(3, 2), {}))
    assert "weights do not fit config.json" in _one_line_error(capsys, ["reconstruct", str(other), "amen"])


def test_a_read_only_model_folder_sends_what_is_written_beside_it_to_the_user_cache(exported, tmp_path, monkeypatch):
    import os

    from textvae.hub import output_dir

    _, out = exported
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_access = os.access  # the tests run as root, who may write anywhere: the export folder reads as read-only

    def access(path, mode):
        return not same_folder(path, out) and real_access(path, mode)

    monkeypatch.setattr(output_dir.os, "access", access)
    assert main(["eval", str(out), *EVAL]) == 0
    cached = output_dir.cache_folder(out)
    assert cached.is_relative_to(tmp_path / "cache") and (cached / "eval_valid.json").is_file()
    assert (cached / "eval_valid.kl_per_dim.png").is_file() and not (out / "eval_valid.json").exists()
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("0\tand god said\n1\tlet there be light\n0\tamen\n1\tin the beginning\n")
    assert main(["attribute", str(out), "--file", str(labelled)]) == 0
    assert (cached / "attribute_vectors.json").is_file() and not (out / "attribute_vectors.json").exists()
    assert main(["reconstruct", str(out), "amen", "--add-vector", "0_to_1"]) == 0  # read back from the cache


def same_folder(path, folder) -> bool:
    from pathlib import Path

    return Path(path).resolve() == Path(folder).resolve()


def test_a_subword_vocabulary_is_exported_with_the_tokenizer_s_own_file(tmp_path):
    import sentencepiece

    from textvae.data.vocab import Vocab, train_sentencepiece
    from textvae.hub.model_dir import tokenizer_files

    lines = [f"the {a} {b} jumps over the {c} ." for a in ("quick", "lazy") for b in ("fox", "dog") for c in "xyz"]
    vocab = train_sentencepiece(lines * 5, "bpe", 40)
    (name, data), *more = tokenizer_files(vocab).items()
    assert name == "sentencepiece.model" and not more
    processor = sentencepiece.SentencePieceProcessor(model_proto=data)  # readable without textvae
    assert processor.get_piece_size() == len(vocab)
    assert tokenizer_files(Vocab(words=("<pad>", "<s>", "</s>", "<unk>", "word"))) == {}
