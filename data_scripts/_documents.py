"""Text files of one document (or sentence) per line: UTF-8 and format checks, vocabulary files."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from _errors import PrepareError


def decode_utf8(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PrepareError(f"{name}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def count_lines(text: str) -> int:
    """Lines as ``wc -l`` counts them, plus a last line without a newline; only ``\\n`` ends a line."""
    return text.count("\n") + (not text.endswith("\n") and text != "")


def text_lines(text: str) -> list[str]:
    """The lines of ``text``; only ``\\n`` ends a line (a ``\\r`` before it is whitespace of the line)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


@dataclass(frozen=True)
class Document:
    """One line of a corpus: an optional label and the whitespace tokens of its text."""

    label: str | None
    tokens: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def line(self) -> str:
        """The normalized line: ``label<TAB>text`` or ``text``, tokens joined by one space."""
        return self.text if self.label is None else f"{self.label}\t{self.text}"


def read_documents(
    name: str,
    text: str,
    *,
    labels: str,
    max_len: int | None = None,
    lowercase_except: Collection[str] | None = None,
    vocab: Collection[str] | None = None,
) -> list[Document]:
    """Parse and check one file of one document (or sentence) per line.

    labels: ``"required"`` (every line is ``label<TAB>text``), ``"forbidden"`` (no TAB anywhere) or
        ``"optional"`` (either every line has a label or none does; the first line decides).
    max_len: most tokens per line (the label not counted).
    lowercase_except: when given, every token must be lowercase except these (e.g. ``_UNK``).
    vocab: when given, every token must be in it.
    A label is one non-empty token; an empty line or a line without text is an error.
    """
    documents = []
    labelled = {"required": True, "forbidden": False, "optional": None}[labels]
    for number, line in enumerate(text_lines(text), start=1):
        where = f"{name}:{number}"
        has_tab = "\t" in line
        if labelled is None:
            labelled = has_tab
        if has_tab and not labelled:
            first = "this format has no label column" if labels == "forbidden" else "line 1 has no label<TAB> prefix"
            raise PrepareError(f"{where}: unexpected TAB ({first})")
        if labelled and not has_tab:
            first = "the format is label<TAB>text" if labels == "required" else "line 1 has one"
            raise PrepareError(f"{where}: no label<TAB> prefix ({first})")
        label = None
        if labelled:
            label, line = line.split("\t", 1)
            label = label.strip()
            if not label or len(label.split()) != 1:
                raise PrepareError(f"{where}: label {label!r} is not a single token")
        tokens = tuple(line.split())  # whitespace tokens, as textvae.data.corpus.line_tokens reads them
        if not tokens:
            raise PrepareError(f"{where}: {'no text after the label' if labelled else 'empty line'}")
        if max_len is not None and len(tokens) > max_len:
            raise PrepareError(f"{where}: {len(tokens)} tokens, more than the maximum length {max_len}")
        if lowercase_except is not None:
            for token in tokens:
                if token != token.lower() and token not in lowercase_except:
                    raise PrepareError(f"{where}: {token!r} is not lowercase (the format is lowercased)")
        if vocab is not None:
            for token in tokens:
                if token not in vocab:
                    raise PrepareError(f"{where}: {token!r} is not in the vocabulary file")
        documents.append(Document(label, tokens))
    if not documents:
        raise PrepareError(f"{name}: no lines in the file")
    return documents


def read_vocab(name: str, text: str) -> list[str]:
    """A vocabulary file: one word per line, no blank line, no repeated word; the order is kept."""
    words, seen = [], set()
    for number, line in enumerate(text_lines(text), start=1):
        word = line.strip()
        if not word or len(word.split()) != 1:
            raise PrepareError(f"{name}:{number}: a vocabulary line must hold exactly one word")
        if word in seen:
            raise PrepareError(f"{name}:{number}: {word!r} is repeated")
        seen.add(word)
        words.append(word)
    if not words:
        raise PrepareError(f"{name}: no words in the file")
    return words


def lines_bytes(documents: Sequence[Document]) -> bytes:
    return "".join(f"{doc.line}\n" for doc in documents).encode("utf-8")
