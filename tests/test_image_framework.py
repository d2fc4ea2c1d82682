"""The image framework end to end on real MNIST with tiny test-only models: recipes, the training
loop (loss falls, checkpoints, exact resume after a SIGKILL), evaluation (IW-NLL in nats and
bits/dim, ELBO, KL, AU, MI, reconstruction error, codebook usage), figures, the CLI and ablations."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import REPO, SHARED_DATA
from textvae import registry
from textvae.checkpoint import read_checkpoint, write_checkpoint_payload
from textvae.cli import main
from textvae.config import Recipe
from textvae.distributions import DiagGaussian, standard_normal_log_prob
from textvae.errors import TextVAEError
from textvae.families import load_any_recipe
from textvae.faults import ENV_VAR
from textvae.image.config import (
    ImageDataConfig,
    ImageEvalConfig,
    ImageRecipe,
    is_image_config,
)
from textvae.image.data import load_image_split
from textvae.image.evaluate import codebook_usage, evaluate_image, importance_log_weights
from textvae.image.models.base import IMAGE_CONTEXT, LossTerms
from textvae.reproduction.ablation import load_ablation

TINY_VAE = "test_tiny_image_vae"
TINY_CODES = "test_tiny_image_codes"
MNIST = SHARED_DATA / "mnist"


class TinyImageVAE(nn.Module):
    """q(z|x) = N(linear(x)), p(x|z) = Bernoulli(sigmoid(linear(z))), p(z) = N(0, I); β weights the KL."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 3, beta: float = 1.0):
        super().__init__()
        self.image_shape, self.latent_dim, self.beta = tuple(image_shape), latent_dim, beta
        pixels = math.prod(image_shape)
        self.encoder = nn.Linear(pixels, 2 * latent_dim)
        self.decoder = nn.Linear(latent_dim, pixels)
        self.chunks_asked: list[int] = []  # sample counts log_importance_weights was called with

    def posterior(self, x):
        mean, logvar = self.encoder(x.flatten(1)).chunk(2, dim=-1)  # (B, D) each
        return DiagGaussian(mean, logvar)

    def _log_likelihood(self, x, z):
        logits = self.decoder(z)  # (..., B, C·H·W)
        target = x.flatten(1).expand_as(logits)
        return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)  # (..., B)

    def loss_terms(self, x, step: int = 0) -> LossTerms:
        q = self.posterior(x)
        rec = -self._log_likelihood(x, q.rsample())  # (B,)
        kl = q.kl_per_dim().sum(-1)  # (B,)
        return LossTerms(loss=(rec + self.beta * kl).mean(), terms={"rec": rec, "kl": kl}, stats={"beta": self.beta})

    def log_importance_weights(self, x, num_samples, generator):
        self.chunks_asked.append(num_samples)
        q = self.posterior(x)
        z = q.rsample(num_samples, generator)  # (K, B, D)
        return self._log_likelihood(x, z) + standard_normal_log_prob(z) - q.log_prob(z)  # (K, B)

    def reconstruct(self, x):
        return torch.sigmoid(self.decoder(self.posterior(x).mean)).view_as(x)

    def encode(self, x):
        return self.posterior(x).mean

    def decode(self, z):
        return torch.sigmoid(self.decoder(z)).view(-1, *self.image_shape)

    def sample(self, num, generator):
        z = torch.randn(num, self.latent_dim, generator=generator, device=self.decoder.weight.device)
        return self.decode(z)

    def end_of_step(self, step: int) -> dict[str, float]:
        return {"end_of_step_seen": float(step)}


class TinyImageCodes(nn.Module):
    """An autoencoder whose code is the nearest of ``num_codes`` vectors (no gradient to the codes)."""

    def __init__(self, image_shape: tuple[int, int, int], num_codes: int = 5):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.encoder = nn.Linear(math.prod(image_shape), 2)
        self.codebook = nn.Parameter(torch.randn(num_codes, 2))
        self.decoder = nn.Linear(2, math.prod(image_shape))

    def code_indices(self, x):
        return torch.cdist(self.encoder(x.flatten(1)), self.codebook).argmin(-1)  # (B,)

    def reconstruct(self, x):
        return torch.sigmoid(self.decoder(self.codebook[self.code_indices(x)])).view_as(x)

    def loss_terms(self, x, step: int = 0) -> LossTerms:
        rec = ((self.reconstruct(x) - x) ** 2).flatten(1).sum(-1)  # (B,)
        return LossTerms(loss=rec.mean(), terms={"rec": rec})


def register_test_models() -> None:
    """Register the tiny models (idempotent; also called by the subprocesses of the resume test)."""
    for name, factory in ((TINY_VAE, TinyImageVAE), (TINY_CODES, TinyImageCodes)):
        if name not in registry.names("image_model"):
            registry.register("image_model", name, context=IMAGE_CONTEXT)(factory)


RECIPE = f"""
description = "a tiny test-only VAE on 300 binarized MNIST digits"
[data]
dataset = "mnist"
root = "{MNIST}"
binarize = true
max_train_examples = 300
[model]
type = "{TINY_VAE}"
latent_dim = 3
[train]
optimizer = "adam"
lr = 0.02
batch_size = 50
epochs = 5
max_steps = 14
validate_every_steps = 5
max_valid_sentences = 200
log_every_steps = 2
checkpoint_every_steps = 4
progress_bar = false
threads = 1
grad_clip = 50.0
[eval]
iw_samples = 20
iw_chunk_size = 8
batch_size = 40
max_examples = 60
"""


@pytest.fixture(scope="module", autouse=True)
def _models():
    register_test_models()


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(RECIPE)
    return path


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(recipe_file, tmp_path_factory):
    """One uninterrupted 14-step run (two epochs of 6 batches and a bit), trained through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert run("train", recipe_file, "--out", out) == 0
    return out


def _records(run_dir, event):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_recipes_of_either_kind_load_through_one_entry_point(recipe_file, tmp_path):
    assert isinstance(load_any_recipe(REPO / "recipes/quickstart/vae.toml"), Recipe)
    child = tmp_path / "child.toml"
    child.write_text(f'base = "{recipe_file}"\n[model]\nbeta = 4\n')
    recipe = load_any_recipe(child, ["train.lr=3e-4", "eval.iw_samples=7"])
    assert isinstance(recipe, ImageRecipe)
    assert recipe.model == {"type": TINY_VAE, "latent_dim": 3, "beta": 4.0}
    assert (recipe.train.lr, recipe.eval.iw_samples, recipe.data.max_train_examples) == (3e-4, 7, 300)


def test_every_image_recipe_shipped_loads_as_an_image_recipe():
    """Checks each ``recipes/image/**.toml`` (other than bases and ablations) as recipes land there."""
    paths = sorted((REPO / "recipes" / "image").rglob("*.toml"))
    ablations = [p for p in paths if "variants" in tomllib.loads(p.read_text(encoding="utf-8"))]
    recipes = [p for p in paths if p not in ablations and p.name != "base.toml"]
    assert len(recipes) >= 7 and len(ablations) >= 2
    for path in recipes:
        assert isinstance(load_any_recipe(path), ImageRecipe), path
    for path in ablations:
        variants, _ = load_ablation(path)
        assert all(isinstance(v.recipe, ImageRecipe) for v in variants), path


def test_a_name_registered_in_both_families_is_an_image_model_only_on_image_data():
    name = "test_name_in_both_families"
    if name not in registry.names("model"):
        registry.register("model", name)(TinyImageVAE)
        registry.register("image_model", name, context=IMAGE_CONTEXT)(TinyImageVAE)
    assert is_image_config({"model": {"type": name}, "data": {"dataset": "mnist"}})
    assert not is_image_config({"model": {"type": name}, "data": {"dataset": "ptb"}})
    assert is_image_config({"model": {"type": name}, "data": {"binarize": True}})  # an image-only key
    assert not is_image_config({"model": {"type": name}})  # a text recipe relying on the default corpus
    assert is_image_config({"model": {"type": TINY_VAE}})
    assert not is_image_config({"model": {"type": "vae"}})


def test_training_lowers_the_loss_and_writes_the_run(trained):
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (trained / name).is_file(), name
    train = _records(trained, "train")
    assert [r["step"] for r in train] == list(range(2, 15, 2))
    assert train[-1]["objective"] < train[0]["objective"] - 20  # nats per image, from ≈ 540 at the start
    assert train[-1]["rec"] + train[-1]["kl"] == pytest.approx(train[-1]["objective"], rel=1e-6)  # β = 1
    assert train[-1]["beta"] == 1.0 and train[-1]["end_of_step_seen"] == pytest.approx(13.5)  # steps 13, 14
    valid = _records(trained, "valid")
    assert [r["step"] for r in valid] == [5, 6, 10, 12, 14]  # every 5 steps and at each epoch end (6 batches)
    assert all(r["num_examples"] == 200 and r["loss"] == pytest.approx(r["rec"] + r["kl"]) for r in valid)
    assert "mi" in valid[0]
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["type"] == TINY_VAE and config["data"]["binarize"] is True


def test_eval_reports_iw_nll_in_nats_and_bits_per_dim_and_writes_figures(trained, tmp_path, capsys):
    posterior = tmp_path / "posterior.npz"
    assert run("eval", trained, "--iw-samples", "30", "--max-examples", "50", "--dump-posterior", posterior) == 0
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "IW-NLL" in printed
    result = json.loads((trained / "eval_test.json").read_text())
    assert result["kind"] == "image" and result["split"] == "test" and result["step"] == 14
    assert result["num_examples"] == 50 and result["iw_samples"] == 30 and result["num_dims"] == 784
    assert result["bits_per_dim"] == pytest.approx(result["iw_nll"] / (784 * math.log(2)))
    assert result["iw_nll"] <= -result["elbo"]  # log-mean-exp ≥ mean, example by example
    assert -result["elbo"] == pytest.approx(result["rec"] + result["kl"], rel=0.03)  # two estimates of −ELBO
    assert result["posterior_kl"] == pytest.approx(result["kl"], rel=1e-5)  # the model's term is the closed form
    assert len(result["kl_per_dim"]) == 3 and 0 <= result["au"] <= 3
    assert {"mi_full", "mi_batch", "recon_mse", "recon_bce", "iw_nll_se", "elbo_bits_per_dim"} <= set(result)
    dumped = np.load(posterior)
    assert dumped["mean"].shape == dumped["logvar"].shape == (50, 3)
    variances = dumped["mean"].var(axis=0, ddof=1)
    assert result["au"] == int((variances >= 0.01).sum())
    for figure in ("kl_per_dim", "reconstructions", "samples", "interpolations"):
        assert (trained / f"eval_test.{figure}.png").stat().st_size > 500, figure


def test_importance_weights_are_asked_for_in_chunks_and_k1_is_the_elbo():
    torch.manual_seed(0)
    model = TinyImageVAE((1, 28, 28)).eval()
    x = torch.rand(5, 1, 28, 28).bernoulli()
    log_weights = importance_log_weights(model, x, 10, 4, torch.Generator().manual_seed(0))
    assert log_weights.shape == (10, 5) and model.chunks_asked == [4, 4, 2]
    split = load_image_split(ImageDataConfig(root=str(MNIST), binarize=True), "valid")
    settings = ImageEvalConfig(iw_samples=1, iw_chunk_size=1, batch_size=7, max_examples=20)
    result = evaluate_image(model, split, settings, progress_bar=False).metrics
    assert result["iw_nll"] == pytest.approx(-result["elbo"])  # with K = 1 the bound is the ELBO


def test_codebook_usage_counts_codes_and_their_perplexity():
    assert codebook_usage(torch.tensor([5, 5, 5, 5])) == (4, pytest.approx(4.0))
    assert codebook_usage(torch.tensor([0, 9, 0])) == (1, pytest.approx(1.0))
    p = torch.tensor([0.5, 0.25, 0.25])
    assert codebook_usage(torch.tensor([2, 1, 1]))[1] == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    torch.manual_seed(0)
    model = TinyImageCodes((1, 28, 28)).eval()
    split = load_image_split(ImageDataConfig(root=str(MNIST)), "test")
    settings = ImageEvalConfig(batch_size=16, max_examples=40)
    result = evaluate_image(model, split, settings, progress_bar=False).metrics
    counts = torch.tensor(result["code_counts"])
    assert counts.sum() == 40 and result["codes_used"] == int((counts > 0).sum())
    assert 1.0 <= result["codebook_perplexity"] <= result["codes_used"]
    assert "iw_nll" not in result and "kl_per_dim" not in result  # only what the model can do


def _train_subprocess(args: list, fault: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; from tests.test_image_framework import register_test_models; register_test_models(); "
        "from textvae.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, ENV_VAR: fault}
    return subprocess.run(
        [sys.executable, "-c", code, "train", *map(str, args)], cwd=REPO, env=env, capture_output=True, timeout=300
    )


def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(trained, recipe_file, tmp_path):
    killed = tmp_path / "killed"
    result = _train_subprocess([recipe_file, "--out", killed], fault="after_step:10")
    assert result.returncode == -9, result.stderr.decode()[-2000:]  # SIGKILL after step 10
    assert read_checkpoint(killed / "last.pt")["progress"]["step"] == 8  # checkpoints every 4 steps
    assert run("train", recipe_file, "--out", killed, "--resume") == 0
    reference, continued = (read_checkpoint(d / "last.pt") for d in (trained, killed))
    assert continued["progress"]["step"] == 14
    for name, tensor in reference["model"].items():
        assert torch.equal(tensor, continued["model"][name]), name
    assert _records(killed, "valid") == _records(trained, "valid")


def test_sample_writes_a_grid_and_text_only_commands_refuse_an_image_run(trained, tmp_path, capsys):
    assert run("sample", trained, "-n", "9", "--out", tmp_path / "samples.png") == 0
    assert (tmp_path / "samples.png").stat().st_size > 500
    for args in (["sample", trained], ["reconstruct", trained, "a sentence"], ["interpolate", trained, "a", "b"]):
        capsys.readouterr()
        assert run(*args) == 2
        error = capsys.readouterr().err
        assert error.startswith("textvae: error:") and error.count("\n") == 1, error


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.binarise=true", "unknown key 'binarise'"),
        ("data.binarize='yes'", "expected bool"),
        ("data.seq_len=5", "moving-mnist option"),
        ("model.hidden=3", "unknown key 'hidden'"),
        ("eval.iw_samples=0", "must be ≥ 1"),
    ],
)
def test_bad_recipes_fail_in_one_line_before_training(recipe_file, tmp_path, capsys, override, message):
    assert run("train", recipe_file, "--out", tmp_path / "run", "--set", override) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "run").exists()


def test_missing_data_and_corrupt_checkpoints_are_one_line_errors(trained, recipe_file, tmp_path, capsys):
    assert run("train", recipe_file, "--out", tmp_path / "run", "--set", f"data.root='{tmp_path}'") == 2
    error = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz: file not found" in error and error.count("\n") == 1, error
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((trained / "config.json").read_text())
    data = bytearray((trained / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / "best.pt").write_bytes(bytes(data))
    assert run("eval", damaged) == 2
    error = capsys.readouterr().err
    assert "corrupt" in error and error.count("\n") == 1, error


def test_an_image_beta_ablation_tabulates_image_columns(recipe_file, tmp_path):
    from textvae.reproduction.ablation import run_ablation

    ablation = tmp_path / "ablation.toml"
    ablation.write_text(
        f'base = "{recipe_file}"\n'
        '[[variants]]\nname = "beta 0.5"\n[variants.model]\nbeta = 0.5\n[variants.train]\nmax_steps = 4\n'
        '[[variants]]\nname = "beta 4"\n[variants.model]\nbeta = 4.0\n[variants.train]\nmax_steps = 4\n'
    )
    rows = run_ablation(ablation, tmp_path / "out")
    assert [r["variant"] for r in rows] == ["beta 0.5", "beta 4"] and all("error" not in r for r in rows)
    for row in rows:
        assert row["bits_per_dim"] == pytest.approx(row["iw_nll"] / (784 * math.log(2)))
        assert {"elbo", "kl", "au", "mi_full", "recon_bce", "train_steps"} <= set(row) and row["train_steps"] == 4
    table = (tmp_path / "out" / "results.md").read_text()
    assert "bits/dim" in table and "Rec MSE" in table and "| beta 4 | 1 |" in table
    assert "bits_per_dim_mean" in (tmp_path / "out" / "results.csv").read_text().splitlines()[0]
    assert (tmp_path / "out" / "beta_4" / "seed0" / "eval_test.reconstructions.png").is_file()


def test_loading_a_text_checkpoint_as_an_image_run_is_refused(tmp_path):
    from textvae.image.checkpoint import load_image_checkpoint

    with pytest.raises(TextVAEError, match="checkpoint not found"):
        load_image_checkpoint(tmp_path / "missing.pt")
    write_checkpoint_payload(
        tmp_path / "text.pt",
        {"format": "textvae-checkpoint-2", "config": json.dumps({"model": {"type": "vae"}}), "vocab": "", "model": {}},
    )
    with pytest.raises(TextVAEError, match="not an image run"):
        load_image_checkpoint(tmp_path / "text.pt")
