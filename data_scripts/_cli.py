"""The command line the scripts share: one-line usage errors, the --out/--source/--url options, logging,
and running a preparation (a ``PrepareError`` becomes one line on stderr and exit status 2)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _datacard import log_card
from _errors import PrepareError


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) with exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


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
