"""The run directory: what a fresh run may start in, what ``--resume`` needs, and the config check.

A fresh run needs an empty directory, or one left by the same recipe killed before its first
checkpoint (only ``config.json``, ``vocab.json``, ``metrics.jsonl`` and temporary files, with
``config.json`` equal to this recipe): that one is started over. ``--resume`` needs ``last.pt``
(or the ``.prev`` copy kept beside it) written by a recipe that computes the same thing: only the
``RUNTIME_KEYS`` of ``[train]`` and the recipe's provenance may differ.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from textvae.checkpoint import previous_path, read_checkpoint_or_previous
from textvae.errors import TextVAEError

log = logging.getLogger(__name__)

# what a run writes before its first checkpoint (tensorboard/: the event files of train.tensorboard)
_WRITTEN_BEFORE_FIRST_CHECKPOINT = ("config.json", "vocab.json", "metrics.jsonl", "tensorboard")

# train settings that change how a run executes, not what it computes: --resume may change them. `threads`
# (and the CPU itself) still change the float rounding: such a resume goes on, warns and writes a
# "machine_changed" record (textvae.engine.machine), since it is no longer bit-identical to an uninterrupted run
RUNTIME_KEYS = ("progress_bar", "threads", "max_nonfinite_in_a_row", "device", "cuda_graphs", "max_minutes")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds something to resume from (``last.pt`` or the copy kept beside it)."""
    return (run_dir / "last.pt").is_file() or previous_path(run_dir / "last.pt").is_file()


def prepare_run_dir(run_dir: Path, recipe, resume: bool, delete_leftovers: bool = True) -> None:
    """A fresh run needs an empty directory, or one left by the same recipe killed before its first
    checkpoint (its config.json equal to this recipe, vocab, metrics, temporary files): that is started over."""
    if (run_dir / "model.safetensors").is_file() and not has_checkpoint(run_dir):  # textvae.hub.model_dir.WEIGHTS
        raise TextVAEError(
            f"{run_dir}: an exported model (weights only, no optimizer state or training position) is not "
            "resumable and not a run directory; resume the run it was exported from, or train into another --out"
        )
    if resume:
        if not has_checkpoint(run_dir):
            raise TextVAEError(f"{run_dir}: nothing to resume (no last.pt)")
        for path in filter(_is_temporary, run_dir.iterdir() if delete_leftovers else ()):
            log.info("removing %s (left by a writer that was killed)", path)
            path.unlink(missing_ok=True)
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise TextVAEError(f"{run_dir}: exists and is not a directory")
    leftovers = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if not all(_is_temporary(p) for p in leftovers) and not (
        all(p.name in _WRITTEN_BEFORE_FIRST_CHECKPOINT or _is_temporary(p) for p in leftovers)
        and _same_config(run_dir / "config.json", recipe)
    ):
        raise TextVAEError(f"{run_dir}: run directory exists and is not empty; use --resume or another --out")
    if leftovers and delete_leftovers:
        log.warning("%s: starting over (a previous attempt stopped before its first checkpoint)", run_dir)
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def read_resumable(run_dir: Path, recipe, check_family) -> dict[str, Any]:
    """The payload of ``last.pt`` (or its ``.prev`` copy), checked by ``check_family(payload)`` and
    against ``recipe``: a resumed run must compute what the interrupted one computed."""
    payload = read_checkpoint_or_previous(run_dir / "last.pt")[0]
    check_family(payload)
    if without_runtime_keys(json.loads(payload["config"])) != without_runtime_keys(recipe.to_dict()):
        raise TextVAEError(f"{run_dir}: --resume with a different config than the run was started with")
    return payload


def without_runtime_keys(config: dict) -> dict:
    """The config as far as it decides what a run computes: without runtime keys and provenance."""
    config = json.loads(json.dumps(config))
    for key in RUNTIME_KEYS:
        config.get("train", {}).pop(key, None)
    config.get("eval", {}).pop("device", None)  # where a run is evaluated (runs before it was a key lack it)
    for key in ("source", "description"):  # where the recipe came from and its prose
        config.pop(key, None)
    return config


def _same_config(path: Path, recipe) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(recipe.to_dict()))
    except (OSError, ValueError):
        return False


def _is_temporary(path: Path) -> bool:
    """A temporary file of ``atomic_write_bytes`` (``.NAME.XXXX.tmp``), left by a killed writer."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")
