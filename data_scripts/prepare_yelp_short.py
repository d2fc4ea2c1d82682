"""Prepare the Yelp sentences of Shen et al. (2017), ``sentiment.{train,dev,test}.{0,1}``: train/valid/test.txt.

    python data_scripts/prepare_yelp_short.py --out DIR --source LOCAL_DIR     # check and convert local files
    python data_scripts/prepare_yelp_short.py --out DIR --source LOCAL_DIR --resplit-from valid,test
    python data_scripts/prepare_yelp_short.py --out DIR                        # download (urllib)

The source (Shen et al. 2017, style transfer; ``data/yelp`` of shentianxiao/language-style-transfer):
one sentence per line, lowercased and tokenized, ``_num_`` for numbers, at most 15 tokens; suffix 0
is a negative review, 1 a positive one. Written in ``DIR``: ``train.txt``, ``valid.txt`` (from dev),
``test.txt``, one ``label<TAB>sentence`` per line (label 0 or 1; the .0 file's lines first, then the
.1 file's), which textvae reads with ``[data] dataset = "files"``, ``root = DIR``: it drops the label
and keeps the sentence. Sentences are written as tokens joined by one space.

Checks, all before anything is written: the six files exist and are UTF-8; every line is a non-empty
sentence of at most ``--max-len`` tokens, lowercase, without a TAB; the sha256 of the dev and test
files equals that of the copies staged for this project (``../shared/data/SHA256SUMS``; the files of
shentianxiao/language-style-transfer @ f078a9d). No checksum of the train files is known: their
sha256 is recorded in the card as unverified. ``--no-verify`` accepts other files in this format.

Re-split (``--resplit-from valid,test``; ``dev`` is accepted for ``valid``): the staged copy has no
train files. This pools the sentences of the named source splits (both labels), drops repeated
sentences (the same text, whatever the label), and cuts the rest by a seeded hash into new
train/valid/test files of ``--resplit-sizes`` (counts or fractions; default 0.8,0.1,0.1, seed 0). The
result is NOT the published split: the card's ``split`` says so and records the source files, seed,
sizes and counts. Label proportions are not forced; the card gives the label counts per split.

The data card ``DIR/datacard.json`` (per split: lines, tokens, types, bytes, sha256, length
statistics, label counts, types not in train; the source files and their checksum status) is renamed
into place last. Bad input is one line on stderr, exit status 2, and ``DIR`` stays as it was.

Licence: the repository is Apache-2.0 but the review text comes from the Yelp Dataset Challenge,
whose terms allow non-commercial academic use only; no open licence covers the data.
"""

from __future__ import annotations

import sys
from pathlib import Path

from _checksums import all_verified, source_entry
from _cli import Parser, add_io_arguments, positive_int, run_prepare, setup_logging
from _datacard import CARD_NAME, LENGTH_NOTE, card_bytes, splits_card
from _documents import Document, decode_utf8, read_documents
from _errors import PrepareError
from _fetch import check_out_is_not_source, check_source_dir, fetch
from _splitting import (
    PUBLISHED_SPLIT,
    SPLITS,
    Resplit,
    add_resplit_arguments,
    apply_resplit,
    resplit_card,
    resplit_from_args,
)
from _writing import write_atomically

PROG = "prepare_yelp_short"
DEFAULT_URL = (
    "https://raw.githubusercontent.com/shentianxiao/language-style-transfer/"
    "f078a9d342705ea62b04dd3ac5926d3467c2ac63/data/yelp"
)
SOURCE_SPLIT = {"train": "train", "valid": "dev", "test": "test"}  # output split -> source file infix
LABELS = ("0", "1")  # file suffix = label: 0 negative, 1 positive
MAX_LEN = 15
KNOWN_SHA256 = {  # ../shared/data/SHA256SUMS
    "sentiment.dev.0": "405ef6d4bfbc8bb92c3c55b496f315069cb5edb49ed34a07b1206341b83c344b",
    "sentiment.dev.1": "3509f6573411bbda2d5c071ed72ad276c12356c15c06205b8fdf74b217970c61",
    "sentiment.test.0": "b7466e8859e9948892a859af7938a82c801c99b69f884014082fd072a155bbf2",
    "sentiment.test.1": "a66e0ec3f0e1230ad4d2c822750a381cf6d99a99fa9b5ae79546f21ff79ed5c3",
}
SHA256_REFERENCE = "the copy staged for this project (shared/data/SHA256SUMS; language-style-transfer @ f078a9d)"
OUT_NAMES = {split: f"{split}.txt" for split in SPLITS}


def source_name(split: str, label: str) -> str:
    return f"sentiment.{SOURCE_SPLIT[split]}.{label}"


def prepare(out: Path, *, source: Path | None, url: str, verify: bool, resplit: Resplit | None, max_len: int) -> dict:
    """Read (or download), check, optionally re-split, and write the splits and the data card; returns the card."""
    if source is not None:
        check_source_dir(source)
        check_out_is_not_source(out, source)
    needed = resplit.sources if resplit is not None else SPLITS
    names = [source_name(split, label) for split in needed for label in LABELS]
    raw = {}
    for name in names:
        try:
            raw[name] = fetch(name, source=source, url=url)
        except PrepareError as err:
            hint = "" if resplit is not None else " (--resplit-from re-splits the files that are there)"
            raise PrepareError(f"{err}{hint}") from None
    entries = [
        source_entry(name, raw[name], KNOWN_SHA256.get(name), verify=verify, reference=SHA256_REFERENCE)
        for name in names
    ]
    docs = {}
    for split in needed:
        docs[split] = []
        for label in LABELS:
            name = source_name(split, label)
            sentences = read_documents(
                name, decode_utf8(name, raw[name]), labels="forbidden", max_len=max_len, lowercase_except=()
            )
            docs[split] += [Document(label, doc.tokens) for doc in sentences]

    if resplit is not None:
        splits, info = apply_resplit([doc for split in needed for doc in docs[split]], resplit)
        split_info = resplit_card(resplit, names, info)
    else:
        splits, split_info = docs, PUBLISHED_SPLIT
    cards, files, train_types = splits_card(OUT_NAMES, splits)
    card = {
        "dataset": "yelp_short",
        "description": "Yelp review sentences of Shen et al. 2017 (style transfer): one sentence per line, "
        "lowercased, tokenized, _num_ for numbers, at most 15 tokens; label 0 negative, 1 positive",
        "source": str(source) if source is not None else url,
        "source_files": entries,
        "verified": all_verified(entries),
        "split": split_info,
        "labels": {
            "present": True,
            "note": "every line is label<TAB>sentence, the label taken from the source file's suffix (0 negative, "
            "1 positive); the label is not part of the text: token counts, types and lengths exclude it, and "
            "textvae drops it when reading",
        },
        "max_len": max_len,
        "length_note": LENGTH_NOTE,
        "splits": cards,
        "vocab_size": len(train_types),
        "vocab_size_note": "word types of the written train file (the format has no unk token)",
        "textvae": '[data] dataset = "files", root = DIR (the label before the TAB is dropped)',
        "licence": "Yelp Dataset Challenge terms: non-commercial academic use only, no open licence; "
        "the repository's Apache-2.0 covers its code",
    }
    files[CARD_NAME] = card_bytes(card)  # last: present = complete
    write_atomically(out, files)
    return card


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_io_arguments(
        parser, source_help="local directory holding sentiment.{train,dev,test}.{0,1}", default_url=DEFAULT_URL
    )
    parser.add_argument(
        "--max-len", type=positive_int, default=MAX_LEN, help="most tokens per sentence (default: %(default)s)"
    )
    add_resplit_arguments(parser, sources_help="only their files are read", aliases={"dev": "valid"})
    args = parser.parse_args(argv)
    plan = resplit_from_args(parser, args)
    setup_logging(args.verbose)
    return run_prepare(
        PROG,
        args.out,
        lambda: prepare(
            args.out, source=args.source, url=args.url, verify=args.verify, resplit=plan, max_len=args.max_len
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
