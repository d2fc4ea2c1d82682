"""The CUDA additions of ``textvae bench`` on a CPU: the static-shape reference loss, the graphed
steps' buffer wiring (with the capture replaced by the eager call), the N-process harness, the
table. Timings are never asserted."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import REPO, tiny_vae_spec
from textvae.bench import gpu, graphs, image
from textvae.data.batching import collate
from textvae.data.corpus import EncodedSplit
from textvae.models import build_model


def _reference():
    spec = importlib.util.spec_from_file_location("reference_step", REPO / "benchmarks" / "reference_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_static_shape_loss_equals_the_masked_loss(vocab, batch):
    """What a graph captures (every position × the target mask) is the masked loss, on unequal lengths."""
    reference = _reference()
    torch.manual_seed(0)
    model = build_model(tiny_vae_spec(weight_init_range=0.5, dropout_in=0.5, dropout_out=0.5), vocab).train()
    twin = reference.ReferenceVAE.like(model)
    losses = []
    for static in (False, True):
        torch.manual_seed(1)
        losses.append(twin.loss(batch.tokens, batch.lengths, static))
    torch.testing.assert_close(losses[1], losses[0])
    twin.zero_grad()
    torch.manual_seed(1)
    twin.loss(batch.tokens, batch.lengths, True).backward()
    static_grads = [p.grad.clone() for p in twin.parameters()]
    twin.zero_grad()
    torch.manual_seed(1)
    twin.loss(batch.tokens, batch.lengths, False).backward()
    for got, want in zip(static_grads, [p.grad for p in twin.parameters()], strict=True):
        torch.testing.assert_close(got, want)


def test_one_length_batches_hold_sentences_of_the_median_length():
    from datasets import Dataset

    lengths = [5, 7, 7, 7, 7, 9, 9, 9, 12, 7, 9]
    ids = [[1, *(4 + i % 7 for i in range(n - 2)), 2] for n in lengths]
    split = EncodedSplit("train", Dataset.from_dict({"ids": ids, "length": lengths}), np.array(lengths), 0, 0)
    batches = graphs.one_length_batches(split, 3, 4, 0)
    assert len(batches) == 4
    assert all(b.tokens.shape == (3, 7) and bool((b.lengths == 7).all()) for b in batches)


def _fake_capture(calls: list):
    """``torch.cuda.graph`` replaced by the step itself on its static batch (the wiring is what is tested)."""

    def capture(run, static):
        calls.append(static)
        return lambda: run(static)

    return capture


def test_graphed_toolkit_step_feeds_each_batch_through_its_static_buffers(vocab):
    graph_step = pytest.importorskip("textvae.cuda.sync_free_step")
    pytest.importorskip("textvae.cuda.graph_cache")
    rows = [[[1, *(4 + (i * k + j) % 7 for j in range(5)), 2] for i in range(3)] for k in (1, 2, 3)]
    batches = [collate(sentences, [0, 1, 2], 0) for sentences in rows]  # three different batches, one shape

    def fresh():
        torch.manual_seed(0)
        model = build_model(tiny_vae_spec(weight_init_range=0.3, dropout_in=0.5), vocab).train()
        return model, torch.optim.SGD(model.parameters(), lr=0.5)

    model, optimizer = fresh()
    captured = []
    torch.manual_seed(7)
    run = graphs.toolkit_graphed(model, optimizer, batches, fake_capture=_fake_capture(captured))
    run()
    twin, twin_optimizer = fresh()
    step = graph_step.SyncFreeStep(twin, twin_optimizer, graph_step.text_loss_fn(twin), grad_clip=graphs.GRAD_CLIP)
    torch.manual_seed(7)
    for b in [batches[0]] * 3 + batches:  # the cache's two warm-up steps and the captured one, then the pass
        step(b)
    assert len(captured) == 1
    for (name, got), want in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, msg=name)


def test_graphed_image_step_trains_on_each_batch(monkeypatch):
    pytest.importorskip("textvae.cuda.sync_free_step")
    pytest.importorskip("textvae.cuda.graph_cache")
    built = []
    make = image._model_and_optimizer
    monkeypatch.setattr(image, "_model_and_optimizer", lambda device: built.append(make(device)) or built[-1])
    images = image._images(4, 3, torch.device("cpu"))
    captured = []
    run = image.graphed_run(images, torch.device("cpu"), fake_capture=_fake_capture(captured))
    model = built[0][0]
    before = [p.detach().clone() for p in model.parameters()]
    steps = []
    loss_terms = model.loss_terms
    model.loss_terms = lambda x, step=0: steps.append(x.clone()) or loss_terms(x, step)
    run()
    assert len(captured) == 1 and len(steps) == 3
    for seen, x in zip(steps, images, strict=True):
        assert torch.equal(seen, x)  # each batch went through the static buffer
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_gpu_bench_on_a_cpu_measures_what_it_can_and_says_what_needs_cuda(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--sizes", "tiny", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    details = results["details"]
    for key in (
        "aggregate_time_sliced_1_steps_per_s",
        "aggregate_time_sliced_2_steps_per_s",
        "eager_toolkit_tokens_per_s",
        "eager_reference_tokens_per_s",
        "image_eager_3_images_per_s",
        "image_eager_7_images_per_s",
    ):
        assert math.isfinite(results[key]) and results[key] > 0, key
    assert details["processes"]["mps"] == {"missing": "needs CUDA"}
    assert len(details["processes"]["time_sliced"]["counts"]["2"]["per_process"]) == 2
    assert details["graphs"]["rows"]["graphed_toolkit"] == {"missing": "needs CUDA"}
    assert details["image"]["rows"]["graphed_7"] == {"missing": "needs CUDA"}
    assert "training" not in details  # only the CUDA additions' sections
    table = capsys.readouterr().out
    assert "| aggregate model-steps/s, 2 processes without MPS" in table
    assert "86,960" not in table  # the published figure is printed beside a graphed toolkit rate only
    assert table.count("needs CUDA") == 5


def test_a_worker_that_fails_to_build_is_one_error_not_a_hang():
    from textvae.bench import processes

    spec = {"device": "cpu", "model": (4, 5, 2, 3), "vocab": None, "tokens": torch.ones(3, 6, dtype=torch.long)}
    spec["lengths"] = torch.full((3,), 6)
    with pytest.raises(RuntimeError, match=r"worker 0: .*Error"):
        processes.aggregate(spec, (1,), 0.1)
