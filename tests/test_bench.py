"""``textvae bench`` and the fast paths it measures: FLOP counts, the shared-projection IW path, the
fused output layer, the plain-PyTorch reference step. Timings are never asserted."""

import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import REPO, tiny_vae_spec
from textvae import bench, cli
from textvae.bench import references
from textvae.data.batching import collate
from textvae.evaluation.importance import importance_log_weights, samples_log_likelihood
from textvae.models import build_model
from textvae.models.cross_entropy import linear_cross_entropy
from textvae.objective import Objective, elbo_terms
from textvae.strategies import StandardStrategy, StepContext, apply_update, only_these_require_grad


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def equal_length_batch(vocab):
    """B = 3 sentences of T = 7 tokens: no padding, so every counted product is real work."""
    rows = [[1, 4, 5, 6, 7, 8, 2], [1, 9, 10, 4, 5, 6, 2], [1, 7, 8, 9, 10, 4, 2]]
    return collate(rows, [0, 1, 2], vocab.pad_id)


def _counted_training_flops(model, batch) -> int:
    with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
        # mkldnn's fused LSTM kernel is opaque to the counter; the native one is made of matmuls
        Objective.negative_elbo(elbo_terms(model(batch))).loss().backward()
    return counter.get_total_flops()


def test_analytic_training_flops_equal_what_the_flop_counter_counts(vocab, equal_length_batch):
    torch.manual_seed(0)
    model = build_model(tiny_vae_spec(), vocab).train()  # E 5, H 6, D 4, V 11; LSTM encoder and decoder
    hidden, batch_size = model.encoder.lstm.hidden_size, len(equal_length_batch)
    # the one documented difference: the encoder's h_0 = 0 is a constant, so autograd never forms
    # the input gradient of its first recurrent product (2 · 4H · H FLOPs per sentence)
    never_formed = 2 * 4 * hidden * hidden * batch_size
    assert (
        _counted_training_flops(model, equal_length_batch)
        == bench.train_flops(model, equal_length_batch) - never_formed
    )
    macs_per_target = 4 * 6 * (5 + 4 + 6) + 6 * 11  # decoder LSTM over [e; z] and the output layer
    macs_encoder = 4 * 6 * (5 + 6) * 7 * 3 + 3 * 6 * 8  # LSTM over BOS..EOS, (mean, logvar) layer
    assert bench.train_flops(model, equal_length_batch) == 6 * (macs_per_target * 18 + 3 * 4 * 6 + macs_encoder)


def test_analytic_training_flops_of_the_dilated_cnn_decoder(vocab, equal_length_batch):
    torch.manual_seed(0)
    spec = tiny_vae_spec()
    spec["decoder"] = {"type": "dilated_cnn", "dilations": [1, 2], "embed_dim": 5, "channels": 7}
    model = build_model(spec, vocab).train()
    never_formed = 2 * 4 * 6 * 6 * 3
    assert (
        _counted_training_flops(model, equal_length_batch)
        == bench.train_flops(model, equal_length_batch) - never_formed
    )


@pytest.mark.parametrize(
    "decoder",
    [{}, {"num_layers": 2}, {"z_concat_input": False}, {"z_init_state": False}],
    ids=["he2019", "two_layers", "z_in_state_only", "z_in_inputs_only"],
)
def test_shared_projection_iw_path_equals_the_plain_decoder_pass(tiny_vae, vocab, batch, decoder, monkeypatch):
    torch.manual_seed(0)
    spec = tiny_vae_spec(weight_init_range=0.5, **decoder)
    model = build_model(spec, vocab).eval()
    calls = []
    shared = model.decoder.sample_hidden_steps
    monkeypatch.setattr(model.decoder, "sample_hidden_steps", lambda *a: calls.append(1) or shared(*a))
    z = torch.randn(5, 3, 4)  # (K, B, D)
    with torch.no_grad():
        fast = samples_log_likelihood(model, batch, z)
        plain = model.log_likelihood(batch, z)  # every sample through the whole decoder
    assert calls, "the shared-projection path was not taken"
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    # and the log-weights built on it, chunk by chunk, from the same random stream
    inference = model.infer(batch)
    with torch.no_grad():
        log_weights = importance_log_weights(model, batch, inference, 7, 3, torch.Generator().manual_seed(3))
        generator = torch.Generator().manual_seed(3)
        expected = []
        for count in (3, 3, 1):
            z, log_q = model.sample_latent(inference, count, generator)
            expected.append(
                model.log_likelihood(batch, z) + (-0.5 * (math.log(2 * math.pi) + z**2)).sum(-1) - log_q.sum(-1)
            )
    torch.testing.assert_close(log_weights, torch.cat(expected), rtol=1e-5, atol=1e-5)


def test_fused_output_layer_gives_the_cross_entropy_and_its_gradients():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 11)
    hidden = torch.randn(9, 6, requires_grad=True)
    targets = torch.randint(11, (9,))
    upstream = torch.rand(9)  # a weighted sum, as the objective makes one
    plain = F.cross_entropy(layer(hidden), targets, reduction="none")
    plain_grads = torch.autograd.grad((plain * upstream).sum(), (hidden, layer.weight, layer.bias))
    fused = linear_cross_entropy(hidden, layer, targets, chunk_rows=4)  # three chunks, the last short
    fused_grads = torch.autograd.grad((fused * upstream).sum(), (hidden, layer.weight, layer.bias))
    torch.testing.assert_close(fused, plain)
    for got, want in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, layer, targets, chunk_rows=4), plain.detach())


def test_reference_step_makes_the_toolkit_step_update(vocab, batch):
    """Same weights, same batch, same random stream: the same loss and the same updated weights
    (dropout 0.5 in and out, and a clip small enough to act)."""
    reference = _load("reference_step")
    torch.manual_seed(0)
    spec = tiny_vae_spec(weight_init_range=0.3, dropout_in=0.5, dropout_out=0.5)
    spec["encoder"]["hidden_dim"] = 7
    model = build_model(spec, vocab).train()
    twin = reference.ReferenceVAE.like(model)
    torch.manual_seed(1)
    context = StepContext(model, torch.optim.SGD(model.parameters(), lr=0.5), 0.1, 0, 1, None)
    terms, updated = StandardStrategy().train_step(context, batch)
    torch.manual_seed(1)
    loss = reference.train_step(twin, reference.make_optimizer(twin, "sgd", 0.5), batch.tokens, batch.lengths, 0.1)
    assert updated
    torch.testing.assert_close(loss, (terms.rec + terms.kl).mean().detach())
    twin_state = twin.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(twin_state[name], value, msg=name)


def test_naive_iw_nll_agrees_with_the_toolkit_on_the_same_samples(tiny_vae, batch):
    naive = _load("naive_iw_nll")
    reference = _load("reference_step").ReferenceVAE.like(tiny_vae).eval()
    sentence = batch.tokens[1, : int(batch.lengths[1])]  # (T,)
    generator = torch.Generator().manual_seed(5)
    log_weights = naive.sentence_log_weights(reference, sentence, 6, 4, generator)  # (K,)
    # the toolkit with the same ε: z = μ + σ ε for this sentence alone
    single = collate([sentence.tolist()], [0], 0)
    inference = tiny_vae.infer(single)
    with torch.no_grad():
        toolkit = importance_log_weights(tiny_vae, single, inference, 6, 4, torch.Generator().manual_seed(5))
    torch.testing.assert_close(log_weights, toolkit[:, 0], rtol=1e-5, atol=1e-5)


def test_only_these_require_grad_leaves_the_updated_gradients_unchanged(vocab, batch):
    torch.manual_seed(0)
    model = build_model(tiny_vae_spec(weight_init_range=0.3), vocab).train()
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    torch.manual_seed(1)
    Objective.negative_elbo(elbo_terms(model(batch))).loss().backward()
    full = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("encoder.")}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    with only_these_require_grad(model, encoder_ids):
        Objective.negative_elbo(elbo_terms(model(batch))).loss().backward()
    assert all(p.requires_grad for p in model.parameters())  # restored
    for name, param in model.named_parameters():
        if name.startswith("encoder."):
            torch.testing.assert_close(param.grad, full[name], msg=name)
        else:
            assert param.grad is None, name  # never computed


def test_a_non_finite_gradient_is_still_caught_when_clipping_checks_it():
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=1.0)
    context = StepContext(torch.nn.ParameterList([param]), optimizer, 5.0, 0, 1, None)
    assert not apply_update(context, param.sqrt().sum())  # loss 0, gradient +inf
    assert param.grad is None and torch.equal(param.detach(), torch.zeros(3))
    # finite gradients whose norm overflows: clipped to zero and applied, as without the fused check
    huge = torch.nn.Parameter(torch.ones(3))
    context = StepContext(torch.nn.ParameterList([huge]), torch.optim.SGD([huge], lr=1.0), 5.0, 0, 1, None)
    assert apply_update(context, (huge * 1e38).sum())  # loss 3e38; gradient norm² 3e76 overflows
    assert torch.equal(huge.detach(), torch.ones(3))


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.SGD(params, lr=0.7),  # clipping folded into the learning rate
        lambda params: torch.optim.SGD(params, lr=0.7, momentum=0.9),  # gradients clipped in place
        lambda params: torch.optim.SGD(params, lr=0.7, weight_decay=0.1),
        lambda params: torch.optim.Adam(params, lr=0.7),
    ],
)
def test_a_clipped_update_is_clip_grad_norm_then_step(make_optimizer):
    """Whether clipping is folded into plain SGD's learning rate or applied to the gradients, the
    parameters move as after ``clip_grad_norm_`` and ``step``, and the learning rate is unchanged."""
    torch.manual_seed(0)
    start = torch.randn(2, 5)
    data = torch.randn(2, 5)

    def loss_of(param):
        return ((param - data) ** 2).sum() * 40.0  # gradient norm far above the clip of 1

    mine, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    optimizer, their_optimizer = make_optimizer([mine]), make_optimizer([theirs])
    context = StepContext(torch.nn.ParameterList([mine]), optimizer, 1.0, 0, 1, None)
    for _ in range(3):
        assert apply_update(context, loss_of(mine))
        their_optimizer.zero_grad()
        loss_of(theirs).backward()
        torch.nn.utils.clip_grad_norm_([theirs], 1.0)
        their_optimizer.step()
        torch.testing.assert_close(mine.detach(), theirs.detach())
    assert optimizer.param_groups[0]["lr"] == 0.7
    assert not torch.equal(mine.detach(), start)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_command_writes_every_figure(tmp_path, capsys, restore_threads):
    out = tmp_path / "bench.json"
    # one thread: at tiny sizes two threads mostly wait for each other on a busy machine
    assert cli.main(["bench", "--sizes", "tiny", "--threads", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    required = (
        "matmul_gflops",
        "train_tokens_per_s",
        "train_flops_per_token",
        "train_gflops",
        "train_tokens_per_s_reference",
        "remedy_stack_step_ratio",
        "iw_nll_sents_per_s",
        "iw_nll_sents_per_s_naive",
        "iw_nll_gflops",
        "cnn_tokens_per_s",
        "lstm_tokens_per_s",
        "peak_rss_mb_train",
        "peak_rss_mb_eval",
    )
    for key in required:
        values = results[key].values() if isinstance(results[key], dict) else [results[key]]
        assert values and all(math.isfinite(v) and v > 0 for v in values), key
    assert set(results["cnn_tokens_per_s"]) == {"scnn", "mcnn", "lcnn", "vlcnn"}
    table = capsys.readouterr().out
    assert "| figure | value | baseline | ratio | target |" in table
    assert table.count("\n| ") >= 18  # header, rule and one row per figure
    eval_path = results["details"]["iw"]["eval_path"]  # textvae eval's own path, measured at tiny sizes too
    assert eval_path and all(f"| textvae eval, K = {k}: FLOP/s" in table for k in eval_path)


def test_bench_without_the_benchmarks_folder_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(references, "BENCHMARKS", tmp_path / "benchmarks")
    assert cli.main(["bench", "--sizes", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("textvae: error:") and "benchmarks" in err[0]


def test_bench_counts_the_ptb_model_at_about_50_mflop_per_token(vocab):
    """The issue's figure: E 256, H 512, D 32, V 10,002 (PTB) → 8.33 M MACs per target token."""
    from textvae.data.vocab import Vocab

    words = tuple(f"w{i}" for i in range(9_998))
    big_vocab = Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *words))
    model = build_model(bench.vae_spec(bench.FULL), big_vocab)
    sentence = collate([[1, *range(4, 24), 2]], [0], 0)  # 20 words: 21 targets, 22 encoder inputs
    flops = bench.train_flops(model, sentence)
    assert flops == 6 * (21 * (1_638_400 + 512 * 10_002) + 22 * 1_572_864 + 512 * 64 + 32 * 512)
    assert 49e6 < flops / 21 < 52e6
