"""A word vocabulary built from the training split, compatible with the papers' setups, or the
pieces of a sentencepiece subword model (BPE or unigram) trained on it.

Ids 0..3 are the specials ``<pad>``, ``<s>`` (BOS), ``</s>`` (EOS) and the unk token. A corpus
that already writes unknown words as ``<unk>`` (PTB) or ``_UNK`` (Yahoo, Yelp) keeps that
spelling as the unk token, so it is never counted as a second, ordinary word. A subword
vocabulary is the sentencepiece model's own piece list (trained with the same four specials at the
same ids); the serialized model travels inside the vocabulary's JSON, so a checkpoint carries it.

A pretrained vocabulary is a Hugging Face fast tokenizer's, read from a local directory
(``load_pretrained_tokenizer``): its tokens keep the tokenizer's ids exactly, so a pretrained
model's embedding and output rows line up with them. The specials are the tokenizer's own: BOS,
EOS, padding and unk are its ``bos_token``, ``eos_token``, ``pad_token`` and ``unk_token``, each
falling back to the EOS token when the tokenizer has none. GPT-2 has a single special token,
``<|endoftext|>``, so it is BOS, EOS, padding and unk at once: a sentence is
``<|endoftext|> w_1 .. w_n <|endoftext|>``, padding is never scored (batches mask by length), and
a leading BOS is told from an EOS by its position. The tokenizer's serialization (its
``tokenizer.json``) and the special ids travel inside the vocabulary's JSON, so a checkpoint
encodes and decodes text without the directory.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from textvae.errors import TextVAEError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
KNOWN_UNK_SPELLINGS = ("<unk>", "_UNK")


@dataclass(frozen=True)
class Vocab:
    words: tuple[str, ...]  # id -> word (or piece); the first four are pad, bos, eos, unk, except for a pretrained one
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3
    sentencepiece: bytes | None = None  # the serialized subword model, when the vocabulary is its pieces
    tokenizer_json: str | None = None  # a pretrained fast tokenizer's serialization, when the vocabulary is its tokens

    def __post_init__(self):
        index = {w: i for i, w in enumerate(self.words)}
        if len(index) != len(self.words):
            raise TextVAEError("vocabulary has duplicate words")
        for marker in (self.pad_id, self.bos_id, self.eos_id):  # text spelled "<s>" is a word, not the marker
            index.pop(self.words[marker], None)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_subwords", None if self.sentencepiece is None else _load_pieces(self))
        object.__setattr__(self, "_tokenizer", None if self.tokenizer_json is None else _load_tokenizer(self))

    @property
    def is_subword(self) -> bool:
        """Tokens are pieces of words (sentencepiece or a pretrained tokenizer): text comes from ``detokenize``."""
        return self.sentencepiece is not None or self.tokenizer_json is not None

    @property
    def is_pretrained(self) -> bool:
        """The vocabulary is a pretrained tokenizer's, ids as that tokenizer gives them."""
        return self.tokenizer_json is not None

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

        With a subword model or a pretrained tokenizer: the pieces of the words joined by spaces (text
        spelled like a special marker is cut into ordinary pieces, never read as the marker)."""
        if self._subwords is not None:
            return self._subwords.encode(" ".join(tokens), out_type=int)
        if self._tokenizer is not None:
            return self._tokenizer.encode(" ".join(tokens), add_special_tokens=False).ids
        index, unk_id = self._index, self.unk_id
        return [index.get(t, unk_id) for t in tokens]

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of ids up to the first EOS: words joined by spaces, or the pieces decoded."""
        if self._subwords is not None:
            return self._subwords.decode(self._content_ids(ids))
        if self._tokenizer is not None:
            return self._tokenizer.decode(self._content_ids(ids), skip_special_tokens=False)
        return " ".join(self.decode(ids))

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words (or pieces) up to the first EOS; BOS and padding are dropped."""
        return [self.words[i] for i in self._content_ids(ids)]

    def _content_ids(self, ids: Iterable[int]) -> list[int]:
        """Ids up to the first EOS, without BOS and padding. A BOS in first place is dropped before
        EOS is looked for: a pretrained tokenizer may spell both alike (GPT-2's ``<|endoftext|>``)."""
        kept = []
        for position, i in enumerate(ids):
            if position == 0 and i == self.bos_id:
                continue
            if i == self.eos_id:
                break
            if i not in (self.bos_id, self.pad_id):
                kept.append(int(i))
        return kept

    def to_json(self) -> str:
        data: dict = {"words": list(self.words)}
        if self.sentencepiece is not None:
            data["sentencepiece"] = base64.b64encode(self.sentencepiece).decode("ascii")
        if self.tokenizer_json is not None:
            data["tokenizer"] = self.tokenizer_json
            data["special_ids"] = {name: getattr(self, f"{name}_id") for name in _SPECIAL_NAMES}
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        words = data.get("words") if isinstance(data, dict) else None
        if not isinstance(words, list) or len(words) < 5 or not all(isinstance(w, str) for w in words):
            raise TextVAEError("vocabulary JSON must be {'words': [pad, bos, eos, unk, word, ...]}")
        if "tokenizer" in data:
            return cls._pretrained_from_json(data, words)
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

    @classmethod
    def _pretrained_from_json(cls, data: dict, words: list[str]) -> Vocab:
        serialized, special_ids = data["tokenizer"], data.get("special_ids")
        if not isinstance(serialized, str):
            raise TextVAEError("vocabulary JSON: 'tokenizer' must be a serialized tokenizer (tokenizer.json as text)")
        if not isinstance(special_ids, dict) or set(special_ids) != set(_SPECIAL_NAMES):
            raise TextVAEError(f"vocabulary JSON: 'special_ids' must give {', '.join(_SPECIAL_NAMES)}")
        for name, value in special_ids.items():
            if not isinstance(value, int) or not 0 <= value < len(words):
                raise TextVAEError(f"vocabulary JSON: special id {name} = {value!r} is not a token id")
        ids = {f"{name}_id": value for name, value in special_ids.items()}
        return cls(words=tuple(words), tokenizer_json=serialized, **ids)


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


_SPECIAL_NAMES = ("pad", "bos", "eos", "unk")


def _load_tokenizer(vocab: Vocab):
    """The ``tokenizers`` tokenizer of a pretrained vocabulary, checked against its token list.

    Text spelled like one of its special tokens is encoded as ordinary text, as with sentencepiece."""
    import tokenizers

    try:
        tokenizer = tokenizers.Tokenizer.from_str(vocab.tokenizer_json)
    except Exception as err:  # the Rust side raises plain Exception for a malformed serialization
        raise TextVAEError(f"vocabulary: unreadable serialized tokenizer ({str(err).strip()[:100]})") from None
    tokenizer.encode_special_tokens = True
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size != len(vocab.words) or any(tokenizer.id_to_token(i) != w for i, w in enumerate(vocab.words)):
        raise TextVAEError("vocabulary: the serialized tokenizer's tokens differ from the word list")
    return tokenizer


def load_pretrained_tokenizer(directory: str) -> Vocab:
    """The vocabulary of the Hugging Face tokenizer in the local ``directory`` (never the hub).

    Token i is the tokenizer's token i. BOS, EOS, padding and unk are the tokenizer's own special
    tokens, the EOS token standing in for any it lacks (GPT-2: ``<|endoftext|>`` for all four)."""
    where = "[data].pretrained_tokenizer"
    if not Path(directory).expanduser().is_dir():
        raise TextVAEError(f"{where}: {directory} is not a directory (a local Hugging Face tokenizer directory)")
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(Path(directory).expanduser(), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise TextVAEError(f"{where}: cannot load a tokenizer from {directory}: {reason}") from None
    if not tokenizer.is_fast:
        raise TextVAEError(f"{where}: {directory} holds a slow (Python) tokenizer; textvae needs a fast one")
    if tokenizer.eos_token_id is None:
        raise TextVAEError(f"{where}: the tokenizer in {directory} has no eos_token to end sentences with")
    backend = tokenizer.backend_tokenizer
    size = backend.get_vocab_size(with_added_tokens=True)
    words = tuple(backend.id_to_token(i) for i in range(size))
    if None in words:
        raise TextVAEError(f"{where}: the tokenizer in {directory} has no token for id {words.index(None)}")
    eos = tokenizer.eos_token_id
    ids = {
        f"{name}_id": eos if getattr(tokenizer, f"{name}_token_id") is None else getattr(tokenizer, f"{name}_token_id")
        for name in _SPECIAL_NAMES
    }
    return Vocab(words=words, tokenizer_json=backend.to_str(), **ids)


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
