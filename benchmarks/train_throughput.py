"""Training and IW-NLL throughput of the PTB LSTM VAE on this machine; prints a Markdown table.

    python benchmarks/train_throughput.py [--steps 60] [--iw-sentences 64] [--json OUT]

The model is ``recipes/_base/lstm_vae.toml`` (He et al. 2019's LSTM VAE: embedding 256, latent 32,
batch 32, decoder dropout 0.5 in and out, SGD lr 1.0, gradient clip 5) with both LSTMs widened to
hidden 512 by ``--set``-style overrides, on the PTB vocabulary built from ptb.train.txt (9,999
words incl. <unk>, plus pad/BOS/EOS). Measured on the CPU:

1. training tokens/s, SGD and then Adam, each from the same initial weights on the same shuffled
   PTB train batches: ``--warmup`` untimed steps, then ``--steps`` timed ones. A step is what
   ``textvae.train`` does (collate, forward, honest terms, negative-ELBO loss, backward, clip,
   optimizer step); tokens are target tokens, words + EOS;
2. IW-NLL sentences/s: the encoder once, then K = 500 importance samples in chunks of 100
   through the decoder (``textvae.evaluate.importance_log_weights``), on a seeded subset of
   ``--iw-sentences`` PTB test sentences in length-bucketed batches of 32, in eval mode;
3. the torch thread count and the CPU model (from /proc/cpuinfo).

Weights are untrained; throughput does not depend on their values. Timings use
``time.perf_counter`` and are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from itertools import cycle, islice
from pathlib import Path

import torch

import textvae
from textvae import metrics
from textvae.config import Recipe, load_recipe
from textvae.data.batching import Batch, bucketed_batches, iterate_batches
from textvae.data.corpus import EncodedSplit, build_vocab, encode_split, load_text
from textvae.evaluate import importance_log_weights, select_sentences
from textvae.models import build_model
from textvae.objective import Objective, elbo_terms

log = logging.getLogger("train_throughput")

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "_base" / "lstm_vae.toml"
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data" / "ptb"
BENCH_OVERRIDES = ("model.encoder.hidden_dim=512", "model.decoder.hidden_dim=512")
ADAM_LR = 1e-3  # the recipe's lr 1.0 is an SGD rate; Adam gets its usual default
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}


def cpu_model_name() -> str:
    """The ``model name`` line of /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _load_average() -> float | None:
    """The 1-minute load average: other processes on the machine make every number here smaller."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    cfg = recipe.train
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_throughput(recipe: Recipe, vocab, train_split: EncodedSplit, *, warmup: int, steps: int) -> dict:
    """Untimed ``warmup`` steps, then ``steps`` timed training steps; target tokens per second."""
    cfg = recipe.train
    torch.manual_seed(cfg.seed)
    model = build_model(recipe.model, vocab).train()
    optimizer = make_optimizer(model, recipe)
    order = bucketed_batches(train_split.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=0)
    batches = iterate_batches(train_split, list(islice(cycle(order), warmup + steps)), vocab.pad_id)

    def step(batch: Batch) -> float:
        terms = elbo_terms(model(batch))
        loss = Objective.negative_elbo(terms).loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        return float(loss.detach())

    for batch in islice(batches, warmup):
        step(batch)
    tokens = sentences = 0
    started = time.perf_counter()
    for batch in batches:
        loss = step(batch)
        tokens += batch.num_target_tokens
        sentences += len(batch)
    seconds = time.perf_counter() - started
    log.info("%s: %d steps in %.1fs, last loss %.2f", cfg.optimizer, steps, seconds, loss)
    return {
        "optimizer": cfg.optimizer,
        "lr": cfg.lr,
        "warmup_steps": warmup,
        "steps": steps,
        "sentences": sentences,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "steps_per_s": steps / seconds,
        "final_loss": loss,
    }


@torch.no_grad()
def iw_throughput(recipe: Recipe, vocab, test_split: EncodedSplit, *, num_sentences: int) -> dict:
    """IW-NLL (K = eval.iw_samples, chunks of eval.iw_chunk_size) on a seeded subset of test sentences."""
    cfg = recipe.eval
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe.model, vocab).eval()
    chosen = select_sentences(test_split, num_sentences, cfg.seed)
    batches = [chosen[b] for b in bucketed_batches(test_split.lengths[chosen], cfg.batch_size, shuffle=False)]
    generator = torch.Generator().manual_seed(cfg.seed)

    def iw_nll(batch: Batch, num_samples: int) -> torch.Tensor:
        inference = model.infer(batch)  # q(z|x) with (B, D) parameters and the encoder context
        log_weights = importance_log_weights(model, batch, inference, num_samples, cfg.iw_chunk_size, generator)
        return -metrics.iw_log_likelihood(log_weights)  # (B,)

    warmup_batch = next(iterate_batches(test_split, batches[:1], vocab.pad_id))
    iw_nll(warmup_batch, cfg.iw_chunk_size)  # one untimed chunk
    sentences = tokens = 0
    started = time.perf_counter()
    for batch in iterate_batches(test_split, batches, vocab.pad_id):
        iw_nll(batch, cfg.iw_samples)
        sentences += len(batch)
        tokens += batch.num_target_tokens
    seconds = time.perf_counter() - started
    log.info("IW-NLL K=%d: %d sentences in %.1fs", cfg.iw_samples, sentences, seconds)
    return {
        "iw_samples": cfg.iw_samples,
        "iw_chunk_size": cfg.iw_chunk_size,
        "batch_size": cfg.batch_size,
        "sentences": sentences,
        "tokens": tokens,
        "seconds": seconds,
        "sentences_per_s": sentences / seconds,
        "decoded_tokens_per_s": tokens * cfg.iw_samples / seconds,
    }


def markdown_table(results: dict) -> str:
    recipe, model = results["recipes"]["sgd"], results["model"]
    decoder = recipe["model"]["decoder"]
    network = f"LSTM VAE E{model['embed_dim']} H{model['hidden_dim']} D{model['latent_dim']}, V{results['vocab_size']}"
    training = (
        f"{network}, B{recipe['train']['batch_size']}, dropout {decoder['dropout_in']:g}/{decoder['dropout_out']:g}, "
        f"clip {recipe['train']['grad_clip']}"
    )
    rows = ["| benchmark | setting | timed | seconds | throughput |", "|---|---|---|---|---|"]
    for run in results["train"]:
        rows.append(
            f"| train, {OPTIMIZER_NAMES[run['optimizer']]} lr {run['lr']:g} | {training}, PTB train "
            f"| {run['steps']} steps, {run['tokens']:,} tokens | {run['seconds']:.1f} "
            f"| {run['tokens_per_s']:,.0f} tokens/s ({run['steps_per_s']:.2f} steps/s) |"
        )
    iw = results["iw"]
    rows.append(
        f"| IW-NLL, K={iw['iw_samples']} (chunk {iw['iw_chunk_size']}) | {network}, B{iw['batch_size']}, PTB test, "
        f"eval mode | {iw['sentences']} sentences, {iw['tokens']:,} tokens | {iw['seconds']:.1f} "
        f"| {iw['sentences_per_s']:.3f} sentences/s ({iw['decoded_tokens_per_s']:,.0f} decoded tokens/s) |"
    )
    load = {k: "n/a" if v is None else f"{v:.2f}" for k, v in results["load_average_1min"].items()}
    footer = (
        f"CPU: {results['cpu']}; torch {results['torch']} with {results['torch_threads']} threads "
        f"(logical CPUs: {results['logical_cpus']}); 1-min load average {load['start']} at start, "
        f"{load['end']} at end."
    )
    return "\n".join(rows) + "\n\n" + footer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="directory with ptb.*.txt")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per optimizer")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps before timing")
    parser.add_argument("--iw-sentences", type=int, default=64, help="PTB test sentences for the IW-NLL timing")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the numbers here")
    args = parser.parse_args(argv)
    for name in ("steps", "iw_sentences"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if args.warmup < 0:
        parser.error("--warmup must be ≥ 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    overrides = ["data.dataset=ptb", f"data.root={json.dumps(str(args.data_root))}", *BENCH_OVERRIDES, *args.overrides]
    sgd = load_recipe(RECIPE, overrides)
    adam = load_recipe(RECIPE, [*overrides, "train.optimizer=adam", f"train.lr={ADAM_LR}"])

    train_text = load_text(sgd.data, "train")
    vocab = build_vocab(sgd.data, train_text)
    train_split = encode_split(sgd.data, "train", vocab, train_text)
    test_split = encode_split(sgd.data, "test", vocab)
    log.info("PTB: vocab %d, train %d sentences, test %d", len(vocab), len(train_split), len(test_split))

    load_start = _load_average()
    results = {
        "textvae_version": textvae.__version__,
        "recipes": {"sgd": sgd.to_dict(), "adam": adam.to_dict()},
        "overrides": overrides,
        "model": {
            "embed_dim": sgd.model["decoder"]["embed_dim"],
            "hidden_dim": sgd.model["decoder"]["hidden_dim"],
            "latent_dim": sgd.model["latent_dim"],
        },
        "batch_size": sgd.train.batch_size,
        "vocab_size": len(vocab),
        "train": [
            train_throughput(recipe, vocab, train_split, warmup=args.warmup, steps=args.steps) for recipe in (sgd, adam)
        ],
        "iw": iw_throughput(sgd, vocab, test_split, num_sentences=args.iw_sentences),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "cpu": cpu_model_name(),
        "load_average_1min": {"start": load_start, "end": _load_average()},
    }
    print(markdown_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
