"""The command line and the Python API end to end, on a tiny model of the embedded corpus."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import textvae
from tests.conftest import REPO

DECODER = ["model.decoder.embed_dim=8", "model.decoder.hidden_dim=12"]
ENCODER = ["model.latent_dim=4", "model.encoder.embed_dim=8", "model.encoder.hidden_dim=12"]
TRAINING = [
    "train.max_steps=6",
    "train.validate_every_steps=3",
    "train.max_valid_sentences=20",
    "train.log_every_steps=2",
    "train.progress_bar=false",
    "data.max_len=12",
]
REQUIRED_KEYS = {
    "elbo",
    "rec",
    "kl",
    "kl_per_dim",
    "iw_nll",
    "iw_nll_se",
    "iw_samples",
    "ppl_elbo",
    "ppl_iw",
    "au",
    "mi_batch",
    "mi_full",
    "num_sentences",
    "num_tokens",
}


def run_cli(*args):
    result = subprocess.run(
        [sys.executable, "-m", "textvae", *map(str, args)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for name, overrides in (("vae", ENCODER + DECODER + TRAINING), ("lm", DECODER + TRAINING)):
        sets = [arg for item in overrides for arg in ("--set", item)]
        run_cli("train", REPO / f"recipes/quickstart/{name}.toml", "--out", root / name, *sets)
    return root


def test_eval_writes_the_documented_json_plot_and_posterior(runs, tmp_path):
    out = run_cli(
        "eval",
        runs / "vae",
        "--split",
        "valid",
        "--iw-samples",
        "5",
        "--max-sentences",
        "30",
        "--json",
        tmp_path / "vae.json",
        "--dump-posterior",
        tmp_path / "posterior.npz",
    )
    assert "IW-NLL" in out and "AU" in out and "MI(full)" in out
    result = json.loads((tmp_path / "vae.json").read_text())
    assert set(result) >= REQUIRED_KEYS
    assert result["num_sentences"] == 30 and result["iw_samples"] == 5 and len(result["kl_per_dim"]) == 4
    assert result["elbo"] == pytest.approx(-(result["rec"] + result["kl"]))
    assert result["iw_nll"] <= -result["elbo"] + 1.0  # the K-sample bound is not looser than the ELBO (± noise)
    assert (tmp_path / "vae.kl_per_dim.png").stat().st_size > 1000
    posterior = np.load(tmp_path / "posterior.npz")
    assert posterior["mean"].shape == posterior["logvar"].shape == (30, 4)


def test_eval_of_the_language_model_reports_nll_and_ppl(runs):
    run_cli("eval", runs / "lm", "--split", "test", "--max-sentences", "25")
    result = json.loads((runs / "lm" / "eval_test.json").read_text())
    assert result["kind"] == "lm" and result["num_sentences"] == 25 and result["ppl"] > 1
    table = run_cli("report", runs / "lm" / "eval_test.json")
    assert "| lm |" in table and "PPL" in table


def test_generation_commands(runs):
    samples = run_cli("sample", runs / "vae", "-n", "3", "--strategy", "sample", "--top-p", "0.9", "--max-len", "8")
    assert len(samples.splitlines()) == 3
    recon = run_cli("reconstruct", runs / "vae", "and god said", "let there be light", "--strategy", "beam")
    assert recon.count("> ") == 2 and recon.count("< ") == 2
    lines = run_cli("interpolate", runs / "vae", "and god said", "the lord is my shepherd", "--steps", "4").splitlines()
    assert len(lines) == 4 and lines[0].startswith("0.00") and lines[-1].startswith("1.00")
    assert len(run_cli("sample", runs / "lm", "-n", "2").splitlines()) == 2


def test_python_api(runs):
    model = textvae.load(runs / "vae")
    posterior = model.encode(["and god said", "let there be light ."])
    assert posterior.mean.shape == posterior.logvar.shape == (2, 4)
    scores = model.log_likelihood(["and god said", "let there be light ."], posterior.mean)
    assert scores.shape == (2,) and torch.all(scores < 0)
    assert model.log_likelihood(["and god said"], torch.zeros(5, 1, 4)).shape == (5, 1)
    assert len(model.generate(torch.zeros(3, 4), max_len=5)) == 3
    assert len(model.reconstruct(["and god said"], strategy="beam")) == 1
    assert len(model.interpolate("and god said", "amen", steps=3)) == 3
    assert len(model.sample(2, strategy="sample", top_k=5)) == 2
    lm = textvae.load(runs / "lm", which="last")
    assert lm.log_likelihood(["and god said"]).shape == (1,)
