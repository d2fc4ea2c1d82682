"""``textvae export RUN OUT_DIR``: a run's weights as a directory others can download and read.

What is written is described in ``textvae.hub.model_dir``; the model card in ``textvae.hub.card``.
The directory is assembled in a temporary folder beside ``OUT_DIR`` and renamed into place, so a
killed export leaves nothing half-written. ``OUT_DIR`` must not exist, or be empty.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from textvae.api import load_checkpoint
from textvae.checkpoint import read_checkpoint, resolve_checkpoint
from textvae.errors import TextVAEError
from textvae.hub.card import model_card
from textvae.hub.model_dir import CARD, CONFIG, VOCAB, WEIGHTS, tokenizer_files, weights_bytes

log = logging.getLogger(__name__)


def _evaluations(run_dir: Path, checkpoint: Path) -> list[tuple[str, dict]]:
    """(split, results) of the run directory's ``eval_*.json`` files that evaluated ``checkpoint``."""
    found = []
    for path in sorted(run_dir.glob("eval_*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            log.warning("%s: not readable as JSON; left out of the model card", path)
            continue
        if isinstance(result, dict) and Path(str(result.get("checkpoint", ""))).name == checkpoint.name:
            found.append((path.stem.removeprefix("eval_"), result))
    return found


def _validation_at(run_dir: Path, step: int | None) -> dict | None:
    """The training log's validation record at ``step`` (the exported weights), if there is one."""
    path = run_dir / "metrics.jsonl"
    if step is None or not path.is_file():
        return None
    found = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == "valid" and record.get("step") == step:
            found = record
    return found


def _shown_path(source: str) -> str:
    """A recipe path as the card shows it: relative to the working directory when inside it."""
    path = Path(source)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) if path.is_absolute() else source
    except ValueError:
        return source


def _run_progress(run_dir: Path, exported: dict) -> dict:
    """The whole run's training position (``last.pt``'s), else the exported checkpoint's."""
    try:
        return read_checkpoint(run_dir / "last.pt").get("progress", {})
    except TextVAEError:
        return exported.get("progress", {})


def export_run(run: Path, out_dir: Path, which: str = "best", notes: Path | None = None) -> list[str]:
    """Export the run directory's ``{which}.pt`` into ``out_dir``; returns the names of the files written.
    ``notes``: a Markdown file whose text the model card shows as its "Notes" section."""
    from textvae.families import is_image_run

    run, out_dir = Path(run), Path(out_dir)
    if not run.is_dir():
        raise TextVAEError(f"{run}: not a run directory (textvae export takes the folder that `textvae train` wrote)")
    if is_image_run(run):
        raise TextVAEError(f"{run}: an image run; textvae export is for text runs")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TextVAEError(f"{out_dir}: exists and is not an empty directory")
    if not out_dir.parent.is_dir():
        raise TextVAEError(f"{out_dir}: directory {out_dir.parent} does not exist")
    notes_text = _read_notes(notes)
    checkpoint = resolve_checkpoint(run, which)
    loaded = load_checkpoint(checkpoint)
    config = json.loads(loaded.payload["config"])  # as the run saved it, with the recipe file it came from
    recipe = dataclasses.replace(loaded.recipe, source=_shown_path(config.get("source") or str(checkpoint)))
    step = loaded.payload.get("progress", {}).get("step")  # where the exported weights were saved
    progress = _run_progress(run, loaded.payload)
    files = {
        CONFIG: json.dumps(config, indent=2).encode("utf-8"),
        WEIGHTS: weights_bytes(loaded.model, {"exported_from": f"{which}.pt", "step": str(step)}),
        VOCAB: loaded.vocab.to_json().encode("utf-8"),
        **tokenizer_files(loaded.vocab),
    }
    card = model_card(
        out_dir.name,
        recipe,
        len(loaded.vocab),
        progress,
        which,
        _evaluations(run, checkpoint),
        _validation_at(run, step),
        [*files, CARD],
        {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        notes_text,
    )
    files[CARD] = card.encode("utf-8")
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
        if out_dir.is_dir():
            out_dir.rmdir()  # empty, checked above
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return list(files)


def _read_notes(notes: Path | None) -> str | None:
    if notes is None:
        return None
    try:
        return Path(notes).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TextVAEError(f"--notes {notes}: cannot read it ({err.__class__.__name__})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
