"""One entry for every model folder: a run directory, a checkpoint file, or an exported directory."""

from __future__ import annotations

from pathlib import Path

from textvae.checkpoint import LoadedCheckpoint, load_checkpoint, resolve_checkpoint
from textvae.hub.model_dir import WEIGHTS, is_export_dir, load_export


def weights_path(path: str | Path, which: str = "best") -> Path:
    """The file that holds the weights: an exported directory's ``model.safetensors`` (``which`` does not
    apply: an export has one set of weights), a run directory's ``{which}.pt``, or the file given."""
    path = Path(path)
    return path / WEIGHTS if is_export_dir(path) else resolve_checkpoint(path, which)


def load_model(path: str | Path, which: str = "best") -> tuple[LoadedCheckpoint, Path]:
    """The model (on the CPU, in eval mode) and the file its weights came from."""
    path = Path(path)
    if is_export_dir(path):
        return load_export(path), path / WEIGHTS
    checkpoint = resolve_checkpoint(path, which)
    return load_checkpoint(checkpoint), checkpoint
