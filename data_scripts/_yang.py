"""Corpora in the Yang et al. (2017) format (Yahoo Answers, Yelp): reading, checking, re-splitting,
writing, and the command line of prepare_yahoo.py and prepare_yelp.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from _checksums import all_verified, sha256_hex, source_entry
from _cli import Parser, add_io_arguments, positive_int, run_prepare, setup_logging
from _datacard import CARD_NAME, LENGTH_NOTE, card_bytes, splits_card
from _documents import decode_utf8, read_documents, read_vocab
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
