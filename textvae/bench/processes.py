"""Aggregate throughput of N processes training at once on one GPU, with and without MPS.

A GPU as large as an H200 is mostly idle under one small model's step, even graphed; an ablation
(``textvae ablate --jobs N``) fills it with N rows at once. Each of N worker processes (spawned,
one CPU thread each) builds the PTB paper rows' model (``Sizes.process_model``: embedding 256,
hidden 256, latent 32, batch 32, V of the corpus) on one batch of the corpus, captures its
training step as a CUDA graph (the toolkit's step, ``graphs.toolkit_graphed``; the plain-PyTorch
step when the toolkit's is not available) and replays it for ``process_seconds``, all starting at
the same moment. The figure is model-steps/s summed over the processes, for N = 1, 4, 8: first
time-sliced (no MPS daemon), then sharing the GPU through MPS (``textvae.cuda.mps.MPSDaemon``; this
section runs before anything else in the bench touches the GPU, so that the bench process itself
is not a non-MPS client while the daemon runs).

On a CPU the harness runs only when ``Sizes.process_on_cpu`` (the tests): eager steps, no MPS.
Target (issue 17, one H200): ≥ 1,500 model-steps/s for the PTB paper rows.
"""

from __future__ import annotations

import logging
import queue
import time
from multiprocessing import get_context

import torch

from textvae.cuda.mps import MPSDaemon, daemon_running
from textvae.data.batching import Batch

from .corpus import Corpus
from .graphs import one_length_batches, reference_graphed, toolkit_graphed
from .models import Sizes, optimizer_for, seeded_model, vae_spec
from .references import load_reference
from .training import toolkit_steps

log = logging.getLogger(__name__)

AGGREGATE_TARGET = 1_500  # model-steps/s, PTB paper rows, one H200 (issue 17)
READY_TIMEOUT_S = 60.0  # spawn, import torch, build, capture (scripts/gpu_bench.sh allows 170 s in all)
CHUNK = 8  # steps between two looks at the clock


def _make_step(spec: dict) -> tuple[object, str]:
    """One training step of the worker's model on its batch, and what kind of step it is."""
    device = torch.device(spec["device"])
    embed, hidden, latent, _ = spec["model"]
    sizes = Sizes(embed_dim=embed, hidden_dim=hidden, latent_dim=latent)
    batch = Batch(spec["tokens"], spec["lengths"], torch.arange(len(spec["lengths"]))).to(device)
    model = seeded_model(vae_spec(sizes), spec["vocab"], device, seed=spec["seed"])
    if device.type != "cuda":
        return toolkit_steps(model, optimizer_for(model, "sgd"), [batch]), "eager toolkit (CPU)"
    try:
        return toolkit_graphed(model, optimizer_for(model, "sgd"), [batch]), "graphed toolkit"
    except Exception as err:  # the toolkit's graphed step is missing or fails: the plain one still measures
        log.warning("worker %d: toolkit graphed step unavailable (%s); plain PyTorch graphed step", spec["seed"], err)
    reference = load_reference("reference_step")
    twin = reference.ReferenceVAE.like(model)
    return reference_graphed(reference, twin, reference.make_optimizer(twin, "sgd", 1.0), [batch]), "graphed reference"


def _worker(spec: dict, commands, results) -> None:
    """A worker process: build, report ready, then step for each (start_at, seconds) it is sent."""
    index = spec["seed"]
    try:
        torch.set_num_threads(1)
        step, kind = _make_step(spec)
        step()
        results.put(("ready", index, kind))
    except BaseException as err:  # reported to the parent, which puts it in the table
        results.put(("error", index, f"{type(err).__name__}: {err}"))
        return
    cuda = spec["device"] == "cuda"
    while (command := commands.get()) is not None:
        start_at, seconds = command
        time.sleep(max(0.0, start_at - time.time()))
        started, steps = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            for _ in range(CHUNK):
                step()
            steps += CHUNK
        if cuda:
            torch.cuda.synchronize()
        results.put(("done", index, steps, time.perf_counter() - started))


def _collect(results, count: int, kind: str, timeout: float) -> list[tuple]:
    """``count`` messages of ``kind`` from the workers; an error message or a timeout raises."""
    messages, deadline = [], time.monotonic() + timeout
    while len(messages) < count:
        try:
            message = results.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"{len(messages)} of {count} workers answered within {timeout:.0f} s") from None
        if message[0] == "error":
            raise RuntimeError(f"worker {message[1]}: {message[2]}")
        if message[0] == kind:
            messages.append(message)
    return messages


def aggregate(spec: dict, counts: tuple[int, ...], seconds: float) -> dict:
    """Model-steps/s summed over N processes stepping at once, for each N in ``counts``."""
    context = get_context("spawn")
    results = context.Queue()
    commands = [context.Queue() for _ in range(max(counts))]
    workers = [
        context.Process(target=_worker, args=({**spec, "seed": i}, commands[i], results), daemon=True)
        for i in range(len(commands))
    ]
    for worker in workers:
        worker.start()
    try:
        kinds = sorted({message[2] for message in _collect(results, len(workers), "ready", READY_TIMEOUT_S)})
        rows = {}
        for count in counts:
            start_at = time.time() + 0.5
            for command in commands[:count]:
                command.put((start_at, seconds))
            done = _collect(results, count, "done", seconds + 30.0)
            rates = [steps / elapsed for _, _, steps, elapsed in done]
            rows[str(count)] = {"steps_per_s": sum(rates), "per_process": sorted(rates)}
            log.info("%d processes (%s): %.0f model-steps/s", count, ", ".join(kinds), sum(rates))
        return {"step": ", ".join(kinds), "counts": rows}
    finally:
        for command in commands:
            command.put(None)
        deadline = time.monotonic() + 10.0  # then whatever still runs is ended
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=5)


def bench_processes(corpus: Corpus, sizes: Sizes, device: torch.device) -> dict:
    """Aggregate model-steps/s without and with MPS (each a row set, or why it is missing)."""
    if device.type != "cuda" and not sizes.process_on_cpu:
        return {"time_sliced": {"missing": "needs CUDA"}, "mps": {"missing": "needs CUDA"}}
    batch_size = sizes.process_model[3]
    (batch,) = one_length_batches(corpus.train, batch_size, 1, corpus.vocab.pad_id)
    spec = {
        "device": device.type,
        "model": sizes.process_model,
        "vocab": corpus.vocab,
        "tokens": batch.tokens,
        "lengths": batch.lengths,
    }
    results = {"batch_shape": list(batch.tokens.shape), "target": AGGREGATE_TARGET}
    for name, mps in (("time_sliced", False), ("mps", True)):
        try:
            if not mps:
                results[name] = aggregate(spec, sizes.process_counts, sizes.process_seconds)
                if device.type == "cuda" and daemon_running():
                    results[name]["step"] += "; an MPS daemon was already running: not time-sliced"
                continue
            if device.type != "cuda":
                results[name] = {"missing": "needs CUDA"}
                continue
            with MPSDaemon(cuda=True, jobs=max(sizes.process_counts)) as daemon:
                if not daemon.shared:
                    results[name] = {"missing": "the MPS daemon could not be started (see the log)"}
                    continue
                results[name] = aggregate(spec, sizes.process_counts, sizes.process_seconds)
                results[name]["daemon_started_here"] = daemon.started
        except Exception as err:  # one failed row set must not end the bench
            log.exception("aggregate %s", name)
            results[name] = {"missing": f"failed: {type(err).__name__}: {err}"}
    return results
