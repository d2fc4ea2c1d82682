"""A word vocabulary built from the training split, compatible with the papers' setups.

Ids 0..3 are the specials ``<pad>``, ``<s>`` (BOS), ``</s>`` (EOS) and the unk token. A corpus
that already writes unknown words as ``<unk>`` (PTB) or ``_UNK`` (Yahoo, Yelp) keeps that
spelling as the unk token, so it is never counted as a second, ordinary word.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from textvae.errors import TextVAEError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
KNOWN_UNK_SPELLINGS = ("<unk>", "_UNK")


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]  # id -> word; the first four are pad, bos, eos, unk
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3

    def __post_init__(self):
        index = {w: i for i, w in enumerate(self.words)}
        if len(index) != len(self.words):
            raise TextVAEError("vocabulary has duplicate words")
        for marker in (self.pad_id, self.bos_id, self.eos_id):  # text spelled "<s>" is a word, not the marker
            index.pop(self.words[marker], None)
        object.__setattr__(self, "_index", index)

    @property
    def unk(self) -> str:
        return self.words[self.unk_id]

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, counts: Counter, max_size: int | None = None, min_freq: int = 1) -> Vocab:
        """Most frequent words first (ties alphabetical); ``max_size`` excludes the specials."""
        unk = next((u for u in KNOWN_UNK_SPELLINGS if u in counts), KNOWN_UNK_SPELLINGS[0])
        specials = (PAD, BOS, EOS, unk)
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in specials),
            key=lambda w: (-counts[w], w),
        )
        if max_size is not None:
            ranked = ranked[:max_size]
        if not ranked:
            raise TextVAEError("vocabulary is empty: no training word passes min_freq")
        return cls(words=(*specials, *ranked))

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Word ids, unk for unknown words and for text spelled like ``<pad>``, ``<s>`` or ``</s>``; no BOS/EOS."""
        index, unk_id = self._index, self.unk_id
        return [index.get(t, unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first EOS; BOS and padding are dropped."""
        words = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.bos_id, self.pad_id):
                words.append(self.words[i])
        return words

    def to_json(self) -> str:
        return json.dumps({"words": list(self.words)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list) or len(words) < 5 or not all(isinstance(w, str) for w in words):
            raise TextVAEError("vocabulary JSON must be {'words': [pad, bos, eos, unk, word, ...]}")
        if tuple(words[:3]) != (PAD, BOS, EOS):
            raise TextVAEError(f"vocabulary must start with {PAD}, {BOS}, {EOS}")
        return cls(words=tuple(words))
