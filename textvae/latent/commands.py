"""The latent-space commands of the CLI: ``attribute``, ``neighbours``, ``generate``, and the
``--add-vector`` / ``--plot`` options of ``reconstruct`` and ``interpolate``. textvae/cli.py wires them in."""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from textvae.errors import TextVAEError

CHECKPOINT_HELP = "a run's best.pt (default) or last.pt; an exported or shipped model has one weights file"
RUN_HELP = "run directory, checkpoint file, exported model directory, or a shipped model's name (kjv)"

if TYPE_CHECKING:  # torch is imported only when a command runs (the CLI starts without it)
    from torch import Tensor

log = logging.getLogger(__name__)


def _scales(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0,1,2, got {text!r}") from None
    return values


def add_vector_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("attribute vectors (computed by `textvae attribute`)")
    group.add_argument("--add-vector", default=None, metavar="NAME", help="add scale × this vector (e.g. 0_to_1) to z")
    group.add_argument("--scale", type=float, default=1.0, help="the vector's multiplier (default 1)")


def add_commands(commands, add_decode_options, positive_int) -> None:
    """The ``attribute``, ``neighbours`` and ``generate`` sub-commands."""
    attribute = commands.add_parser("attribute", help="per-label latent codes, attribute vectors, transfer table")
    attribute.add_argument("run", type=Path, help=RUN_HELP)
    attribute.add_argument("--file", type=Path, required=True, help="label<TAB>sentence lines (training split)")
    attribute.add_argument("--eval-file", type=Path, default=None, help="label<TAB>sentence: measure the transfer")
    attribute.add_argument("--scales", type=_scales, default=[0.0, 1.0, 2.0], help="transfer scales (default 0,1,2)")
    attribute.add_argument("--max-train", type=positive_int, default=None, help="a seeded sample of --file's lines")
    attribute.add_argument("--max-sentences", type=positive_int, default=500, help="eval sentences per label")
    attribute.add_argument("--plot", type=Path, default=None, help="PCA figure (default RUN/attribute_codes.png)")
    attribute.add_argument("--batch-size", type=positive_int, default=256, help="sentences per encoder pass")
    add_decode_options(attribute)

    neighbours = commands.add_parser("neighbours", help="nearest corpus sentences by posterior mean")
    neighbours.add_argument("run", type=Path, help=RUN_HELP)
    neighbours.add_argument("sentences", nargs="+")
    corpus_help = "one sentence per line (label<TAB> dropped); default: the model's own training split"
    neighbours.add_argument("--corpus", type=Path, default=None, help=corpus_help)
    neighbours.add_argument("-k", type=positive_int, default=5)
    neighbours.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    neighbours.add_argument("--batch-size", type=positive_int, default=256, help="sentences per encoder pass")
    neighbours.add_argument("--checkpoint", choices=["best", "last"], default=None, help=CHECKPOINT_HELP)
    neighbours.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)

    generate = commands.add_parser("generate", help="many samples or reconstructions to JSONL (resumable)")
    generate.add_argument("run", type=Path, help=RUN_HELP)
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--num", type=positive_int, default=None, help="prior samples")
    source.add_argument("--file", type=Path, default=None, help="sentences to reconstruct, one per line")
    generate.add_argument("--out", type=Path, required=True, help="FILE.jsonl (re-running resumes)")
    generate.add_argument("--batch-size", type=positive_int, default=64)
    generate.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_decode_options(generate)


def run_shift(args, model) -> Tensor | None:
    """scale · v for ``--add-vector NAME``, from the attribute_vectors.json next to the model (or in its
    cache folder: ``textvae.hub.output_dir``); None without the option."""
    from textvae.hub.output_dir import find_beside
    from textvae.latent.attributes import FILE_NAME, shift

    if args.add_vector is None:
        return None
    if not model.has_latent:
        raise TextVAEError("--add-vector needs a model with a latent variable")
    return shift(find_beside(args.run, FILE_NAME).parent, args.add_vector, args.scale, model.latent_dim)


def score_texts(model, texts: list[str], z: Tensor) -> list[float]:
    """log p(x, EOS | z) of each printed sentence x under its row of z (N, D), nats."""
    import torch

    from textvae.data.batching import collate
    from textvae.data.corpus import sentence_tokens

    vocab = model.vocab
    rows = [[vocab.bos_id, *vocab.encode(sentence_tokens(model.recipe.data, t)), vocab.eos_id] for t in texts]
    batch = collate(rows, range(len(rows)), vocab.pad_id).to(model.device)
    with torch.no_grad():
        return model.model.log_likelihood(batch, z.to(model.device).unsqueeze(0))[0].tolist()


def homotopy_plot(model, args, texts: list[str], shift: Tensor | None) -> None:
    from textvae.latent.plots import plot_homotopy

    z = model.interpolation_path(args.first, args.second, args.steps, shift)  # (S, D)
    weights = [i / (args.steps - 1) for i in range(args.steps)]
    plot_homotopy(weights, texts, score_texts(model, texts, z), args.plot)
    sys.stdout.write(f"figure: {args.plot}\n")


def cmd_attribute(args, settings: dict) -> None:
    import torch

    import textvae
    from textvae.hub.output_dir import writable_folder
    from textvae.latent.attributes import read_labelled, save_vectors, vectors_from_codes
    from textvae.latent.codes import posterior_means
    from textvae.latent.plots import plot_attribute_codes
    from textvae.latent.transfer import vector_norms

    pairs = read_labelled(args.file)
    evaluation = read_labelled(args.eval_file) if args.eval_file is not None else None
    if args.max_train is not None and args.max_train < len(pairs):
        pairs = random.Random(args.seed).sample(pairs, args.max_train)
    model = textvae.load(args.run, args.checkpoint, device=args.device)
    codes = posterior_means(model, [s for _, s in pairs], args.batch_size)  # (N, D)
    vectors = vectors_from_codes(codes, [label for label, _ in pairs])

    norms = vector_norms(vectors)
    for label, count in zip(vectors.labels, vectors.counts, strict=True):
        sys.stdout.write(f"label {label}: {count} sentences\n")
    for name, norm in norms.items():
        sys.stdout.write(f"vector {name}: norm {norm:.3f}\n")
    extra = {"file": str(args.file), "sentences": len(pairs), "date": datetime.now(UTC).isoformat(timespec="seconds")}
    if evaluation is not None:
        extra["transfer"] = _transfer(args, model, vectors, pairs, evaluation, settings)
    beside = writable_folder(args.run)  # the model's folder, or its cache folder when read-only
    path = save_vectors(beside, vectors, extra)
    sys.stdout.write(f"vectors: {path}\n")
    plot = args.plot or beside / "attribute_codes.png"
    shown = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(args.seed))[:5000]  # ≤ 5,000 dots
    plot_attribute_codes(codes[shown], [pairs[i][0] for i in shown.tolist()], vectors, plot)
    sys.stdout.write(f"figure: {plot}\n")


def _transfer(args, model, vectors, pairs, evaluation, settings: dict) -> dict:
    from textvae.latent.transfer import table_markdown, train_classifier, transfer_table

    log.info("training the bag-of-words classifier on %d sentences", len(pairs))
    classifier = train_classifier(pairs, seed=args.seed)
    rows = transfer_table(
        model, vectors, classifier, evaluation, args.scales, args.max_sentences, seed=args.seed, **settings
    )
    sys.stdout.write(table_markdown(rows) + "\n")
    return {"eval_file": str(args.eval_file), "decode": settings, "rows": rows}


def cmd_neighbours(args) -> None:
    import textvae
    from textvae.hub.model_dir import weights_path
    from textvae.hub.output_dir import writable_folder
    from textvae.latent.neighbours import corpus_codes, nearest

    model = textvae.load(args.run, args.checkpoint, device=args.device)
    checkpoint = weights_path(args.run, args.checkpoint)  # the cache key: the weights' bytes
    cache = writable_folder(args.run) / "neighbours"
    corpus, codes = corpus_codes(model, args.corpus, checkpoint, cache, args.batch_size)
    queries = model.encode(args.sentences).mean.cpu()  # (Q, D)
    for sentence, query in zip(args.sentences, queries, strict=True):
        indices, scores = nearest(query, codes, args.k, args.metric)
        sys.stdout.write(f"> {sentence}\n")
        for rank, (index, score) in enumerate(zip(indices.tolist(), scores.tolist(), strict=True), start=1):
            sys.stdout.write(f"{rank}. {args.metric} {score:.4f}  {corpus[index]}\n")


def cmd_generate(args, settings: dict) -> None:
    import textvae
    from textvae.generation.decoding import DecodeSettings
    from textvae.generation.jsonl import generate_jsonl
    from textvae.latent.neighbours import read_corpus

    sentences = read_corpus(args.file) if args.file is not None else None
    model = textvae.load(args.run, args.checkpoint, device=args.device)
    count = generate_jsonl(
        model,
        args.out,
        DecodeSettings(**settings),
        num=args.num,
        sentences=sentences,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    sys.stdout.write(f"{count} lines: {args.out} ({json.dumps(settings)})\n")
