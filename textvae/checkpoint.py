"""The checkpoint file: written atomically, checksummed, read safely (``atomic_write_*`` for any file too).

The model stack stays out of this module: a text checkpoint is saved by ``textvae.train.save_checkpoint``
and rebuilt by ``textvae.api.load_checkpoint``, an image one by ``textvae.image.checkpoint``.


A checkpoint holds only tensors and plain data: the model, optimizer and scheduler states, RNG
states, the training position, and the resolved config and vocabulary as JSON strings. On disk it
is a ``torch.save`` envelope ``{"format", "sha256", "payload"}`` whose payload is the serialized
checkpoint as a byte tensor and ``sha256`` its digest, so any damaged byte is detected on load.

Writing goes to a temporary file in the same directory, flushed to disk and renamed over the
target, so a killed process leaves either the old file or the new one, never a mix. With
``keep_previous`` the file being replaced is kept as ``NAME.prev.pt`` first (a hard link, no
copy), and training falls back to it, with a warning, when the newest one is damaged.
Everything is read with ``weights_only=True``: nothing in a checkpoint can run code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from textvae import faults
from textvae.errors import TextVAEError

log = logging.getLogger(__name__)

FORMAT = "textvae-checkpoint-2"
LEGACY_FORMAT = "textvae-checkpoint-1"  # the same payload unwrapped, without a checksum: still read
_UMASK = os.umask(0)
os.umask(_UMASK)
_REQUIRED = ("format", "config", "vocab", "model")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            half = len(data) // 2
            handle.write(data[:half])
            handle.flush()
            faults.kill_point("checkpoint_write")  # crash-safety tests only (TEXTVAE_FAULT)
            handle.write(data[half:])
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def previous_path(path: Path) -> Path:
    """Where ``keep_previous`` keeps the checkpoint that ``path`` replaced: last.pt → last.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _keep_as_previous(path: Path) -> None:
    """Atomically make ``NAME.prev.pt`` the current ``NAME.pt`` (which stays in place)."""
    if not path.is_file():
        return
    target = previous_path(path)
    staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staged.unlink(missing_ok=True)
    try:
        os.link(path, staged)  # a second name for the same bytes: no copy
    except OSError:  # filesystems without hard links
        shutil.copyfile(path, staged)
    os.replace(staged, target)


def _serialize(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def write_checkpoint_payload(path: Path, payload: dict[str, Any], keep_previous: bool = False) -> None:
    """Write a raw checkpoint dict (as ``read_checkpoint`` returns it) inside a checksummed envelope."""
    path = Path(path)
    inner = _serialize(payload)
    envelope = {
        "format": FORMAT,
        "sha256": hashlib.sha256(inner).hexdigest(),
        "payload": torch.frombuffer(bytearray(inner), dtype=torch.uint8),
    }
    data = _serialize(envelope)
    if keep_previous:
        _keep_as_previous(path)
    atomic_write_bytes(path, data)


def _torch_load(source, path: Path) -> Any:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TextVAEError(f"{path}: corrupt or unreadable checkpoint ({first_line[:120]})") from None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The raw checkpoint dict; a one-line error if the file is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise TextVAEError(f"{path}: checkpoint not found")
    envelope = _torch_load(path, path)
    if isinstance(envelope, dict) and envelope.get("format") == LEGACY_FORMAT and all(k in envelope for k in _REQUIRED):
        log.debug("%s: format %s has no checksum", path, LEGACY_FORMAT)
        return {**envelope, "format": FORMAT}
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        raise TextVAEError(f"{path}: not a textvae checkpoint (expected format {FORMAT!r})")
    data = envelope.get("payload")
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or not isinstance(envelope.get("sha256"), str):
        raise TextVAEError(f"{path}: not a textvae checkpoint (no checksummed payload)")
    inner = data.numpy().tobytes()
    if hashlib.sha256(inner).hexdigest() != envelope["sha256"]:
        raise TextVAEError(f"{path}: corrupt checkpoint (checksum mismatch)")
    payload = _torch_load(io.BytesIO(inner), path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or any(k not in payload for k in _REQUIRED):
        raise TextVAEError(f"{path}: not a textvae checkpoint (expected format {FORMAT!r})")
    return payload


def read_checkpoint_or_previous(path: Path) -> tuple[dict[str, Any], Path]:
    """``read_checkpoint(path)``, or, when that file is missing or damaged, its ``.prev`` copy with a
    warning. Raises the error about ``path`` when neither can be read."""
    path = Path(path)
    try:
        return read_checkpoint(path), path
    except TextVAEError as err:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        try:
            payload = read_checkpoint(previous)
        except TextVAEError:
            raise err from None
        step = payload.get("progress", {}).get("step", "?")
        log.warning("%s; using the previous checkpoint %s (step %s)", err, previous, step)
        return payload, previous


def read_checkpoint_strict(path: Path) -> dict[str, Any]:
    """``read_checkpoint`` for evaluation and loading: a damaged file is an error, never silently
    replaced by an older one; the error names the ``.prev`` copy training kept, if there is one."""
    try:
        return read_checkpoint(path)
    except TextVAEError as err:
        previous = previous_path(path)
        if previous.is_file():
            raise TextVAEError(f"{err}; the previous checkpoint is {previous}") from None
        raise


def resolve_checkpoint(path: str | Path, which: str | None = "best") -> Path:
    """A run directory means its ``{which}.pt`` (None: ``best.pt``); a file is taken as it is."""
    path, which = Path(path), which or "best"
    if path.is_dir():
        candidate = path / f"{which}.pt"
        if not candidate.is_file():
            raise TextVAEError(f"{path}: run directory has no {which}.pt checkpoint")
        return candidate
    if not path.exists():
        raise TextVAEError(f"{path}: no such run directory or checkpoint")
    return path


def load_weights(model: torch.nn.Module, state: dict, path: Path, built_from: str) -> torch.nn.Module:
    """``state`` into ``model`` (built from ``built_from``), in eval mode; weights that do not fit are one line."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as err:
        reason = str(err).strip().splitlines()[0][:160]
        raise TextVAEError(f"{path}: weights do not fit the checkpoint's {built_from} ({reason})") from None
    return model.eval()
