"""data_scripts/prepare_ptb.py, run as a script: the staged PTB copy, a tiny fixture, and bad input.

The staged files in ../shared/data/ptb are always present; the expected numbers are those of
../shared/data/README.md. Nothing here touches the network (the download path reads a file:// URL).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA

SCRIPT = REPO / "data_scripts" / "prepare_ptb.py"
PTB = SHARED_DATA / "ptb"
SPLITS = ("train", "valid", "test")

# ../shared/data/README.md, section ptb/
EXPECTED = {
    "train": {
        "lines": 42068,
        "tokens": 887521,
        "types": 9999,
        "bytes": 5101618,
        "md5": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
        "sha256": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    },
    "valid": {
        "lines": 3370,
        "tokens": 70390,
        "types": 6021,
        "bytes": 399782,
        "md5": "aa0affc06ff7c36e977d7cd49e3839bf",
        "sha256": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    },
    "test": {
        "lines": 3761,
        "tokens": 78669,
        "types": 6048,
        "bytes": 449945,
        "md5": "8b80168b89c18661a38ef683c0dc3721",
        "sha256": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    },
}


def run_script(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def write_splits(directory: Path, texts: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for split, text in texts.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (directory / f"ptb.{split}.txt").write_bytes(data)
    return directory


def assert_failed_cleanly(result: subprocess.CompletedProcess, out: Path, *, message: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prepare_ptb: error: ")
    assert message in lines[0]
    assert not out.exists()


TINY = {
    "train": " the cat sat \n the dog <unk> \n",
    "valid": " the cat ran \n",
    "test": " a dog sat \n the end \n",
}


def test_staged_ptb_matches_readme(tmp_path):
    out = tmp_path / "ptb"
    result = run_script("--source", PTB, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["datacard.json", "ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    for split in SPLITS:
        name = f"ptb.{split}.txt"
        assert (out / name).read_bytes() == (PTB / name).read_bytes()
    card = json.loads((out / "datacard.json").read_text(encoding="utf-8"))
    assert card["verified"] is True
    for split in SPLITS:
        assert {key: card["splits"][split][key] for key in EXPECTED[split]} == EXPECTED[split]
    assert card["splits"]["valid"]["types_not_in_train"] == 0
    assert card["splits"]["test"]["types_not_in_train"] == 0
    assert card["vocab_size"] == 9999  # incl. <unk>
    assert card["vocab_size_with_eos"] == 10000


def test_tiny_fixture_needs_no_verify(tmp_path):
    source = write_splits(tmp_path / "tiny", TINY)
    out = tmp_path / "out"
    assert_failed_cleanly(run_script("--source", source, "--out", out), out, message="lines, expected 42068")

    result = run_script("--source", source, "--out", out, "--no-verify")
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "datacard.json").read_text(encoding="utf-8"))
    assert card["verified"] is False
    counts = {split: {k: card["splits"][split][k] for k in ("lines", "tokens", "types")} for split in SPLITS}
    assert counts == {
        "train": {"lines": 2, "tokens": 6, "types": 5},
        "valid": {"lines": 1, "tokens": 3, "types": 3},
        "test": {"lines": 2, "tokens": 5, "types": 5},
    }
    assert card["splits"]["valid"]["types_not_in_train"] == 1  # ran
    assert card["splits"]["test"]["types_not_in_train"] == 2  # a, end
    assert card["vocab_size"] == 5  # the, cat, sat, dog, <unk>
    for split in SPLITS:
        assert (out / f"ptb.{split}.txt").read_text(encoding="utf-8") == TINY[split]


def test_vocab_size_counts_unk_even_when_absent(tmp_path):
    source = write_splits(tmp_path / "tiny", {**TINY, "train": " the cat sat \n"})
    result = run_script("--source", source, "--out", tmp_path / "out", "--no-verify")
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "out" / "datacard.json").read_text(encoding="utf-8"))
    assert card["splits"]["train"]["types"] == 3
    assert card["vocab_size"] == 4


def test_checksum_mismatch_fails_and_writes_nothing(tmp_path):
    source = tmp_path / "ptb"
    shutil.copytree(PTB, source)
    valid = source / "ptb.valid.txt"
    data = bytearray(valid.read_bytes())
    data[data.index(b" the ") + 1] = ord("T")  # same line count, one byte changed
    valid.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert_failed_cleanly(run_script("--source", source, "--out", out), out, message="ptb.valid.txt: md5 ")


def test_failure_leaves_an_existing_out_directory_untouched(tmp_path):
    source = write_splits(tmp_path / "tiny", TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old\n", encoding="utf-8")
    result = run_script("--source", source, "--out", out)
    assert result.returncode == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_missing_source_directory_and_file(tmp_path):
    out = tmp_path / "out"
    assert_failed_cleanly(
        run_script("--source", tmp_path / "nowhere", "--out", out), out, message="source directory not found"
    )
    source = write_splits(tmp_path / "partial", {"train": TINY["train"], "valid": TINY["valid"]})
    assert_failed_cleanly(
        run_script("--source", source, "--out", out, "--no-verify"), out, message="ptb.test.txt: file not found"
    )


def test_non_utf8_input_fails(tmp_path):
    source = write_splits(tmp_path / "bad", {**TINY, "test": b" fine \n caf\xe9 \n"})
    out = tmp_path / "out"
    assert_failed_cleanly(run_script("--source", source, "--out", out, "--no-verify"), out, message="ptb.test.txt:2:")


@pytest.mark.parametrize("verify", [True, False])
def test_download_path_reads_a_url(tmp_path, verify):
    """The urllib path, exercised offline through a file:// URL."""
    out = tmp_path / "out"
    source = PTB if verify else write_splits(tmp_path / "tiny", TINY)
    result = run_script("--url", source.resolve().as_uri(), "--out", out, *([] if verify else ["--no-verify"]))
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "datacard.json").read_text(encoding="utf-8"))
    assert card["source"] == source.resolve().as_uri()
    assert card["verified"] is verify


def test_unreachable_url_fails_cleanly(tmp_path):
    out = tmp_path / "out"
    missing = (tmp_path / "nowhere").as_uri()
    assert_failed_cleanly(run_script("--url", missing, "--out", out), out, message="download failed")
