"""Checkpoints: written atomically, loaded safely, checked against their own config and vocab.

A checkpoint is a ``torch.save`` file holding only tensors and plain data: the model, optimizer
and scheduler states, RNG states, the training position, and the resolved config and vocabulary
as JSON strings. It is written to a temporary file in the same directory, flushed to disk and
renamed over the target, so a killed process leaves either the old file or the new one. It is
read with ``weights_only=True``: nothing in it can run code.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from textvae import __version__
from textvae.config import Recipe, recipe_from_dict
from textvae.data.vocab import Vocab
from textvae.errors import TextVAEError
from textvae.models import build_model

FORMAT = "textvae-checkpoint-1"
_UMASK = os.umask(0)
os.umask(_UMASK)
_REQUIRED = ("format", "config", "vocab", "model")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: Path, *, recipe: Recipe, vocab: Vocab, model: torch.nn.Module, **state: Any) -> None:
    """Save model weights with the config and vocab that built them, plus any training ``state``."""
    payload = {
        "format": FORMAT,
        "textvae_version": __version__,
        "config": json.dumps(recipe.to_dict()),
        "vocab": vocab.to_json(),
        "model": model.state_dict(),
        **state,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The raw checkpoint dict; a one-line error if the file is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise TextVAEError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TextVAEError(f"{path}: corrupt or unreadable checkpoint ({first_line[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or any(k not in payload for k in _REQUIRED):
        raise TextVAEError(f"{path}: not a textvae checkpoint (expected format {FORMAT!r})")
    return payload


@dataclass
class LoadedCheckpoint:
    recipe: Recipe
    vocab: Vocab
    model: torch.nn.Module
    payload: dict[str, Any]


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Rebuild the model from the checkpoint's own config and vocab and load its weights strictly."""
    payload = read_checkpoint(path)
    try:
        recipe = recipe_from_dict(json.loads(payload["config"]), source=f"{path} (config)")
        vocab = Vocab.from_json(payload["vocab"])
    except (json.JSONDecodeError, TypeError) as err:
        raise TextVAEError(f"{path}: checkpoint config or vocab is not valid JSON ({err})") from None
    model = build_model(recipe.model, vocab, recipe.remedies)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise TextVAEError(f"{path}: weights do not fit the checkpoint's config/vocab ({reason})") from None
    model.eval()
    return LoadedCheckpoint(recipe, vocab, model, payload)


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A run directory means its ``{which}.pt``; a file is taken as it is."""
    path = Path(path)
    if path.is_dir():
        candidate = path / f"{which}.pt"
        if not candidate.is_file():
            raise TextVAEError(f"{path}: run directory has no {which}.pt checkpoint")
        return candidate
    if not path.exists():
        raise TextVAEError(f"{path}: no such run directory or checkpoint")
    return path
