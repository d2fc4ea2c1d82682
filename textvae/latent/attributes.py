"""Attribute vectors in latent space (Shen et al. 2020's latent vector arithmetic).

For labelled sentences (x_i, y_i), the mean posterior code of label l is μ_l = mean_{i: y_i = l} E_q[z|x_i],
and the attribute vector from label a to label b is v_{a→b} = μ_b − μ_a, named ``a_to_b``. Decoding
z + s · v_{a→b} for a sentence of label a moves it towards label b (``scale`` s; s = 0 reconstructs).

A labelled file has one ``label<TAB>sentence`` per line, the format data_scripts/prepare_yelp_short.py
writes. The vectors of a run are saved as ``RUN/attribute_vectors.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from textvae.checkpoint import atomic_write_text
from textvae.errors import TextVAEError
from textvae.latent.codes import posterior_means

FILE_NAME = "attribute_vectors.json"


def read_labelled(path: Path) -> list[tuple[str, str]]:
    """(label, sentence) pairs of a ``label<TAB>sentence`` file; blank lines skipped; a line without TAB is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TextVAEError(f"cannot read labelled file {path}: {err}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, sentence = line.partition("\t")
        if not tab or not label.strip() or not sentence.strip():
            raise TextVAEError(f"{path}:{number}: expected label<TAB>sentence, got {line[:60]!r}")
        pairs.append((label.strip(), sentence.strip()))
    if not pairs:
        raise TextVAEError(f"{path}: no labelled sentences")
    return pairs


@dataclass(frozen=True)
class AttributeVectors:
    """Per-label mean codes ``means`` (L, D) of ``labels`` (counts sentences each) and their differences."""

    labels: tuple[str, ...]
    counts: tuple[int, ...]
    means: Tensor  # (L, D), on the CPU

    @property
    def names(self) -> list[str]:
        return [f"{a}_to_{b}" for a in self.labels for b in self.labels if a != b]

    def vector(self, name: str) -> Tensor:
        """v_{a→b} = μ_b − μ_a for ``name`` = ``a_to_b``: (D,)."""
        if name not in self.names:
            raise TextVAEError(f"unknown attribute vector {name!r}; this run has: {', '.join(self.names)}")
        source, target = next((a, b) for a in self.labels for b in self.labels if f"{a}_to_{b}" == name)
        return self.means[self.labels.index(target)] - self.means[self.labels.index(source)]

    def to_json(self) -> dict:
        return {
            "labels": list(self.labels),
            "counts": list(self.counts),
            "means": self.means.tolist(),
            "vectors": {name: self.vector(name).tolist() for name in self.names},
            "definition": "a_to_b = mean posterior mean of label b − that of label a (Shen et al. 2020)",
        }

    @classmethod
    def from_json(cls, data: dict) -> AttributeVectors:
        return cls(tuple(data["labels"]), tuple(data["counts"]), torch.tensor(data["means"], dtype=torch.float32))


def attribute_vectors(model, pairs: Sequence[tuple[str, str]], batch_size: int = 256) -> AttributeVectors:
    """Per-label mean posterior codes of (label, sentence) pairs; at least two labels."""
    if len({label for label, _ in pairs}) < 2:
        raise TextVAEError(f"attribute vectors need at least two labels, got {sorted({label for label, _ in pairs})}")
    codes = posterior_means(model, [sentence for _, sentence in pairs], batch_size)  # (N, D)
    return vectors_from_codes(codes, [label for label, _ in pairs])


def vectors_from_codes(codes: Tensor, labels: Sequence[str]) -> AttributeVectors:
    """The per-label means of codes (N, D) labelled ``labels`` (N,); at least two labels."""
    names = tuple(sorted(set(labels)))
    if len(names) < 2:
        raise TextVAEError(f"attribute vectors need at least two labels, got {list(names)}")
    labels, index_of = list(labels), {name: i for i, name in enumerate(names)}
    index = torch.tensor([index_of[label] for label in labels], device=codes.device)  # (N,)
    sums = codes.new_zeros(len(names), codes.shape[1]).index_add_(0, index, codes)  # (L, D)
    counts = torch.bincount(index, minlength=len(names))  # (L,)
    means = (sums / counts.unsqueeze(1)).cpu()
    return AttributeVectors(names, tuple(counts.tolist()), means)


def save_vectors(run_dir: Path, vectors: AttributeVectors, extra: dict | None = None) -> Path:
    path = Path(run_dir) / FILE_NAME
    atomic_write_text(path, json.dumps({**vectors.to_json(), **(extra or {})}, indent=1) + "\n")
    return path


def load_vectors(run_dir: Path) -> AttributeVectors:
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        raise TextVAEError(f"{path} does not exist: compute the vectors first with `textvae attribute RUN --file ...`")
    try:
        return AttributeVectors.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as err:
        raise TextVAEError(f"{path} is not an attribute-vector file: {err}") from None


def shift(run_dir: Path, name: str | None, scale: float, latent_dim: int) -> Tensor | None:
    """scale · v_name (D,) from the run's saved vectors, or None without a name."""
    if name is None:
        return None
    vector = load_vectors(run_dir).vector(name)
    if vector.shape[0] != latent_dim:
        raise TextVAEError(f"attribute vector {name!r} has {vector.shape[0]} dimensions, the model {latent_dim}")
    return scale * vector
