"""The graph cache's logic on a CPU, with an injected capture: keys, warm-up, LRU bound, fallback."""

import torch

from tests.test_graph_step import _batches, _model, _Train
from textvae.cuda.graph_cache import GraphedStep, batch_key
from textvae.cuda.sync_free_step import SyncFreeStep, text_loss_fn
from textvae.data.batching import collate
from textvae.engine.state import make_optimizer


class FakeCapture:
    """Records captures; its "graph" runs the step body on the static batch it was captured with,
    so a replay sees exactly what the buffers hold (as a real graph would)."""

    def __init__(self, fail=False):
        self.captured, self.fail = [], fail

    def __call__(self, run, static_batch):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captured.append(batch_key(static_batch))
        return lambda: run(static_batch)


def _steps(vocab, capture=None, **kwargs):
    model = _model(vocab, [{"type": "word_dropout", "keep_prob": 0.7}])
    step = SyncFreeStep(model, make_optimizer(model, _Train("sgd", 1.0)), text_loss_fn(model), grad_clip=0.5)
    return model, (step if capture is None else GraphedStep(step, capture=capture, **kwargs))


def _batch_of_length(vocab, length, size=3):
    return collate([[1, *range(4, 4 + length), 2]] * size, list(range(size)), vocab.pad_id)


def test_one_graph_per_shape_after_the_warm_up_steps(vocab):
    capture = FakeCapture()
    _, graphed = _steps(vocab, capture, warmup_steps=2)
    two, three = _batch_of_length(vocab, 2), _batch_of_length(vocab, 3)
    for batch in (two, two, three, two, two, three, three, three):
        graphed(batch)
    assert capture.captured == [batch_key(two), batch_key(three)]
    assert graphed.captures == 2 and graphed.replays == 2 + 2
    assert batch_key(two) != batch_key(_batch_of_length(vocab, 2, size=2))  # the batch size is part of the key


def test_the_least_recently_used_graph_is_dropped_and_captured_again(vocab):
    capture = FakeCapture()
    _, graphed = _steps(vocab, capture, warmup_steps=0, max_graphs=2)
    a, b, c = (_batch_of_length(vocab, n) for n in (2, 3, 4))
    for batch in (a, b, a, c):  # c evicts b (a was used after b)
        graphed(batch)
    assert list(graphed.graphs) == [batch_key(a), batch_key(c)]
    graphed(b)
    assert capture.captured == [batch_key(a), batch_key(b), batch_key(c), batch_key(b)]
    assert len(graphed.graphs) == 2


def test_replayed_steps_give_the_weights_of_uncaptured_steps(vocab):
    """Replays read the batch through the static buffers: same weights and counters as eager steps."""
    rows = [[1, 4, 5, 6, 2], [1, 7, 8, 9, 2], [1, 10, 4, 8, 2], [1, 6, 6, 5, 2]]
    same_shape = [collate(rows[i : i + 3], [0, 1, 2], vocab.pad_id) for i in range(2)]  # other words, one shape
    batches = [*_batches(vocab), *same_shape] * 3
    results = []
    for capture in (None, FakeCapture()):
        model, step = _steps(vocab, capture, warmup_steps=1) if capture else _steps(vocab)
        for i, batch in enumerate(batches):
            torch.manual_seed(i)
            step(batch)
        results.append((model.state_dict(), step.state.read()))
    (eager_weights, eager_counts), (graph_weights, graph_counts) = results
    assert all(torch.equal(eager_weights[k], graph_weights[k]) for k in eager_weights)
    assert eager_counts == graph_counts


def test_a_failed_capture_falls_back_to_the_uncaptured_step(vocab, caplog):
    _, graphed = _steps(vocab, FakeCapture(fail=True), warmup_steps=0)
    batch = _batch_of_length(vocab, 2)
    graphed(batch)
    graphed(batch)
    assert graphed.captures == 0 and "stream is capturing" in graphed.failure
    assert graphed.state.read().steps == 2
    assert sum("capture failed" in r.message for r in caplog.records) == 1


def test_a_resumed_run_captures_again(vocab):
    """A new GraphedStep (what a resumed run builds) starts without graphs, at the saved step."""
    capture = FakeCapture()
    model, graphed = _steps(vocab, capture, warmup_steps=0)
    batch = _batch_of_length(vocab, 2)
    graphed(batch)
    resumed = GraphedStep(
        SyncFreeStep(model, graphed.step.optimizer, text_loss_fn(model), grad_clip=0.5, step=1), capture=capture
    )
    resumed.warmup_steps = 0
    resumed(batch)
    assert capture.captured == [batch_key(batch)] * 2 and resumed.state.read().steps == 2
