"""Every bad input to the command line gets one line on stderr, exit status 2, no traceback, and writes nothing.

The CLI runs as a subprocess (``python -m textvae ...`` from the repository root), so the real entry
point is what is tested. Each case gets its own scratch directory, holding whatever the command needs
(a corpus, a recipe, a copy of a trained run); the directory must be byte-for-byte unchanged afterwards:
no run directory, no results file, no plot, no temporary file.

Every case is a fresh Python that imports torch (about 2 s of CPU), so the selected cases of a group run
concurrently (one per CPU, at most 8) in a module-scoped fixture, and each test checks its case's outcome.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from textvae.checkpoint import read_checkpoint, write_checkpoint_payload

SENTENCES = [
    f"the {animal} {verb} the {thing}"
    for animal in ("cat", "dog", "bird", "fox")
    for verb in ("sees", "likes", "chases", "finds")
    for thing in ("ball", "tree", "house", "cat")
]  # 64 sentences: the first 60 are the training split; valid and test take 8 each from all 64


def write_corpus(root: Path, **splits: bytes | None) -> Path:
    """``root/{train,valid,test}.txt``; a keyword replaces a split's bytes, or leaves the file out (None)."""
    root.mkdir(parents=True)
    lines = {"train": SENTENCES[:60], "valid": SENTENCES[::8], "test": SENTENCES[4::8]}
    for split, default in lines.items():
        data = splits.get(split, "".join(f"{s}\n" for s in default).encode())
        if data is not None:
            (root / f"{split}.txt").write_bytes(data)
    return root


def recipe(corpus: Path, cache: Path, model: str = "vae") -> dict:
    """A recipe for a model small enough to train in seconds (B=4, E=8, H=8, D=4, 3 steps)."""
    decoder = {"type": "lstm", "embed_dim": 8, "hidden_dim": 8}
    models = {
        "vae": {"type": "vae", "latent_dim": 4, "encoder": {"type": "lstm", "embed_dim": 8, "hidden_dim": 8}},
        "lm": {"type": "lm"},
    }
    return {
        "data": {"dataset": "files", "root": str(corpus), "cache_dir": str(cache)},
        "model": {**models[model], "decoder": decoder},
        "train": {
            "batch_size": 4,
            "max_steps": 3,
            "optimizer": "adam",
            "lr": 0.01,
            "progress_bar": False,
            "threads": 1,
        },
        "eval": {"iw_samples": 5, "max_sentences": 10},
    }


def toml_text(table: dict, name: str = "") -> str:
    """TOML for nested tables of strings, numbers and booleans (their JSON literals are TOML literals)."""
    lines = [f"[{name}]"] if name else []
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items() if not isinstance(value, dict)]
    lines += [
        toml_text(value, f"{name}.{key}" if name else key) for key, value in table.items() if isinstance(value, dict)
    ]
    return "\n".join(lines) + "\n"


def write_recipe(path: Path, table: dict, edits: dict | None = None) -> Path:
    """Write ``table`` as TOML after setting each dotted key of ``edits``."""
    table = json.loads(json.dumps(table))
    for dotted, value in (edits or {}).items():
        *parents, key = dotted.split(".")
        inner = table
        for part in parents:
            inner = inner.setdefault(part, {})
        inner[key] = value
    path.write_text(toml_text(table), encoding="utf-8")
    return path


def run_cli(args: list) -> subprocess.CompletedProcess:
    """``python -m textvae ARGS`` with CUDA hidden: every case sees a CPU-only machine (``--device cuda`` fails)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "textvae", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``, hidden ones included."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


@dataclass
class Runs:
    """Two tiny trained runs (read-only: a case that needs one works on its own copy)."""

    vae: Path
    lm: Path

    def copy(self, which: str, tmp: Path) -> Path:
        return Path(shutil.copytree(getattr(self, which), tmp / f"{which}_run"))


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[..., list]  # (tmp) or (tmp, runs) → the CLI arguments; writes what they need under tmp
    expect: tuple[str, ...]  # substrings of the error line; "{tmp}" stands for the case's scratch directory


def params(cases: list[Case]) -> list:
    """One pytest parameter per case, named by its id."""
    return [pytest.param(case, id=case.id) for case in cases]


@dataclass
class Outcome:
    result: subprocess.CompletedProcess
    expect: list[str]
    before: dict[str, bytes | None]
    after: dict[str, bytes | None]


def selected(request, cases: list[Case]) -> list[Case]:
    """The cases whose tests this session runs (so that ``-k one-case`` runs one subprocess)."""
    ids = {item.callspec.id for item in request.session.items if hasattr(item, "callspec")}
    return [case for case in cases if case.id in ids]


def run_cases(cases: list[Case], root: Path, runs: Runs | None = None) -> dict[str, Outcome]:
    prepared = []
    for case in cases:
        tmp = root / case.id
        tmp.mkdir()
        args = case.setup(tmp) if runs is None else case.setup(tmp, runs)
        prepared.append((case, tmp, args, snapshot(tmp)))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        results = list(pool.map(run_cli, [args for _, _, args, _ in prepared]))
    return {
        case.id: Outcome(result, [e.format(tmp=tmp) for e in case.expect], before, snapshot(tmp))
        for (case, tmp, _, before), result in zip(prepared, results, strict=True)
    }


def check_one_line_error(outcome: Outcome) -> None:
    result = outcome.result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("textvae: error: "), line
    for part in outcome.expect:
        assert part in line, f"{part!r} not in {line!r}"
    assert result.returncode == 2, (result.returncode, line)
    assert result.stdout == "", result.stdout
    added = sorted(set(outcome.after) - set(outcome.before))
    removed = sorted(set(outcome.before) - set(outcome.after))
    changed = sorted(k for k in set(outcome.before) & set(outcome.after) if outcome.before[k] != outcome.after[k])
    assert not (added or removed or changed), f"written: {added}, removed: {removed}, changed: {changed}"


# --- train (recipes, data), report and usage: no trained run needed ---------------------------------------------------


def train_args(tmp: Path, edits: dict | None = None, *extra: str, model: str = "vae", **corpus: bytes | None) -> list:
    """``train RECIPE --out RUN`` for the tiny recipe over a fresh corpus, with ``edits`` applied.

    The datasets cache is shared by the cases, beside their scratch directories: a cache, not an output.
    """
    table = recipe(write_corpus(tmp / "corpus", **corpus), tmp.parent / "datasets_cache", model)
    path = write_recipe(tmp / "recipe.toml", table, edits)
    return ["train", path, "--out", tmp / "run", *extra]


def edited(case_id: str, edits: dict, *expect: str) -> Case:
    return Case(case_id, lambda tmp: train_args(tmp, edits), expect)


def corpus_case(case_id: str, splits: dict, *expect: str) -> Case:
    return Case(case_id, lambda tmp: train_args(tmp, **splits), expect)


def _recipe_not_toml(tmp: Path) -> list:
    (tmp / "recipe.toml").write_text("[train\nlr = 1\n", encoding="utf-8")
    return ["train", tmp / "recipe.toml", "--out", tmp / "run"]


def _base_missing(tmp: Path) -> list:
    (tmp / "recipe.toml").write_text('base = "nowhere.toml"\n', encoding="utf-8")
    return ["train", tmp / "recipe.toml", "--out", tmp / "run"]


def _out_not_empty(tmp: Path) -> list:
    args = train_args(tmp)
    (tmp / "run").mkdir()
    (tmp / "run" / "notes.txt").write_text("someone else's run\n", encoding="utf-8")
    return args


def _report_not_json(tmp: Path) -> list:
    (tmp / "eval_test.json").write_text("| model | ELBO |\n", encoding="utf-8")
    return ["report", tmp / "eval_test.json"]


CASES_WITHOUT_A_RUN = [
    Case("no-command", lambda tmp: [], ("required: command",)),
    Case("unknown-command", lambda tmp: ["fit", tmp], ("invalid choice: 'fit'",)),
    Case("train-without-out", lambda tmp: ["train", tmp / "recipe.toml"], ("--out",)),
    Case(
        "recipe-missing",
        lambda tmp: ["train", tmp / "missing.toml", "--out", tmp / "run"],
        ("{tmp}/missing.toml: recipe file not found",),
    ),
    Case("recipe-not-toml", _recipe_not_toml, ("{tmp}/recipe.toml: invalid TOML",)),
    Case("recipe-base-missing", _base_missing, ("{tmp}/nowhere.toml: recipe file not found",)),
    edited(
        "unknown-train-key",
        {"train.learning_rate": 0.1},
        "{tmp}/recipe.toml: [train]: unknown key 'learning_rate'",
        "valid keys: seed, data_seed, batch_size, bucket_pool_batches, epochs, max_steps, optimizer, lr,",
    ),
    edited(
        "unknown-decoder-key",
        {"model.decoder.hidden_size": 8},
        "{tmp}/recipe.toml: [model].decoder: unknown key 'hidden_size' for decoder 'lstm'",
        "valid keys: type, embed_dim, hidden_dim,",
    ),
    edited("lr-is-a-string", {"train.lr": "fast"}, "[train].lr: expected a number, got str 'fast'"),
    edited(
        "batch-size-is-a-float", {"train.batch_size": 3.5}, "[train].batch_size: expected an integer, got float 3.5"
    ),
    edited("batch-size-zero", {"train.batch_size": 0}, "{tmp}/recipe.toml: [train].batch_size: must be ≥ 1, got 0"),
    Case(
        "decoder-hidden-dim-zero",
        lambda tmp: train_args(tmp, {"model.decoder.hidden_dim": 0}),
        ("model.decoder: hidden_size must be greater than zero",),
    ),
    edited(
        "unknown-optimizer", {"train.optimizer": "rmsprop"}, "[train].optimizer: 'rmsprop' is not one of 'sgd', 'adam'"
    ),
    edited(
        "unknown-model-type", {"model.type": "transformer"}, "unknown model type 'transformer'; choose one of: lm, vae"
    ),
    edited(
        "unknown-top-level-table", {"trainer.lr": 0.1}, "{tmp}/recipe.toml: unknown key 'trainer'; valid keys: base,"
    ),
    Case(
        "set-without-equals",
        lambda tmp: train_args(tmp, None, "--set", "train.lr"),
        ("--set 'train.lr': expected KEY=VALUE",),
    ),
    Case("out-not-empty", _out_not_empty, ("{tmp}/run: run directory exists and is not empty",)),
    Case("resume-without-last", lambda tmp: train_args(tmp, None, "--resume"), ("{tmp}/run: nothing to resume",)),
    edited(
        "unknown-dataset",
        {"data.dataset": "wikipedia"},
        "unknown dataset 'wikipedia'; choose one of: bible, ptb, yahoo, files",
    ),
    edited(
        "data-root-missing", {"data.root": "/nonexistent/corpus"}, "/nonexistent/corpus: data.root directory not found"
    ),
    corpus_case("valid-file-missing", {"valid": None}, "{tmp}/corpus/valid.txt: corpus file not found"),
    corpus_case("train-file-blank-lines", {"train": b"\n  \n\t\n"}, "{tmp}/corpus/train.txt: corpus file is empty"),
    corpus_case(
        "train-file-not-utf8",
        {"train": b"the cat sees the ball\nthe dog likes the tree\nthe caf\xe9 is open\nthe end\n"},
        "{tmp}/corpus/train.txt:3: line is not UTF-8",
    ),
    corpus_case("train-labels-without-text", {"train": b"pos\t\nneg\t \n"}, "the training split has no words"),
    Case(
        "report-file-missing",
        lambda tmp: ["report", tmp / "eval_test.json"],
        ("{tmp}/eval_test.json: results file not found",),
    ),
    Case("report-not-json", _report_not_json, ("{tmp}/eval_test.json: not a JSON results file",)),
]


@pytest.fixture(scope="module")
def outcomes_without_a_run(request, tmp_path_factory) -> dict[str, Outcome]:
    return run_cases(selected(request, CASES_WITHOUT_A_RUN), tmp_path_factory.mktemp("without_a_run"))


@pytest.mark.parametrize("case", params(CASES_WITHOUT_A_RUN))
def test_error_without_a_run(case, outcomes_without_a_run):
    check_one_line_error(outcomes_without_a_run[case.id])


# --- eval, sample, reconstruct, interpolate: a tiny trained VAE and LM ------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    """A tiny VAE and a tiny LM, trained through the CLI (concurrently) on one corpus."""
    root = tmp_path_factory.mktemp("runs")
    corpus = write_corpus(root / "corpus")
    commands = [
        [
            "train",
            write_recipe(root / f"{model}.toml", recipe(corpus, root / "datasets_cache", model)),
            "--out",
            root / model,
        ]
        for model in ("vae", "lm")
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for result in pool.map(run_cli, commands):
            assert result.returncode == 0, result.stderr
    return Runs(vae=root / "vae", lm=root / "lm")


def _random_bytes_checkpoint(tmp: Path, runs: Runs) -> list:
    run = runs.copy("vae", tmp)
    (run / "best.pt").write_bytes(random.Random(0).randbytes(4096))
    return ["eval", run]


def _truncated_checkpoint(tmp: Path, runs: Runs) -> list:
    run = runs.copy("vae", tmp)
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(data[: len(data) // 2])
    return ["eval", run]


def _checksum_mismatch(tmp: Path, runs: Runs) -> list:
    """One byte of the serialized checkpoint changed inside an otherwise well-formed file."""
    run = runs.copy("vae", tmp)
    envelope = torch.load(run / "best.pt", weights_only=True)
    envelope["payload"][len(envelope["payload"]) // 2] ^= 0xFF
    torch.save(envelope, run / "best.pt")
    return ["eval", run]


def _foreign_checkpoint(tmp: Path, runs: Runs) -> list:
    run = runs.copy("vae", tmp)
    torch.save({"state_dict": {"weight": torch.zeros(3)}}, run / "best.pt")
    return ["eval", run]


def _weights_do_not_fit(tmp: Path, runs: Runs) -> list:
    """The VAE's best.pt with its weights (decoder H=8) under a config that says H=9."""
    run = runs.copy("vae", tmp)
    payload = read_checkpoint(run / "best.pt")
    config = json.loads(payload["config"])
    config["model"]["decoder"]["hidden_dim"] = 9
    payload["config"] = json.dumps(config)
    write_checkpoint_payload(run / "best.pt", payload)
    return ["eval", run]


def _json_is_a_directory(tmp: Path, runs: Runs) -> list:
    run = runs.copy("vae", tmp)
    (tmp / "results").mkdir()
    return ["eval", run, "--json", tmp / "results"]


def _test_file_missing(tmp: Path, runs: Runs) -> list:
    return ["eval", runs.copy("vae", tmp), "--data-root", write_corpus(tmp / "moved", test=None)]


def _sentences_not_utf8(tmp: Path, runs: Runs) -> list:
    (tmp / "sentences.txt").write_bytes(b"the cat sees the ball\nthe caf\xe9\n")
    return ["reconstruct", runs.copy("vae", tmp), "--file", tmp / "sentences.txt"]


def on(model: str, *args: str) -> Callable[[Path, Runs], list]:
    """Setup for ``COMMAND <copy of the run> ARGS...``: ``on("vae", "eval", "--split", "train")``."""
    return lambda tmp, runs: [args[0], runs.copy(model, tmp), *args[1:]]


CASES_WITH_A_RUN = [
    Case("eval-run-missing", lambda tmp, runs: ["eval", tmp / "nowhere"], ("{tmp}/nowhere: no such run directory",)),
    Case("eval-random-bytes-checkpoint", _random_bytes_checkpoint, ("{tmp}/vae_run/best.pt: corrupt or unreadable",)),
    Case("eval-truncated-checkpoint", _truncated_checkpoint, ("{tmp}/vae_run/best.pt: corrupt or unreadable",)),
    Case(
        "eval-checksum-mismatch", _checksum_mismatch, ("{tmp}/vae_run/best.pt: corrupt checkpoint (checksum mismatch)",)
    ),
    Case("eval-foreign-checkpoint", _foreign_checkpoint, ("{tmp}/vae_run/best.pt: not a textvae checkpoint",)),
    Case(
        "eval-weights-do-not-fit-config",
        _weights_do_not_fit,
        ("{tmp}/vae_run/best.pt: weights do not fit the checkpoint's config",),
    ),
    Case(
        "eval-iw-samples-zero", on("vae", "eval", "--iw-samples", "0"), ("argument --iw-samples: must be ≥ 1, got 0",)
    ),
    Case("eval-seed-negative", on("vae", "eval", "--seed", "-1"), ("argument --seed: must be ≥ 0, got -1",)),
    Case(
        "eval-batch-size-not-int",
        on("vae", "eval", "--batch-size", "many"),
        ("argument --batch-size: expected an integer",),
    ),
    Case("eval-split-train", on("vae", "eval", "--split", "train"), ("argument --split: invalid choice: 'train'",)),
    Case("eval-split-bogus", on("vae", "eval", "--split", "bogus"), ("argument --split: invalid choice: 'bogus'",)),
    Case(
        "eval-dump-posterior-on-lm",
        lambda tmp, runs: ["eval", runs.copy("lm", tmp), "--dump-posterior", tmp / "posterior.npz"],
        ("--dump-posterior needs a model with a latent variable",),
    ),
    Case(
        "eval-json-dir-missing",
        lambda tmp, runs: ["eval", runs.copy("vae", tmp), "--json", tmp / "missing" / "results.json"],
        ("{tmp}/missing/results.json: directory {tmp}/missing does not exist",),
    ),
    Case("eval-json-is-a-directory", _json_is_a_directory, ("{tmp}/results: is a directory",)),
    Case(
        "eval-data-root-missing",
        lambda tmp, runs: ["eval", runs.copy("vae", tmp), "--data-root", tmp / "moved"],
        ("{tmp}/moved: data.root directory not found",),
    ),
    Case("eval-test-file-missing", _test_file_missing, ("{tmp}/moved/test.txt: corpus file not found",)),
    Case(
        "sample-run-missing", lambda tmp, runs: ["sample", tmp / "nowhere"], ("{tmp}/nowhere: no such run directory",)
    ),
    Case(
        "sample-top-p-above-one",
        on("vae", "sample", "--strategy", "sample", "--top-p", "1.5"),
        ("top-p must be in (0, 1]",),
    ),
    Case(
        "sample-temperature-zero",
        on("lm", "sample", "--strategy", "sample", "--temperature", "0"),
        ("argument --temperature: must be a finite number > 0, got 0",),
    ),
    Case(
        "sample-temperature-nan",
        on("vae", "sample", "--strategy", "sample", "--temperature", "nan"),
        ("argument --temperature: must be a finite number > 0, got nan",),
    ),
    Case("sample-seed-negative", on("vae", "sample", "--seed", "-1"), ("argument --seed: must be ≥ 0, got -1",)),
    Case("sample-num-zero", on("vae", "sample", "-n", "0"), ("argument -n/--num: must be ≥ 1, got 0",)),
    Case("sample-top-k-zero", on("vae", "sample", "--top-k", "0"), ("argument --top-k: must be ≥ 1, got 0",)),
    Case(
        "reconstruct-no-sentences", on("vae", "reconstruct"), ("no sentences: give them as arguments or with --file",)
    ),
    Case("reconstruct-file-not-utf8", _sentences_not_utf8, ("{tmp}/sentences.txt:2: line is not UTF-8",)),
    Case(
        "reconstruct-on-lm", on("lm", "reconstruct", "the cat sees the ball"), ("needs a model with a latent variable",)
    ),
    Case("interpolate-on-lm", on("lm", "interpolate", "the cat", "the dog"), ("needs a model with a latent variable",)),
    Case(
        "interpolate-one-step", on("vae", "interpolate", "the cat", "the dog", "--steps", "1"), ("--steps must be ≥ 2",)
    ),
    Case("interpolate-missing-second", on("vae", "interpolate", "the cat"), ("required: second",)),
    Case("eval-device-bogus", on("vae", "eval", "--device", "gpu"), ("argument --device: invalid choice: 'gpu'",)),
    Case(
        "eval-matmul-precision-fp16",
        on("vae", "eval", "--matmul-precision", "fp16"),
        ("argument --matmul-precision: invalid choice: 'fp16'",),
    ),
]
NO_CUDA = ("--device cuda: no CUDA device is available on this machine",)  # run_cli hides CUDA
CASES_WITH_A_RUN += [
    Case("eval-device-cuda-without-cuda", on("vae", "eval", "--device", "cuda"), NO_CUDA),
    Case("eval-lm-device-cuda-without-cuda", on("lm", "eval", "--device", "cuda"), NO_CUDA),
    Case("sample-device-cuda-without-cuda", on("vae", "sample", "--device", "cuda"), NO_CUDA),
    Case("reconstruct-device-cuda-without-cuda", on("vae", "reconstruct", "the cat", "--device", "cuda"), NO_CUDA),
    Case("interpolate-device-cuda-without-cuda", on("vae", "interpolate", "a", "b", "--device", "cuda"), NO_CUDA),
]


@pytest.fixture(scope="module")
def outcomes_with_a_run(request, runs, tmp_path_factory) -> dict[str, Outcome]:
    return run_cases(selected(request, CASES_WITH_A_RUN), tmp_path_factory.mktemp("with_a_run"), runs)


@pytest.mark.parametrize("case", params(CASES_WITH_A_RUN))
def test_error_with_a_run(case, outcomes_with_a_run):
    check_one_line_error(outcomes_with_a_run[case.id])
