"""A word vocabulary built from the training split, compatible with the papers' setups, or the
pieces of a sentencepiece subword model (BPE or unigram) trained on it.

Ids 0..3 are the specials ``<pad>``, ``<s>`` (BOS), ``</s>`` (EOS) and the unk token. A corpus
that already writes unknown words as ``<unk>`` (PTB) or ``_UNK`` (Yahoo, Yelp) keeps that
spelling as the unk token, so it is never counted as a second, ordinary word. A subword
vocabulary is the sentencepiece model's own piece list (trained with the same four specials at the
same ids); the serialized model travels inside the vocabulary's JSON, so a checkpoint carries it.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from textvae.errors import TextVAEError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
KNOWN_UNK_SPELLINGS = ("<unk>", "_UNK")


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]  # id -> word (or subword piece); the first four are pad, bos, eos, unk
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3
    sentencepiece: bytes | None = None  # the serialized subword model, when the vocabulary is its pieces

    def __post_init__(self):
        index = {w: i for i, w in enumerate(self.words)}
        if len(index) != len(self.words):
            raise TextVAEError("vocabulary has duplicate words")
        for marker in (self.pad_id, self.bos_id, self.eos_id):  # text spelled "<s>" is a word, not the marker
            index.pop(self.words[marker], None)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_subwords", None if self.sentencepiece is None else _load_pieces(self))

    @property
    def is_subword(self) -> bool:
        return self.sentencepiece is not None

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
        """Word ids, unk for unknown words and for text spelled like ``<pad>``, ``<s>`` or ``</s>``; no BOS/EOS.

        With a subword model: the pieces of the words joined by spaces (text spelled like a special
        marker is cut into ordinary pieces, never read as the marker)."""
        if self._subwords is not None:
            return self._subwords.encode(" ".join(tokens), out_type=int)
        index, unk_id = self._index, self.unk_id
        return [index.get(t, unk_id) for t in tokens]

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of ids up to the first EOS: words joined by spaces, or the pieces decoded."""
        if self._subwords is not None:
            kept = []
            for i in ids:
                if i == self.eos_id:
                    break
                if i not in (self.bos_id, self.pad_id):
                    kept.append(int(i))
            return self._subwords.decode(kept)
        return " ".join(self.decode(ids))

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
        data: dict = {"words": list(self.words)}
        if self.sentencepiece is not None:
            data["sentencepiece"] = base64.b64encode(self.sentencepiece).decode("ascii")
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list) or len(words) < 5 or not all(isinstance(w, str) for w in words):
            raise TextVAEError("vocabulary JSON must be {'words': [pad, bos, eos, unk, word, ...]}")
        if tuple(words[:3]) != (PAD, BOS, EOS):
            raise TextVAEError(f"vocabulary must start with {PAD}, {BOS}, {EOS}")
        model = data.get("sentencepiece")
        if model is None:
            return cls(words=tuple(words))
        try:
            model_bytes = base64.b64decode(model, validate=True) if isinstance(model, str) else None
        except ValueError:
            model_bytes = None
        if not model_bytes:
            raise TextVAEError("vocabulary JSON: 'sentencepiece' must be a base64-encoded sentencepiece model")
        return cls(words=tuple(words), sentencepiece=model_bytes)


def _load_pieces(vocab: Vocab):
    """The sentencepiece processor of a subword vocabulary, checked against its piece list."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(vocab.sentencepiece)
    except (RuntimeError, OSError, TypeError) as err:
        raise TextVAEError(f"vocabulary: unreadable sentencepiece model ({str(err).strip()[:100]})") from None
    pieces = tuple(processor.id_to_piece(i) for i in range(processor.get_piece_size()))
    if pieces != vocab.words:
        raise TextVAEError("vocabulary: the sentencepiece model's pieces differ from the word list")
    return processor


def train_sentencepiece(lines: Iterable[str], model_type: str, vocab_size: int) -> Vocab:
    """A subword vocabulary trained on ``lines`` (the training split's text), specials at ids 0..3."""
    import io

    import sentencepiece

    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small corpus gets the pieces it supports, not an error
            character_coverage=1.0,
            pad_id=0,
            bos_id=1,
            eos_id=2,
            unk_id=3,
            pad_piece=PAD,
            bos_piece=BOS,
            eos_piece=EOS,
            unk_piece="<unk>",
            num_threads=1,  # the same pieces on every machine
            minloglevel=2,
        )
    except RuntimeError as err:
        raise TextVAEError(f"sentencepiece training failed: {str(err).strip().splitlines()[0][:160]}") from None
    data = model.getvalue()
    processor = sentencepiece.SentencePieceProcessor(model_proto=data)
    words = tuple(processor.id_to_piece(i) for i in range(processor.get_piece_size()))
    return Vocab(words=words, sentencepiece=data)
