"""Splits: the published train/valid/test split, or a seeded re-split of pooled documents."""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from _documents import Document
from _errors import PrepareError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Resplit:
    """Pool the documents of the ``sources`` splits and cut them anew into train, valid and test.

    ``sizes`` are three counts (ints) or three fractions of the pool (floats summing to at most 1).
    """

    sources: tuple[str, ...]
    sizes: tuple[int, int, int] | tuple[float, float, float]
    seed: int


def parse_split_list(text: str, aliases: dict[str, str] | None = None) -> tuple[str, ...]:
    """``valid,test`` -> ("valid", "test"); an argparse type."""
    aliases = aliases or {}
    names = tuple(aliases.get(part.strip(), part.strip()) for part in text.split(","))
    for name in names:
        if name not in SPLITS:
            raise argparse.ArgumentTypeError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a split is named twice in {text!r}")
    return names


def parse_sizes(text: str) -> tuple[int, int, int] | tuple[float, float, float]:
    """``TRAIN,VALID,TEST`` as three counts (``16000,2000,2000``) or fractions (``0.8,0.1,0.1``); an argparse type."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give three sizes TRAIN,VALID,TEST")
    if all(part.isdigit() for part in parts):
        counts = tuple(int(part) for part in parts)
        if min(counts) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: every split needs at least one document")
        return counts
    try:
        fractions = tuple(float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes are three counts or three fractions") from None
    if not all(0 < f < 1 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise argparse.ArgumentTypeError(f"{text!r}: fractions must lie in (0, 1) and sum to at most 1")
    return fractions


def add_resplit_arguments(parser: argparse.ArgumentParser, *, sources_help: str, aliases=None) -> None:
    group = parser.add_argument_group("re-split (NOT the published split; for CPU-sized experiments)")
    group.add_argument(
        "--resplit-from",
        type=lambda text: parse_split_list(text, aliases),
        metavar="SPLITS",
        help=f"pool the documents of these source splits (e.g. valid,test) and cut them anew; {sources_help}",
    )
    group.add_argument(
        "--resplit-sizes",
        type=parse_sizes,
        metavar="TRAIN,VALID,TEST",
        help="three counts (16000,2000,2000) or fractions of the pool (0.8,0.1,0.1, the default)",
    )
    group.add_argument("--seed", type=int, help="seed of the re-split (default 0)")


def resplit_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Resplit | None:
    if args.resplit_from is None:
        if args.resplit_sizes is not None or args.seed is not None:
            parser.error("--resplit-sizes and --seed need --resplit-from")
        return None
    sizes = args.resplit_sizes if args.resplit_sizes is not None else (0.8, 0.1, 0.1)
    return Resplit(args.resplit_from, sizes, 0 if args.seed is None else args.seed)


def split_counts(sizes: Sequence[int | float], pool: int) -> dict[str, int]:
    """Documents per split; fractions are rounded down, and fractions summing to 1 give train the rest."""
    if all(isinstance(size, int) for size in sizes):
        counts = dict(zip(SPLITS, sizes, strict=True))
        if sum(counts.values()) > pool:
            raise PrepareError(f"re-split asks for {sum(counts.values())} documents; the pool holds {pool}")
    else:
        counts = {split: math.floor(f * pool) for split, f in zip(SPLITS, sizes, strict=True)}
        if abs(sum(sizes) - 1) < 1e-9:
            counts["train"] = pool - counts["valid"] - counts["test"]
    for split, count in counts.items():
        if count < 1:
            raise PrepareError(f"re-split: split {split} would be empty (the pool holds {pool} documents)")
    return counts


def rank_key(seed: int, text: str) -> bytes:
    """A document's place in the re-split order: depends only on the seed and its text."""
    return hashlib.sha256(f"{seed}\n{text}".encode()).digest()


def apply_resplit(pool: Sequence[Document], plan: Resplit) -> tuple[dict[str, list[Document]], dict]:
    """Cut the pooled documents into train/valid/test; returns the splits and the numbers for the card.

    Repeated documents (the same text, whatever the label) are dropped first, the first copy kept, so
    that no text lands in two splits. The rest is ordered by ``sha256(f"{seed}\\n{text}")``; train,
    valid and test are taken from the front in that order, and each split keeps the pool's order.
    """
    first: dict[str, int] = {}
    for index, doc in enumerate(pool):
        first.setdefault(doc.text, index)
    unique = sorted(first.values())
    counts = split_counts(plan.sizes, len(unique))
    ordered = sorted(unique, key=lambda i: rank_key(plan.seed, pool[i].text))
    splits, start = {}, 0
    for split in SPLITS:
        chosen = sorted(ordered[start : start + counts[split]])
        splits[split] = [pool[i] for i in chosen]
        start += counts[split]
    info = {
        "pool_documents": len(pool),
        "repeated_documents_dropped": len(pool) - len(unique),
        "unused_documents": len(unique) - start,
        "counts": counts,
    }
    return splits, info


def resplit_card(plan: Resplit, source_files: Sequence[str], info: dict) -> dict:
    sizes = ",".join(str(size) for size in plan.sizes)
    return {
        "published": False,
        "warning": "NOT the published train/valid/test split: the documents of "
        + ", ".join(source_files)
        + " were pooled and cut anew for CPU-sized experiments; numbers measured on it are not comparable"
        " with published results",
        "method": "pool the source files in the order listed; drop repeated texts (first copy kept); order the "
        "rest by sha256(f'{seed}\\n{text}'); take train, valid, test from the front; each split keeps the "
        "pool order",
        "from": list(source_files),
        "seed": plan.seed,
        "sizes_requested": sizes,
        **info,
    }


PUBLISHED_SPLIT = {"published": True, "note": "the published train/valid/test split, files as distributed"}
