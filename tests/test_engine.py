"""The training engine (textvae.engine): short CPU runs reproduce the weights and metrics of the
loop it replaced, bit for bit, and equal a plain loop written out in the test.

The golden digests were recorded with the pre-engine loops (``textvae/train.py::_train`` and
``textvae/image/train.py::train_image`` at commit 2b625fa) on the project's 2-core AMD EPYC machine,
torch 2.14.1, one thread, 2026-12-04; two processes gave the same digests. Another CPU, kernel set,
thread count or torch build rounds differently (on 2026-12-07 an Intel Xeon with AVX-512 gave other
digests), so the digests are keyed by all four (``textvae.engine.machine``): a machine without its own
digests skips them, saying so, and the plain-loop tests still compare the engine exactly there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_DATA
from textvae.checkpoint import read_checkpoint, write_checkpoint_payload
from textvae.config import recipe_from_dict
from textvae.data.batching import bucketed_batches, collate
from textvae.data.corpus import build_vocab, encode_split, load_text
from textvae.engine import Engine, StepOutcome
from textvae.engine.distributed import SINGLE_PROCESS
from textvae.engine.machine import cpu_name, machine_fingerprint
from textvae.engine.state import make_optimizer, seed_everything
from textvae.errors import TextVAEError
from textvae.image.checkpoint import build_image_model
from textvae.image.config import image_recipe_from_dict
from textvae.image.data import batch_generator, epoch_order, load_image_split
from textvae.image.train import ImageFamily, train_image
from textvae.models import build_model
from textvae.strategies import StandardStrategy, StepContext, apply_update
from textvae.train import TextFamily, train

TIMING_FIELDS = ("tokens_per_s", "images_per_s")
# fields added after the digests were recorded: validation's au and kl_per_dim (no random draws), the train
# records' gradient norms (read from the gradients, they change no update)
LATER_FIELDS = ("au", "kl_per_dim", "grad_norm", "grad_norm_encoder", "grad_norm_decoder")
PTB = SHARED_DATA / "ptb"
MNIST = SHARED_DATA / "mnist"
TINY_LSTM = {"type": "lstm", "embed_dim": 16, "hidden_dim": 16}


def text_recipe(root: Path, dataset: str = "ptb", remedies: tuple = (), **train_settings):
    """The tiny PTB VAE of the golden runs (recipes/ptb/lstm_vae.toml at hidden 16, latent 4)."""
    decoder = {**TINY_LSTM, "dropout_in": 0.5, "dropout_out": 0.5}
    raw = {
        "data": {"dataset": dataset, "root": str(root)},
        "model": {"type": "vae", "latent_dim": 4, "encoder": TINY_LSTM, "decoder": decoder},
        "remedies": list(remedies),
        "train": {"batch_size": 16, "lr_decay_patience": 4, "progress_bar": False, "threads": 1, "device": "cpu"},
    }
    raw["train"].update(train_settings)
    return recipe_from_dict(raw, source="test_engine")


def mnist_recipe(**train_settings):
    """The Burda et al. 2015 one-layer VAE of recipes/image/mnist/cpu/vae.toml, 30 steps."""
    train_cfg = {"optimizer": "adam", "lr": 1e-3, "batch_size": 100, "epochs": 30, "grad_clip": 100.0}
    train_cfg |= {"progress_bar": False, "threads": 1, "device": "cpu", **train_settings}
    raw = {
        "data": {"dataset": "mnist", "root": str(MNIST), "binarize": True},
        "model": {"type": "vae", "latent_dim": 50, "hidden_dims": [200, 200], "activation": "tanh"},
        "train": train_cfg,
    }
    return image_recipe_from_dict(raw, source="test_engine")


LOGGED = {"validate_every_steps": 10, "max_valid_sentences": 40, "log_every_steps": 5, "checkpoint_every_steps": 10}


def small_corpus(folder: Path) -> Path:
    """200 training, 40 validation sentences of PTB: 13 batches an epoch, so epochs end and the lr decays."""
    lines = (PTB / "ptb.train.txt").read_text(encoding="utf-8").splitlines()
    folder.mkdir()
    for name, part in (("train", lines[:200]), ("valid", lines[200:240]), ("test", lines[240:260])):
        (folder / f"{name}.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    return folder


def weights_digest(state_dict: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def metrics_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS + LATER_FIELDS} for line in lines]


def metrics_digest(run_dir: Path) -> str:
    return hashlib.sha256(json.dumps(metrics_records(run_dir)).encode()).hexdigest()[:16]


def run_fingerprint(run_dir: Path) -> tuple[str, str, str]:
    """(final weights, best.pt's weights, metrics.jsonl without timing fields), as digests."""
    last, best = read_checkpoint(run_dir / "last.pt"), read_checkpoint(run_dir / "best.pt")
    return weights_digest(last["model"]), weights_digest(best["model"]), metrics_digest(run_dir)


GOLDEN_THREADS = 1  # the golden recipes' train.threads
RUNS = ("epochs_lr_decay", "mnist", "ptb_sgd")
# (torch, CPU model name, torch's CPU capability, threads) → digests of each run
GOLDEN = {
    # recorded 2026-12-04 on the AMD EPYC machine and unchanged when rerun there on 2026-12-07
    ("2.14.1", "AMD EPYC", "AVX512", 1): {
        "ptb_sgd": ("dd872fb197b89f27", "dd872fb197b89f27", "c9314001d98fe6c1"),
        "epochs_lr_decay": ("1aa77937317225a4", "1aa77937317225a4", "0090206374d54f93"),
        "mnist": ("79297ad14b296280", "79297ad14b296280", "a21723c641999e38"),
    },
    # the same machine with its kernels limited to AVX2 (ATEN_CPU_CAPABILITY=avx2), recorded 2026-12-07
    # (the text runs' bits change with the kernel set alone)
    ("2.14.1", "AMD EPYC", "AVX2", 1): {
        "ptb_sgd": ("8cb50ff4aa79d138", "8cb50ff4aa79d138", "00427f5affd91534"),
        "epochs_lr_decay": ("cbe98b2ef0c2a597", "cbe98b2ef0c2a597", "46b8cf8a998bd0a7"),
        "mnist": ("79297ad14b296280", "79297ad14b296280", "a21723c641999e38"),
    },
}


def machine_key() -> tuple[str, str, str, int]:
    torch_version = torch.__version__.split("+")[0]
    return torch_version, cpu_name(), torch.backends.cpu.get_cpu_capability(), GOLDEN_THREADS


def golden_run(name: str, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    if name == "ptb_sgd":
        train(text_recipe(PTB, max_steps=20, **LOGGED), run_dir)
    elif name == "epochs_lr_decay":
        decay = {"epochs": 4, "lr_decay_patience": 0, "max_lr_decays": 2, "log_every_steps": 3}
        train(text_recipe(small_corpus(tmp_path / "corpus"), "files", checkpoint_every_steps=7, **decay), run_dir)
    else:
        train_image(mnist_recipe(max_steps=30, **{**LOGGED, "max_valid_sentences": 100}), run_dir)
    return run_dir


@pytest.mark.parametrize("name", RUNS)
def test_short_run_reproduces_the_pre_engine_loop(name, tmp_path):
    key = machine_key()
    if key not in GOLDEN:
        here, known = " / ".join(map(str, key)), "; ".join(" / ".join(map(str, k)) for k in GOLDEN)
        pytest.skip(f"no golden digests for torch / CPU / capability / threads {here} (recorded: {known})")
    assert run_fingerprint(golden_run(name, tmp_path)) == GOLDEN[key][name]


def test_text_engine_equals_the_loop_written_out(tmp_path):
    """12 SGD steps of the engine = seed, build, and the standard step on epoch 0's batches in order
    (with KL annealing, whose weight depends on the step number the engine passes)."""
    annealing = {"type": "kl_annealing", "schedule": "linear", "warmup": 10}
    recipe = text_recipe(PTB, remedies=(annealing,), max_steps=12, log_every_steps=4, max_valid_sentences=40)
    train(recipe, tmp_path / "run")

    train_text = load_text(recipe.data, "train")
    vocab = build_vocab(recipe.data, train_text)
    split = encode_split(recipe.data, "train", vocab, train_text)
    seed_everything(0)
    model = build_model(recipe.model, vocab, recipe.remedies)
    optimizer = make_optimizer(model, recipe.train)
    batches = bucketed_batches(split.lengths, 16, shuffle=True, seed=0, epoch=0)
    window_losses, loss_sum, sentences = [], 0.0, 0
    model.train()
    for step, indices in enumerate(batches[:12]):
        batch = collate(split.rows(indices), indices, vocab.pad_id)
        context = StepContext(model, optimizer, 5.0, step, len(batches), random_batch=None)
        terms, updated = StandardStrategy().train_step(context, batch)
        assert updated
        rec, kl = terms.rec.detach().sum(), terms.kl.detach().sum()  # (), summed in float32 as the window does
        loss_sum, sentences = loss_sum + float((rec + kl).double()), sentences + len(batch)
        if (step + 1) % 4 == 0:
            window_losses.append(loss_sum / sentences)
            loss_sum, sentences = 0.0, 0

    engine_weights = read_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert weights_digest(engine_weights) == weights_digest(model.state_dict())
    records = [r for r in metrics_records(tmp_path / "run") if r["event"] == "train"]
    assert [r["step"] for r in records] == [4, 8, 12]
    assert [r["loss"] for r in records] == pytest.approx(window_losses, rel=1e-12)


def test_image_engine_equals_the_loop_written_out(tmp_path):
    """15 Adam steps on MNIST = seed, build, and loss_terms → apply_update on epoch 0's seeded batches."""
    recipe = mnist_recipe(max_steps=15, log_every_steps=15, max_valid_sentences=100)
    train_image(recipe, tmp_path / "run")

    seed_everything(0)
    model = build_image_model(recipe)
    optimizer = make_optimizer(model, recipe.train)
    split = load_image_split(recipe.data, "train")
    batches = epoch_order(len(split), 100, 0, 0)
    context = StepContext(model, optimizer, 100.0, 0, len(batches), random_batch=None)
    model.train()
    for step in range(15):
        x = split.images(batches[step], batch_generator(0, 0, step))  # (B, C, H, W)
        context.step = step
        assert apply_update(context, model.loss_terms(x, step=step).loss)

    engine_weights = read_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert weights_digest(engine_weights) == weights_digest(model.state_dict())


class EveryThirdStepNotFinite:
    """A stepper in the engine's seam: wraps the family's and reports every third batch as skipped."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def step(self, batch, step: int) -> StepOutcome:
        self.calls += 1
        if self.calls % 3 == 0:
            return StepOutcome(False, None, 0)
        return self.inner.step(batch, step)


def test_a_replacement_stepper_plugs_in_and_skipped_steps_are_counted_once(tmp_path):
    recipe = text_recipe(PTB, max_steps=8, log_every_steps=4, max_valid_sentences=40)
    family, context = TextFamily(recipe, SINGLE_PROCESS), SINGLE_PROCESS
    make_stepper = family.stepper
    family.stepper = lambda optimizer, forward: EveryThirdStepNotFinite(make_stepper(optimizer, forward))
    summary = Engine(family, recipe, tmp_path / "run", resume=False, context=context).run()

    assert summary.progress.step == 8 and summary.progress.skipped_steps == 3  # batches 3, 6 and 9 of 11
    assert summary.progress.batch_in_epoch == 11 and summary.progress.skipped_in_a_row == 0
    skipped = [r for r in metrics_records(tmp_path / "run") if r["event"] == "skipped"]
    assert [(r["step"], r["in_a_row"]) for r in skipped] == [(2, 1), (4, 1), (6, 1)]


def test_image_family_rejects_a_text_checkpoint(tmp_path):
    family = ImageFamily(mnist_recipe(), tmp_path, torch.device("cpu"))
    with pytest.raises(TextVAEError, match="--resume of a text run with an image recipe"):
        family.check_resumed({"family": None})


def test_a_resume_on_other_threads_says_it_is_no_longer_bit_exact(tmp_path, caplog):
    # train.threads is a runtime key (a resume may change it), but it changes the float rounding: the
    # checkpoint keeps the machine it was written on, and a resume elsewhere warns and records it
    recipe = text_recipe(PTB, max_steps=3, checkpoint_every_steps=2, max_valid_sentences=20)
    run_dir = tmp_path / "run"
    train(recipe, run_dir)
    payload = read_checkpoint(run_dir / "last.pt")
    assert payload["machine"] == machine_fingerprint() | {"threads": 1}
    train(recipe, run_dir, resume=True)  # the same machine and threads: nothing to say
    assert not [r for r in metrics_records(run_dir) if r["event"] == "machine_changed"]
    payload["machine"] |= {"threads": 7, "cpu": "Another CPU"}
    write_checkpoint_payload(run_dir / "last.pt", payload)
    with caplog.at_level("WARNING"):
        train(recipe, run_dir, resume=True)
    changed = [r for r in metrics_records(run_dir) if r["event"] == "machine_changed"]
    assert changed and changed[0]["changes"] == [f"cpu Another CPU → {cpu_name()}", "threads 7 → 1"]
    assert "no longer bit-identical" in caplog.text
