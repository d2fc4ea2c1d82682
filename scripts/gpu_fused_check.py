"""Fused ablation rows on a GPU: does one fused step of R rows beat R separate rows, and is it the same.

    PYTHONPATH=. python scripts/gpu_fused_check.py --out fused_check.json
    PYTHONPATH=. python scripts/gpu_fused_check.py --device cpu --tiny --out /tmp/check.json   # code paths only

Not measured on a GPU yet (written 2026-12-07 on a CPU-only machine). What it does, on synthetic
batches of one length (PTB shapes: vocabulary 10,002, embedding and hidden 256, latent 32, batch
32, 24 tokens; ``--tiny`` shrinks them):

- ``equal``: R = 4 rows (the plain VAE, annealing, word dropout, free bits) one step fused and one
  step each alone, every row's noise drawn from its own generator: the largest relative difference
  of the rows' reconstruction terms (``textvae.models.fused`` against ``SequenceVAE``);
- ``timing``: ms per step of the fused step (``textvae.models.fused.step.fused_train_step``, SGD with
  clip 5) at R = 1, 4, 8, 12, uncaptured, and of one unfused row's standard step (the toolkit's
  ``StandardStrategy``), both without CUDA graphs; row-steps/s = R / (s per fused step), beside the
  committed baseline of 12 rows as 12 processes under MPS (1,460 row-steps/s of training on an
  H200, 2026-12-04) and the issue's target (2× that at R = 12);
- ``graph``: whether the fused step captures as a CUDA graph (per-row generators registered with
  the graph) and its replayed ms per step at R = 12; a failure is reported, not raised.

Every row runs in its own try/except; the table is printed and everything written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from textvae.checkpoint import atomic_write_text  # noqa: E402
from textvae.data.batching import collate  # noqa: E402
from textvae.data.vocab import Vocab  # noqa: E402
from textvae.models import build_model  # noqa: E402
from textvae.models.fused.noise import RowNoise  # noqa: E402
from textvae.models.fused.optimizer import FusedOptimizer  # noqa: E402
from textvae.models.fused.remedies import RowObjective  # noqa: E402
from textvae.models.fused.step import fused_train_step  # noqa: E402
from textvae.models.fused.vae import FusedVAE  # noqa: E402
from textvae.strategies import StandardStrategy, StepContext  # noqa: E402

log = logging.getLogger("gpu_fused_check")

MPS_BASELINE = 1460.0  # row-steps/s: 12 rows as 12 processes under MPS, H200, 2026-12-04 (README)
ROW_REMEDIES = [
    [],
    [{"type": "kl_annealing", "schedule": "linear", "warmup": 1000, "start": 0.1}],
    [{"type": "word_dropout", "keep_prob": 0.5}],
    [{"type": "free_bits", "threshold": 0.25}],
]


def sizes(tiny: bool) -> dict:
    if tiny:
        return {"vocab": 30, "embed": 8, "hidden": 8, "latent": 4, "batch": 4, "length": 6}
    return {"vocab": 10_002, "embed": 256, "hidden": 256, "latent": 32, "batch": 32, "length": 24}


def model_spec(size: dict) -> dict:
    lstm = {"type": "lstm", "embed_dim": size["embed"], "hidden_dim": size["hidden"]}
    decoder = {**lstm, "dropout_in": 0.5, "dropout_out": 0.5}
    return {"type": "vae", "latent_dim": size["latent"], "encoder": lstm, "decoder": decoder}


def vocab_of(size: dict) -> Vocab:
    return Vocab(words=("<pad>", "<s>", "</s>", "<unk>", *(f"w{i}" for i in range(size["vocab"] - 4))))


def one_batch(size: dict, device: torch.device):
    """``batch`` sentences of ``length`` random words (one length: every step has the same shapes)."""
    generator = torch.Generator().manual_seed(0)
    words = torch.randint(4, size["vocab"], (size["batch"], size["length"]), generator=generator).tolist()
    return collate([[1, *row, 2] for row in words], list(range(size["batch"])), 0).to(device)


def rows_of(count: int, size: dict, device: torch.device) -> tuple[list, list]:
    """``count`` unfused rows (remedies cycling through ROW_REMEDIES) and their generators' states."""
    vocab, models, states = vocab_of(size), [], []
    for row in range(count):
        torch.manual_seed(row)
        models.append(build_model(model_spec(size), vocab, ROW_REMEDIES[row % len(ROW_REMEDIES)]).to(device).train())
        states.append(torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state())
    return models, states


def fused_parts(models, states, device):
    fused = FusedVAE.from_models(models)
    optimizer = FusedOptimizer(list(fused.parameters()), "sgd", [1.0] * len(models), [5.0] * len(models))
    return fused, optimizer, RowObjective(fused.remedies, device), RowNoise(states, device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_equal(size: dict, device: torch.device) -> dict:
    models, states = rows_of(len(ROW_REMEDIES), size, device)
    fused, _, _, noise = fused_parts(models, states, device)
    batch = one_batch(size, device)
    keep = [row.keep_prob for row in fused.remedies]
    inputs, dtype = batch.decoder_inputs, torch.float32
    drawn = noise.draw(inputs, size["latent"], fused.dims, fused.dropout, keep, fused.protected, dtype)
    out = fused(batch, drawn)
    worst = 0.0
    for row, model in enumerate(models):
        if device.type == "cuda":
            torch.cuda.set_rng_state(states[row], device)
        else:
            torch.set_rng_state(states[row])
        rec = model(batch).rec
        worst = max(worst, float(((out.rec[row] - rec).abs() / rec.abs()).max().detach()))
    return {"row": "equal R=4", "max_rel_diff": worst, "ok": worst < 1e-4}


def time_fused(count: int, size: dict, device: torch.device, steps: int) -> dict:
    models, states = rows_of(count, size, device)
    fused, optimizer, objective, noise = fused_parts(models, states, device)
    batch = one_batch(size, device)
    fused_train_step(fused, optimizer, objective, noise, batch, [0] * count, 1000)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for step in range(steps):
        fused_train_step(fused, optimizer, objective, noise, batch, [step] * count, 1000)
    synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    return {
        "row": f"timing fused R={count}",
        "ms_per_step": 1e3 * seconds,
        "row_steps_per_s": count / seconds,
        "vs_mps_baseline": count / seconds / MPS_BASELINE,
        "ok": True,
    }


def time_single(size: dict, device: torch.device, steps: int) -> dict:
    models, _ = rows_of(1, size, device)
    model = models[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    batch, strategy = one_batch(size, device), StandardStrategy()

    def step(number: int) -> None:
        strategy.train_step(StepContext(model, optimizer, 5.0, number, 1000, lambda: None), batch)

    step(0)
    synchronize(device)
    started = time.perf_counter()
    for number in range(steps):
        step(number)
    synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    return {"row": "timing one unfused row", "ms_per_step": 1e3 * seconds, "row_steps_per_s": 1 / seconds, "ok": True}


def graph_capture(size: dict, device: torch.device, steps: int) -> dict:
    if device.type != "cuda":
        return {"row": "graph R=12", "note": "n/a: CUDA graphs need a CUDA device", "ok": None}
    models, states = rows_of(12, size, device)
    fused, optimizer, objective, noise = fused_parts(models, states, device)
    batch = one_batch(size, device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            fused_train_step(fused, optimizer, objective, noise, batch, [0] * 12, 1000)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    for generator in noise.generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        fused_train_step(fused, optimizer, objective, noise, batch, [0] * 12, 1000)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        graph.replay()
    synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    return {"row": "graph R=12", "ms_per_step": 1e3 * seconds, "row_steps_per_s": 12 / seconds, "ok": True}


def guarded(name: str, measure) -> dict:
    try:
        return measure()
    except Exception as err:  # a row's failure is reported, the others go on
        log.error("%s failed:\n%s", name, traceback.format_exc())
        return {"row": name, "note": f"{type(err).__name__}: {err}", "ok": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the code paths only")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows", default="1,4,8,12")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    size = sizes(args.tiny)
    results = [guarded("equal R=4", lambda: check_equal(size, device))]
    results.append(guarded("timing one unfused row", lambda: time_single(size, device, args.steps)))
    for count in (int(r) for r in args.rows.split(",")):
        results.append(guarded(f"timing fused R={count}", lambda c=count: time_fused(c, size, device, args.steps)))
    results.append(guarded("graph R=12", lambda: graph_capture(size, device, args.steps)))
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    atomic_write_text(args.out, json.dumps({"versions": info, "sizes": size, "rows": results}, indent=2) + "\n")
    for row in results:
        figures = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items() if k != "row"]
        log.info("%s: %s", row["row"], "  ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
