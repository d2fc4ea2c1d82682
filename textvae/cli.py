"""The command line: ``textvae train | eval | sample | reconstruct | interpolate | attribute | neighbours | generate
| ablate | report | bench | export``.

Every user error is reported as one line on stderr (``textvae: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

from textvae.errors import TextVAEError
from textvae.latent import commands as latent_cli

log = logging.getLogger("textvae")
DEVICES = ("auto", "cpu", "cuda")  # textvae.evaluation.device.DEVICES (not imported: torch loads only when needed)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) with exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"textvae: error: {message}\n")
        raise SystemExit(2)


def _number(parse, minimum: float, *, strict: bool = False):
    """An argparse type: ``parse`` the text, then require a finite value ≥ (or > when strict) ``minimum``."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if parse is int else 'a number'}, got {text!r}"
            ) from None
        if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            bound = f"> {minimum:g}" if strict else f"≥ {minimum:g}"
            raise argparse.ArgumentTypeError(
                f"must be {'a finite number ' if parse is float else ''}{bound}, got {text}"
            )
        return value

    return convert


_positive_int = _number(int, 1)
_non_negative_int = _number(int, 0)
_positive_float = _number(float, 0, strict=True)


def _seed_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")] if "," in text else list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or a comma-separated list of seeds, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"seeds must be ≥ 0 and at least one, got {text!r}")
    return values


CHECKPOINT_HELP, RUN_HELP = latent_cli.CHECKPOINT_HELP, latent_cli.RUN_HELP
MODEL_COMMANDS = ("eval", "sample", "reconstruct", "interpolate", "attribute", "neighbours", "generate")


def _add_decode_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--strategy", choices=["greedy", "sample", "beam"], default="greedy")
    group.add_argument("--temperature", type=_positive_float, default=1.0)
    group.add_argument("--top-k", type=_positive_int, default=None)
    group.add_argument("--top-p", type=float, default=None)
    group.add_argument("--beam-size", type=_positive_int, default=5)
    group.add_argument("--max-len", type=_positive_int, default=50, help="maximum generated tokens")
    group.add_argument("--min-len", type=_non_negative_int, default=0, help="words before EOS may be emitted")
    group.add_argument("--allow-unk", action="store_true", help="let the unknown-word token be generated")
    group.add_argument("--no-repeat-ngram", type=_non_negative_int, default=0, help="N > 0: no N-gram twice")
    group.add_argument("--repetition-penalty", type=_positive_float, default=1.0, help="> 1 discourages repeats")
    group.add_argument("--length-penalty", type=float, default=1.0, help="beam: rank by log p / length ** this")
    group.add_argument("--seed", type=_non_negative_int, default=0)
    group.add_argument("--checkpoint", choices=["best", "last"], default=None, help=CHECKPOINT_HELP)
    group.add_argument("--device", choices=DEVICES, default=None, help="default: the recipe's eval.device (auto)")


def _decode_settings(args) -> dict:
    return {
        "strategy": args.strategy,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "beam_size": args.beam_size,
        "max_len": args.max_len,
        "min_len": args.min_len,
        "forbid_unk": not args.allow_unk,
        "no_repeat_ngram_size": args.no_repeat_ngram,
        "repetition_penalty": args.repetition_penalty,
        "length_penalty": args.length_penalty,
    }


def _add_eval_parser(commands) -> None:
    evaluate = commands.add_parser("eval", help="evaluate a trained model")
    evaluate.add_argument("run", type=Path, help=RUN_HELP)
    evaluate.add_argument("--split", choices=["valid", "test"], default=None)
    evaluate.add_argument("--iw-samples", type=_positive_int, default=None, help="K importance samples")
    mi_help = "z draws per sentence for MI (default: the recipe's eval.mi_samples; 1 = He et al. 2019's protocol)"
    evaluate.add_argument("--mi-samples", type=_positive_int, default=None, help=mi_help)
    evaluate.add_argument("--iw-chunk-size", type=_positive_int, default=None)
    evaluate.add_argument("--batch-size", type=_positive_int, default=None)
    evaluate.add_argument(
        "--max-sentences",
        "--max-examples",
        dest="max_sentences",
        type=_positive_int,
        default=None,
        help="seeded subset",
    )
    evaluate.add_argument("--seed", type=_non_negative_int, default=None)
    evaluate.add_argument("--data-root", default=None, help="where the corpus files are, if moved")
    evaluate.add_argument("--json", type=Path, default=None, help="results file (default RUN/eval_SPLIT.json)")
    evaluate.add_argument("--plot", type=Path, default=None, help="KL-per-dimension PNG (default beside --json)")
    evaluate.add_argument("--dump-posterior", type=Path, default=None, help="write mean and logvar (N, D) .npz")
    evaluate.add_argument("--generation", action="store_true", help="add BLEU(rec), self-BLEU, distinct-1/2")
    evaluate.add_argument("--num-samples", type=_positive_int, default=500, help="--generation: prior samples")
    evaluate.add_argument("--sample-strategy", choices=["greedy", "sample"], default="greedy", help="--generation")
    code_use_help = "add content words kept by reconstructions and sentences on homotopies (a VAE, word vocabulary)"
    evaluate.add_argument("--code-use", action="store_true", help=code_use_help)
    evaluate.add_argument("--checkpoint", choices=["best", "last"], default=None, help=CHECKPOINT_HELP)
    evaluate.add_argument("--device", choices=DEVICES, default=None, help="default: the recipe's eval.device (auto)")
    precision_help = "reduced-precision matmuls (default fp32); the deviation from fp32 is measured and printed"
    evaluate.add_argument("--matmul-precision", choices=["tf32", "bf16"], default=None, help=precision_help)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="textvae", description="Text VAEs and posterior-collapse ablations.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a model from a TOML recipe")
    train.add_argument("recipe", type=Path)
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")

    _add_eval_parser(commands)

    sample = commands.add_parser("sample", help="sentences from the prior")
    sample.add_argument("run", type=Path, help=RUN_HELP)
    sample.add_argument("-n", "--num", type=_positive_int, default=10)
    sample.add_argument("--out", type=Path, default=None, help="image runs: the PNG grid to write")
    _add_decode_options(sample)

    reconstruct = commands.add_parser("reconstruct", help="encode and decode sentences")
    reconstruct.add_argument("run", type=Path, help=RUN_HELP)
    reconstruct.add_argument("sentences", nargs="*")
    reconstruct.add_argument("--file", type=Path, default=None, help="one sentence per line")
    reconstruct.add_argument("--sample-z", action="store_true", help="z ~ q(z|x) instead of its mean")
    _add_decode_options(reconstruct)
    latent_cli.add_vector_options(reconstruct)

    interpolate = commands.add_parser("interpolate", help="decode points between two sentences")
    interpolate.add_argument("run", type=Path, help=RUN_HELP)
    interpolate.add_argument("first")
    interpolate.add_argument("second")
    interpolate.add_argument("--steps", type=_positive_int, default=5)
    interpolate.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="the homotopy as a figure")
    _add_decode_options(interpolate)
    latent_cli.add_vector_options(interpolate)
    latent_cli.add_commands(commands, _add_decode_options, _positive_int)
    ablate = commands.add_parser("ablate", help="run an ablation: variants over a base recipe, one table")
    ablate.add_argument("ablation", type=Path, help="ablation TOML file with [[variants]]")
    ablate.add_argument("--out", type=Path, required=True, help="results directory (re-running resumes)")
    ablate.add_argument("--jobs", type=_positive_int, default=1, help="variants trained at the same time")
    ablate.add_argument("--seeds", type=_seed_list, default=None, help="N (seeds 0..N-1) or a list like 0,3,7")
    ablate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ablate.add_argument("--only", action="append", default=None, metavar="NAME", help="run only this variant")
    ablate.add_argument(
        "--fuse",
        choices=["on", "off", "auto"],
        default="auto",
        help="train rows of one shape and batch stream as one fused model (auto: off until measured faster)",
    )
    ablate.add_argument(
        "--fuse-plan", action="store_true", help="print the fused groups and their memory, train nothing"
    )
    _add_executor_options(ablate)

    report = commands.add_parser("report", help="re-render an ablation directory, or tabulate eval results")
    report.add_argument("results", type=Path, nargs="*", help="an ablation directory, or eval JSON files")
    status_help = "the status of every published row the recipes cite, from the ablation directories given"
    report.add_argument("--reproduction", type=Path, default=None, metavar="RECIPES_DIR", help=status_help)
    update_help = "with --reproduction: rewrite this file's generated status block"
    report.add_argument("--update", type=Path, action="append", default=[], metavar="FILE.md", help=update_help)
    export = commands.add_parser("export", help="a run as a shareable directory: safetensors, vocab, model card")
    export.add_argument("run", type=Path, help="run directory")
    export.add_argument("out_dir", type=Path, help="the directory to create (must not exist, or be empty)")
    export.add_argument("--checkpoint", choices=["best", "last"], default="best")
    export.add_argument("--notes", type=Path, default=None, metavar="FILE.md", help="Markdown the model card shows")
    bench = commands.add_parser("bench", help="throughput at this machine's compute limit, beside baselines")
    bench.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results here")
    bench.add_argument("--quick", action="store_true", help="fewer rounds, steps and sentences")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    bench.add_argument("--data-root", type=Path, default=None, help="directory with ptb.{train,valid,test}.txt")
    bench.add_argument("--sizes", choices=["full", "quick", "tiny"], default=None, help=argparse.SUPPRESS)  # tests
    return parser


def _cmd_export(args) -> None:
    from textvae.hub.export import export_run

    files = export_run(args.run, args.out_dir, args.checkpoint, args.notes)
    sys.stdout.write(f"exported {args.run}/{args.checkpoint}.pt to {args.out_dir}: {', '.join(files)}\n")


def _cmd_bench(args) -> None:
    from textvae.bench import command

    command(args)


def _cmd_train(args) -> None:
    from textvae.engine.distributed import is_main_process
    from textvae.families import load_any_recipe
    from textvae.image.config import ImageRecipe

    recipe = load_any_recipe(args.recipe, args.overrides)
    if isinstance(recipe, ImageRecipe):
        from textvae.image.train import train_image

        summary = train_image(recipe, args.out, resume=args.resume)
    else:
        from textvae.train import train

        summary = train(recipe, args.out, resume=args.resume)
    if not is_main_process():  # under torchrun, rank 0 reports
        return
    valid = summary.last_valid
    no_kl = isinstance(recipe, ImageRecipe) and "kl" not in valid  # autoencoders, VQ models, TD-VAE
    kl = "" if no_kl else f", KL {valid.get('kl', float('nan')):.3f}"
    sys.stdout.write(
        f"trained {summary.progress.step} steps in {summary.seconds:.0f}s; best valid loss "
        f"{summary.progress.best_valid:.3f} (step {summary.progress.best_step}); "
        f"last valid loss {valid.get('loss', float('nan')):.3f}{kl}\n"
        f"run directory: {summary.run_dir}\n"
    )


def _output_paths(args, split: str) -> tuple[Path, Path]:
    from textvae.hub.output_dir import writable_folder

    json_path = args.json or writable_folder(args.run) / f"eval_{split}.json"
    plot_path = args.plot or json_path.with_suffix(".kl_per_dim.png")
    for path in (json_path, plot_path, args.dump_posterior):
        if path is not None and not path.parent.is_dir():
            raise TextVAEError(f"{path}: directory {path.parent} does not exist")
        if path is not None and path.is_dir():
            raise TextVAEError(f"{path}: is a directory, expected a file name")
    return json_path, plot_path


def _is_image_run(path: Path) -> bool:
    from textvae.families import is_image_run

    return is_image_run(path)


def _refuse_image_run(path: Path, command: str) -> None:
    if _is_image_run(path):
        raise TextVAEError(
            f"{path}: an image run; `textvae {command}` is for text runs "
            f"(`textvae eval` writes an image run's reconstructions and interpolations)"
        )


def _write_posterior(path: Path, means, logvars) -> None:
    import io

    import numpy as np

    from textvae.checkpoint import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, mean=means, logvar=logvars)
    atomic_write_bytes(path, buffer.getvalue())


def _cmd_eval_image(args) -> None:
    from textvae.checkpoint import resolve_checkpoint
    from textvae.image.checkpoint import load_image_checkpoint
    from textvae.image.evaluate import columns_for, evaluate_image_run
    from textvae.reproduction.tables import markdown_table

    if args.matmul_precision is not None:
        raise TextVAEError("--matmul-precision is for text runs; an image run evaluates in fp32")
    checkpoint_path = resolve_checkpoint(args.run, args.checkpoint)
    loaded = load_image_checkpoint(checkpoint_path)
    options = {
        "split": args.split,
        "iw_samples": args.iw_samples,
        "iw_chunk_size": args.iw_chunk_size,
        "batch_size": args.batch_size,
        "max_examples": args.max_sentences,
        "seed": args.seed,
        "device": args.device,
    }
    settings = dataclasses.replace(loaded.recipe.eval, **{k: v for k, v in options.items() if v is not None})
    if args.dump_posterior is not None and not hasattr(loaded.model, "posterior"):
        raise TextVAEError(
            f"--dump-posterior needs a model with a posterior q(z|x); {loaded.recipe.model['type']!r} has none"
        )
    json_path, plot_path = _output_paths(args, settings.split)
    metrics, result = evaluate_image_run(
        loaded, checkpoint_path, settings, json_path, kl_plot_path=plot_path, data_root=args.data_root
    )
    sys.stdout.write(
        markdown_table([(checkpoint_path.parent.name or str(checkpoint_path), metrics)], columns_for([metrics])) + "\n"
    )
    if "iw_nll" in metrics:
        sys.stdout.write(
            f"IW-NLL {metrics['iw_nll']:.3f} ± {metrics['iw_nll_se']:.3f} nats (s.e. over images) = "
            f"{metrics['bits_per_dim']:.4f} bits/dim; ELBO {metrics['elbo']:.3f}; K = {settings.iw_samples}, "
            f"{metrics['num_examples']} examples of {metrics['num_dims']} dimensions\n"
        )
    if args.dump_posterior is not None:
        _write_posterior(args.dump_posterior, result.means, result.logvars)
    for figure in metrics["figures"]:
        sys.stdout.write(f"figure: {figure}\n")
    sys.stdout.write(f"results: {json_path}\n")


def _eval_device(args, configured: str):
    """``--device``, else the recipe's ``eval.device``: a torch.device, or a one-line error (no CUDA)."""
    from textvae.evaluation.device import resolve_device

    return resolve_device(args.device or configured, "--device" if args.device else "eval.device")


def _cmd_eval(args) -> None:
    if _is_image_run(args.run):
        _cmd_eval_image(args)
        return

    from textvae.api import load_model
    from textvae.checkpoint import atomic_write_text
    from textvae.data.corpus import encode_split
    from textvae.evaluation.evaluate import EvalSettings, evaluate
    from textvae.reproduction.tables import markdown_table

    loaded, checkpoint_path = load_model(args.run, args.checkpoint)  # a run, a checkpoint or an exported directory
    defaults = loaded.recipe.eval
    split = args.split or defaults.split
    settings = EvalSettings(
        iw_samples=args.iw_samples or defaults.iw_samples,
        iw_chunk_size=args.iw_chunk_size or defaults.iw_chunk_size,
        batch_size=args.batch_size or defaults.batch_size,
        max_sentences=args.max_sentences or defaults.max_sentences,
        seed=defaults.seed if args.seed is None else args.seed,
        matmul_precision=args.matmul_precision or "fp32",
        mi_samples=args.mi_samples or defaults.mi_samples,
    )
    device = _eval_device(args, defaults.device)
    if args.dump_posterior is not None and not loaded.model.has_latent:
        raise TextVAEError("--dump-posterior needs a model with a latent variable; this one is a language model")
    json_path, plot_path = _output_paths(args, split)
    data_cfg = loaded.recipe.data
    if args.data_root is not None:
        data_cfg = dataclasses.replace(data_cfg, root=args.data_root)
    encoded = encode_split(data_cfg, split, loaded.vocab)
    result = evaluate(loaded.model.to(device), encoded, loaded.vocab.pad_id, settings)
    metrics = {**result.metrics, "checkpoint": str(checkpoint_path), "config": loaded.recipe.to_dict()}

    sys.stdout.write(markdown_table([(checkpoint_path.parent.name or str(checkpoint_path), metrics)]) + "\n")
    if args.generation:
        from textvae.evaluation.generation_quality import GenerationSettings, evaluate_generation, generation_summary

        generation = GenerationSettings(args.num_samples, args.sample_strategy)
        metrics |= evaluate_generation(loaded.model, encoded, loaded.vocab, generation, settings)
        sys.stdout.write(generation_summary(metrics) + "\n")
    if args.code_use:
        from textvae.evaluation.code_use import CodeUseSettings, code_use_summary, evaluate_code_use
        from textvae.evaluation.validation import select_sentences

        chosen = select_sentences(encoded, settings.max_sentences, settings.seed)  # the sentences scored above
        metrics |= evaluate_code_use(loaded.model, encoded, loaded.vocab, chosen, CodeUseSettings(seed=settings.seed))
        sys.stdout.write(code_use_summary(metrics) + "\n")
    if loaded.model.has_latent:
        from textvae.evaluation.plots import (
            plot_kl_per_dim,  # matplotlib: imported only once there is something to plot
        )

        sys.stdout.write(
            f"IW-NLL {metrics['iw_nll']:.3f} ± {metrics['iw_nll_se']:.3f} (s.e. over sentences), "
            f"Monte-Carlo s.e. per sentence {metrics['iw_nll_mc_se']:.4f}, K = {settings.iw_samples}, "
            f"{metrics['num_sentences']} sentences, {metrics['num_tokens']} tokens; "
            f"{metrics['num_sentences'] / metrics['eval_seconds']:.1f} sentences/s on {metrics['device']}\n"
        )
        sys.stdout.write(_mi_line(metrics) + "\n")
        if "matmul_precision_check" in metrics:
            check = metrics["matmul_precision_check"]
            sys.stdout.write(
                f"matmul precision {check['precision']}: IW-NLL moves by at most {check['max_abs_diff']:.4f} nats "
                f"(mean {check['mean_diff']:+.4f}) against fp32 on {check['sentences']} sentences, same draws\n"
            )
        variances = metrics["posterior_mean_variance"]
        active = [v >= metrics["au_threshold"] for v in variances]
        plot_kl_per_dim(metrics["kl_per_dim"], plot_path, f"KL per dimension ({split}; AU = {metrics['au']})", active)
        if args.dump_posterior is not None:
            _write_posterior(args.dump_posterior, result.means, result.logvars)
    atomic_write_text(json_path, json.dumps(metrics, indent=2))
    sys.stdout.write(f"results: {json_path}\n")


def _cmd_sample_image(args) -> None:
    import torch

    from textvae.checkpoint import resolve_checkpoint
    from textvae.image.checkpoint import load_image_checkpoint
    from textvae.image.figures import save_samples

    if args.out is None:
        raise TextVAEError("an image run's samples are a PNG grid: give --out FILE.png")
    if not args.out.parent.is_dir() or args.out.is_dir():
        raise TextVAEError(f"{args.out}: expected a file name in an existing directory")
    loaded = load_image_checkpoint(resolve_checkpoint(args.run, args.checkpoint))
    if not hasattr(loaded.model, "sample"):
        raise TextVAEError(f"image model {loaded.recipe.model['type']!r} has no prior to sample from")
    device = _eval_device(args, loaded.recipe.eval.device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    save_samples(loaded.model.to(device), args.num, generator, args.out)
    sys.stdout.write(f"samples: {args.out}\n")


def _cmd_sample(args) -> None:
    import textvae

    if _is_image_run(args.run):
        _cmd_sample_image(args)
        return
    if args.out is not None:
        raise TextVAEError("--out writes an image grid, for image runs; text samples are printed")
    model = textvae.load(args.run, args.checkpoint, device=args.device)
    for line in model.sample(args.num, seed=args.seed, **_decode_settings(args)):
        sys.stdout.write(line + "\n")


def _read_sentences(args) -> list[str]:
    sentences = list(args.sentences)
    if args.file is not None:
        from textvae.data.corpus import check_text_file

        check_text_file(args.file)
        sentences += [line.strip() for line in args.file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not sentences:
        raise TextVAEError("no sentences: give them as arguments or with --file")
    return sentences


def _cmd_reconstruct(args) -> None:
    import textvae

    _refuse_image_run(args.run, "reconstruct")
    model = textvae.load(args.run, args.checkpoint, device=args.device)
    sentences = _read_sentences(args)
    shift = latent_cli.run_shift(args, model)
    settings = _decode_settings(args)
    outputs = model.reconstruct(sentences, use_mean=not args.sample_z, seed=args.seed, shift=shift, **settings)
    for source, output in zip(sentences, outputs, strict=True):
        sys.stdout.write(f"> {source}\n< {output}\n")


def _cmd_interpolate(args) -> None:
    import textvae

    if args.steps < 2:
        raise TextVAEError(f"--steps must be ≥ 2, got {args.steps}")
    _refuse_image_run(args.run, "interpolate")
    model = textvae.load(args.run, args.checkpoint, device=args.device)
    shift = latent_cli.run_shift(args, model)
    lines = model.interpolate(args.first, args.second, args.steps, args.seed, shift=shift, **_decode_settings(args))
    for i, line in enumerate(lines):
        sys.stdout.write(f"{i / (args.steps - 1):.2f}  {line}\n")
    if args.plot is not None:
        latent_cli.homotopy_plot(model, args, lines, shift)


def _add_executor_options(ablate: argparse.ArgumentParser) -> None:
    """``ablate``'s GPUs and executors (``textvae.executors``)."""
    from textvae.executors.settings import EXECUTORS

    ablate.add_argument("--gpus", default=None, metavar="I,J,...", help="spread --jobs over these GPUs (default: all)")
    ablate.add_argument("--executor", choices=EXECUTORS, default="pool", help="where rows run")
    ablate.add_argument("--rows-per-job", type=int, default=None, help="rows one cluster job trains at once (4)")
    ablate.add_argument("--executor-config", type=Path, default=None, metavar="FILE", help="TOML: the settings below")
    ablate.add_argument("--slurm-partition", default=None)
    ablate.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES", help="per job (240)")
    ablate.add_argument("--slurm-gpus-per-job", type=int, default=None, metavar="N", help="(1)")
    ablate.add_argument("--slurm-cpus-per-job", type=int, default=None, metavar="N")
    ablate.add_argument("--slurm-account", default=None)
    ablate.add_argument("--slurm-qos", default=None)
    ablate.add_argument("--slurm-setup", action="append", default=[], metavar="LINE", help="e.g. 'module load cuda'")
    ablate.add_argument("--detach", action="store_true", help="submit and return; --status shows the rows")
    ablate.add_argument("--status", action="store_true", help="print every row's state; submits nothing")
    ablate.add_argument("--poll-seconds", type=_number(float, 0.1), default=30.0, help="between progress checks")


def _cmd_ablate(args) -> None:
    from textvae.executors.devices import parse_gpus
    from textvae.executors.settings import load_settings
    from textvae.reproduction.ablation import fusion_plan, results_markdown, run_ablation, summarize

    if args.fuse_plan:
        sys.stdout.write(fusion_plan(args.ablation, args.out, args.seeds, args.overrides, args.only) + "\n")
        return
    if args.status:
        from textvae.executors.submit import status

        sys.stdout.write(status(args.ablation, args.out, seeds=args.seeds, overrides=args.overrides, only=args.only))
        sys.stdout.write("\n")
        return
    flags = {
        "rows_per_job": args.rows_per_job,
        "partition": args.slurm_partition,
        "time": args.slurm_time,
        "gpus_per_job": args.slurm_gpus_per_job,
        "cpus_per_job": args.slurm_cpus_per_job,
        "account": args.slurm_account,
        "qos": args.slurm_qos,
        "setup": args.slurm_setup,
    }
    settings = load_settings(args.executor_config, flags)
    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    if args.executor == "pool":
        given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v not in (None, [])]
        given += ["--executor-config"] * (args.executor_config is not None) + ["--detach"] * args.detach
        if given:
            raise TextVAEError(f"{given[0]} is for --executor local or slurm (the pool runs on this machine)")
        rows = run_ablation(
            args.ablation,
            args.out,
            jobs=args.jobs,
            seeds=args.seeds,
            overrides=args.overrides,
            only=args.only,
            gpus=gpus,
            fuse=args.fuse,
        )
    else:
        from textvae.executors.submit import run_on_cluster

        if args.fuse == "on":
            raise TextVAEError(f"--fuse on is for the pool executor (a {args.executor} job trains its rows alone)")
        if gpus is not None or args.jobs != 1:
            option = "--gpus" if gpus is not None else "--jobs"
            raise TextVAEError(f"{option} is for the pool executor; a {args.executor} job uses --rows-per-job")
        rows = run_on_cluster(
            args.ablation,
            args.out,
            args.executor,
            settings,
            seeds=args.seeds,
            overrides=args.overrides,
            only=args.only,
            detach=args.detach,
            poll_s=args.poll_seconds,
        )
        if rows is None:
            sys.stdout.write(f"submitted; `textvae ablate {args.ablation} --out {args.out} --status` shows the rows\n")
            return
    sys.stdout.write(results_markdown(summarize(rows)) + "\n")
    sys.stdout.write(f"results: {args.out}/results.md, results.csv, results.json and *.png\n")
    if any("error" in row for row in rows):
        raise TextVAEError(f"{sum('error' in row for row in rows)} of {len(rows)} runs failed (see the table)")


def _read_json(path: Path):
    """A JSON results file, or a one-line error."""
    if not path.is_file():
        raise TextVAEError(f"{path}: results file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TextVAEError(f"{path}: not a JSON results file ({err})") from None


def _mi_line(metrics: dict) -> str:
    """Both MI estimates with their Monte-Carlo standard errors, flagged when they read as noise."""
    from textvae.evaluation.metric_table import MI_KEYS, title
    from textvae.verdicts import mi_is_noise

    parts = []
    for key, name in ((key, title(key)) for key in MI_KEYS):
        noise = mi_is_noise(metrics[key], metrics[f"{key}_se"], metrics["kl"])
        parts.append(f"{name} {metrics[key]:.3f} ± {metrics[f'{key}_se']:.3f}" + (" (noise: †)" if noise else ""))
    draws = metrics["mi_samples"]
    protocol = "He et al. 2019's protocol" if draws == 1 else "more than He et al. 2019's one"
    return f"{'; '.join(parts)} (Monte-Carlo s.e.; {draws} z draw(s) per sentence, {protocol}); KL {metrics['kl']:.3f}"


def _cmd_report(args) -> None:
    from textvae.evaluation.metric_table import EVAL_COLUMNS, IMAGE_COLUMNS, columns
    from textvae.reproduction.tables import markdown_table

    if args.reproduction is not None or args.update:
        from textvae.reproduction.status import reproduction_report

        sys.stdout.write(reproduction_report(args.reproduction, args.results, args.update) + "\n")
        return
    if not args.results:
        raise TextVAEError("report: give an ablation directory or eval JSON files (or --reproduction RECIPES_DIR)")
    if len(args.results) == 1 and args.results[0].is_dir():
        from textvae.reproduction.ablation import write_results
        from textvae.reproduction.tables import results_markdown, summarize

        if not (args.results[0] / "results.json").is_file():
            raise TextVAEError(f"{args.results[0]}: not an ablation directory (no results.json)")
        from textvae.reproduction.status import ablation_source, with_current_citations

        rows = _read_json(args.results[0] / "results.json")
        rows = with_current_citations(rows, ablation_source(args.results[0]))  # today's citations and rules
        write_results(args.results[0], rows)
        sys.stdout.write(results_markdown(summarize(rows)) + "\n")
        return
    rows = []
    for path in args.results:
        result = _read_json(path)
        if not isinstance(result, dict) or "kind" not in result:
            raise TextVAEError(f"{path}: not a textvae evaluation results file")
        rows.append((path.parent.name if path.name.startswith("eval_") else path.stem, result))
    keys = EVAL_COLUMNS
    if any(result["kind"] == "image" for _, result in rows):
        keys = (*IMAGE_COLUMNS, *(k for k in EVAL_COLUMNS if k not in IMAGE_COLUMNS))
    sys.stdout.write(markdown_table(rows, columns(keys)) + "\n")


COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "sample": _cmd_sample,
    "reconstruct": _cmd_reconstruct,
    "interpolate": _cmd_interpolate,
    "attribute": lambda args: latent_cli.cmd_attribute(args, _decode_settings(args)),
    "neighbours": latent_cli.cmd_neighbours,
    "generate": lambda args: latent_cli.cmd_generate(args, _decode_settings(args)),
    "ablate": _cmd_ablate,
    "report": _cmd_report,
    "bench": _cmd_bench,
    "export": _cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            if args.command in MODEL_COMMANDS:  # a run directory, checkpoint, exported folder or shipped name
                from textvae.hub.shipped import resolve_model

                args.run = resolve_model(args.run)
            COMMANDS[args.command](args)
    except TextVAEError as err:
        sys.stderr.write(f"textvae: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("textvae: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
