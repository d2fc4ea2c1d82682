"""``textvae bench``: how close the toolkit runs to this machine's compute limit, each figure beside its baseline.

    textvae bench [--json OUT] [--quick] [--device cpu|cuda] [--threads N] [--data-root DIR]

The machine is noisy (other processes, clock changes), so every figure is measured in this one
process beside the baseline it is compared with: the runs being compared take turns, round after
round, and each keeps its best round; the matmul peak is measured between rounds and its best is
kept. The model is He et al. 2019's PTB LSTM VAE widened to hidden 512 (embedding 256, latent 32,
batch 32, dropout 0.5 in and out; V = 10,002: PTB's 9,998 words, <unk>, pad, BOS, EOS).

Rows of the table (figure | baseline | ratio):
1. matmul peak: an fp32 2048³ matrix product at the same thread count, GFLOP/s.
2. training on PTB train batches, SGD lr 1.0 (He et al. 2019; the headline) and Adam lr 1e-3:
   target tokens/s of the toolkit's step (the ``standard`` strategy: forward, honest terms,
   objective, backward, finiteness check, gradient clipping at 5, optimizer step, the loop's
   running sums), its FLOP/s against the matmul peak (and, per round, against the matmul measured
   right after that round: the median of those ratios), and tokens/s of the plain-PyTorch step of
   ``benchmarks/reference_step.py`` on the same batches from the same weights.
3. remedies: the quickstart stack (KL annealing + word dropout + free bits + bag-of-words) against
   the plain VAE step; IAF and aggressive training (He et al. 2019) each on its own row.
4. IW-NLL on PTB test sentences, K = 500 in chunks of 100: sentences/s and FLOP/s of
   ``textvae.evaluate.importance_log_weights`` (two batches of 32 sentences drawn from the
   length-sorted test set, as ``textvae eval`` batches it; the encoder once per sentence; the
   decoder's embedding-side input projection shared by the K samples) against
   ``benchmarks/naive_iw_nll.py`` (one sentence at a time, 100 samples per pass), in turns, each
   batch timed twice and its best time kept.
5. decoders at equal width (512): tokens/s and FLOP/s of the LSTM decoder and of each dilated-CNN
   preset (Yang et al. 2017), in a VAE with an LSTM encoder of 256, Adam.
6. memory: peak RSS while training and while evaluating IW-NLL on PTB and on a synthetic corpus
   10× larger (PTB training sentences drawn with replacement, memory-mapped like any corpus), with
   batches of the same shapes on both (sentences of one long length), and of IW-NLL at K = 50 and
   K = 500, both in chunks of 50 samples, after one unmeasured IW-NLL pass.

FLOPs are counted analytically (``train_flops``, ``iw_flops``): 2 × the multiply–accumulates of
every matrix product on the real tokens (padding is not useful work), ×3 for training. See
``train_flops`` for the derivation. ``--quick`` runs 3 rounds of 4 training steps (3 for the
remedy and decoder rows) and IW-NLL on one batch of 8 sentences (a smaller batch: a lower rate).
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import logging
import math
import os
import platform
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

import textvae
from textvae import metrics, registry
from textvae.config import DataConfig, TrainConfig
from textvae.data.batching import Batch, bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit, build_vocab, encode_split, load_text
from textvae.errors import TextVAEError
from textvae.evaluate import importance_log_weights
from textvae.models import build_model
from textvae.models.cnn_decoder import PRESETS, DilatedCNNDecoder
from textvae.models.encoders import LSTMEncoder
from textvae.models.lstm_decoder import LSTMDecoder
from textvae.strategies import StepContext
from textvae.train import TrainWindow, make_optimizer

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
DEFAULT_PTB = REPO.parent / "shared" / "data" / "ptb"
ADAM_LR = 1e-3  # the recipe's lr 1.0 is an SGD rate; Adam gets its usual default
# the quickstart ablation's settings of each remedy (recipes/quickstart/ablation.toml), stacked
REMEDY_STACK = (
    {"type": "kl_annealing", "schedule": "linear", "warmup": 660},
    {"type": "word_dropout", "keep_prob": 0.5},
    {"type": "free_bits", "threshold": 0.25},
    {"type": "bow_loss", "hidden_dim": 128},
)
IAF = ({"type": "iaf", "steps": 2, "hidden_dim": 64},)
AGGRESSIVE = {"type": "aggressive", "max_inner_steps": 10, "check_every": 5}  # the quickstart's cap
TARGETS = {"train": 0.85, "reference": 0.97, "remedy_stack": 1.10, "iw": 0.75}


@dataclass(frozen=True)
class Sizes:
    """Model sizes and how much work each measurement does."""

    embed_dim: int = 256
    hidden_dim: int = 512
    latent_dim: int = 32
    batch_size: int = 32
    cnn_width: int = 512
    cnn_encoder_hidden: int = 256
    matmul_size: int = 2048
    rounds: int = 5  # interleaved timing rounds; each run keeps its best
    train_steps: int = 20  # steps per round, training rows
    remedy_steps: int = 8  # steps per round, remedy rows
    aggressive_steps: int = 3  # outer steps of aggressive training (each up to 11 updates)
    cnn_steps: int = 8  # steps per round, decoder rows
    iw_samples: int = 500
    iw_small_samples: int = 50
    iw_chunk: int = 100
    iw_batches: int = 2  # batches of the length-sorted test split, drawn at random
    iw_batch_size: int = 32  # sentences per encoder pass (textvae eval's default)
    iw_repeats: int = 2  # timings of each IW batch (each run keeps its best)
    memory_steps: int = 10
    corpus_scale: int = 10
    synthetic_base: int = 0  # > 0: a synthetic base corpus of this many sentences instead of PTB (tests)


FULL = Sizes()
QUICK = replace(
    FULL,
    rounds=3,
    train_steps=4,
    remedy_steps=3,
    aggressive_steps=1,
    cnn_steps=3,
    iw_batches=1,
    iw_batch_size=8,
    iw_repeats=1,
    memory_steps=3,
)
TINY = Sizes(  # for tests: every code path in seconds
    embed_dim=8,
    hidden_dim=12,
    latent_dim=4,
    batch_size=4,
    cnn_width=12,
    cnn_encoder_hidden=8,
    matmul_size=64,
    rounds=2,
    train_steps=2,
    remedy_steps=2,
    aggressive_steps=1,
    cnn_steps=2,
    iw_samples=10,
    iw_small_samples=3,
    iw_chunk=4,
    iw_batches=1,
    iw_batch_size=3,
    iw_repeats=1,
    memory_steps=2,
    synthetic_base=300,
)
SIZES = {"full": FULL, "quick": QUICK, "tiny": TINY}


# --- FLOP counts ---------------------------------------------------------------------------------


def _lstm_macs_per_step(input_dim: int, hidden_dim: int, layers: int, directions: int = 1) -> int:
    """Multiply–accumulates of one time step of one row: 4H × (input + H) per layer and direction."""
    macs = 0
    for layer in range(layers):
        layer_input = input_dim if layer == 0 else hidden_dim * directions
        macs += directions * 4 * hidden_dim * (layer_input + hidden_dim)
    return macs


def _encoder_macs(encoder: LSTMEncoder, lengths: torch.Tensor) -> int:
    """The LSTM over BOS w_1 .. w_n EOS (``lengths`` tokens each) and the (mean, logvar) layer."""
    lstm = encoder.lstm
    per_token = _lstm_macs_per_step(lstm.input_size, lstm.hidden_size, lstm.num_layers, encoder.directions)
    return (
        per_token * int(lengths.sum()) + len(lengths) * encoder.to_params.in_features * encoder.to_params.out_features
    )


def _decoder_macs(decoder, num_sentences: int, num_targets: int) -> int:
    """Decoder and output layer over the ``num_targets`` real decoder inputs (BOS w_1 .. w_n)."""
    vocab_size, width = decoder.output.out_features, decoder.output.in_features
    if isinstance(decoder, LSTMDecoder):
        lstm = decoder.lstm
        per_token = _lstm_macs_per_step(lstm.input_size, lstm.hidden_size, lstm.num_layers)
        per_sentence = decoder.z_to_cell.in_features * decoder.z_to_cell.out_features if decoder.z_to_cell else 0
    elif isinstance(decoder, DilatedCNNDecoder):
        project = decoder.project_in
        per_token = project.in_features * project.out_features
        per_token += sum(
            block.conv.kernel_size[0] * block.conv.in_channels * block.conv.out_channels for block in decoder.blocks
        )
        per_sentence = 0
    else:
        raise TextVAEError(f"no FLOP count for decoder {type(decoder).__name__}")
    return (per_token + width * vocab_size) * num_targets + per_sentence * num_sentences


def forward_macs(model, batch: Batch) -> int:
    """Multiply–accumulates of one forward pass of a sequence VAE on ``batch`` (real tokens only)."""
    lengths = batch.lengths.cpu()
    macs = _decoder_macs(model.decoder, len(lengths), int((lengths - 1).sum()))
    return macs + _encoder_macs(model.encoder, lengths)


def train_flops(model, batch: Batch) -> int:
    """FLOPs of one training step of a sequence VAE (LSTM encoder; LSTM or dilated-CNN decoder).

    Convention: 2 × the multiply–accumulates (MACs) of every matrix product of the forward pass,
    ×3 for forward + backward: the backward pass of Y = X W forms ∂L/∂X = ∂L/∂Y Wᵀ and
    ∂L/∂W = Xᵀ ∂L/∂Y, each as large as the forward product. Counted on the real tokens only
    (a sentence of n words has n + 2 encoder inputs, BOS … EOS, and n + 1 decoder inputs and
    targets); elementwise work, embedding lookups, bias additions and the optimizer are not
    counted. MACs per token, with E embedding, H hidden, D latent, V vocabulary:

        encoder LSTM, per encoder input     4H (E + H)          (per layer: 4H (input + H))
        decoder LSTM, per target            4H (E + D + H)      (z joins every input)
        output layer, per target            H V
        per sentence                        2D H (mean, logvar) + D H (c0 = W z)

    The PTB model (E 256, H 512, D 32, V 10,002): 1,572,864 + 1,638,400 + 5,121,024 MACs, so
    ≈ 8.33 M MACs ≈ 50.0 MFLOP per target token (plus one encoder input per sentence). A dilated
    CNN decoder of width C counts (E + D) C for its input projection and k C² per block.

    ``torch.utils.flop_counter.FlopCounterMode`` counts the same number (``tests/test_bench.py``)
    except for one product: the encoder's first recurrent step multiplies h_0 = 0, a constant,
    so autograd never forms its input gradient: 2 · 4H · H FLOPs per sentence and layer fewer.
    """
    return 6 * forward_macs(model, batch)


def iw_flops(model, batch: Batch, num_samples: int) -> int:
    """FLOPs (2 × MACs) of the toolkit's IW-NLL on ``batch`` with K = ``num_samples``, forward only.

    The encoder once per sentence; the decoder's embedding-side input projection 4H·E once per
    real input token, shared by the K samples; per sample, z's input projection 4H·D and c0 = W z
    once (not per token); per sample and real token, the recurrence 4H·H (and upper layers) and
    the output layer H·V. This is the work the shared-projection algorithm does; the naive one
    (every sample through the whole decoder) does 4H·(E + D) more per sample and token.
    """
    decoder = model.decoder
    if not isinstance(decoder, LSTMDecoder):
        raise TextVAEError("the IW FLOP count is for the LSTM decoder")
    lengths = batch.lengths.cpu()
    num_targets, num_sentences = int((lengths - 1).sum()), len(lengths)
    lstm, hidden = decoder.lstm, decoder.hidden_dim
    embed_dim = decoder.embedding.embedding_dim
    latent_in = decoder.latent_dim if decoder.z_concat_input else 0
    per_sample_token = _lstm_macs_per_step(lstm.input_size, hidden, lstm.num_layers) - 4 * hidden * (
        embed_dim + latent_in
    )
    per_sample_token += hidden * decoder.output.out_features
    per_sample = 4 * hidden * latent_in + (
        decoder.z_to_cell.in_features * decoder.z_to_cell.out_features if decoder.z_to_cell else 0
    )
    macs = _encoder_macs(model.encoder, lengths) + 4 * hidden * embed_dim * num_targets
    macs += num_samples * (per_sample * num_sentences + per_sample_token * num_targets)
    return 2 * macs


# --- timing and memory ---------------------------------------------------------------------------


class Clock:
    """Wall-clock seconds that wait for the device; the best matmul rate seen so far."""

    def __init__(self, device: torch.device, matmul_size: int):
        self.device, self.matmul_size = device, matmul_size
        self.peak_gflops = 0.0
        self.matmul_samples: list[float] = []
        # the latest ``interleaved`` call, round by round: each run's seconds and the matmul rate after
        self.last_rounds: list[dict] = []
        generator = torch.Generator(device=device).manual_seed(0)
        self._a = torch.randn(matmul_size, matmul_size, generator=generator, device=device)
        self._b = torch.randn(matmul_size, matmul_size, generator=generator, device=device)
        self._out = torch.empty_like(self._a)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, work: Callable[[], object]) -> float:
        self.sync()
        started = time.perf_counter()
        work()
        self.sync()
        return time.perf_counter() - started

    def matmul(self, repeats: int = 3) -> float:
        """The best of ``repeats`` fp32 n³ products, GFLOP/s; updates the peak."""
        flops = 2 * self._a.shape[0] ** 3
        best = min(self.time(lambda: torch.mm(self._a, self._b, out=self._out)) for _ in range(repeats + 1))
        rate = flops / best / 1e9
        self.matmul_samples.append(rate)
        self.peak_gflops = max(self.peak_gflops, rate)
        return rate

    def interleaved(self, runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
        """Best seconds of each run over ``rounds`` rounds in which the runs take turns (after one
        untimed warm-up each); a matmul measurement between rounds."""
        for work in runs.values():
            work()
        best = dict.fromkeys(runs, math.inf)
        self.last_rounds = []
        for _ in range(rounds):
            seconds = {name: self.time(work) for name, work in runs.items()}
            for name, value in seconds.items():
                best[name] = min(best[name], value)
            self.last_rounds.append({"seconds": seconds, "matmul_gflops": self.matmul()})
        return best


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Peak resident memory (MB) while the block runs, and the growth above the RSS at its start.

    On Linux the kernel's high-water mark (VmHWM) is reset at the start (``/proc/self/clear_refs``),
    so the peak is the block's own; elsewhere it is the process's peak so far (``ru_maxrss``). On
    CUDA also the peak of allocated device memory."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = self.start_mb = self.device_peak_mb = math.nan
        self.per_block = False

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")
            self.per_block = True
        except OSError:
            self.per_block = False
        self.start_mb = _rss_mb() if Path("/proc/self/statm").exists() else math.nan
        return self

    def __exit__(self, *exc):
        status = Path("/proc/self/status")
        found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
        if found:
            self.peak_mb = int(found.group(1)) / 1024
        else:
            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if self.device.type == "cuda":
            self.device_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        return False

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb

    def record(self) -> dict:
        record = {"peak_rss_mb": self.peak_mb, "rss_growth_mb": self.growth_mb, "peak_is_per_block": self.per_block}
        if self.device.type == "cuda":
            record["peak_device_mb"] = self.device_peak_mb
        return record


# --- data and models -----------------------------------------------------------------------------


@dataclass
class Corpus:
    name: str
    data: DataConfig
    vocab: object
    train: EncodedSplit
    test: EncodedSplit


def _load_corpus(name: str, data: DataConfig) -> Corpus:
    train_text = load_text(data, "train")
    vocab = build_vocab(data, train_text)
    train = encode_split(data, "train", vocab, train_text)
    test = encode_split(data, "test", vocab)
    log.info("%s: vocabulary %d, train %d sentences, test %d", name, len(vocab), len(train), len(test))
    return Corpus(name, data, vocab, train, test)


def _write_lines(path: Path, lines) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def _synthetic_base(directory: Path, sentences: int) -> None:
    """A small random corpus (tests): ``sentences`` lines of 3–14 words over 40 words."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    for split, count in (("train", sentences), ("valid", sentences // 5), ("test", sentences // 5)):
        lines = (" ".join(rng.choices(words, k=rng.randint(3, 14))) for _ in range(count))
        _write_lines(directory / f"{split}.txt", lines)


def _scaled_corpus(base: DataConfig, directory: Path, scale: int) -> DataConfig:
    """``scale`` × the base corpus: each split's sentences drawn with replacement (seeded)."""
    rng = random.Random(0)
    for split in ("train", "valid", "test"):
        lines = [line for line in load_text(base, split)["text"] if line.strip()]
        _write_lines(directory / f"{split}.txt", (rng.choice(lines) for _ in range(scale * len(lines))))
    return DataConfig(dataset="files", root=str(directory), cache_dir=str(directory / "cache"))


def vae_spec(sizes: Sizes, decoder: dict | None = None, encoder_hidden: int | None = None) -> dict:
    """He et al. 2019's LSTM VAE (recipes/_base/lstm_vae.toml) at the bench's sizes."""
    default_decoder = {
        "type": "lstm",
        "embed_dim": sizes.embed_dim,
        "hidden_dim": sizes.hidden_dim,
        "dropout_in": 0.5,
        "dropout_out": 0.5,
    }
    return {
        "type": "vae",
        "latent_dim": sizes.latent_dim,
        "encoder": {"type": "lstm", "embed_dim": sizes.embed_dim, "hidden_dim": encoder_hidden or sizes.hidden_dim},
        "decoder": decoder or default_decoder,
    }


def _build(spec: dict, vocab, device: torch.device, remedies=(), seed: int = 0):
    torch.manual_seed(seed)
    return build_model(spec, vocab, list(remedies)).to(device).train()


def _optimizer(model, name: str) -> torch.optim.Optimizer:
    """What ``textvae train`` builds: SGD lr 1.0 as He et al. 2019 (no momentum), or Adam lr 1e-3."""
    return make_optimizer(model, TrainConfig(optimizer=name, lr=1.0 if name == "sgd" else ADAM_LR))


def _train_batches(corpus: Corpus, sizes: Sizes, count: int, device: torch.device) -> list[Batch]:
    """The first ``count`` batches of the seeded epoch-0 order, collated and on the device."""
    order = bucketed_batches(corpus.train.lengths, sizes.batch_size, shuffle=True, seed=0, epoch=0)
    order = list(itertools.islice(itertools.cycle(order), count))
    return [batch.to(device) for batch in iterate_batches(corpus.train, order, corpus.vocab.pad_id)]


def _toolkit_steps(
    model, optimizer, batches: list[Batch], strategy_spec: dict | None = None, inner: list[Batch] | None = None
) -> Callable[[], int]:
    """What ``textvae.train`` does per batch once it is collated: the strategy's step (``standard``
    unless given) and the running sums of the loop. Returns a function that makes one pass over
    ``batches`` and returns the target tokens of every update it made: aggressive training's
    inner updates draw their batches from ``inner`` (default: ``batches``) in turn."""
    strategy = registry.build("strategy", strategy_spec or {"type": "standard"}, "strategy")
    pool = itertools.cycle(inner or batches)
    token_counts = [batch.num_target_tokens for batch in batches]
    progress = {"step": 0, "inner_tokens": 0}

    def inner_batch() -> Batch:
        batch = next(pool)
        progress["inner_tokens"] += batch.num_target_tokens
        return batch

    def run() -> int:
        window = TrainWindow()
        progress["inner_tokens"] = 0
        for batch, tokens in zip(batches, token_counts, strict=True):
            context = StepContext(model, optimizer, 5.0, progress["step"], len(batches), inner_batch)
            terms, updated = strategy.train_step(context, batch)
            progress["step"] += int(updated)
            window.add(terms, len(batch), tokens)
        return sum(token_counts) + progress["inner_tokens"]

    return run


def _count_updates(optimizer: torch.optim.Optimizer) -> Callable[[], int]:
    """A counter of ``optimizer.step`` calls (aggressive training makes several per batch)."""
    calls = {"count": 0}
    optimizer.register_step_post_hook(lambda *_: calls.__setitem__("count", calls["count"] + 1))
    return lambda: calls["count"]


def _load_reference_module(name: str):
    path = BENCHMARKS / f"{name}.py"
    if not path.is_file():
        raise TextVAEError(
            f"textvae bench compares with the reference implementations in {BENCHMARKS}, which is not there "
            "(an installed copy has no benchmarks/ folder): run it from a source checkout (pip install -e .)"
        )
    spec = importlib.util.spec_from_file_location(f"textvae_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- sections ------------------------------------------------------------------------------------


def bench_training(clock: Clock, corpus: Corpus, sizes: Sizes, reference) -> dict:
    """Toolkit step vs the plain-PyTorch reference, SGD then Adam, same weights and batches."""
    device = clock.device
    batches = _train_batches(corpus, sizes, sizes.train_steps, device)
    tokens = sum(b.num_target_tokens for b in batches)
    results = {}
    for name in ("sgd", "adam"):
        model = _build(vae_spec(sizes), corpus.vocab, device)
        flops = sum(train_flops(model, b) for b in batches)
        twin = reference.ReferenceVAE.like(model)
        toolkit_run = _toolkit_steps(model, _optimizer(model, name), batches)
        twin_optimizer = reference.make_optimizer(twin, name, 1.0 if name == "sgd" else ADAM_LR)

        def reference_run(twin=twin, twin_optimizer=twin_optimizer):
            for batch in batches:
                reference.train_step(twin, twin_optimizer, batch.tokens, batch.lengths, 5.0)

        best = clock.interleaved({"toolkit": toolkit_run, "reference": reference_run}, sizes.rounds)
        # each round's FLOP/s over the matmul rate measured right after it: the machine's state shared
        round_ratios = [flops / r["seconds"]["toolkit"] / 1e9 / r["matmul_gflops"] for r in clock.last_rounds]
        results[name] = {
            "tokens": tokens,
            "steps": len(batches),
            "flops": flops,
            "seconds": best["toolkit"],
            "tokens_per_s": tokens / best["toolkit"],
            "gflops": flops / best["toolkit"] / 1e9,
            "reference_seconds": best["reference"],
            "reference_tokens_per_s": tokens / best["reference"],
            "round_ratios": round_ratios,
            "median_round_ratio": statistics.median(round_ratios),
        }
        log.info(
            "training %s: %.0f tokens/s (%.1f GFLOP/s), reference %.0f tokens/s",
            name,
            results[name]["tokens_per_s"],
            results[name]["gflops"],
            results[name]["reference_tokens_per_s"],
        )
    collate_seconds = clock.time(
        lambda: list(iterate_batches(corpus.train, [b.indices.cpu().numpy() for b in batches], corpus.vocab.pad_id))
    )
    results["collate_ms_per_batch"] = 1e3 * collate_seconds / len(batches)
    return results


def bench_remedies(clock: Clock, corpus: Corpus, sizes: Sizes) -> dict:
    """Step time of the remedy stack and of IAF against the plain VAE step (SGD, same batches); time
    per update of aggressive training (its steps are several updates long, timed on their own)."""
    device = clock.device
    batches = _train_batches(corpus, sizes, sizes.remedy_steps, device)
    runs = {}
    for name, remedies in (("plain", ()), ("remedy_stack", REMEDY_STACK), ("iaf", IAF)):
        model = _build(vae_spec(sizes), corpus.vocab, device, remedies)
        runs[name] = _toolkit_steps(model, _optimizer(model, "sgd"), batches)
    best = clock.interleaved(runs, sizes.rounds)
    model = _build(vae_spec(sizes), corpus.vocab, device)
    optimizer = _optimizer(model, "sgd")
    updates = _count_updates(optimizer)
    aggressive = _toolkit_steps(model, optimizer, batches[: sizes.aggressive_steps], AGGRESSIVE, inner=batches)
    aggressive()  # warm-up
    before = updates()
    tokens = []
    aggressive_seconds = clock.time(lambda: tokens.append(aggressive()))
    aggressive_updates = updates() - before
    plain_tokens = sum(b.num_target_tokens for b in batches)
    plain_step = best["plain"] / len(batches)
    return {
        "steps": len(batches),
        "plain_seconds": best["plain"],
        "remedy_stack_seconds": best["remedy_stack"],
        "remedy_stack_step_ratio": best["remedy_stack"] / best["plain"],
        "iaf_seconds": best["iaf"],
        "iaf_step_ratio": best["iaf"] / best["plain"],
        "aggressive_steps": sizes.aggressive_steps,
        "aggressive_seconds": aggressive_seconds,
        "aggressive_step_ratio": aggressive_seconds / sizes.aggressive_steps / plain_step,
        "aggressive_updates_per_step": aggressive_updates / sizes.aggressive_steps,
        # seconds per target token of an update (inner batches differ in length from the plain ones)
        "aggressive_update_ratio": (aggressive_seconds / tokens[0]) / (best["plain"] / plain_tokens),
    }


def _iw_batches(corpus: Corpus, sizes: Sizes, split: EncodedSplit | None = None) -> list[Batch]:
    """``iw_batches`` batches drawn (seeded) from the test split sorted by length and cut into
    batches, as ``textvae eval`` batches a whole split: sentences of one batch have about the same
    length, and the drawn batches spread over the lengths."""
    split = corpus.test if split is None else split
    order = bucketed_batches(split.lengths, sizes.iw_batch_size, shuffle=False)
    drawn = np.random.default_rng(0).choice(len(order), size=min(sizes.iw_batches, len(order)), replace=False)
    return list(iterate_batches(split, [order[i] for i in sorted(drawn)], corpus.vocab.pad_id))


@torch.no_grad()
def _toolkit_iw(model, batches: list[Batch], num_samples: int, chunk: int, device) -> torch.Tensor:
    """IW-NLL per sentence as ``textvae.evaluate`` computes it (in eval mode)."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    values = []
    for batch in batches:
        batch = batch.to(device)
        log_weights = importance_log_weights(model, batch, model.infer(batch), num_samples, chunk, generator)
        values.append(-metrics.iw_log_likelihood(log_weights))
    return torch.cat(values)


def bench_iw(clock: Clock, corpus: Corpus, sizes: Sizes, naive) -> dict:
    """IW-NLL sentences/s and FLOP/s against the one-sentence-at-a-time baseline, batch by batch in
    turns (each after an untimed chunk of warm-up), each batch timed ``iw_repeats`` times and its
    best time kept, a matmul measurement after each timing."""
    device = clock.device
    model = _build(vae_spec(sizes), corpus.vocab, device).eval()
    twin = _load_reference_module("reference_step").ReferenceVAE.like(model).eval()
    batches = _iw_batches(corpus, sizes)
    sentences = [[b.tokens[i, : int(b.lengths[i])].to(device) for i in range(len(b))] for b in batches]
    _toolkit_iw(model, batches[:1], sizes.iw_chunk, sizes.iw_chunk, device)
    naive.iw_nll(twin, sentences[0][:1], sizes.iw_chunk, sizes.iw_chunk)
    seconds = naive_seconds = 0.0
    toolkit_nll, naive_nll = [], []
    for batch, rows in zip(batches, sentences, strict=True):
        best = best_naive = math.inf
        for _ in range(sizes.iw_repeats):
            best = min(
                best,
                clock.time(
                    lambda batch=batch: toolkit_nll.append(_toolkit_iw(model, [batch], *_iw_work(sizes), device))
                ),
            )
            best_naive = min(
                best_naive, clock.time(lambda rows=rows: naive_nll.append(naive.iw_nll(twin, rows, *_iw_work(sizes))))
            )
            clock.matmul()
        seconds += best
        naive_seconds += best_naive
    count = sum(len(b) for b in batches)
    flops = sum(iw_flops(model, b, sizes.iw_samples) for b in batches)
    log.info("IW-NLL K=%d: %.3f sentences/s, naive %.3f", sizes.iw_samples, count / seconds, count / naive_seconds)
    return {
        "sentences": count,
        "tokens": sum(b.num_target_tokens for b in batches),
        "iw_samples": sizes.iw_samples,
        "iw_chunk": sizes.iw_chunk,
        "batch_size": sizes.iw_batch_size,
        "seconds": seconds,
        "sentences_per_s": count / seconds,
        "flops": flops,
        "gflops": flops / seconds / 1e9,
        "naive_seconds": naive_seconds,
        "naive_sentences_per_s": count / naive_seconds,
        # the same sentences with independent samples: equal up to Monte-Carlo noise
        "mean_iw_nll": float(torch.cat(toolkit_nll).mean()),
        "mean_iw_nll_naive": float(torch.cat(naive_nll).mean()),
    }


def _iw_work(sizes: Sizes) -> tuple[int, int]:
    return sizes.iw_samples, sizes.iw_chunk


def bench_decoders(clock: Clock, corpus: Corpus, sizes: Sizes) -> dict:
    """Training tokens/s and FLOP/s of the LSTM decoder and each dilated-CNN preset at equal width."""
    device = clock.device
    batches = _train_batches(corpus, sizes, sizes.cnn_steps, device)
    tokens = sum(b.num_target_tokens for b in batches)
    decoders = {"lstm": {"type": "lstm", "embed_dim": sizes.embed_dim, "hidden_dim": sizes.cnn_width}}
    for preset in PRESETS:
        decoders[preset] = {
            "type": "dilated_cnn",
            "preset": preset,
            "embed_dim": sizes.embed_dim,
            "channels": sizes.cnn_width,
        }
    runs, flops = {}, {}
    for name, decoder in decoders.items():
        model = _build(vae_spec(sizes, decoder, sizes.cnn_encoder_hidden), corpus.vocab, device)
        flops[name] = sum(train_flops(model, b) for b in batches)
        runs[name] = _toolkit_steps(model, _optimizer(model, "adam"), batches)
    best = clock.interleaved(runs, sizes.rounds)
    return {
        name: {
            "tokens_per_s": tokens / best[name],
            "gflops": flops[name] / best[name] / 1e9,
            "flops_per_token": flops[name] / tokens,
        }
        for name in decoders
    }


def _batches_of_length(split: EncodedSplit, length: int, batch_size: int, count: int, pad_id: int) -> list[Batch]:
    """``count`` batches of ``batch_size`` sentences of exactly ``length`` tokens (seeded draw): the
    same shapes on every corpus, so that memory measured on two corpora differs only by the corpus."""
    candidates = np.flatnonzero(split.lengths == length)
    rng = np.random.default_rng(0)
    order = [rng.choice(candidates, size=min(batch_size, len(candidates)), replace=False) for _ in range(count)]
    return list(iterate_batches(split, order, pad_id))


def _memory_length(split: EncodedSplit, batch_size: int) -> int:
    """A long sentence length (the 95th percentile) of which the split has at least a batch."""
    counts = np.bincount(split.lengths)
    lengths = [length for length in range(len(counts)) if counts[length] >= batch_size]
    target = np.percentile(split.lengths, 95)
    return min(lengths, key=lambda length: (abs(length - target), -length)) if lengths else int(split.lengths.max())


def bench_memory(corpora: dict[str, Corpus], sizes: Sizes, device: torch.device) -> dict:
    """Peak RSS while training (``memory_steps`` steps) and while evaluating IW-NLL (one batch), on
    the base corpus and on the scaled one, with batches of the same shapes on both (sentences of one
    long length, ``_memory_length`` of the base corpus); IW-NLL at a small K and at the bench's K,
    both in chunks of the small K's size, after one unmeasured pass at the small K (it makes the
    reused logit buffers and lets the allocator's heap settle at its working size: without it the
    heap's growth over the first passes showed as a peak ~40–100 MB higher for whichever K ran
    second). Smaller before larger, so that growth with K would show as a higher peak."""
    results = {}
    base = next(iter(corpora.values()))
    train_length = _memory_length(base.train, sizes.batch_size)
    test_length = _memory_length(base.test, sizes.iw_batch_size)
    # one chunk size for every IW run, no larger than the small K: memory must not depend on K
    memory_chunk = min(sizes.iw_chunk, sizes.iw_small_samples)
    for name, corpus in corpora.items():
        batches = _batches_of_length(
            corpus.train, train_length, sizes.batch_size, sizes.memory_steps, corpus.vocab.pad_id
        )
        batches = [batch.to(device) for batch in batches]
        model = _build(vae_spec(sizes), corpus.vocab, device)
        run = _toolkit_steps(model, _optimizer(model, "sgd"), batches)
        with PeakMemory(device) as memory:
            run()
        results[f"train_{name}"] = memory.record()
        del model, run, batches
    warm_up = _build(vae_spec(sizes), base.vocab, device).eval()
    _toolkit_iw(
        warm_up,
        _batches_of_length(base.test, test_length, sizes.iw_batch_size, 1, base.vocab.pad_id),
        sizes.iw_small_samples,
        memory_chunk,
        device,
    )
    del warm_up
    for key, (name, corpus), num_samples in (
        ("iw_small_k", next(iter(corpora.items())), sizes.iw_small_samples),
        *((f"iw_{name}", (name, corpus), sizes.iw_samples) for name, corpus in corpora.items()),
    ):
        model = _build(vae_spec(sizes), corpus.vocab, device).eval()
        batch = _batches_of_length(corpus.test, test_length, sizes.iw_batch_size, 1, corpus.vocab.pad_id)
        with PeakMemory(device) as memory:
            _toolkit_iw(model, batch, num_samples, memory_chunk, device)
        results[key] = {**memory.record(), "iw_samples": num_samples, "corpus": name}
    results["train_sentence_length"], results["iw_sentence_length"] = train_length, test_length
    results["iw_chunk"] = memory_chunk
    return results


# --- the command ---------------------------------------------------------------------------------


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "textvae": textvae.__version__,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def run(
    sizes: Sizes = FULL,
    *,
    device: str = "cpu",
    threads: int | None = None,
    data_root: Path | None = None,
) -> dict:
    """Every measurement of the table; returns the results (``table`` renders them)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TextVAEError("--device cuda: CUDA is not available on this machine")
    if threads is not None:
        torch.set_num_threads(threads)
    reference = _load_reference_module("reference_step")
    naive = _load_reference_module("naive_iw_nll")
    started = time.perf_counter()
    info = machine(device)
    with tempfile.TemporaryDirectory(prefix="textvae-bench-") as scratch:
        scratch = Path(scratch)
        if sizes.synthetic_base:
            (scratch / "base").mkdir()
            _synthetic_base(scratch / "base", sizes.synthetic_base)
            base_data = DataConfig(dataset="files", root=str(scratch / "base"), cache_dir=str(scratch / "base_cache"))
            base_name = "synthetic"
        else:
            root = Path(data_root) if data_root is not None else DEFAULT_PTB
            if not (root / "ptb.train.txt").is_file():
                raise TextVAEError(
                    f"{root}: no ptb.train.txt; pass --data-root DIR with the PTB files (data_scripts/prepare_ptb.py)"
                )
            base_data = DataConfig(dataset="ptb", root=str(root))
            base_name = "ptb"
        (scratch / "scaled").mkdir()
        scaled_data = _scaled_corpus(base_data, scratch / "scaled", sizes.corpus_scale)
        scaled_name = f"{base_name}_x{sizes.corpus_scale}"
        corpora = {base_name: _load_corpus(base_name, base_data), scaled_name: _load_corpus(scaled_name, scaled_data)}
        base = corpora[base_name]
        # a GPU finishes a 2048³ product in well under a millisecond: time a larger one there
        clock = Clock(device, sizes.matmul_size if device.type == "cpu" else max(sizes.matmul_size, 8192))
        clock.matmul()
        section_seconds = {"data": time.perf_counter() - started}

        def section(name: str, measure: Callable[[], dict]) -> dict:
            section_started = time.perf_counter()
            result = measure()
            section_seconds[name] = time.perf_counter() - section_started
            log.info("bench: %s done in %.0f s", name, section_seconds[name])
            return result

        memory = section("memory", lambda: bench_memory(corpora, sizes, device))
        training = section("training", lambda: bench_training(clock, base, sizes, reference))
        remedies = section("remedies", lambda: bench_remedies(clock, base, sizes))
        iw = section("iw_nll", lambda: bench_iw(clock, base, sizes, naive))
        decoders = section("decoders", lambda: bench_decoders(clock, base, sizes))
    sgd, adam = training["sgd"], training["adam"]
    results = {
        "matmul_gflops": clock.peak_gflops,
        "train_tokens_per_s": sgd["tokens_per_s"],
        "train_flops_per_token": sgd["flops"] / sgd["tokens"],
        "train_gflops": sgd["gflops"],
        "train_peak_fraction": sgd["gflops"] / clock.peak_gflops,
        "train_adjacent_matmul_fraction": sgd["median_round_ratio"],
        "train_tokens_per_s_reference": sgd["reference_tokens_per_s"],
        "train_reference_ratio": sgd["tokens_per_s"] / sgd["reference_tokens_per_s"],
        "train_adam_tokens_per_s": adam["tokens_per_s"],
        "train_adam_gflops": adam["gflops"],
        "train_adam_peak_fraction": adam["gflops"] / clock.peak_gflops,
        "train_adam_tokens_per_s_reference": adam["reference_tokens_per_s"],
        "train_adam_reference_ratio": adam["tokens_per_s"] / adam["reference_tokens_per_s"],
        "collate_ms_per_batch": training["collate_ms_per_batch"],
        "remedy_stack_step_ratio": remedies["remedy_stack_step_ratio"],
        "iaf_step_ratio": remedies["iaf_step_ratio"],
        "aggressive_step_ratio": remedies["aggressive_step_ratio"],
        "aggressive_update_ratio": remedies["aggressive_update_ratio"],
        "aggressive_updates_per_step": remedies["aggressive_updates_per_step"],
        "iw_nll_sents_per_s": iw["sentences_per_s"],
        "iw_nll_sents_per_s_naive": iw["naive_sentences_per_s"],
        "iw_nll_speedup": iw["sentences_per_s"] / iw["naive_sentences_per_s"],
        "iw_nll_gflops": iw["gflops"],
        "iw_nll_peak_fraction": iw["gflops"] / clock.peak_gflops,
        "cnn_tokens_per_s": {name: row["tokens_per_s"] for name, row in decoders.items() if name != "lstm"},
        "cnn_gflops": {name: row["gflops"] for name, row in decoders.items() if name != "lstm"},
        "lstm_tokens_per_s": decoders["lstm"]["tokens_per_s"],
        "lstm_gflops": decoders["lstm"]["gflops"],
        "peak_rss_mb_train": memory[f"train_{base_name}"]["peak_rss_mb"],
        "peak_rss_mb_train_scaled": memory[f"train_{scaled_name}"]["peak_rss_mb"],
        "peak_rss_mb_eval": memory[f"iw_{base_name}"]["peak_rss_mb"],
        "peak_rss_mb_eval_scaled": memory[f"iw_{scaled_name}"]["peak_rss_mb"],
        "iw_peak_rss_mb_small_k": memory["iw_small_k"]["peak_rss_mb"],
        "iw_peak_rss_mb_large_k": memory[f"iw_{base_name}"]["peak_rss_mb"],
        "details": {
            "training": training,
            "remedies": remedies,
            "iw": iw,
            "decoders": decoders,
            "memory": memory,
            "matmul_samples_gflops": clock.matmul_samples,
            "corpus": base_name,
            "corpus_scale": sizes.corpus_scale,
            "matmul_size": clock.matmul_size,
            "flop_count": "2 × multiply–accumulates of every matrix product, real tokens; training ×3",
            "sizes": asdict(sizes),
            "seconds": time.perf_counter() - started,
            "section_seconds": section_seconds,
        },
        "machine": {**info, "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
    }
    return results


def _gflops(value: float) -> str:
    return f"{value:,.1f} GFLOP/s" if value >= 1 else f"{value:.3g} GFLOP/s"


def _ratio_row(figure: str, value: str, baseline: str, ratio: float, target: str = "") -> str:
    return f"| {figure} | {value} | {baseline} | {ratio:.2f} | {target} |"


def table(results: dict) -> str:
    """The Markdown table: figure, baseline, ratio (and the issue's target where there is one)."""
    peak = results["matmul_gflops"]
    details = results["details"]
    sizes = details["sizes"]
    scale = details["corpus_scale"]
    rows = ["| figure | value | baseline | ratio | target |", "|---|---|---|---|---|"]
    rows.append(f"| matmul peak, fp32 {details['matmul_size']}³ | {_gflops(peak)} | | | |")
    for name, label in (("", "SGD"), ("adam_", "Adam")):
        gflops = results[f"train_{name}gflops"]
        rows.append(
            _ratio_row(
                f"training, {label}: FLOP/s ({results['train_flops_per_token'] / 1e6:.1f} MFLOP/token)",
                _gflops(gflops),
                "matmul peak",
                gflops / peak,
                f"≥ {TARGETS['train']}" if not name else "",
            )
        )
        if not name:
            training = details["training"]["sgd"]
            rows.append(
                _ratio_row(
                    f"training, {label}: FLOP/s, each round beside the matmul right after it "
                    f"(median of {len(training['round_ratios'])})",
                    "",
                    "that matmul",
                    training["median_round_ratio"],
                )
            )
        rows.append(
            _ratio_row(
                f"training, {label}: tokens/s",
                f"{results[f'train_{name}tokens_per_s']:,.0f}",
                f"{results[f'train_{name}tokens_per_s_reference']:,.0f} (plain PyTorch)",
                results[f"train_{name}reference_ratio"],
                f"≥ {TARGETS['reference']}",
            )
        )
    remedies = details["remedies"]
    step_ms = 1e3 * remedies["plain_seconds"] / remedies["steps"]
    for key, label in (("remedy_stack", "remedy stack (annealing, word dropout, free bits, BoW)"), ("iaf", "IAF")):
        target = f"≤ {TARGETS['remedy_stack']}" if key == "remedy_stack" else ""
        ms = 1e3 * remedies[f"{key}_seconds"] / remedies["steps"]
        rows.append(
            _ratio_row(f"{label}: step time", f"{ms:,.0f} ms", f"{step_ms:,.0f} ms (plain VAE)", ms / step_ms, target)
        )
    update_ms = step_ms * remedies["aggressive_update_ratio"]
    rows.append(
        _ratio_row(
            f"aggressive: time per update of a mean batch ({remedies['aggressive_updates_per_step']:.1f} updates/step)",
            f"{update_ms:,.0f} ms",
            f"{step_ms:,.0f} ms (plain VAE step)",
            remedies["aggressive_update_ratio"],
        )
    )
    iw = details["iw"]
    rows.append(
        _ratio_row(
            f"IW-NLL, K = {iw['iw_samples']}: sentences/s",
            f"{results['iw_nll_sents_per_s']:,.3f}",
            f"{results['iw_nll_sents_per_s_naive']:,.3f} (one sentence at a time)",
            results["iw_nll_speedup"],
        )
    )
    rows.append(
        _ratio_row(
            f"IW-NLL, K = {iw['iw_samples']}: FLOP/s",
            _gflops(results["iw_nll_gflops"]),
            "matmul peak",
            results["iw_nll_peak_fraction"],
            f"≥ {TARGETS['iw']}",
        )
    )
    decoders = details["decoders"]
    lstm = decoders["lstm"]
    rows.append(
        _ratio_row(
            f"decoder LSTM (width {sizes['cnn_width']}): FLOP/s",
            f"{_gflops(lstm['gflops'])} ({lstm['tokens_per_s']:,.0f} tokens/s)",
            "matmul peak",
            lstm["gflops"] / peak,
        )
    )
    for name, row in decoders.items():
        if name == "lstm":
            continue
        rows.append(
            _ratio_row(
                f"decoder {name.upper()} (width {sizes['cnn_width']}): FLOP/s",
                f"{_gflops(row['gflops'])} ({row['tokens_per_s']:,.0f} tokens/s)",
                f"{_gflops(lstm['gflops'])} (LSTM)",
                row["gflops"] / lstm["gflops"],
                "≥ 1",
            )
        )
    corpus = details["corpus"].upper() if details["corpus"] == "ptb" else details["corpus"]
    memory = details["memory"]
    for key, label in (
        ("train", f"training ({memory['train_sentence_length']}-token sentences)"),
        ("eval", f"IW-NLL K = {iw['iw_samples']} ({memory['iw_sentence_length']}-token sentences)"),
    ):
        small, large = results[f"peak_rss_mb_{key}"], results[f"peak_rss_mb_{key}_scaled"]
        rows.append(
            _ratio_row(
                f"peak RSS, {label}, {scale}× corpus", f"{large:,.0f} MB", f"{small:,.0f} MB ({corpus})", large / small
            )
        )
    small_k, large_k = results["iw_peak_rss_mb_small_k"], results["iw_peak_rss_mb_large_k"]
    rows.append(
        _ratio_row(
            f"peak RSS, IW-NLL K = {iw['iw_samples']} (chunks of {memory['iw_chunk']})",
            f"{large_k:,.0f} MB",
            f"{small_k:,.0f} MB (K = {sizes['iw_small_samples']})",
            large_k / small_k,
        )
    )
    info = results["machine"]
    footer = (
        f"{info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, {info['threads']} threads, "
        f"device {info.get('device_name', info['device'])}; load average {info['load_average_1min']:.2f} at the "
        f"start, {info['load_average_1min_end']:.2f} at the end; data loading (collation) "
        f"{results['collate_ms_per_batch']:.1f} ms per batch; {details['seconds']:.0f} s in all."
    )
    return "\n".join(rows) + "\n\n" + footer


def command(args) -> None:
    """``textvae bench``: run, print the table, write the JSON."""
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        raise TextVAEError(f"{args.json}: expected a file name in an existing directory")
    sizes = SIZES[args.sizes] if args.sizes else (QUICK if args.quick else FULL)
    results = run(sizes, device=args.device, threads=args.threads, data_root=args.data_root)
    sys.stdout.write(table(results) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        sys.stdout.write(f"results: {args.json}\n")
