"""Evaluation on a device: CPU numbers unchanged, GPU batching, no host synchronisation, reduced precision.

The CPU half runs here; the GPU half (CPU and GPU within 0.01 nats per sentence at fp32, throughput) is
``scripts/gpu_eval_check.py``, and ``test_cpu_and_cuda_agree_on_the_same_draws`` when CUDA is present.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import REPO, tiny_lm_spec, tiny_vae_spec
from textvae import metrics
from textvae.data.corpus import EncodedSplit
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.evaluation import evaluate as evaluate_module
from textvae.evaluation import validation as validation_module
from textvae.evaluation.device import matmul_precision, resolve_device
from textvae.evaluation.evaluate import EvalSettings, evaluate
from textvae.models import build_model

GOLDEN = REPO / "tests" / "golden" / "evaluate_cpu.json"


def _split_and_vocab() -> tuple[EncodedSplit, Vocab]:
    """23 seeded sentences of 1-8 words over V = 11 (the split the golden values were recorded on)."""
    vocab = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", "a", "b", "c", "d", "e", "f", "g"))
    rng = np.random.default_rng(5)
    rows = [[1, *rng.integers(3, 11, size=int(n)).tolist(), 2] for n in rng.integers(1, 9, size=23)]
    split = EncodedSplit("test", None, np.array([len(r) for r in rows]), 0, 0)
    split.rows = lambda indices: [rows[i] for i in indices]
    return split, vocab


def _models(vocab: Vocab) -> dict:
    torch.manual_seed(0)
    spec = tiny_vae_spec(weight_init_range=0.5)
    spec["encoder"]["weight_init_range"] = 0.5
    vae = build_model(spec, vocab).eval()
    torch.manual_seed(1)
    iaf = build_model(spec, vocab, [{"type": "iaf", "steps": 2, "hidden_dim": 5}]).eval()
    torch.manual_seed(2)
    lm = build_model(tiny_lm_spec(), vocab).eval()
    return {"vae": vae, "iaf": iaf, "lm": lm}


def _settings(max_sentences=None, **changes) -> EvalSettings:
    return EvalSettings(7, 3, 4, max_sentences, 3, False, **changes)


# The recorded numbers are equal to the last bit on the machine that recorded them (AMD EPYC, AVX-512
# kernels). Elsewhere the same float32 reductions run in another order: another kernel set (AVX2 vs
# AVX-512), another vendor's BLAS paths (MKL on Intel), other threads. Reordering a float32 sum of N
# terms moves it by at most about N·u of the terms' magnitude (u = 2^-24 ≈ 6e-8), typically √N·u.
# The largest reductions here are the image model's: 30 images × 9 importance samples × 784 pixels ≈
# 2.1e5 terms, i.e. √N·u ≈ 2.8e-5 (the text models: 23 sentences × 7 samples × ≤ 9 tokens ≈ 1.4e3
# terms, √N·u ≈ 2.3e-6). RELATIVE_TOLERANCE = 3e-5 is the typical reordering of the largest sum.
# Measured: AVX2 kernels on the AMD machine differ by ≤ 6e-8 relative, the Intel Xeon
# (AVX-512) machine of 2026-12-07 by ≤ 2.2e-6 (image iw_nll_se; text mi_batch 1.25e-6). A real change
# moves them far more: one importance sample fewer, or every weight scaled by 1 + 1e-3, fail it
# (test_the_recorded_number_tolerance_catches_a_real_change); a changed random stream moves them ~1e-2.
RELATIVE_TOLERANCE = 3e-5
ABSOLUTE_TOLERANCE = 1e-9  # for the recorded zeros and the ~1e-5 posterior-mean variances


def _close(value, expected) -> bool:
    if isinstance(expected, list):
        return len(value) == len(expected) and all(_close(v, e) for v, e in zip(value, expected, strict=True))
    if isinstance(expected, float) and math.isnan(expected):
        return math.isnan(value)
    return math.isclose(value, expected, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


def _differences_from_recorded(models: dict, split, vocab, **changes) -> dict:
    """The recorded text-evaluation numbers that ``models`` do not give within the tolerance."""
    golden = json.loads(GOLDEN.read_text())["results"]
    wrong = {}
    for name, model in models.items():
        for subset in (None, 17):
            result = evaluate(model, split, vocab.pad_id, replace(_settings(subset), **changes)).metrics
            expected = golden[f"{name}_{subset}"]
            wrong |= {(name, subset, k): (result[k], v) for k, v in expected.items() if not _close(result[k], v)}
            assert result["device"] == "cpu" and result["matmul_precision"] == "fp32"
    return wrong


def test_cpu_evaluation_gives_the_numbers_recorded_before_device_support():
    split, vocab = _split_and_vocab()
    wrong = _differences_from_recorded(_models(vocab), split, vocab)
    assert not wrong, wrong


def test_the_recorded_number_tolerance_catches_a_real_change():
    split, vocab = _split_and_vocab()
    models = _models(vocab)
    with torch.no_grad():
        for parameter in models["vae"].parameters():
            parameter.mul_(1 + 1e-3)
    scaled = _differences_from_recorded({"vae": models["vae"]}, split, vocab)
    assert {key for _, _, key in scaled} >= {"elbo", "kl", "ppl_iw", "iw_nll_mc_se"}, scaled
    fewer_samples = _differences_from_recorded({"iaf": models["iaf"]}, split, vocab, iw_samples=6)
    assert {key for _, _, key in fewer_samples} >= {"iw_nll", "iw_nll_se", "mi_full"}, fewer_samples


def test_the_gpu_plan_merges_batches_and_gives_the_same_numbers_on_the_cpu(monkeypatch):
    # the GPU path (several batches per decoder pass, samples per pass from a memory budget, the
    # output layer in chunks) run on the CPU: same draws, so the same numbers up to float rounding
    split, vocab = _split_and_vocab()
    model = _models(vocab)["iaf"]
    reference = evaluate(model, split, vocab.pad_id, _settings()).metrics
    passes = []
    original = evaluate_module.decoder_log_likelihood

    def counting(model, batch, z, pass_samples, *args):
        passes.append((len(batch), pass_samples))
        return original(model, batch, z, pass_samples, *args)

    monkeypatch.setattr(evaluate_module, "decoder_log_likelihood", counting)
    monkeypatch.setattr(evaluate_module, "pass_rows", lambda model, device, length: 60)
    monkeypatch.setattr(evaluate_module, "logit_chunk_rows", lambda model, device: 5)
    planned = evaluate(model, split, vocab.pad_id, _settings()).metrics
    assert max(size for size, _ in passes) > 4  # batches of 4 sentences merged into one pass
    assert all(size * samples <= 60 or samples == 1 for size, samples in passes)
    assert sum(size for size, _ in passes) == 23
    for key in ("iw_nll", "iw_nll_se", "iw_nll_mc_se", "elbo", "kl", "mi_batch", "mi_full", "ppl_iw"):
        assert math.isclose(planned[key], reference[key], rel_tol=1e-5), key
    assert planned["au"] == reference["au"]


_READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__")


def _count_reads(monkeypatch, module=evaluate_module, batches: str = "iterate_batches") -> dict[str, int]:
    """Patch every Tensor method that reads a value back to the host; count the calls, except while
    a batch is made on the host (``module.batches``: ``collate``, before the batch goes to the device)."""
    counts = dict.fromkeys(_READS, 0)
    making_batch = []
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += not making_batch
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    iterate = getattr(module, batches)

    def host_batches(*args, **kwargs):
        batches = iterate(*args, **kwargs)
        while True:
            making_batch.append(True)
            try:
                batch = next(batches, None)
            finally:
                making_batch.pop()
            if batch is None:
                return
            yield batch

    monkeypatch.setattr(module, batches, host_batches)
    return counts


@pytest.mark.parametrize("name", ["vae", "iaf", "lm"])
def test_the_host_reads_the_device_a_fixed_number_of_times_whatever_the_number_of_batches(monkeypatch, name):
    # a read per batch (float(sum), .item(), .cpu(), nonzero ...) would make the count grow with the batches
    split, vocab = _split_and_vocab()
    model = _models(vocab)[name]
    counts = _count_reads(monkeypatch)
    evaluate(model, split, vocab.pad_id, _settings(6))  # 2 batches
    few = dict(counts)
    counts.update(dict.fromkeys(counts, 0))
    evaluate(model, split, vocab.pad_id, _settings(23))  # 6 batches
    assert counts == few, (few, counts)


@pytest.mark.parametrize("name", ["vae", "lm"])
def test_validation_reads_the_device_a_fixed_number_of_times_whatever_the_number_of_batches(monkeypatch, name):
    split, vocab = _split_and_vocab()
    model = _models(vocab)[name]
    counts = _count_reads(monkeypatch, validation_module)
    validation_module.validation_sums(model, split, vocab.pad_id, 4, np.arange(6), seed=0)  # 2 batches
    few = dict(counts)
    counts.update(dict.fromkeys(counts, 0))
    validation_module.validation_sums(model, split, vocab.pad_id, 4, np.arange(23), seed=0)  # 6 batches
    assert counts == few, (few, counts)


def test_bf16_matmuls_report_their_deviation_from_fp32_and_tf32_restores_the_global_setting():
    split, vocab = _split_and_vocab()
    model = _models(vocab)["vae"]
    fp32 = evaluate(model, split, vocab.pad_id, _settings()).metrics
    bf16 = evaluate(model, split, vocab.pad_id, _settings(matmul_precision="bf16")).metrics
    check = bf16["matmul_precision_check"]
    assert check["precision"] == "bf16" and check["sentences"] == 4
    assert 0 < check["max_abs_diff"] < 0.5  # bf16 has 8 bits of mantissa: it moves, a little
    assert 0 < abs(bf16["iw_nll"] - fp32["iw_nll"]) < 0.5
    assert bf16["elbo"] == fp32["elbo"]  # only the IW decoder passes run in bf16
    before = torch.get_float32_matmul_precision()
    tf32 = evaluate(model, split, vocab.pad_id, _settings(matmul_precision="tf32")).metrics
    assert torch.get_float32_matmul_precision() == before
    assert tf32["matmul_precision_check"]["precision"] == "tf32"
    with pytest.raises(TextVAEError, match="matmul-precision must be one of fp32, tf32, bf16"):
        _settings(matmul_precision="fp16")
    with matmul_precision("tf32", torch.device("cpu")):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == before


def test_mutual_information_stays_a_float64_tensor_on_the_posteriors_device():
    means, logvars = torch.randn(5, 3), torch.zeros(5, 3)
    value = metrics.mutual_info_estimate(means, logvars, torch.Generator().manual_seed(0))
    assert value.dtype == torch.float64 and value.shape == () and value.device == means.device
    assert float(value) == metrics.mutual_info_minibatch(means, logvars, torch.Generator().manual_seed(0))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_one_line_error():
    with pytest.raises(TextVAEError, match="no CUDA device is available"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree_on_the_same_draws():
    # the same z on both devices: log p(x|z) and the IW-NLL per sentence within 0.01 nats at fp32
    split, vocab = _split_and_vocab()
    model = _models(vocab)["vae"]
    batch = next(evaluate_module.iterate_batches(split, [np.arange(8)], vocab.pad_id))
    z = torch.randn(50, 8, model.latent_dim, generator=torch.Generator().manual_seed(0))
    values = {}
    for device in ("cpu", "cuda"):
        model.to(device)
        on_device = evaluate_module.to_device(batch, torch.device(device))
        with matmul_precision("fp32", torch.device(device)):
            log_px = evaluate_module.decoder_log_likelihood(model, on_device, z.to(device), 50, "fp32")
        values[device] = -metrics.iw_log_likelihood(log_px).cpu()
    assert (values["cpu"] - values["cuda"]).abs().max() < 0.01


def test_the_gpu_eval_check_script_runs_every_row_on_the_cpu_at_toy_sizes(tmp_path, capsys):
    import importlib.util
    import random

    rng = random.Random(0)
    words = ["the", "cat", "dog", "bird", "sees", "likes", "chases", "a", "big", "red"]
    corpus = tmp_path / "ptb"
    corpus.mkdir()
    for split, count in (("train", 120), ("valid", 20), ("test", 30)):
        lines = (" ".join(rng.choices(words, k=rng.randint(2, 9))) for _ in range(count))
        (corpus / f"ptb.{split}.txt").write_text("".join(f"{line}\n" for line in lines))
    spec = importlib.util.spec_from_file_location("gpu_eval_check", REPO / "scripts" / "gpu_eval_check.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "check.json"
    sizes = ["--cpu-sentences", "12", "--cpu-k", "5", "--full-k", "10", "--throughput-sentences", "10"]
    argv = ["--device", "cpu", "--tiny", "--data-root", str(corpus), "--out", str(out), "--train-steps", "3", *sizes]
    assert script.main(argv) == 0
    results = json.loads(out.read_text())
    failed = {name: row["error"] for name, row in results.items() if isinstance(row, dict) and "error" in row}
    assert not failed, failed
    assert results["same_draws"]["max_abs_diff"] == 0.0  # the CPU against itself
    assert results["eval_device_full"]["num_sentences"] == 30 and results["eval_device_full"]["iw_samples"] == 10
    assert results["eval_bf16"]["matmul_precision_check"]["precision"] == "bf16"
    assert results["subset_comparison"]["iw_nll"]["diff"] == 0.0  # same device, same seed: same numbers
    assert results["reproducible"]["max_abs_diff"] == 0.0
    rates = {k: v for k, v in results["throughput"].items() if isinstance(v, dict)}
    assert len(rates) == 4 and all(v["sentences_per_s"] > 0 and v["flops"] > 0 for v in rates.values())
    assert "| same_draws |" in capsys.readouterr().out
    import textvae  # the Python API on a device: "auto" is the CPU here, None the recipe's eval.device

    auto = "cuda" if torch.cuda.is_available() else "cpu"
    for device, expected in (("auto", auto), (None, auto), ("cpu", "cpu")):
        model = textvae.load(results["train"]["run"], device=device)
        assert model.device.type == expected and len(model.sample(2, seed=1)) == 2
    assert model.reconstruct(["the cat sees"]) and len(model.interpolate("a cat", "the dog", 3)) == 3


def test_image_evaluation_gives_the_numbers_recorded_before_device_support():
    from tests.test_image_framework import MNIST, TinyImageCodes, TinyImageVAE
    from textvae.image.config import ImageDataConfig, ImageEvalConfig
    from textvae.image.data import load_image_split
    from textvae.image.evaluate import evaluate_image

    golden = json.loads(GOLDEN.read_text())
    split = load_image_split(ImageDataConfig(root=str(MNIST), binarize=True), "valid")
    for cls in (TinyImageVAE, TinyImageCodes):
        torch.manual_seed(0)
        model = cls((1, 28, 28)).eval()
        result = evaluate_image(model, split, ImageEvalConfig(**golden["image_settings"]), progress_bar=False).metrics
        expected = golden["image_results"][cls.__name__]
        wrong = {k: (result[k], v) for k, v in expected.items() if not _close(result[k], v)}
        assert not wrong, (cls.__name__, wrong)
        assert result["device"] == "cpu" and result["iw_chunk_size"] == 4  # off CUDA the recipe's chunk


def test_a_run_started_before_eval_device_existed_still_resumes():
    from textvae.config import load_recipe
    from textvae.engine.run_dir import without_runtime_keys

    config = load_recipe(REPO / "recipes" / "ptb" / "lstm_vae.toml").to_dict()
    assert config["eval"]["device"] == "auto"
    older = json.loads(json.dumps(config))
    del older["eval"]["device"]  # a checkpoint's config from before the key
    assert without_runtime_keys(older) == without_runtime_keys(config)


@pytest.mark.parametrize("name", ["TinyImageVAE", "TinyImageCodes"])
def test_image_evaluation_reads_the_device_a_fixed_number_of_times_whatever_the_number_of_batches(monkeypatch, name):
    import tests.test_image_framework as framework
    from textvae.image import evaluate as image_evaluate
    from textvae.image.config import ImageDataConfig, ImageEvalConfig
    from textvae.image.data import load_image_split

    split = load_image_split(ImageDataConfig(root=str(framework.MNIST), binarize=True), "valid")
    torch.manual_seed(0)
    model = getattr(framework, name)((1, 28, 28)).eval()
    counts = _count_reads(monkeypatch, image_evaluate, "_batches")
    settings = {"iw_samples": 5, "iw_chunk_size": 2, "batch_size": 4}
    image_evaluate.evaluate_image(model, split, ImageEvalConfig(**settings, max_examples=8), progress_bar=False)
    few = dict(counts)
    counts.update(dict.fromkeys(counts, 0))
    image_evaluate.evaluate_image(model, split, ImageEvalConfig(**settings, max_examples=24), progress_bar=False)
    assert counts == few, (few, counts)
