"""Nearest corpus sentences in latent space, by posterior mean.

The corpus (one sentence per line; a ``label<TAB>`` prefix is dropped; by default the model's own
training split) is encoded once and cached beside the run as ``RUN/neighbours/<key>.pt``, the key a
hash of the corpus text and of the weights file, so a retrained model or an edited corpus is encoded
again.

Metrics: ``cosine`` similarity of the means (higher is nearer) or ``euclidean`` distance (lower is nearer).
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import torch
from torch import Tensor

from textvae.checkpoint import atomic_write_bytes
from textvae.errors import TextVAEError
from textvae.latent.codes import posterior_means

log = logging.getLogger(__name__)
METRICS = ("cosine", "euclidean")


def read_corpus(path: Path) -> list[str]:
    """Non-blank lines of ``path``, each without a ``label<TAB>`` prefix."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise TextVAEError(f"cannot read corpus {path}: {err}") from None
    sentences = [line.rpartition("\t")[2].strip() for line in lines]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise TextVAEError(f"corpus {path} has no sentences")
    return sentences


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def training_sentences(model) -> list[str]:
    """The training split of the model's own recipe (its ``data`` table), one sentence per line."""
    from textvae.data.corpus import load_text

    return [line.strip() for line in load_text(model.recipe.data, "train")["text"] if line.strip()]


def corpus_codes(
    model, corpus: Path | None, checkpoint: Path, cache_dir: Path, batch_size: int = 256
) -> tuple[list, Tensor]:
    """The corpus sentences and their posterior means (N, D), read from the cache or encoded and cached.
    ``corpus`` None: the model's own training split (``training_sentences``)."""
    if corpus is None:
        sentences = training_sentences(model)
        corpus_key = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    else:
        sentences, corpus_key = read_corpus(corpus), _digest(corpus)
    key = hashlib.sha256(f"{corpus_key} {_digest(checkpoint)}".encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached["count"] == len(sentences):
            log.info("corpus codes from the cache %s", path)
            return sentences, cached["means"]
    log.info("encoding %d corpus sentences (cached as %s)", len(sentences), path)
    means = posterior_means(model, sentences, batch_size).cpu()
    buffer = io.BytesIO()
    torch.save({"count": len(sentences), "means": means, "corpus": str(corpus or "training split")}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return sentences, means


def nearest(query: Tensor, codes: Tensor, k: int, metric: str = "cosine") -> tuple[Tensor, Tensor]:
    """The k nearest rows of codes (N, D) to query (D,): (indices (k,), scores (k,)), nearest first.

    Scores are cosine similarities (descending) or Euclidean distances (ascending); ties keep corpus order."""
    if metric not in METRICS:
        raise TextVAEError(f"unknown metric {metric!r}; choose {' or '.join(METRICS)}")
    if not 1 <= k <= codes.shape[0]:
        raise TextVAEError(f"k must be in 1..{codes.shape[0]} (the corpus size), got {k}")
    query = query.to(codes)
    if metric == "cosine":
        scores = torch.nn.functional.cosine_similarity(codes, query.unsqueeze(0), dim=1)  # (N,)
        order = torch.sort(-scores, stable=True).indices
    else:
        scores = torch.linalg.vector_norm(codes - query, dim=1)  # (N,)
        order = torch.sort(scores, stable=True).indices
    return order[:k], scores[order[:k]]
