"""Live collapse diagnostics: validation records carry AU and KL per dimension (textvae.evaluation.evaluate)."""

import numpy as np
import torch

from tests.conftest import tiny_lm_spec, tiny_vae_spec
from textvae.data.corpus import EncodedSplit
from textvae.data.vocab import Vocab
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.evaluation.validation import validation_from_sums, validation_sums
from textvae.models import build_model


def _split_and_vocab() -> tuple[EncodedSplit, Vocab]:
    vocab = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", "a", "b", "c", "d", "e", "f", "g"))
    rng = np.random.default_rng(5)
    rows = [[1, *rng.integers(3, 11, size=int(n)).tolist(), 2] for n in rng.integers(1, 9, size=23)]
    split = EncodedSplit("test", None, np.array([len(r) for r in rows]), 0, 0)
    split.rows = lambda indices: [rows[i] for i in indices]
    return split, vocab


def test_validation_reports_the_au_and_kl_per_dimension_of_a_full_evaluation():
    split, vocab = _split_and_vocab()
    torch.manual_seed(0)
    spec = tiny_vae_spec(weight_init_range=3.0)
    spec["encoder"]["weight_init_range"] = 3.0  # posterior means that vary: 3 of 4 dimensions active
    model = build_model(spec, vocab).eval()
    full = evaluate(model, split, vocab.pad_id, EvalSettings(3, 3, 4, None, 0, False)).metrics
    indices = np.arange(len(split))
    result = validation_from_sums(validation_sums(model, split, vocab.pad_id, 4, indices, 0))
    assert result["au"] == full["au"] and 0 < result["au"] < 4  # some dimensions vary, not all
    variances = np.array(full["posterior_mean_variance"])
    assert result["au"] == int((variances >= 0.01).sum())
    assert np.allclose(result["kl_per_dim"], full["kl_per_dim"], rtol=1e-5)
    assert abs(sum(result["kl_per_dim"]) - result["kl"]) < 1e-5


def test_validation_sums_of_two_halves_add_up_like_two_processes():
    split, vocab = _split_and_vocab()
    torch.manual_seed(0)
    model = build_model(tiny_vae_spec(weight_init_range=0.5), vocab).eval()
    whole = validation_sums(model, split, vocab.pad_id, 4, np.arange(23), 0)
    halves = [validation_sums(model, split, vocab.pad_id, 4, part, 0) for part in (np.arange(12), np.arange(12, 23))]
    summed = {k: [a + b for a, b in zip(*(h[k] for h in halves), strict=True)] for k in ("mean", "mean_sq")}
    assert np.allclose(summed["mean"], whole["mean"]) and np.allclose(summed["mean_sq"], whole["mean_sq"])


def test_a_language_model_has_no_latent_diagnostics():
    split, vocab = _split_and_vocab()
    model = build_model(tiny_lm_spec(), vocab).eval()
    result = validation_from_sums(validation_sums(model, split, vocab.pad_id, 4, np.arange(23), 0))
    assert "au" not in result and "kl_per_dim" not in result


def test_a_training_run_logs_au_and_kl_per_dim_to_metrics_jsonl_and_tensorboard(tmp_path):
    import json

    import pytest

    from tests.test_engine import LOGGED, small_corpus, text_recipe
    from tests.test_tensorboard import read_events, scalars
    from textvae.train import train

    recipe = text_recipe(small_corpus(tmp_path / "corpus"), "files", max_steps=10, tensorboard=True, **LOGGED)
    train(recipe, tmp_path / "run")
    valid = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in valid if r["event"] == "valid"]
    assert valid and all(len(r["kl_per_dim"]) == 4 and 0 <= r["au"] <= 4 for r in valid)
    reader = read_events(tmp_path / "run")  # TensorBoard's own reader of the event files
    last = valid[-1]
    assert scalars(reader, "valid/au")[last["step"]] == last["au"]
    assert scalars(reader, "valid/kl")[last["step"]] == pytest.approx(last["kl"], rel=1e-6)
    histogram = {h.step: h.histogram_value for h in reader.Histograms("valid/kl_per_dim")}[last["step"]]
    assert histogram.num == 4 and histogram.max == pytest.approx(max(last["kl_per_dim"]), rel=1e-6)
    assert 5 in scalars(reader, "train/loss")


def test_tensorboard_without_its_package_is_a_one_line_error(monkeypatch):
    import builtins

    import pytest

    from textvae.engine.tensorboard import TensorBoardMirror
    from textvae.errors import TextVAEError

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(TextVAEError, match=r"pip install .textvae\[tensorboard\]."):
        TensorBoardMirror("unused")


def test_image_validation_records_carry_the_active_units(tmp_path):
    import json

    from tests.test_engine import LOGGED, mnist_recipe
    from textvae.image.train import train_image

    train_image(mnist_recipe(max_steps=10, **{**LOGGED, "max_valid_sentences": 100}), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    assert valid and all(0 <= r["au"] <= 50 for r in valid)
    assert valid[-1]["au"] > 0  # after 10 Adam steps from its random init, the encoder's means vary


def test_a_tensorboard_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    """What train.tensorboard writes at once (RUN/tensorboard/) is a leftover like config.json: a fresh
    start of the same recipe removes it instead of refusing the directory."""
    import json

    from tests.test_engine import PTB, text_recipe
    from textvae.engine.run_dir import prepare_run_dir

    recipe = text_recipe(PTB, tensorboard=True)
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"partial")
    (run / "config.json").write_text(json.dumps(recipe.to_dict()), encoding="utf-8")
    prepare_run_dir(run, recipe, resume=False)
    assert list(run.iterdir()) == []
