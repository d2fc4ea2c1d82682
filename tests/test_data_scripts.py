"""data_scripts/prepare_{yahoo,yelp,yelp_short,snli}.py, run as scripts on tiny fixtures written into tmp_path.

For each script: a good local directory gives the files and a data card with the right counts, and the
output loads through textvae; the re-split is deterministic, disjoint and recorded; every bad input
exits with status 2, one line on stderr and nothing written. The staged copies in ../shared/data are
read by two tests only, which skip when the directory is missing. Nothing here touches the network
(the download path reads file:// URLs).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA
from textvae.config import DataConfig
from textvae.data.corpus import build_vocab, encode_split

SCRIPTS = REPO / "data_scripts"
SPLITS = ("train", "valid", "test")
OUT_NAMES = {
    "yahoo": {split: f"yahoo.{split}.txt" for split in SPLITS},
    **{script: {split: f"{split}.txt" for split in SPLITS} for script in ("yelp", "yelp_short", "snli")},
}


def run_script(script: str, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPTS / f"prepare_{script}.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def write_files(directory: Path, files: dict[str, str | bytes | None]) -> Path:
    """Write the files (None: leave the file out) into a new directory."""
    directory.mkdir(parents=True)
    for name, content in files.items():
        if content is not None:
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            (directory / name).write_bytes(data)
    return directory


def read_card(out: Path) -> dict:
    return json.loads((out / "datacard.json").read_text(encoding="utf-8"))


def succeeded(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # logging goes to stderr


def assert_failed_cleanly(result: subprocess.CompletedProcess, out: Path, *, script: str, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"prepare_{script}: error: ")
    assert message in lines[0], lines[0]
    assert not out.exists()


def counts(card: dict, *keys: str) -> dict:
    return {split: {key: card["splits"][split][key] for key in keys} for split in SPLITS}


def load_through_textvae(out: Path, dataset: str = "files", vocab_file: Path | None = None):
    """The vocabulary and the three encoded splits, read the way a recipe ``[data]`` section reads them."""
    cfg = DataConfig(
        dataset=dataset,
        root=str(out),
        vocab_file=None if vocab_file is None else str(vocab_file),
        cache_dir=str(out.parent / f"{out.name}-hf-cache"),
    )
    vocab = build_vocab(cfg)
    return vocab, {split: encode_split(cfg, split, vocab) for split in SPLITS}


def assert_textvae_agrees_with_card(card: dict, encoded: dict) -> None:
    for split in SPLITS:
        s = card["splits"][split]
        assert len(encoded[split]) == s["lines"]
        assert encoded[split].num_words == s["tokens"] + s["lines"]  # words + EOS: labels are not words
        assert int(encoded[split].lengths.max()) - 2 == s["length"]["max"]


# ------------------------------------------------------------------------------------------ fixtures

YAHOO_VOCAB = "_UNK\nthe\ncat\nsat\non\nmat\nwhy\nis\nsky\nblue\n?\n.\nit\n"  # 13 words
YAHOO_FILES = {
    "yahoo.train.txt": "why is the sky blue ? it is .\nthe cat sat on the mat .\n",
    "yahoo.valid.txt": "why is the cat blue ?\n",
    "yahoo.test.txt": "the _UNK sat .\nwhy ?\n",
    "vocab.txt": YAHOO_VOCAB,
}
YELP_FILES = {
    "yelp.train.txt": "4\tgreat food , great staff .\n0\tcold food .\n",
    "yelp.valid.txt": "3\tok food .\n",
    "yelp.test.txt": "4\tgreat _UNK !\n",
}
SHEN_FILES = {
    "sentiment.train.0": "the food was cold .\nnever again .\n",
    "sentiment.train.1": "great staff !\nthe food was great .\n",
    "sentiment.dev.0": "bad service .\n",
    "sentiment.dev.1": "loved it !\n",
    "sentiment.test.0": "never again .\n",
    "sentiment.test.1": "_num_ stars !\n",
}
SNLI_PAIRS = {  # binary parses as in the corpus
    "train": [
        ("( ( A dog ) ( runs . ) )", "( ( A animal ) ( moves . ) )"),
        ("( ( A dog ) ( runs . ) )", "( ( The dog ) ( sleeps . ) )"),
        ("( ( A dog ) ( runs . ) )", "( ( A cat ) ( ( -LRB- sleeps -RRB- ) . ) )"),
    ],
    "dev": [
        ("( ( Two men ) ( talk . ) )", "( ( A animal ) ( moves . ) )"),  # this hypothesis is also in train
        ("( ( Two men ) ( talk . ) )", ""),  # an empty parse is skipped
    ],
    "test": [("( ( A Woman ) ( sings . ) )", "( ( a woman ) ( sings . ) )")],  # one sentence once lowercased
}
SNLI_TXT_HEADER = (
    "gold_label",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
    "sentence1_parse",
    "sentence2_parse",
    "sentence1",
    "sentence2",
    "captionID",
    "pairID",
)


def leaves(parse: str) -> str:
    return " ".join(t for t in parse.split() if t not in "()")


def snli_jsonl(pairs) -> str:
    return "".join(
        json.dumps(
            {
                "gold_label": "neutral",
                "sentence1": leaves(p),
                "sentence1_binary_parse": p,
                "sentence2": leaves(h),
                "sentence2_binary_parse": h,
            }
        )
        + "\n"
        for p, h in pairs
    )


def snli_txt(pairs) -> str:
    rows = ["\t".join(SNLI_TXT_HEADER)]
    rows += ["\t".join(("neutral", p, h, "(ROOT)", "(ROOT)", leaves(p), leaves(h), "c1", "p1")) for p, h in pairs]
    return "\n".join(rows) + "\n"


def snli_zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"snli_1.0/{name}", text)
    return buffer.getvalue()


SNLI_FILES = {f"snli_1.0_{split}.jsonl": snli_jsonl(pairs) for split, pairs in SNLI_PAIRS.items()}

FILES = {"yahoo": YAHOO_FILES, "yelp": YELP_FILES, "yelp_short": SHEN_FILES, "snli": SNLI_FILES}
# yahoo.valid/test.txt and sentiment.dev/test.* have known checksums that the fixtures do not match
NO_VERIFY = {"yahoo": ["--no-verify"], "yelp": [], "yelp_short": ["--no-verify"], "snli": []}


# ---------------------------------------------------------------------------------------------- yahoo


def test_yahoo_local_directory(tmp_path):
    source = write_files(tmp_path / "src", YAHOO_FILES)
    out = tmp_path / "out"
    assert_failed_cleanly(
        run_script("yahoo", "--source", source, "--out", out), out, script="yahoo", message="yahoo.valid.txt: sha256 "
    )
    succeeded(run_script("yahoo", "--source", source, "--out", out, "--no-verify"))
    assert sorted(p.name for p in out.iterdir()) == [
        "datacard.json",
        "vocab.txt",
        "yahoo.test.txt",
        "yahoo.train.txt",
        "yahoo.valid.txt",
    ]
    for name, text in YAHOO_FILES.items():
        assert (out / name).read_text(encoding="utf-8") == text  # already normalized: copied unchanged
    card = read_card(out)
    assert card["dataset"] == "yahoo" and card["verified"] is False
    assert card["split"]["published"] is True
    assert card["labels"]["present"] is False
    assert counts(card, "lines", "tokens", "types") == {
        "train": {"lines": 2, "tokens": 16, "types": 12},
        "valid": {"lines": 1, "tokens": 6, "types": 6},
        "test": {"lines": 2, "tokens": 6, "types": 6},
    }
    assert card["splits"]["train"]["length"] == {
        "mean": 8.0,
        "min": 7,
        "p50": 7,
        "p90": 9,
        "p95": 9,
        "p99": 9,
        "max": 9,
    }
    assert card["splits"]["valid"]["types_not_in_train"] == 0
    assert card["splits"]["test"]["types_not_in_train"] == 1  # _UNK
    assert all(card["splits"][split]["identical_to_source"] for split in SPLITS)
    assert card["vocab_size"] == 13 and card["vocab_file"]["contains_unk"] is True
    statuses = {entry["file"]: entry["sha256_status"] for entry in card["source_files"]}
    assert statuses["yahoo.train.txt"].startswith("unverified: no published checksum")
    assert statuses["yahoo.valid.txt"].startswith("differs from the sha256 of the copy staged")

    vocab, encoded = load_through_textvae(out, "yahoo", vocab_file=out / "vocab.txt")
    assert vocab.unk == "_UNK" and len(vocab) == 3 + 13  # <pad> <s> </s> + the file's words
    assert_textvae_agrees_with_card(card, encoded)
    assert encoded["test"].rows([0])[0][2] == vocab.unk_id


def test_yahoo_labelled_documents_keep_the_label_out_of_the_text(tmp_path):
    labelled = {
        name: "".join(f"{i + 1}\t{line}\n" for i, line in enumerate(text.splitlines()))
        for name, text in YAHOO_FILES.items()
        if name != "vocab.txt"
    }
    source = write_files(tmp_path / "src", {**labelled, "vocab.txt": YAHOO_VOCAB})
    out = tmp_path / "out"
    succeeded(run_script("yahoo", "--source", source, "--out", out, "--no-verify"))
    card = read_card(out)
    assert card["labels"]["present"] is True and "not part of the text" in card["labels"]["note"]
    assert counts(card, "tokens") == {"train": {"tokens": 16}, "valid": {"tokens": 6}, "test": {"tokens": 6}}
    assert card["splits"]["train"]["labels"] == {"1": 1, "2": 1}
    assert (out / "yahoo.train.txt").read_text(encoding="utf-8") == labelled["yahoo.train.txt"]  # label kept
    vocab, encoded = load_through_textvae(out, "yahoo", vocab_file=out / "vocab.txt")
    assert "1" not in vocab.words
    assert_textvae_agrees_with_card(card, encoded)


def test_yahoo_lines_are_normalized(tmp_path):
    messy = {**YAHOO_FILES, "yahoo.train.txt": "why  is the sky blue ? it is .\r\n the cat sat on the mat .  \n"}
    source = write_files(tmp_path / "src", messy)
    out = tmp_path / "out"
    succeeded(run_script("yahoo", "--source", source, "--out", out, "--no-verify"))
    assert (out / "yahoo.train.txt").read_text(encoding="utf-8") == YAHOO_FILES["yahoo.train.txt"]
    card = read_card(out)
    assert card["splits"]["train"]["identical_to_source"] is False
    assert card["splits"]["valid"]["identical_to_source"] is True


def test_staged_yahoo_resplit(tmp_path):
    staged = SHARED_DATA / "yahoo"
    if not staged.is_dir():
        pytest.skip(f"{staged} is missing: the staged Yahoo copy is not on this machine")
    out = tmp_path / "out"
    assert_failed_cleanly(
        run_script("yahoo", "--source", staged, "--out", out),
        out,
        script="yahoo",
        message="yahoo.train.txt: file not found (--resplit-from re-splits the files that are there)",
    )
    succeeded(run_script("yahoo", "--source", staged, "--out", out, "--resplit-from", "valid,test"))
    card = read_card(out)
    assert card["verified"] is True  # valid, test and vocab.txt match ../shared/data/SHA256SUMS
    assert [entry["file"] for entry in card["source_files"]] == ["yahoo.valid.txt", "yahoo.test.txt", "vocab.txt"]
    split = card["split"]
    assert split["published"] is False and "NOT the published" in split["warning"]
    assert split["from"] == ["yahoo.valid.txt", "yahoo.test.txt"] and split["seed"] == 0
    assert split["pool_documents"] == 20000 and split["repeated_documents_dropped"] == 0
    assert split["counts"] == {"train": 16000, "valid": 2000, "test": 2000}
    assert sum(card["splits"][s]["tokens"] for s in SPLITS) == 790680 + 788673  # ../shared/data/README.md
    assert max(card["splits"][s]["length"]["max"] for s in SPLITS) == 200
    assert card["vocab_size"] == 19997
    assert (out / "vocab.txt").read_bytes() == (staged / "vocab.txt").read_bytes()


# ----------------------------------------------------------------------------------------------- yelp


def test_yelp_local_directory(tmp_path):
    source = write_files(tmp_path / "src", YELP_FILES)
    out = tmp_path / "out"
    succeeded(run_script("yelp", "--source", source, "--out", out))
    assert sorted(p.name for p in out.iterdir()) == ["datacard.json", "test.txt", "train.txt", "valid.txt"]
    for split in SPLITS:
        assert (out / f"{split}.txt").read_text(encoding="utf-8") == YELP_FILES[f"yelp.{split}.txt"]
    card = read_card(out)
    assert card["dataset"] == "yelp" and card["verified"] is False and card["vocab_file"] is None
    assert all(e["sha256_status"].startswith("unverified") for e in card["source_files"])
    assert card["labels"]["present"] is True
    assert counts(card, "lines", "tokens", "types", "labels") == {
        "train": {"lines": 2, "tokens": 9, "types": 6, "labels": {"0": 1, "4": 1}},
        "valid": {"lines": 1, "tokens": 3, "types": 3, "labels": {"3": 1}},
        "test": {"lines": 1, "tokens": 3, "types": 3, "labels": {"4": 1}},
    }
    assert card["vocab_size"] == 7  # train types + _UNK
    vocab, encoded = load_through_textvae(out)
    assert "4" not in vocab.words and "0" not in vocab.words and vocab.unk == "<unk>"
    assert_textvae_agrees_with_card(card, encoded)


def test_yelp_vocab_file_is_checked_and_copied_when_present(tmp_path):
    vocab = "_UNK\ngreat\nfood\n,\nstaff\n.\ncold\nok\n!\n"
    out = tmp_path / "out"
    source = write_files(tmp_path / "partial", {**YELP_FILES, "vocab.txt": "great\nfood\n"})
    assert_failed_cleanly(
        run_script("yelp", "--source", source, "--out", out),
        out,
        script="yelp",
        message="yelp.train.txt:1: ',' is not in the vocabulary file",
    )
    source = write_files(tmp_path / "src", {**YELP_FILES, "vocab.txt": vocab})
    succeeded(run_script("yelp", "--source", source, "--out", out))
    assert (out / "vocab.txt").read_text(encoding="utf-8") == vocab
    card = read_card(out)
    assert card["vocab_file"]["words"] == 9 and card["vocab_size"] == 9
    _, encoded = load_through_textvae(out, vocab_file=out / "vocab.txt")
    assert_textvae_agrees_with_card(card, encoded)


# ----------------------------------------------------------------------------------------- yelp_short


def test_yelp_short_local_directory(tmp_path):
    source = write_files(tmp_path / "src", SHEN_FILES)
    out = tmp_path / "out"
    assert_failed_cleanly(
        run_script("yelp_short", "--source", source, "--out", out),
        out,
        script="yelp_short",
        message="sentiment.dev.0: sha256 ",
    )
    succeeded(run_script("yelp_short", "--source", source, "--out", out, "--no-verify"))
    assert sorted(p.name for p in out.iterdir()) == ["datacard.json", "test.txt", "train.txt", "valid.txt"]
    assert (out / "train.txt").read_text(encoding="utf-8") == (
        "0\tthe food was cold .\n0\tnever again .\n1\tgreat staff !\n1\tthe food was great .\n"
    )
    assert (out / "valid.txt").read_text(encoding="utf-8") == "0\tbad service .\n1\tloved it !\n"  # from dev
    card = read_card(out)
    assert card["dataset"] == "yelp_short" and card["split"]["published"] is True
    assert counts(card, "lines", "tokens", "labels") == {
        "train": {"lines": 4, "tokens": 16, "labels": {"0": 2, "1": 2}},
        "valid": {"lines": 2, "tokens": 6, "labels": {"0": 1, "1": 1}},
        "test": {"lines": 2, "tokens": 6, "labels": {"0": 1, "1": 1}},
    }
    assert card["splits"]["test"]["types_not_in_train"] == 2  # _num_, stars
    assert len(card["source_files"]) == 6
    vocab, encoded = load_through_textvae(out)
    assert "0" not in vocab.words and "1" not in vocab.words
    assert_textvae_agrees_with_card(card, encoded)


def test_staged_yelp_short_resplit(tmp_path):
    staged = SHARED_DATA / "yelp_shen2017"
    if not staged.is_dir():
        pytest.skip(f"{staged} is missing: the staged Shen et al. Yelp copy is not on this machine")
    out = tmp_path / "out"
    succeeded(run_script("yelp_short", "--source", staged, "--out", out, "--resplit-from", "dev,test"))
    card = read_card(out)
    assert card["verified"] is True  # the four files match ../shared/data/SHA256SUMS
    split = card["split"]
    assert split["published"] is False
    assert split["from"] == ["sentiment.dev.0", "sentiment.dev.1", "sentiment.test.0", "sentiment.test.1"]
    assert split["pool_documents"] == 190153  # ../shared/data/README.md
    unique = split["pool_documents"] - split["repeated_documents_dropped"]
    assert split["counts"]["valid"] == split["counts"]["test"] == unique // 10
    assert sum(split["counts"].values()) == unique
    assert max(card["splits"][s]["length"]["max"] for s in SPLITS) == 15
    texts = [
        {line.split("\t", 1)[1] for line in (out / f"{s}.txt").read_text(encoding="utf-8").splitlines()} for s in SPLITS
    ]
    assert sum(len(t) for t in texts) == len(set().union(*texts)) == unique  # disjoint, each text once


# ----------------------------------------------------------------------------------------------- snli


def test_snli_sentences_from_jsonl_txt_and_zip_agree(tmp_path):
    jsonl = write_files(tmp_path / "jsonl", SNLI_FILES)
    txt = write_files(
        tmp_path / "txt" / "snli_1.0",  # the folder of the official zip
        {f"snli_1.0_{split}.txt": snli_txt(pairs) for split, pairs in SNLI_PAIRS.items()},
    )
    archive = tmp_path / "snli_1.0.zip"
    archive.write_bytes(snli_zip(SNLI_FILES))
    outs = {kind: tmp_path / f"out-{kind}" for kind in ("jsonl", "txt", "zip")}
    succeeded(run_script("snli", "--source", jsonl, "--out", outs["jsonl"]))
    succeeded(run_script("snli", "--source", txt.parent, "--out", outs["txt"]))
    assert_failed_cleanly(
        run_script("snli", "--source", archive, "--out", outs["zip"]),
        outs["zip"],
        script="snli",
        message="snli_1.0.zip: sha256 ",
    )
    succeeded(run_script("snli", "--source", archive, "--out", outs["zip"], "--no-verify"))

    out = outs["jsonl"]
    assert (out / "train.txt").read_text(encoding="utf-8") == (
        "A dog runs .\nA animal moves .\nThe dog sleeps .\nA cat ( sleeps ) .\n"
    )
    assert (out / "valid.txt").read_text(encoding="utf-8") == "Two men talk .\nA animal moves .\n"
    assert (out / "test.txt").read_text(encoding="utf-8") == "A Woman sings .\na woman sings .\n"
    for other in ("txt", "zip"):
        for split in SPLITS:
            assert (outs[other] / f"{split}.txt").read_bytes() == (out / f"{split}.txt").read_bytes()
    card = read_card(out)
    assert card["verified"] is False and card["lowercase"] is False
    keys = ("pairs", "premises_unique", "hypotheses_unique", "empty_sentences_skipped", "repeated_sentences_dropped")
    assert counts(card, *keys, "lines") == {
        "train": dict(zip(keys, (3, 1, 3, 0, 2), strict=True), lines=4),
        "valid": dict(zip(keys, (2, 1, 1, 1, 1), strict=True), lines=2),
        "test": dict(zip(keys, (1, 1, 1, 0, 0), strict=True), lines=2),
    }
    assert card["splits"]["valid"]["sentences_also_in_train"] == 1
    zip_card = read_card(outs["zip"])
    assert zip_card["source_files"][0]["sha256_status"].startswith("differs from the sha256 of the official")
    assert [e["file"] for e in zip_card["source_files"][1:]] == [
        f"snli_1.0.zip:snli_1.0/snli_1.0_{s}.jsonl" for s in ("train", "dev", "test")
    ]
    _, encoded = load_through_textvae(out)
    assert_textvae_agrees_with_card(card, encoded)


def test_snli_lowercase_option(tmp_path):
    source = write_files(tmp_path / "src", SNLI_FILES)
    out = tmp_path / "out"
    succeeded(run_script("snli", "--source", source, "--out", out, "--lowercase"))
    assert (out / "test.txt").read_text(encoding="utf-8") == "a woman sings .\n"
    card = read_card(out)
    assert card["lowercase"] is True and "lowercased" in card["tokenization"]
    assert card["splits"]["test"]["repeated_sentences_dropped"] == 1


def test_snli_bad_archives(tmp_path):
    good = {"snli_1.0_train.jsonl": SNLI_FILES["snli_1.0_train.jsonl"]}
    cases = {
        "not-a-zip": (b"PK but not really a zip file", "not a readable zip archive"),
        "no-member": (snli_zip(good), "no member snli_1.0/snli_1.0_dev.jsonl"),
    }
    for case, (data, message) in cases.items():
        archive = tmp_path / case / "snli_1.0.zip"
        archive.parent.mkdir()
        archive.write_bytes(data)
        out = tmp_path / f"out-{case}"
        result = run_script("snli", "--source", archive.parent, "--out", out, "--no-verify")
        assert_failed_cleanly(result, out, script="snli", message=message)


def test_snli_bad_txt_files(tmp_path):
    txt = {f"snli_1.0_{split}.txt": snli_txt(pairs) for split, pairs in SNLI_PAIRS.items()}
    cases = {
        "header": ({"snli_1.0_dev.txt": "gold_label\tsentence1\n"}, "snli_1.0_dev.txt:1: the header has no"),
        "fields": (
            {"snli_1.0_test.txt": txt["snli_1.0_test.txt"] + "neutral\tonly two\n"},
            "snli_1.0_test.txt:3: 2 fields",
        ),
    }
    for case, (override, message) in cases.items():
        source = write_files(tmp_path / case, {**txt, **override})
        out = tmp_path / f"out-{case}"
        assert_failed_cleanly(run_script("snli", "--source", source, "--out", out), out, script="snli", message=message)


# ---------------------------------------------------------------------------------- re-split (3 scripts)

POOL_WORDS = ("the", "cat", "sat", "on", "mat", "why", "is", "sky", "blue", "?", ".", "_num_")


def pool_text(i: int) -> str:
    """Distinct documents: the first two words spell i + 12 in base 12; then 0-3 more words."""
    high, low = divmod(i + 12, len(POOL_WORDS))
    return " ".join([POOL_WORDS[high], POOL_WORDS[low], *POOL_WORDS[: i % 4]])


def resplit_source(script: str, directory: Path) -> tuple[Path, set[str]]:
    """33 lines in the valid and test source files (the last repeats the first's text); no train file."""
    texts = [pool_text(i) for i in range(32)] + [pool_text(0)]
    chunks = {"valid": texts[:20], "test": texts[20:]}
    files: dict[str, str] = {}
    if script == "yahoo":
        files = {f"yahoo.{s}.txt": "".join(f"{t}\n" for t in chunk) for s, chunk in chunks.items()}
        files["vocab.txt"] = "".join(f"{w}\n" for w in POOL_WORDS)
    elif script == "yelp":
        files = {f"yelp.{s}.txt": "".join(f"{len(t) % 5}\t{t}\n" for t in chunk) for s, chunk in chunks.items()}
    else:
        for s, chunk in chunks.items():
            for label in "01":
                name = f"sentiment.{'dev' if s == 'valid' else s}.{label}"
                files[name] = "".join(f"{t}\n" for k, t in enumerate(chunk) if k % 2 == int(label))
    return write_files(directory, files), set(texts)


def written_texts(script: str, out: Path) -> dict[str, list[str]]:
    texts = {}
    for split in SPLITS:
        lines = (out / OUT_NAMES[script][split]).read_text(encoding="utf-8").splitlines()
        texts[split] = [line.split("\t", 1)[-1] for line in lines]
    return texts


@pytest.mark.parametrize("script", ["yahoo", "yelp", "yelp_short"])
def test_resplit_is_deterministic_disjoint_and_recorded(tmp_path, script):
    source, pool = resplit_source(script, tmp_path / "src")
    base = ["--source", source, *NO_VERIFY[script], "--resplit-from", "valid,test"]

    def resplit(name: str, *args) -> Path:
        out = tmp_path / name
        succeeded(run_script(script, *base, "--out", out, *args))
        return out

    first = resplit("first", "--resplit-sizes", "20,5,5")
    again = resplit("again", "--resplit-sizes", "20,5,5", "--seed", "0")
    for name in [*OUT_NAMES[script].values(), "datacard.json"]:
        assert (first / name).read_bytes() == (again / name).read_bytes()

    texts = written_texts(script, first)
    assert {split: len(texts[split]) for split in SPLITS} == {"train": 20, "valid": 5, "test": 5}
    sets = {split: set(texts[split]) for split in SPLITS}
    assert sum(len(s) for s in sets.values()) == 30 and set().union(*sets.values()) <= pool  # disjoint, from the pool
    card = read_card(first)
    assert card["split"]["published"] is False and "NOT the published" in card["split"]["warning"]
    assert card["split"]["seed"] == 0 and card["split"]["sizes_requested"] == "20,5,5"
    assert card["split"]["pool_documents"] == 33 and card["split"]["repeated_documents_dropped"] == 1
    assert card["split"]["unused_documents"] == 2
    assert card["split"]["counts"] == {"train": 20, "valid": 5, "test": 5}
    assert all(name.split(".")[1] in ("valid", "test", "dev") for name in card["split"]["from"])

    other_seed = written_texts(script, resplit("seed1", "--resplit-sizes", "20,5,5", "--seed", "1"))
    assert set(other_seed["test"]) != sets["test"]

    default = read_card(resplit("default"))  # 0.8,0.1,0.1 of the 32 distinct documents
    assert default["split"]["counts"] == {"train": 26, "valid": 3, "test": 3}
    assert default["split"]["unused_documents"] == 0
    _, encoded = load_through_textvae(
        tmp_path / "default",
        "yahoo" if script == "yahoo" else "files",
        vocab_file=tmp_path / "default" / "vocab.txt" if script == "yahoo" else None,
    )
    assert_textvae_agrees_with_card(default, encoded)


# ------------------------------------------------------------------------------------------ bad input

BAD_INPUT = [  # id, script, files changed (None: removed), arguments, message
    ("yahoo-missing-train", "yahoo", {"yahoo.train.txt": None}, [], "yahoo.train.txt: file not found (--resplit-from"),
    ("yahoo-missing-vocab", "yahoo", {"vocab.txt": None}, [], "vocab.txt: file not found"),
    ("yahoo-not-utf8", "yahoo", {"yahoo.valid.txt": b"why is\nthe caf\xe9\n"}, [], "yahoo.valid.txt:2: not UTF-8"),
    ("yahoo-empty-file", "yahoo", {"yahoo.test.txt": ""}, [], "yahoo.test.txt: no lines in the file"),
    ("yahoo-blank-line", "yahoo", {"yahoo.train.txt": "the cat sat .\n\nwhy ?\n"}, [], "yahoo.train.txt:2: empty line"),
    (
        "yahoo-mixed-labels",
        "yahoo",
        {"yahoo.train.txt": "1\twhy is the sky blue ?\nthe cat sat .\n"},
        [],
        "yahoo.train.txt:2: no label<TAB> prefix (line 1 has one)",
    ),
    (
        "yahoo-labels-in-one-file",
        "yahoo",
        {"yahoo.valid.txt": "1\twhy is the cat blue ?\n"},
        [],
        "label<TAB> prefixes in yahoo.valid.txt but not in yahoo.train.txt, yahoo.test.txt (all files or none)",
    ),
    (
        "yahoo-too-long",
        "yahoo",
        {"yahoo.test.txt": "the " * 201 + "\n"},
        [],
        "yahoo.test.txt:1: 201 tokens, more than the maximum length 200",
    ),
    ("yahoo-max-len", "yahoo", {}, ["--max-len", "8"], "yahoo.train.txt:1: 9 tokens, more than the maximum length 8"),
    (
        "yahoo-uppercase",
        "yahoo",
        {"yahoo.valid.txt": "why is the Cat ?\n"},
        [],
        "yahoo.valid.txt:1: 'Cat' is not lowercase",
    ),
    (
        "yahoo-not-in-vocab",
        "yahoo",
        {"yahoo.valid.txt": "why is the dog blue ?\n"},
        [],
        "yahoo.valid.txt:1: 'dog' is not in the vocabulary file",
    ),
    ("yahoo-vocab-repeated", "yahoo", {"vocab.txt": YAHOO_VOCAB + "cat\n"}, [], "vocab.txt:14: 'cat' is repeated"),
    (
        "yahoo-resplit-too-large",
        "yahoo",
        {},
        ["--resplit-from", "valid,test", "--resplit-sizes", "2,1,1"],
        "re-split asks for 4 documents; the pool holds 3",
    ),
    (
        "yahoo-resplit-bad-fractions",
        "yahoo",
        {},
        ["--resplit-from", "valid,test", "--resplit-sizes", "0.8,0.3,0.1"],
        "fractions must lie in (0, 1) and sum to at most 1",
    ),
    ("yahoo-resplit-unknown-split", "yahoo", {}, ["--resplit-from", "valid,dev"], "unknown split 'dev'"),
    ("yahoo-seed-without-resplit", "yahoo", {}, ["--seed", "1"], "--resplit-sizes and --seed need --resplit-from"),
    ("yelp-no-label", "yelp", {"yelp.valid.txt": "ok food .\n"}, [], "yelp.valid.txt:1: no label<TAB> prefix"),
    ("yelp-label-not-a-token", "yelp", {"yelp.valid.txt": "3 stars\tok .\n"}, [], "label '3 stars' is not a single"),
    ("yelp-no-text", "yelp", {"yelp.test.txt": "4\t \n"}, [], "yelp.test.txt:1: no text after the label"),
    ("yelp-missing-test", "yelp", {"yelp.test.txt": None}, [], "yelp.test.txt: file not found"),
    ("yelp-not-utf8", "yelp", {"yelp.train.txt": b"4\tgood\n0\t\xff\n"}, [], "yelp.train.txt:2: not UTF-8"),
    (
        "yelp_short-tab",
        "yelp_short",
        {"sentiment.dev.1": "loved\tit !\n"},
        [],
        "sentiment.dev.1:1: unexpected TAB (this format has no label column)",
    ),
    (
        "yelp_short-too-long",
        "yelp_short",
        {"sentiment.train.0": "so " * 16 + "\n"},
        [],
        "sentiment.train.0:1: 16 tokens, more than the maximum length 15",
    ),
    ("yelp_short-uppercase", "yelp_short", {"sentiment.test.0": "Never .\n"}, [], "'Never' is not lowercase"),
    ("yelp_short-missing", "yelp_short", {"sentiment.test.1": None}, [], "sentiment.test.1: file not found"),
    ("yelp_short-split-twice", "yelp_short", {}, ["--resplit-from", "dev,valid"], "a split is named twice"),
    (
        "snli-bad-json",
        "snli",
        {"snli_1.0_dev.jsonl": SNLI_FILES["snli_1.0_dev.jsonl"] + "{not json\n"},
        [],
        "snli_1.0_dev.jsonl:3: not a JSON object",
    ),
    (
        "snli-missing-field",
        "snli",
        {"snli_1.0_test.jsonl": '{"sentence1_binary_parse": "( a b )"}\n'},
        [],
        "snli_1.0_test.jsonl:1: no sentence2_binary_parse string",
    ),
    ("snli-not-utf8", "snli", {"snli_1.0_train.jsonl": b'{"a": "\xff"}\n'}, [], "snli_1.0_train.jsonl:1: not UTF-8"),
    ("snli-missing-dev", "snli", {"snli_1.0_dev.jsonl": None}, [], "snli_1.0_dev.jsonl: file not found"),
    (
        "snli-no-sentences",
        "snli",
        {"snli_1.0_test.jsonl": snli_jsonl([("", "")])},
        [],
        "snli_1.0_test.jsonl: no sentences in the file",
    ),
    (
        "snli-empty-directory",
        "snli",
        dict.fromkeys(SNLI_FILES),
        [],
        "no snli_1.0_{train,dev,test}.jsonl or .txt files and no snli_1.0.zip",
    ),
]


@pytest.mark.parametrize(
    ("script", "changes", "args", "message"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, script, changes, args, message):
    source = write_files(tmp_path / "src", {**FILES[script], **changes})
    out = tmp_path / "out"
    result = run_script(script, "--source", source, "--out", out, *NO_VERIFY[script], *args)
    assert_failed_cleanly(result, out, script=script, message=message)


@pytest.mark.parametrize("script", ["yahoo", "yelp", "yelp_short", "snli"])
def test_missing_source_directory(tmp_path, script):
    out = tmp_path / "out"
    result = run_script(script, "--source", tmp_path / "nowhere", "--out", out)
    assert_failed_cleanly(result, out, script=script, message="not found")


def test_failure_leaves_an_existing_out_directory_untouched(tmp_path):
    source = write_files(tmp_path / "src", {**YAHOO_FILES, "yahoo.test.txt": "the Cat\n"})
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old\n", encoding="utf-8")
    result = run_script("yahoo", "--source", source, "--out", out, "--no-verify")
    assert result.returncode == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_out_must_not_be_the_source(tmp_path):
    source = write_files(tmp_path / "src", YAHOO_FILES)
    result = run_script("yahoo", "--source", source, "--out", source, "--no-verify", "--resplit-from", "valid,test")
    assert result.returncode == 2
    assert "--out must not be the --source directory" in result.stderr
    assert sorted(p.name for p in source.iterdir()) == sorted(YAHOO_FILES)
    assert (source / "yahoo.valid.txt").read_text(encoding="utf-8") == YAHOO_FILES["yahoo.valid.txt"]


# ------------------------------------------------------------------------------------------- download


@pytest.mark.parametrize("script", ["yahoo", "yelp", "yelp_short", "snli"])
def test_download_path_reads_a_url(tmp_path, script):
    """The urllib path, exercised offline through file:// URLs."""
    directory = write_files(tmp_path / "served", FILES[script])
    url = directory.resolve().as_uri()
    if script == "snli":  # the official download is the zip
        archive = tmp_path / "snli_1.0.zip"
        archive.write_bytes(snli_zip(SNLI_FILES))
        url = archive.resolve().as_uri()
    out = tmp_path / "out"
    succeeded(run_script(script, "--url", url, "--out", out, "--no-verify"))
    card = read_card(out)
    assert card["source"] == url
    assert (out / OUT_NAMES[script]["train"]).is_file()

    missing = tmp_path / "missing"
    result = run_script(script, "--url", (tmp_path / "nowhere").as_uri(), "--out", missing)
    assert_failed_cleanly(result, missing, script=script, message="download failed")
