"""Prepare the sentences of SNLI 1.0 (Bowman et al. 2015): the unique premises and hypotheses per split.

    python data_scripts/prepare_snli.py --out DIR --source LOCAL_DIR_OR_ZIP [--lowercase]
    python data_scripts/prepare_snli.py --out DIR [--lowercase]     # download the official zip (urllib)

``--source`` is the official ``snli_1.0.zip``, or a directory holding ``snli_1.0_{train,dev,test}.jsonl``
(or the ``.txt`` tab-separated files), directly or in a ``snli_1.0/`` folder, or the zip itself. Every
pair gives its premise (sentence1) and hypothesis (sentence2), whatever its label (pairs without a
gold label, ``-``, included). A sentence's tokens are the leaves of its ``sentence{1,2}_binary_parse``
field, i.e. the Stanford tokenizer's tokens that come with the corpus, the same for every split, with
``-LRB-``/``-RRB-`` (and the square and curly forms) written as the brackets; ``--lowercase``
lowercases them. Within a split each distinct sentence is written once, in order of first
appearance; sentences of valid/test that also occur in train are kept and counted in the card.

Written in ``DIR``: ``train.txt``, ``valid.txt`` (from dev), ``test.txt``, one sentence per line, tokens
joined by one space, which textvae reads with ``[data] dataset = "files"``, ``root = DIR``; and the data
card ``datacard.json`` (per split: pairs, unique premises and hypotheses, lines, tokens, types,
bytes, sha256, length statistics, types not in train; the source files and their checksum status),
renamed into place last.

Checksums: the sha256 of the official ``snli_1.0.zip`` (https://nlp.stanford.edu/projects/snli/) is
checked against the value that ParlAI and NLIDatasets.jl pin for that URL; the files inside a
verified zip are thereby verified too. No published checksum of the individual .jsonl/.txt files is
known: read from a directory, their sha256 is recorded in the card as unverified. ``--no-verify``
accepts a zip with another checksum.

Checks, all before anything is written: the files exist and are UTF-8; the zip is a readable zip
holding the three .jsonl files; every .jsonl line is a JSON object with both binary-parse fields as
strings; every .txt file has the header with both fields and as many fields on every row; every
split yields at least one sentence. Bad input is one line on stderr, exit status 2, and ``DIR`` stays
as it was.

Licence: SNLI is licensed under CC BY-SA 4.0 (The Stanford NLP Group), based on the Flickr30k captions
of the Denotation Graph work; keep the attribution and the licence with any copy.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

from _checksums import all_verified, sha256_hex, source_entry
from _cli import Parser, add_io_arguments, run_prepare, setup_logging
from _datacard import CARD_NAME, LENGTH_NOTE, card_bytes, splits_card
from _documents import Document, decode_utf8, text_lines
from _errors import PrepareError
from _fetch import check_out_is_not_source, download, read_file
from _splitting import PUBLISHED_SPLIT, SPLITS
from _writing import write_atomically

PROG = "prepare_snli"
DEFAULT_URL = "https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
ZIP_NAME = "snli_1.0.zip"
ZIP_SHA256 = "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e"
ZIP_SHA256_REFERENCE = "the official snli_1.0.zip as pinned by ParlAI (parlai/tasks/snli/build.py) and NLIDatasets.jl"
SOURCE_SPLIT = {"train": "train", "valid": "dev", "test": "test"}  # output split -> source file infix
FIELDS = ("sentence1_binary_parse", "sentence2_binary_parse")  # premise, hypothesis
BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}
OUT_NAMES = {split: f"{split}.txt" for split in SPLITS}


def member_name(split: str, fmt: str) -> str:
    return f"snli_1.0_{SOURCE_SPLIT[split]}.{fmt}"


def parse_tokens(binary_parse: str, lowercase: bool) -> tuple[str, ...]:
    """The leaves of a binary parse such as ``( ( A dog ) ( runs . ) )`` -> ("A", "dog", "runs", ".")."""
    tokens = (BRACKETS.get(t, t) for t in binary_parse.split() if t not in ("(", ")"))
    return tuple(t.lower() for t in tokens) if lowercase else tuple(tokens)


def jsonl_pairs(name: str, text: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PrepareError(f"{name}:{number}: not a JSON object ({err.msg})") from None
        if not isinstance(record, dict):
            raise PrepareError(f"{name}:{number}: not a JSON object")
        for field in FIELDS:
            if not isinstance(record.get(field), str):
                raise PrepareError(f"{name}:{number}: no {field} string")
        pairs.append((record[FIELDS[0]], record[FIELDS[1]]))
    return pairs


def txt_pairs(name: str, text: str) -> list[tuple[str, str]]:
    lines = text_lines(text)
    header = lines[0].rstrip("\r").split("\t") if lines else []
    missing = [field for field in FIELDS if field not in header]
    if missing:
        raise PrepareError(f"{name}:1: the header has no {missing[0]} column (is this an SNLI .txt file?)")
    columns = [header.index(field) for field in FIELDS]
    pairs = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != len(header):
            raise PrepareError(f"{name}:{number}: {len(fields)} fields, the header has {len(header)}")
        pairs.append((fields[columns[0]], fields[columns[1]]))
    return pairs


def read_zip(name: str, data: bytes) -> dict[str, bytes]:
    """The three .jsonl files inside the official zip (``snli_1.0/snli_1.0_{train,dev,test}.jsonl``)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {}
            for split in SPLITS:
                member = f"snli_1.0/{member_name(split, 'jsonl')}"
                try:
                    members[member] = archive.read(member)
                except KeyError:
                    raise PrepareError(f"{name}: no member {member}") from None
            return members
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise PrepareError(f"{name}: not a readable zip archive ({err})") from None


def read_source(source: Path | None, url: str, verify: bool) -> tuple[str, dict[str, bytes], list[dict]]:
    """The format ("jsonl" or "txt"), split -> file bytes, and the card entries of the source files."""
    if source is None or source.is_file():
        data = download(url) if source is None else read_file(source)
        return from_zip(ZIP_NAME if source is None else source.name, data, verify)
    if not source.is_dir():
        raise PrepareError(f"{source}: source directory or zip file not found")
    for fmt in ("jsonl", "txt"):
        for folder in (source, source / "snli_1.0"):
            if any((folder / member_name(split, fmt)).exists() for split in SPLITS):
                raw = {split: read_file(folder / member_name(split, fmt)) for split in SPLITS}
                entries = [
                    source_entry(member_name(split, fmt), raw[split], None, verify=verify, reference="")
                    for split in SPLITS
                ]
                return fmt, raw, entries
    if (source / ZIP_NAME).is_file():
        return from_zip(ZIP_NAME, read_file(source / ZIP_NAME), verify)
    raise PrepareError(f"{source}: no snli_1.0_{{train,dev,test}}.jsonl or .txt files and no {ZIP_NAME}")


def from_zip(name: str, data: bytes, verify: bool) -> tuple[str, dict[str, bytes], list[dict]]:
    entry = source_entry(name, data, ZIP_SHA256, verify=verify, reference=ZIP_SHA256_REFERENCE)
    members = read_zip(name, data)
    inside = entry["sha256_status"].startswith("verified")
    entries = [entry]
    for member, content in members.items():
        status = "verified: inside the verified archive" if inside else "unverified: inside an unverified archive"
        entries.append({"file": f"{name}:{member}", "bytes": len(content), "sha256": sha256_hex(content)})
        entries[-1]["sha256_status"] = status
    raw = {split: members[f"snli_1.0/{member_name(split, 'jsonl')}"] for split in SPLITS}
    return "jsonl", raw, entries


def unique_sentences(pairs: list[tuple[str, str]], lowercase: bool) -> tuple[list[Document], dict]:
    """Each distinct sentence once, in order of first appearance (premise before hypothesis), and counts."""
    seen: dict[tuple[str, ...], None] = {}
    premises, hypotheses, empty = set(), set(), 0
    for premise, hypothesis in pairs:
        for parse, kind in ((premise, premises), (hypothesis, hypotheses)):
            tokens = parse_tokens(parse, lowercase)
            if not tokens:
                empty += 1
                continue
            kind.add(tokens)
            seen.setdefault(tokens, None)
    counts = {
        "pairs": len(pairs),
        "premises_unique": len(premises),
        "hypotheses_unique": len(hypotheses),
        "empty_sentences_skipped": empty,
        "repeated_sentences_dropped": 2 * len(pairs) - empty - len(seen),
    }
    return [Document(None, tokens) for tokens in seen], counts


def prepare(out: Path, *, source: Path | None, url: str, verify: bool, lowercase: bool) -> dict:
    """Read (or download), check, and write the three sentence files and the data card; returns the card."""
    if source is not None:
        check_out_is_not_source(out, source)
    fmt, raw, entries = read_source(source, url, verify)
    docs, extra = {}, {}
    for split in SPLITS:
        name = member_name(split, fmt)
        text = decode_utf8(name, raw[split])
        pairs = jsonl_pairs(name, text) if fmt == "jsonl" else txt_pairs(name, text)
        docs[split], extra[split] = unique_sentences(pairs, lowercase)
        if not docs[split]:
            raise PrepareError(f"{name}: no sentences in the file")
    train = {doc.tokens for doc in docs["train"]}
    for split in SPLITS[1:]:
        extra[split]["sentences_also_in_train"] = sum(doc.tokens in train for doc in docs[split])
    cards, files, train_types = splits_card(OUT_NAMES, docs)
    for split in SPLITS:
        cards[split] = {**extra[split], **cards[split]}
    card = {
        "dataset": "snli",
        "description": "SNLI 1.0 sentences: the distinct premises and hypotheses of each split, one per line",
        "source": str(source) if source is not None else url,
        "source_files": entries,
        "verified": all_verified(entries),
        "split": PUBLISHED_SPLIT,
        "tokenization": "leaves of sentence1_binary_parse / sentence2_binary_parse (the corpus's Stanford tokens), "
        "-LRB- -RRB- -LSB- -RSB- -LCB- -RCB- written as brackets" + (", lowercased" if lowercase else ""),
        "lowercase": lowercase,
        "length_note": LENGTH_NOTE,
        "splits": cards,
        "vocab_size": len(train_types),
        "vocab_size_note": "word types of the written train file (no unk token in this corpus)",
        "textvae": '[data] dataset = "files", root = DIR',
        "licence": "CC BY-SA 4.0, The Stanford NLP Group (SNLI 1.0), based on the Flickr30k captions of the "
        "Denotation Graph work",
    }
    files[CARD_NAME] = card_bytes(card)  # last: present = complete
    write_atomically(out, files)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_io_arguments(
        parser,
        source_help="snli_1.0.zip, or a directory holding snli_1.0_{train,dev,test}.jsonl (or .txt) or the zip",
        default_url=DEFAULT_URL,
    )
    parser.add_argument("--lowercase", action="store_true", help="lowercase every token")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return run_prepare(
        PROG,
        args.out,
        lambda: prepare(args.out, source=args.source, url=args.url, verify=args.verify, lowercase=args.lowercase),
    )


if __name__ == "__main__":
    sys.exit(main())
