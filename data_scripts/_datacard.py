"""The data card (``datacard.json``): per-split statistics of the written files, and its log summary."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from _checksums import sha256_hex
from _documents import Document, lines_bytes
from _splitting import SPLITS

CARD_NAME = "datacard.json"
PERCENTILES = (50, 90, 95, 99)
LENGTH_NOTE = "length: tokens per line, a label not counted; mean, min, nearest-rank percentiles p50-p99, max"


def length_stats(lengths: Sequence[int]) -> dict:
    """Mean, min, max and nearest-rank percentiles (p50 ... p99) of token counts per line."""
    ordered = sorted(lengths)
    n = len(ordered)
    stats = {"mean": round(sum(ordered) / n, 2), "min": ordered[0]}
    for q in PERCENTILES:
        stats[f"p{q}"] = ordered[max(math.ceil(q / 100 * n), 1) - 1]
    stats["max"] = ordered[-1]
    return stats


def split_stats(name: str, data: bytes, documents: Sequence[Document]) -> tuple[dict, set[str]]:
    """The data card of one written file (tokens exclude labels), and its set of word types."""
    types = {token for doc in documents for token in doc.tokens}
    card = {
        "file": name,
        "lines": len(documents),
        "tokens": sum(len(doc.tokens) for doc in documents),
        "types": len(types),
        "bytes": len(data),
        "sha256": sha256_hex(data),
        "length": length_stats([len(doc.tokens) for doc in documents]),
    }
    labels = Counter(doc.label for doc in documents if doc.label is not None)
    if labels:
        card["labels"] = dict(sorted(labels.items()))
    return card, types


def splits_card(names: dict[str, str], documents: dict[str, list[Document]]) -> tuple[dict, dict[str, bytes], set]:
    """Per-split cards (with ``types_not_in_train``), the file bytes to write, and the training word types."""
    cards, files, types = {}, {}, {}
    for split in SPLITS:
        data = lines_bytes(documents[split])
        cards[split], types[split] = split_stats(names[split], data, documents[split])
        files[names[split]] = data
    for split in SPLITS[1:]:
        cards[split]["types_not_in_train"] = len(types[split] - types["train"])
    return cards, files, types["train"]


def card_bytes(card: dict) -> bytes:
    return (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def log_card(log: logging.Logger, card: dict, out: Path) -> None:
    for split in SPLITS:
        s = card["splits"][split]
        log.info(
            "%s: %d lines, %d tokens, %d types, mean length %.1f, sha256 %s",
            s["file"],
            s["lines"],
            s["tokens"],
            s["types"],
            s["length"]["mean"],
            s["sha256"],
        )
    checked = "checksums verified" if card["verified"] else "checksums not (all) verified: see the card"
    split = "published split" if card["split"]["published"] else "RE-SPLIT, not the published split"
    log.info("wrote %s (%s; %s)", out, split, checked)
