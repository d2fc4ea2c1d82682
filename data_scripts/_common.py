"""What the ``data_scripts/prepare_*.py`` scripts share: reading or downloading the source files, UTF-8 and
format checks, checksums, data-card statistics, the seeded re-split, and atomic writing.

The scripts are run as files (``python data_scripts/prepare_yahoo.py ...``), so Python puts this folder
first on ``sys.path`` and they import this module as ``_common``. Only the standard library is used.

Every function here raises ``PrepareError`` (one line, no traceback) for bad input; the scripts turn it
into ``prepare_<name>: error: <message>`` on stderr and exit status 2. All reading and checking happens
before ``write_atomically`` is called, so bad input never leaves a file behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "valid", "test")
CARD_NAME = "datacard.json"
DOWNLOAD_TIMEOUT_S = 60
PERCENTILES = (50, 90, 95, 99)
LENGTH_NOTE = "length: tokens per line, a label not counted; mean, min, nearest-rank percentiles p50-p99, max"


class PrepareError(Exception):
    """Bad input, stated in one line."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) with exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


# ---------------------------------------------------------------------------------------------- reading


def check_source_dir(source: Path) -> None:
    if not source.is_dir():
        raise PrepareError(f"{source}: source directory not found")


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PrepareError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PrepareError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise PrepareError(f"{path}: cannot read ({err.strerror or err})") from None


def download(url: str) -> bytes:
    """The bytes at ``url`` (http, https or file), read with urllib."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        raise PrepareError(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except urllib.error.URLError as err:
        raise PrepareError(f"{url}: download failed ({err.reason})") from None
    except (OSError, ValueError) as err:
        raise PrepareError(f"{url}: download failed ({err})") from None


def fetch(name: str, *, source: Path | None, url: str) -> bytes:
    """File ``name`` from the local directory ``source``, or else downloaded from ``url/name``."""
    if source is not None:
        return read_file(source / name)
    return download(f"{url.rstrip('/')}/{name}")


def check_out_is_not_source(out: Path, source: Path | None) -> None:
    """Writing into the source directory would replace the files being read (a re-split would lose them)."""
    if source is not None and out.exists() and out.resolve() == source.resolve():
        raise PrepareError(f"{out}: --out must not be the --source directory")


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


# -------------------------------------------------------------------------------------------- checksums


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_entry(name: str, data: bytes, expected: str | None, *, verify: bool, reference: str) -> dict:
    """The data-card entry of one source file; with ``verify``, a known checksum must match.

    ``expected`` is the published sha256 (``None`` when none is known; then the computed one is only
    recorded). ``reference`` says where ``expected`` comes from.
    """
    digest = sha256_hex(data)
    entry = {"file": name, "bytes": len(data), "sha256": digest}
    if expected is None:
        entry["sha256_status"] = "unverified: no published checksum is known for this file"
    elif digest == expected:
        entry["sha256_status"] = f"verified: equals the sha256 of {reference}"
    elif verify:
        raise PrepareError(
            f"{name}: sha256 {digest}, expected {expected} (pass --no-verify for other files in this format)"
        )
    else:
        entry["sha256_status"] = f"differs from the sha256 of {reference} (--no-verify)"
    return entry


def all_verified(entries: Sequence[dict]) -> bool:
    return all(entry["sha256_status"].startswith("verified") for entry in entries)


# ------------------------------------------------------------------------------------ documents (lines)


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


# ------------------------------------------------------------------------------------------- statistics


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


# --------------------------------------------------------------------------------------------- re-split


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


# ---------------------------------------------------------------------------------------------- writing


def write_atomically(out: Path, files: dict[str, bytes]) -> None:
    """Write every file to a temporary file in ``out``, then rename them into place in the given order.

    The last file is the completion marker (the data card): an old copy of it is removed before the
    first rename, so a present marker always describes the files next to it. If writing fails, the
    temporary files are removed (and ``out`` too if this call created it).
    """
    if out.exists() and not out.is_dir():
        raise PrepareError(f"{out}: exists and is not a directory")
    created = not out.exists()
    temps: dict[str, str] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        umask = os.umask(0)
        os.umask(umask)
        for name, data in files.items():
            fd, temps[name] = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temps[name], 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        (out / list(files)[-1]).unlink(missing_ok=True)
        for name in files:
            os.replace(temps.pop(name), out / name)
    except OSError as err:
        for temp in temps.values():
            Path(temp).unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise PrepareError(f"{out}: cannot write ({err.strerror or err})") from None


# ------------------------------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1")
    return value


def add_io_arguments(parser: argparse.ArgumentParser, *, source_help: str, default_url: str) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory to write the files and datacard.json to")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--source", type=Path, help=source_help)
    where.add_argument("--url", default=default_url, help="where to download the files from (default: %(default)s)")
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="accept files whose sha256 differs from the published one (the card says so)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


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


# ----------------------------------------------------------------------- the Yang et al. (2017) format

UNK = "_UNK"
VOCAB_NAME = "vocab.txt"


@dataclass(frozen=True)
class YangCorpus:
    """How a corpus in the Yang et al. (2017) format is named, checked and described.

    The format: one document per line, lowercased, whitespace-tokenized, words outside the 20k
    vocabulary written ``_UNK``, at most 200 tokens; optionally ``label<TAB>`` before the text.
    """

    dataset: str  # the card's name
    source_names: dict[str, str]  # split -> file name in the source directory or under the URL
    out_names: dict[str, str]  # split -> file name written to --out
    labels: str  # "required" or "optional" (see read_documents)
    vocab: str  # "required": vocab.txt must be there; "optional": read if present in --source
    known_sha256: dict[str, str]  # source file name -> published sha256
    sha256_reference: str  # where known_sha256 comes from
    description: str
    licence: str
    textvae: str  # how a recipe reads the output


def prepare_yang(
    out: Path,
    corpus: YangCorpus,
    *,
    source: Path | None,
    url: str,
    verify: bool,
    resplit: Resplit | None,
    max_len: int,
) -> dict:
    """Read (or download), check, optionally re-split, and write the splits and the data card; returns the card."""
    if source is not None:
        check_source_dir(source)
        check_out_is_not_source(out, source)
    needed = resplit.sources if resplit is not None else SPLITS
    raw = {}
    for split in needed:
        try:
            raw[split] = fetch(corpus.source_names[split], source=source, url=url)
        except PrepareError as err:
            hint = "" if resplit is not None else " (--resplit-from re-splits the files that are there)"
            raise PrepareError(f"{err}{hint}") from None
    with_vocab = corpus.vocab == "required" or (source is not None and (source / VOCAB_NAME).exists())
    vocab_raw = fetch(VOCAB_NAME, source=source, url=url) if with_vocab else None

    def entry(name: str, data: bytes) -> dict:
        expected = corpus.known_sha256.get(name)
        return source_entry(name, data, expected, verify=verify, reference=corpus.sha256_reference)

    entries = [entry(corpus.source_names[split], raw[split]) for split in needed]
    vocab = None
    if vocab_raw is not None:
        entries.append(entry(VOCAB_NAME, vocab_raw))
        vocab = read_vocab(VOCAB_NAME, decode_utf8(VOCAB_NAME, vocab_raw))
    docs = {}
    for split in needed:
        name = corpus.source_names[split]
        docs[split] = read_documents(
            name,
            decode_utf8(name, raw[split]),
            labels=corpus.labels,
            max_len=max_len,
            lowercase_except={UNK},
            vocab=None if vocab is None else {*vocab, UNK},
        )
    labelled = {split: docs[split][0].label is not None for split in needed}
    if len(set(labelled.values())) > 1:
        with_label = [corpus.source_names[s] for s in needed if labelled[s]]
        without = [corpus.source_names[s] for s in needed if not labelled[s]]
        raise PrepareError(
            f"label<TAB> prefixes in {', '.join(with_label)} but not in {', '.join(without)} (all files or none)"
        )

    if resplit is not None:
        pool = [doc for split in needed for doc in docs[split]]
        splits, info = apply_resplit(pool, resplit)
        split_info = resplit_card(resplit, [corpus.source_names[s] for s in needed], info)
    else:
        splits, split_info = docs, PUBLISHED_SPLIT
    cards, files, train_types = splits_card(corpus.out_names, splits)
    if resplit is None:
        for split in SPLITS:
            cards[split]["identical_to_source"] = files[corpus.out_names[split]] == raw[split]
    if vocab_raw is not None:
        files[VOCAB_NAME] = vocab_raw
    has_labels = any(labelled.values())
    card = {
        "dataset": corpus.dataset,
        "description": corpus.description,
        "source": str(source) if source is not None else url,
        "source_files": entries,
        "verified": all_verified(entries),
        "split": split_info,
        "labels": {
            "present": has_labels,
            "note": "every line is label<TAB>document; the label is not part of the text: token counts, types "
            "and lengths exclude it, and textvae drops it when reading"
            if has_labels
            else "no label<TAB> prefix in the files",
        },
        "max_len": max_len,
        "length_note": LENGTH_NOTE,
        "splits": cards,
        "vocab_file": None
        if vocab is None
        else {"file": VOCAB_NAME, "words": len(vocab), "contains_unk": UNK in vocab, "sha256": sha256_hex(vocab_raw)},
        "vocab_size": len(vocab) if vocab is not None else len(train_types | {UNK}),
        "vocab_size_note": f"words of {VOCAB_NAME} (textvae adds <pad>, <s>, </s>)"
        if vocab is not None
        else f"word types of the written train file, incl. {UNK}",
        "unk_token": UNK,
        "textvae": corpus.textvae,
        "licence": corpus.licence,
    }
    files[CARD_NAME] = card_bytes(card)  # last: present = complete
    write_atomically(out, files)
    return card


def run_prepare(prog: str, out: Path, prepare_call) -> int:
    """Run ``prepare_call()`` (which writes ``out``): a PrepareError is one line on stderr and exit 2,
    success logs the data card and returns 0."""
    try:
        card = prepare_call()
    except PrepareError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return 2
    log_card(logging.getLogger(prog), card, out)
    return 0


def card_bytes(card: dict) -> bytes:
    return (json.dumps(card, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def yang_main(
    argv: list[str] | None, *, prog: str, doc: str, corpus: YangCorpus, default_url: str, max_len: int
) -> int:
    """The command line of prepare_yahoo.py and prepare_yelp.py."""
    parser = Parser(prog=prog, description=doc.split("\n\n")[0])
    names = ", ".join(corpus.source_names.values())
    add_io_arguments(parser, source_help=f"local directory holding {names} (and {VOCAB_NAME})", default_url=default_url)
    parser.add_argument(
        "--max-len", type=positive_int, default=max_len, help="most tokens per document (default: %(default)s)"
    )
    add_resplit_arguments(parser, sources_help="only their files are read")
    args = parser.parse_args(argv)
    plan = resplit_from_args(parser, args)
    setup_logging(args.verbose)
    return run_prepare(
        prog,
        args.out,
        lambda: prepare_yang(
            args.out, corpus, source=args.source, url=args.url, verify=args.verify, resplit=plan, max_len=args.max_len
        ),
    )
