"""Prepare Yelp reviews in the Yang et al. (2017) format (label<TAB>document): train.txt, valid.txt, test.txt.

    python data_scripts/prepare_yelp.py --out DIR --source LOCAL_DIR        # check and normalize local files
    python data_scripts/prepare_yelp.py --out DIR --source LOCAL_DIR --resplit-from valid,test
    python data_scripts/prepare_yelp.py --out DIR                           # download (urllib)

The source files are ``yelp.{train,valid,test}.txt`` as distributed with Yang et al. (2017) and used by
He et al. (2019): 100k/10k/10k reviews sampled from Yelp15 (Tang et al. 2015), one per line as
``label<TAB>document``, the document lowercased and tokenized, words outside the 20k vocabulary
written ``_UNK``, at most 200 tokens. A ``vocab.txt`` next to them (one word per line) is checked and
copied when present in ``--source``; the download does not fetch one.

The output is written as ``train.txt``, ``valid.txt``, ``test.txt`` (textvae has no ``yelp`` dataset
name; read them with ``[data] dataset = "files"``, ``root = DIR``; textvae drops the label). Each
line is normalized to ``label<TAB>tokens joined by one space`` with ``\\n`` line ends; the card says
per split whether that left the bytes unchanged.

Checks, all before anything is written: the files exist and are UTF-8; every line is a single-token
label, a TAB and a non-empty document of at most ``--max-len`` tokens, lowercase except ``_UNK``;
with a vocab.txt, one distinct word per line and every document word in it. No published checksum of
these files is known: their sha256 is recorded in the card and marked unverified.

Re-split (``--resplit-from valid,test``), for when the train file is missing or for CPU-sized
experiments: the documents of the named source files are pooled, repeated documents dropped, and a
seeded hash cuts them into new train/valid/test files of ``--resplit-sizes`` (counts or fractions;
default 0.8,0.1,0.1, seed 0). The result is NOT the published split; the card's ``split`` says so and
records the source files, seed, sizes and counts.

Output in ``DIR``: train.txt, valid.txt, test.txt, vocab.txt (if given) and ``datacard.json`` (per
split: lines, tokens, types, bytes, sha256, length statistics, label counts, types not in train),
renamed into place last. Bad input is one line on stderr, exit status 2, and ``DIR`` stays as it was.

Licence: the reviews come from the Yelp Dataset Challenge, whose terms allow non-commercial,
academic use only; no open licence covers them. Do not redistribute them.
"""

from __future__ import annotations

import sys

from _splitting import SPLITS
from _yang import YangCorpus, yang_main

PROG = "prepare_yelp"
# Yang et al.'s files as committed with Implicit-LVM (Fang et al. 2019), which also carries Yang et
# al.'s readme for them (lang_model_yelp/data/readme.txt). Not pinned to a commit and not checksummed:
# the card marks the files unverified.
DEFAULT_URL = "https://github.com/fangleai/Implicit-LVM/raw/master/lang_model_yelp/data"
MAX_LEN = 200
CORPUS = YangCorpus(
    dataset="yelp",
    source_names={split: f"yelp.{split}.txt" for split in SPLITS},
    out_names={split: f"{split}.txt" for split in SPLITS},
    labels="required",
    vocab="optional",
    known_sha256={},
    sha256_reference="",
    description="Yelp reviews (Yelp15 sample), Yang et al. 2017 format: one review per line as label<TAB>document, "
    "lowercased, tokenized, _UNK for words outside the 20k vocabulary, at most 200 tokens",
    licence="Yelp Dataset Challenge terms: non-commercial academic use only, no open licence; do not redistribute",
    textvae='[data] dataset = "files", root = DIR (the label before the TAB is dropped)',
)


def main(argv: list[str] | None = None) -> int:
    return yang_main(argv, prog=PROG, doc=__doc__, corpus=CORPUS, default_url=DEFAULT_URL, max_len=MAX_LEN)


if __name__ == "__main__":
    sys.exit(main())
