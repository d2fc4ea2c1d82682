"""The pretrained KJV sentence VAE shipped in the package (``textvae.load("kjv")``, ``textvae sample kjv``).

Two halves. The name lookup's rules (a local folder wins with a warning, ``--checkpoint`` does not
apply, writes go to the user's cache, a broken install is one line) run on a tiny export standing in
for the shipped folder. The shipped model itself: its files are what its card says (SHA-256), its
evaluation on the card's held-out verses gives the card's numbers, the commands take its name, and
a wheel built from the repository carries it.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

import textvae
from tests.conftest import REPO
from tests.test_export import exported  # noqa: F401  (the tiny export fixture)
from textvae.cli import main
from textvae.hub import shipped

KJV = shipped.PRETRAINED / "kjv"
# Recorded float metrics, recomputed on another CPU family (AVX2 vs AVX-512 kernels, AMD vs Intel): float32
# sums in another order, as in tests/test_eval_device.py, whose derivation gives 3e-5 relative for the
# image model's ~2e5 terms; a sentence score here sums ≤ 41 tokens of a 4,004-word softmax, fewer terms.
RELATIVE = 3e-5
# Decoded outcomes (greedy argmax, a near-tie may flip on another CPU): a share may move by 1% of the
# 500 verses (5 sentences), a mean count by 0.02.
SHARE, MEAN_COUNT = 0.01, 0.02


@pytest.fixture
def fake_shipped(exported, tmp_path, monkeypatch):  # noqa: F811
    """The tiny export installed as the shipped ``kjv``; the user cache in tmp_path; cwd empty."""
    _, out = exported
    pretrained = tmp_path / "pretrained"
    shutil.copytree(out, pretrained / "kjv")
    monkeypatch.setattr(shipped, "PRETRAINED", pretrained)
    monkeypatch.setattr(shipped, "_warned", set())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return pretrained / "kjv"


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_shipped_name_loads_the_shipped_folder_and_a_local_folder_of_that_name_wins(fake_shipped, caplog, exported):  # noqa: F811
    run, _ = exported
    model = textvae.load("kjv")
    assert model.encode(["and god said"]).mean.equal(textvae.load(fake_shipped).encode(["and god said"]).mean)
    assert not caplog.records

    shutil.copytree(run, "kjv")  # a run directory called kjv, in the working directory
    with caplog.at_level(logging.WARNING):
        local = textvae.load("kjv")
    assert "instead of the shipped model 'kjv'" in caplog.text
    assert local.encode(["and god said"]).mean.equal(textvae.load(run).encode(["and god said"]).mean)


def test_best_or_last_on_a_shipped_model_says_it_does_not_apply(fake_shipped, caplog, capsys):
    with caplog.at_level(logging.WARNING):
        assert main(["sample", "kjv", "-n", "2", "--checkpoint", "last"]) == 0
    assert "holds one weights file (model.safetensors): the 'last' choice does not apply" in caplog.text
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    caplog.clear()
    assert main(["sample", "kjv", "-n", "2"]) == 0  # no choice given: nothing to say
    assert "does not apply" not in caplog.text


def test_writes_next_to_a_shipped_model_go_to_the_cache_folder(fake_shipped, tmp_path, capsys):
    before = files_of(fake_shipped)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("in the beginning\nand god said\nlet there be light\n")
    assert main(["eval", "kjv", "--split", "valid", "--max-sentences", "10", "--iw-samples", "2"]) == 0
    assert main(["neighbours", "kjv", "god said", "--corpus", str(corpus), "-k", "2"]) == 0
    assert files_of(fake_shipped) == before  # nothing written into the shipped folder
    cache = textvae.hub.output_dir.cache_folder(fake_shipped)
    assert str(cache).startswith(str(tmp_path / "cache"))
    assert (cache / "eval_valid.json").is_file() and list((cache / "neighbours").glob("*.pt"))
    assert f"results: {cache / 'eval_valid.json'}" in capsys.readouterr().out


def test_code_use_on_a_small_evaluation_shows_the_examples_it_has(fake_shipped, tmp_path):
    out = tmp_path / "small.json"
    argv = ["eval", "kjv", "--split", "valid", "--max-sentences", "3", "--iw-samples", "2", "--code-use"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    examples = result["code_use_examples"]
    assert result["code_use_sentences"] == 3 and len(examples["reconstructions"]) <= 3
    assert len(examples["homotopies"]) <= 1 and 0 <= result["keep_rate"] <= 1


def test_an_unknown_name_and_a_broken_install_are_one_line_errors(fake_shipped, capsys):
    assert main(["sample", "kjvx"]) == 2
    assert capsys.readouterr().err.strip() == "textvae: error: kjvx: no such run directory or checkpoint"
    (fake_shipped / "model.safetensors").unlink()
    assert main(["sample", "kjv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("the shipped model 'kjv' is missing from this install (reinstall textvae)")
    assert len(err.splitlines()) == 1


# --- the shipped model itself --------------------------------------------------------------------


def card_front_matter() -> dict:
    card = (KJV / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(card.split("---\n")[1])


def card_metrics() -> tuple[dict, dict]:
    """(the evaluation's settings, {metric: value}) from the card's model-index."""
    result = card_front_matter()["model-index"][0]["results"][0]
    return result["dataset"], {m["type"]: m["value"] for m in result["metrics"]}


def test_the_shipped_files_are_those_the_card_names_with_their_checksums():
    card = (KJV / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^- `([\w.]+)`: `([0-9a-f]{64})`$", card, flags=re.MULTILINE))
    assert set(listed) == {"config.json", "model.safetensors", "vocab.json"}
    for name, digest in listed.items():
        assert hashlib.sha256((KJV / name).read_bytes()).hexdigest() == digest, name
    assert sorted(p.name for p in KJV.iterdir()) == sorted([*listed, "README.md"])
    assert sum(p.stat().st_size for p in KJV.iterdir()) <= 10 * 2**20  # the bound: ≤ 10 MB


def test_the_shipped_model_evaluates_to_the_numbers_on_its_card(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataset, recorded = card_metrics()
    args = dataset["args"]
    out = tmp_path / "eval.json"
    argv = ["eval", "kjv", "--split", dataset["split"], "--max-sentences", str(args["sentences"])]
    argv += [
        "--iw-samples",
        str(args["iw_samples"]),
        "--seed",
        str(args["seed"]),
        "--mi-samples",
        str(args["mi_samples"]),
    ]
    assert main([*argv, "--device", "cpu", "--code-use", "--json", str(out)]) == 0
    measured = json.loads(out.read_text())
    assert measured["num_sentences"] == args["sentences"] and measured["au"] == recorded["au"]
    for key in ("elbo", "rec", "kl", "iw_nll", "mi_batch", "mi_full"):
        assert measured[key] == pytest.approx(recorded[key], rel=RELATIVE), key
    for key in ("keep_rate", "homotopy_three_or_more"):
        assert measured[key] == pytest.approx(recorded[key], abs=SHARE), key
    for key in ("overlap_own", "overlap_other", "homotopy_distinct_mean"):
        assert measured[key] == pytest.approx(recorded[key], abs=MEAN_COUNT), key
    # what the issue asks of a generator that uses its code (recipes/kjv/README.md)
    assert measured["keep_rate"] >= 0.5 and measured["overlap_own"] >= 2 * measured["overlap_other"]


def test_the_commands_take_the_shipped_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = files_of(KJV)
    assert main(["sample", "kjv", "-n", "3", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    verse = "and god said , let there be light : and there was light ."
    assert main(["reconstruct", "kjv", verse]) == 0
    assert capsys.readouterr().out.strip()
    plot = tmp_path / "homotopy.png"
    assert main(["interpolate", "kjv", verse, "jesus wept .", "--steps", "7", "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("in the beginning god created the heaven and the earth .\njesus wept .\n")
    assert main(["neighbours", "kjv", "god made the heaven", "--corpus", str(corpus), "-k", "1"]) == 0
    assert "in the beginning god created" in capsys.readouterr().out
    assert main(["generate", "kjv", "--num", "4", "--out", str(tmp_path / "out.jsonl")]) == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4
    assert files_of(KJV) == before


def test_the_readme_tour_shows_the_cards_seeded_examples():
    card = (KJV / "README.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r"^- `(.+)`  \n  → `(.+)`$", card, flags=re.MULTILINE)
    assert len(examples) == 5
    for source, output in examples:
        assert f"> {source}\n< {output}\n" in readme  # as `textvae reconstruct kjv` prints it
    homotopies = re.findall(r"^Homotopy \d: from `(.+)` to `(.+)`\n\n((?:\d\. .*\n)+)", card, flags=re.MULTILINE)
    assert len(homotopies) == 5
    for first, second, path in homotopies:
        lines = [line.split(". ", 1)[1] for line in path.splitlines()]
        printed = "".join(f"{i / 6:.2f}  {line}\n" for i, line in enumerate(lines))  # textvae interpolate --steps 7
        assert f'"{first}" "{second}"' in readme and printed in readme


def test_a_wheel_built_from_the_repository_carries_the_shipped_model(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "textvae", source / "textvae", ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."]
    subprocess.run(build, cwd=source, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("textvae-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
    assert {f"textvae/hub/pretrained/kjv/{p.name}" for p in KJV.iterdir()} <= members

    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    script = "import textvae; m = textvae.load('kjv'); print(textvae.__file__); print(m.sample(2, seed=3))"
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    )
    where, samples = done.stdout.strip().splitlines()
    assert where.startswith(str(site))
    assert samples == str(textvae.load("kjv").sample(2, seed=3))
