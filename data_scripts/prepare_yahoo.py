"""Prepare Yahoo Answers in the Yang et al. (2017) format: yahoo.{train,valid,test}.txt and vocab.txt.

    python data_scripts/prepare_yahoo.py --out DIR --source LOCAL_DIR       # check and copy local files
    python data_scripts/prepare_yahoo.py --out DIR --source LOCAL_DIR --resplit-from valid,test
    python data_scripts/prepare_yahoo.py --out DIR --resplit-from valid,test  # download (urllib)

The format (Yang et al. 2017, as used by Kim et al. 2018 and He et al. 2019): one document (question
and answer) per line, lowercased, whitespace-tokenized, words outside the 20k vocabulary written
``_UNK``, at most 200 tokens; ``vocab.txt`` lists that vocabulary, one word per line. A line may carry
a label first (``label<TAB>document``, as some copies of these files do): it is detected (every line
of every file, or none), kept in the written line, left out of every token count, and textvae drops
it when reading. The card's ``labels`` says which case it was.

Checks, all before anything is written: the files exist and are UTF-8; every line holds a document
(and a single-token label if the files are labelled), of at most ``--max-len`` tokens, lowercase
except ``_UNK``, every word in vocab.txt; vocab.txt has one distinct word per line; the sha256 of
yahoo.valid.txt, yahoo.test.txt and vocab.txt equals that of the copies staged for this project
(``../shared/data/SHA256SUMS``; byte-identical to OpenVLG/DELLA @ 55fdf6c, ``data/yahoo/``).
No checksum of yahoo.train.txt is known: its sha256 is recorded in the card as unverified.
``--no-verify`` accepts other files in this format. Lines are written normalized (tokens joined by
one space, ``\\n`` line ends); the card says per split whether that left the bytes unchanged.

Re-split (``--resplit-from valid,test``): the train file is not available everywhere (the staged copy
has only valid and test, and so has the default download). This pools the documents of the named
source files, drops repeated documents, and cuts them by a seeded hash into new train/valid/test
files of ``--resplit-sizes`` (counts or fractions; default 0.8,0.1,0.1 of the pool, seed 0). The
result is NOT the published split: the card's ``split`` says so and records the source files, seed,
sizes and counts. It is meant for CPU-sized experiments; do not compare its numbers with papers.

Output in ``DIR``: yahoo.{train,valid,test}.txt, vocab.txt, and ``datacard.json`` (per split: lines,
tokens, types, bytes, sha256, length mean/min/p50/p90/p95/p99/max, label counts, types not in
train; the source files with their checksums and whether they were verified), renamed into place
last so that its presence means the set is complete. Bad input is one line on stderr, exit status 2,
and ``DIR`` stays as it was. Read it in textvae with ``[data] dataset = "yahoo"``, ``root = DIR``,
``vocab_file = "DIR/vocab.txt"``.

Licence: the text is derived from Yahoo! Answers (Yahoo Webscope, through Zhang et al. 2015), for
research use only; no open licence covers it. Do not redistribute it.
"""

from __future__ import annotations

import sys

from _splitting import SPLITS
from _yang import YangCorpus, yang_main

PROG = "prepare_yahoo"
# The staged copies' origin; it holds valid, test and vocab.txt but no train file (use --resplit-from).
DEFAULT_URL = "https://raw.githubusercontent.com/OpenVLG/DELLA/55fdf6c018358294bbfb771ce574a1b6c23e2507/data/yahoo"
MAX_LEN = 200
CORPUS = YangCorpus(
    dataset="yahoo",
    source_names={split: f"yahoo.{split}.txt" for split in SPLITS},
    out_names={split: f"yahoo.{split}.txt" for split in SPLITS},
    labels="optional",
    vocab="required",
    known_sha256={  # ../shared/data/SHA256SUMS
        "yahoo.valid.txt": "3247ac3ffcc4d4bfd6216f2aaa617f6706cdc4081874da39245fe156825898d1",
        "yahoo.test.txt": "ad843c4363adbdd07d8055d9bf121e5f23c285760df43a0031b89d8538293075",
        "vocab.txt": "52c2045275a7114d748f694d984328bed5c7cdd5b82f784ee148e7c5d0be9911",
    },
    sha256_reference="the copy staged for this project (shared/data/SHA256SUMS; OpenVLG/DELLA @ 55fdf6c)",
    description="Yahoo Answers, Yang et al. 2017 format: one document per line, lowercased, tokenized, "
    "_UNK for words outside the 20k vocabulary (vocab.txt), at most 200 tokens",
    licence="Yahoo! Answers (Yahoo Webscope via Zhang et al. 2015): research use only, no open licence; "
    "do not redistribute",
    textvae='[data] dataset = "yahoo", root = DIR, vocab_file = "DIR/vocab.txt"',
)


def main(argv: list[str] | None = None) -> int:
    return yang_main(argv, prog=PROG, doc=__doc__, corpus=CORPUS, default_url=DEFAULT_URL, max_len=MAX_LEN)


if __name__ == "__main__":
    sys.exit(main())
