"""The graphed training step on a GPU: does it capture, does it train like the uncaptured step, how fast.

    PYTHONPATH=. python scripts/gpu_graph_check.py --data .device/data/ptb --out graph_check.json
    PYTHONPATH=. python scripts/gpu_graph_check.py --device cpu --steps 5 --out /tmp/check.json   # code paths only

For the PTB paper model (``recipes/ptb/lstm_vae.toml``) at each ``--hidden`` size:

- ``check``: ``--steps`` steps on PTB (half on batches of its 4 commonest lengths, so that most of
  them replay a graph, then shuffled length-bucketed batches of all lengths), from the same seed, once
  with the sync-free step uncaptured and once graphed (``textvae.cuda.graph_cache.GraphedStep``), one
  non-finite batch injected a quarter of the way (a nan in the encoder's output bias): the mean loss of each
  quarter of the run (within ``--tolerance``, relative) and the skipped-step counts (1 each);
- ``timing``: ms/step and target tokens/s on batches of one length (the most common batch shape)
  for today's host-synchronised toolkit step, the sync-free step uncaptured, the graphed toolkit
  step, the plain-PyTorch reference step (``benchmarks/reference_step.py``) and its graphed variant;
- ``engine`` (first size only): ``textvae train`` for ``--engine-steps`` steps with train.cuda_graphs
  false, then true: the same step counts, train-record losses close, the last window's tokens/s;

then a few remedy rows (and the dilated CNN decoder and Adam) graphed for ``--remedy-steps`` steps
each, to show they capture. Every row runs in its own try/except: a failure prints its exception in
the table and the script goes on. Rows that need CUDA are "n/a" on a CPU. The table is printed at
the end and everything is written to ``--out`` as JSON. Nothing is asserted: the lead reads it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import platform
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from textvae.checkpoint import atomic_write_text  # noqa: E402
from textvae.config import load_recipe  # noqa: E402
from textvae.cuda.graph_cache import GraphedStep  # noqa: E402
from textvae.cuda.sync_free_step import SyncFreeStep, text_loss_fn  # noqa: E402
from textvae.data.batching import bucketed_batches, iterate_batches  # noqa: E402
from textvae.data.corpus import build_vocab, encode_split, load_text  # noqa: E402
from textvae.engine.state import make_optimizer  # noqa: E402
from textvae.models import build_model  # noqa: E402
from textvae.strategies import StandardStrategy, StepContext  # noqa: E402

log = logging.getLogger("gpu_graph_check")

REMEDY_ROWS = {
    "word_dropout": ([{"type": "word_dropout", "keep_prob": 0.6}], []),
    "bn_vae": ([{"type": "bn_vae", "gamma": 0.6}], []),
    "iaf": ([{"type": "iaf", "steps": 2, "hidden_dim": 64}], []),
    "free_bits": ([{"type": "free_bits", "threshold": 0.5}], []),
    "kl_annealing": ([{"type": "kl_annealing", "warmup": 20.0, "start": 0.1}], []),
    "bow_loss": ([{"type": "bow_loss", "hidden_dim": 64}], []),
    "adam": ([], ['train.optimizer="adam"', "train.lr=0.001"]),
    # {size}: 256, or --hidden's first size with --tiny
    "cnn_decoder": (
        [],
        ['model.decoder={{type="dilated_cnn", preset="mcnn", embed_dim={size}, channels={size}, dropout_in=0.5}}'],
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ptb"), help="folder with ptb.*.txt")
    parser.add_argument("--out", required=True, help="JSON results file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=200, help="steps of the graphed-vs-eager check")
    parser.add_argument("--remedy-steps", type=int, default=50)
    parser.add_argument("--timing-steps", type=int, default=60)
    parser.add_argument("--engine-steps", type=int, default=120, help="steps of each textvae train run")
    parser.add_argument("--hidden", default="256,512", help="comma-separated hidden sizes")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative, on each quarter's mean loss")
    parser.add_argument("--budget-s", type=float, default=110.0, help="rows not started by then are skipped")
    parser.add_argument("--tiny", action="store_true", help="embed/hidden from --hidden, latent 4 (a test)")
    return parser.parse_args(argv)


class Context:
    def __init__(self, args):
        self.args, self.device, self.started = args, torch.device(args.device), time.perf_counter()
        self.cuda = self.device.type == "cuda"
        self.rows: list[dict] = []

    def overrides(self, hidden: int, extra=()) -> list[str]:
        embed = hidden if self.args.tiny else 256
        out = [f'data.root="{self.args.data}"', f"model.encoder.hidden_dim={hidden}"]
        out += [f"model.decoder.hidden_dim={hidden}", "train.threads=1" if not self.cuda else "train.seed=0"]
        if self.args.tiny:
            out += ["model.latent_dim=4", f"model.encoder.embed_dim={embed}", f"model.decoder.embed_dim={embed}"]
        return [*out, *extra]

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_s


def load_corpus(ctx: Context):
    recipe = load_recipe(REPO / "recipes" / "ptb" / "lstm_vae.toml", ctx.overrides(256))
    train_text = load_text(recipe.data, "train")
    vocab = build_vocab(recipe.data, train_text)
    return vocab, encode_split(recipe.data, "train", vocab, train_text)


def build(ctx: Context, vocab, hidden: int, remedies=(), extra=()):
    recipe = load_recipe(REPO / "recipes" / "ptb" / "lstm_vae.toml", ctx.overrides(hidden, extra))
    torch.manual_seed(0)
    model = build_model(recipe.model, vocab, list(remedies) or recipe.remedies).to(ctx.device).train()
    return recipe, model, make_optimizer(model, recipe.train)


def shuffled_batches(ctx: Context, split, vocab, count: int):
    indices = bucketed_batches(split.lengths, 32, shuffle=True, seed=0, epoch=0)[:count]
    return [b.to(ctx.device) for b in iterate_batches(split, indices, vocab.pad_id)]


def one_shape_batches(ctx: Context, split, vocab, count: int, shapes: int = 1):
    """Full batches of the ``shapes`` most common sentence lengths (one graph each), in shuffled order."""
    indices = bucketed_batches(split.lengths, 32, shuffle=True, seed=0, epoch=0)
    indices = [b for b in indices if len(b) == 32 and len(set(split.lengths[b].tolist())) == 1]
    lengths = Counter(int(split.lengths[b[0]]) for b in indices)
    common = {length for length, _ in lengths.most_common(shapes)}
    chosen = [b for b in indices if int(split.lengths[b[0]]) in common][:count]
    return [b.to(ctx.device) for b in iterate_batches(split, chosen, vocab.pad_id)]


def _simulated_capture(run, static_batch):
    """On a CPU: no graph, the step body replayed on the static batch (exercises the cache's code paths)."""
    return lambda: run(static_batch)


def graphed_step(ctx: Context, step: SyncFreeStep) -> GraphedStep:
    """The real graphed step on CUDA; on a CPU the same cache with a simulated capture."""
    return GraphedStep(step) if ctx.cuda else GraphedStep(step, capture=_simulated_capture)


def poison(model, on: bool, saved: dict) -> None:
    bias = model.encoder.to_params.bias
    with torch.no_grad():
        if on:
            saved["bias"] = bias.detach().clone()
            bias[0] = math.nan
        else:
            bias.copy_(saved.pop("bias"))


def run_check(ctx: Context, vocab, split, hidden: int) -> dict:
    """Uncaptured vs graphed sync-free steps: quarter means of the loss and the skipped counts."""
    steps = ctx.args.steps
    # the 4 commonest lengths (so that most steps are replays), then the shuffled batches of all lengths
    batches = one_shape_batches(ctx, split, vocab, steps // 2, shapes=4)
    batches += shuffled_batches(ctx, split, vocab, steps - len(batches))
    quarters = max(1, len(batches) // 4)
    results = {}
    for mode in ("eager", "graphed"):
        recipe, model, optimizer = build(ctx, vocab, hidden)
        step = SyncFreeStep(model, optimizer, text_loss_fn(model), grad_clip=recipe.train.grad_clip)
        runner = graphed_step(ctx, step) if mode == "graphed" else step
        torch.manual_seed(1)
        means, saved, started = [], {}, time.perf_counter()
        for i, batch in enumerate(batches):
            if i == len(batches) // 4:  # among the common lengths: a replayed graph meets the nan
                poison(model, True, saved)
            runner(batch)
            if saved:
                poison(model, False, saved)
            if (i + 1) % quarters == 0:
                sums = step.state.read().sums  # a quarter of skipped steps only has no mean
                means.append(sums["loss"] / sums["sentences"] if sums["sentences"] else None)
                step.state.reset_sums()
        ctx.sync()
        counts = step.state.read()
        results[mode] = {
            "quarter_mean_loss": means,
            "skipped": counts.skipped,
            "steps": counts.steps,
            "seconds": time.perf_counter() - started,
        }
        if mode == "graphed":
            results[mode].update(captures=runner.captures, replays=runner.replays, failure=runner.failure)
    row = {"row": f"check H{hidden}", "steps": len(batches), **results}
    eager, graphed = results["eager"], results["graphed"]
    pairs = zip(eager["quarter_mean_loss"], graphed["quarter_mean_loss"], strict=True)
    diffs = [abs(g - e) / max(abs(e), 1e-12) for e, g in pairs if e is not None and g is not None]
    row["max_rel_diff"] = max(diffs) if diffs else None
    row["ok"] = bool(diffs) and max(diffs) <= ctx.args.tolerance and eager["skipped"] == graphed["skipped"] == 1
    row["note"] = (
        f"max rel diff {max(diffs, default=math.nan):.2e}, skipped {eager['skipped']}/{graphed['skipped']}, "
        f"captures {graphed['captures']}, replays {graphed['replays']}"
    )
    if graphed.get("failure"):
        row["note"] += f"; capture failed: {graphed['failure']}"
    if not ctx.cuda:
        row["ok"], row["note"] = None, "CPU, capture simulated (code paths only): " + row["note"]
    return row


def timed(ctx: Context, run_one, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        run_one()
    ctx.sync()
    started = time.perf_counter()
    for _ in range(steps):
        run_one()
    ctx.sync()
    return (time.perf_counter() - started) / steps


def load_reference():
    spec = importlib.util.spec_from_file_location("reference_step", REPO / "benchmarks" / "reference_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timing_rows(ctx: Context, vocab, split, hidden: int) -> list[dict]:
    """ms/step and tokens/s, each variant on its own copy of the model, batches of one shape."""
    steps = ctx.args.timing_steps
    batches = one_shape_batches(ctx, split, vocab, 8)
    tokens = batches[0].num_target_tokens
    shape = tuple(batches[0].tokens.shape)
    cycle = {"i": 0}

    def next_batch():
        cycle["i"] += 1
        return batches[cycle["i"] % len(batches)]

    def host_step():
        recipe, model, optimizer = build(ctx, vocab, hidden)
        strategy = StandardStrategy()
        return lambda: strategy.train_step(
            StepContext(model, optimizer, recipe.train.grad_clip, 0, 1, lambda: None), next_batch()
        )

    def sync_free(graphed: bool):
        def make():
            recipe, model, optimizer = build(ctx, vocab, hidden)
            step = SyncFreeStep(model, optimizer, text_loss_fn(model), grad_clip=recipe.train.grad_clip)
            runner = graphed_step(ctx, step) if graphed else step
            return lambda: runner(next_batch())

        return make

    def reference(graphed: bool):
        def make():
            if graphed and not ctx.cuda:
                raise NotImplementedError("n/a (needs CUDA)")
            module = load_reference()
            recipe, model, _ = build(ctx, vocab, hidden)
            twin = module.ReferenceVAE.like(model)
            optimizer = module.make_optimizer(twin, "sgd", recipe.train.lr)
            clip = recipe.train.grad_clip
            if not graphed:
                return lambda: module.train_step(twin, optimizer, *_tokens_lengths(next_batch()), clip)
            if not hasattr(module, "graphed_train_step"):
                raise NotImplementedError("n/a (benchmarks/reference_step.py has no graphed_train_step)")
            replay = module.graphed_train_step(twin, optimizer, *_tokens_lengths(batches[0]), clip)
            return lambda: replay(*_tokens_lengths(next_batch()))

        return make

    variants = {
        "eager toolkit (host-synced step)": host_step,
        "eager toolkit (sync-free step)": sync_free(False),
        "graphed toolkit": sync_free(True),
        "eager reference": reference(False),
        "graphed reference": reference(True),
    }
    rows = []
    for name, make in variants.items():
        row = {"row": f"timing H{hidden}: {name}", "shape": shape}
        rows.append(guarded(ctx, row, lambda make=make, row=row: _time_one(ctx, make, row, steps, tokens)))
        if not ctx.cuda and name == "graphed toolkit":
            rows[-1].update(ok=None, note="CPU, capture simulated (code paths only)")
    base = next((r.get("ms_per_step") for r in rows if "host-synced" in r["row"]), None)
    for row in rows:
        if base and row.get("ms_per_step"):
            row["note"] = (row.get("note", "") + f" {base / row['ms_per_step']:.2f}x the host-synced step").strip()
    graphed, reference = (next((r for r in rows if r["row"].endswith(name)), {}) for name in GRAPHED_ROW_ENDINGS)
    if graphed.get("ms_per_step") and reference.get("ms_per_step"):  # the target: ≥ 0.95x
        graphed["note"] += f"; {reference['ms_per_step'] / graphed['ms_per_step']:.2f}x the graphed reference's speed"
    return rows


GRAPHED_ROW_ENDINGS = (": graphed toolkit", ": graphed reference")


def _tokens_lengths(batch):
    return batch.tokens, batch.lengths


def _time_one(ctx, make, row, steps, tokens) -> dict:
    run_one = make()
    seconds = timed(ctx, run_one, warmup=3 if not ctx.cuda else 10, steps=steps)
    row.update(ms_per_step=seconds * 1e3, tokens_per_s=tokens / seconds, ok=True)
    return row


def remedy_row(ctx: Context, vocab, split, name: str) -> dict:
    remedies, extra = REMEDY_ROWS[name]
    row = {"row": f"remedy H256: {name}"}
    hidden = int(ctx.args.hidden.split(",")[0]) if ctx.args.tiny else 256
    extra = [override.format(size=hidden) for override in extra]
    recipe, model, optimizer = build(ctx, vocab, hidden, remedies, extra)
    step = SyncFreeStep(model, optimizer, text_loss_fn(model), grad_clip=recipe.train.grad_clip)
    graphed = graphed_step(ctx, step)
    batches = one_shape_batches(ctx, split, vocab, 8)
    torch.manual_seed(1)
    started = time.perf_counter()
    for i in range(ctx.args.remedy_steps):
        graphed(batches[i % len(batches)])
    ctx.sync()
    counts = step.state.read()
    mean_loss = counts.sums["loss"] / max(counts.sums["sentences"], 1.0)
    seconds = (time.perf_counter() - started) / ctx.args.remedy_steps
    row.update(
        ms_per_step=seconds * 1e3,
        captures=graphed.captures,
        replays=graphed.replays,
        mean_loss=mean_loss,
        skipped=counts.skipped,
        ok=graphed.failure is None and graphed.captures >= 1 and math.isfinite(mean_loss),
        note=f"captures {graphed.captures}, replays {graphed.replays}, mean loss {mean_loss:.2f}"
        + (f"; capture failed: {graphed.failure}" if graphed.failure else ""),
    )
    if not ctx.cuda:
        row.update(ok=None, note="CPU, capture simulated (code paths only): " + row["note"])
    return row


def engine_row(ctx: Context, hidden: int) -> dict:
    """``textvae.train.train`` end to end (the engine with ``GraphStepper``): ``--engine-steps`` steps with
    train.cuda_graphs = false, then true (on a CPU: both uncaptured), the last train records compared."""
    from textvae.train import train

    row, results = {"row": f"engine H{hidden}: textvae train, graphs off vs on"}, {}
    steps = ctx.args.engine_steps
    settings = [f"train.max_steps={steps}", f"train.log_every_steps={max(1, steps // 3)}", "train.progress_bar=false"]
    settings += ["train.max_valid_sentences=200", "train.checkpoint_every_steps=100000"]
    settings += [f'train.device="{ctx.device.type}"']
    with tempfile.TemporaryDirectory() as folder:
        for graphs in (False, True):
            setting = f"train.cuda_graphs={'true' if graphs and ctx.cuda else 'false'}"
            recipe = load_recipe(
                REPO / "recipes" / "ptb" / "lstm_vae.toml", ctx.overrides(hidden, [*settings, setting])
            )
            run_dir = Path(folder) / f"graphs_{graphs}"
            started = time.perf_counter()
            summary = train(recipe, run_dir)
            seconds = time.perf_counter() - started
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            records = [r for r in map(json.loads, lines) if r.get("event") == "train"]
            results["graphed" if graphs else "eager"] = {
                "steps": summary.progress.step,
                "skipped": summary.progress.skipped_steps,
                "seconds": seconds,
                "train_loss": [r["loss"] for r in records],
                "tokens_per_s": [r["tokens_per_s"] for r in records],
            }
    eager, graphed = results["eager"], results["graphed"]
    last = [abs(g - e) / abs(e) for e, g in zip(eager["train_loss"], graphed["train_loss"], strict=True)]
    speed = graphed["tokens_per_s"][-1] / eager["tokens_per_s"][-1] if eager["tokens_per_s"] else math.nan
    row.update(results)
    row["tokens_per_s"] = graphed["tokens_per_s"][-1] if graphed["tokens_per_s"] else None
    row["ok"] = eager["steps"] == graphed["steps"] == ctx.args.engine_steps and max(last, default=1.0) <= 0.05
    row["note"] = (
        f"train-record losses rel diff ≤ {max(last, default=math.nan):.2e}; last window tokens/s "
        f"{eager['tokens_per_s'][-1]:.0f} → {graphed['tokens_per_s'][-1]:.0f} ({speed:.2f}x); "
        f"wall {eager['seconds']:.1f} s → {graphed['seconds']:.1f} s incl. data and validation"
    )
    if not ctx.cuda:
        row["ok"], row["note"] = None, "CPU, both uncaptured (code paths only): " + row["note"]
    return row


def guarded(ctx: Context, row: dict, work) -> dict:
    """Run one row; any exception goes into its note (the script goes on)."""
    if ctx.over_budget():
        row.update(ok=None, note=f"skipped: past the {ctx.args.budget_s:.0f} s budget")
        return row
    started = time.perf_counter()
    try:
        result = work()
    except NotImplementedError as reason:
        row.update(ok=None, note=str(reason))
        return row
    except Exception as error:  # one failing row must not stop the others
        row.update(ok=False, note=f"{type(error).__name__}: {error}", traceback=traceback.format_exc(limit=6))
        log.warning("%s failed: %s", row["row"], row["note"])
        return row
    result["row_seconds"] = round(time.perf_counter() - started, 2)
    return result


def versions(ctx: Context) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": ctx.args.device,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    if ctx.cuda:
        info["gpu"] = torch.cuda.get_device_name(ctx.device)
    return info


def table(rows: list[dict]) -> str:
    lines = [f"{'row':<52} {'ok':<5} {'ms/step':>8} {'tokens/s':>10}  note"]
    for row in rows:
        ms = f"{row['ms_per_step']:.2f}" if row.get("ms_per_step") else "—"
        tps = f"{row['tokens_per_s']:.0f}" if row.get("tokens_per_s") else "—"
        ok = {True: "yes", False: "NO", None: "n/a"}[row.get("ok")]
        lines.append(f"{row['row']:<52} {ok:<5} {ms:>8} {tps:>10}  {row.get('note', '')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    ctx = Context(args)
    info = versions(ctx)
    print("versions:", json.dumps(info), flush=True)
    try:
        vocab, split = load_corpus(ctx)
    except Exception as error:  # say why, write what there is
        ctx.rows.append({"row": "load PTB", "ok": False, "note": f"{type(error).__name__}: {error}"})
        vocab = split = None
    hidden_sizes = [int(h) for h in args.hidden.split(",") if h]
    if split is not None:
        for i, hidden in enumerate(hidden_sizes):
            ctx.rows.append(guarded(ctx, {"row": f"check H{hidden}"}, lambda h=hidden: run_check(ctx, vocab, split, h)))
            ctx.rows.extend(timing_rows(ctx, vocab, split, hidden))
            if i == 0:  # the engine end to end, at the first size
                ctx.rows.append(guarded(ctx, {"row": f"engine H{hidden}"}, lambda h=hidden: engine_row(ctx, h)))
        for name in REMEDY_ROWS:
            ctx.rows.append(guarded(ctx, {"row": f"remedy: {name}"}, lambda n=name: remedy_row(ctx, vocab, split, n)))
    seconds = time.perf_counter() - ctx.started
    print(table(ctx.rows))
    print(f"total {seconds:.1f} s", flush=True)
    payload = {"versions": info, "seconds": seconds, "args": vars(args), "rows": ctx.rows}
    atomic_write_text(Path(args.out), json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
