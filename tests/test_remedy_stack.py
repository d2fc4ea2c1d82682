"""Every remedy at once, in either order, through training and evaluation."""

import itertools
import math

import pytest
import torch

import textvae
from tests.conftest import tiny_vae_spec
from textvae.config import recipe_from_dict
from textvae.data.corpus import encode_split
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.models import build_model
from textvae.objective import elbo_terms
from textvae.remedies.base import training_objective
from textvae.train import train

ALL_REMEDIES = [
    {"type": "kl_annealing", "schedule": "linear", "warmup": 10.0},
    {"type": "beta", "beta": 0.8},
    {"type": "free_bits", "threshold": 0.1},
    {"type": "word_dropout", "keep_prob": 0.7},
    {"type": "bow_loss", "hidden_dim": 8},
    {"type": "bn_vae", "gamma": 0.5},
    {"type": "iaf", "steps": 2, "hidden_dim": 8},
]


@pytest.mark.parametrize("first,second", [(0, 2), (1, 2), (0, 1)])
def test_objective_adjusting_remedies_commute(vocab, batch, first, second):
    """Annealing, β and free bits give the same loss whichever order a recipe lists them in."""
    specs = [ALL_REMEDIES[first], ALL_REMEDIES[second]]
    losses = []
    for order in (specs, specs[::-1]):
        torch.manual_seed(0)
        model = build_model(tiny_vae_spec(), vocab, order).eval()
        out = model(batch, generator=torch.Generator().manual_seed(1))
        terms = elbo_terms(out)
        losses.append(
            float(training_objective(model.remedies, out, terms, batch, step=3, steps_per_epoch=5).loss().detach())
        )
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


CNN_DECODER = {"type": "dilated_cnn", "dilations": [1, 2], "embed_dim": 5, "channels": 6, "dropout": 0.1}


@pytest.mark.parametrize("decoder", [None, CNN_DECODER], ids=["lstm", "dilated_cnn"])
def test_all_remedies_together_train_and_evaluate(tmp_path, decoder):
    root = tmp_path / "corpus"
    root.mkdir()
    sentences = [" ".join(words) for words in itertools.permutations("abcdef", 4)][:120]
    for split in ("train", "valid", "test"):
        (root / f"{split}.txt").write_text("\n".join(sentences) + "\n")
    for strategy in (
        {"type": "standard"},
        {"type": "aggressive", "max_inner_steps": 3, "check_every": 1},
        {"type": "pretrain_reset", "pretrain_steps": 2},
    ):
        recipe = recipe_from_dict(
            {
                "data": {"dataset": "files", "root": str(root), "cache_dir": str(tmp_path / "cache")},
                "model": tiny_vae_spec() if decoder is None else {**tiny_vae_spec(), "decoder": decoder},
                "remedies": ALL_REMEDIES,
                "strategy": strategy,
                "train": {
                    "optimizer": "adam",
                    "lr": 0.01,
                    "batch_size": 8,
                    "max_steps": 5,
                    "progress_bar": False,
                    "validate_every_steps": 2,
                },
            },
            source="test",
        )
        run_dir = tmp_path / strategy["type"]
        summary = train(recipe, run_dir)
        assert summary.progress.step == 5 and summary.progress.skipped_steps == 0
        loaded = textvae.load(run_dir)
        assert len(loaded.model.remedies) == len(ALL_REMEDIES)  # trainable remedies come back with the model
        split = encode_split(recipe.data, "test", loaded.vocab)
        result = evaluate(loaded.model, split, loaded.vocab.pad_id, EvalSettings(iw_samples=3, progress_bar=False))
        for key in ("elbo", "iw_nll", "kl", "au", "mi_full"):
            assert math.isfinite(result.metrics[key]), key
