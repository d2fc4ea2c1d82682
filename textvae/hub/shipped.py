"""Models shipped inside the textvae package, loadable by name: ``textvae.load("kjv")``, ``textvae sample kjv``.

Each is an exported model directory (``textvae.hub.model_dir``) under ``textvae/hub/pretrained/<name>``,
declared as package data so a wheel carries it. A name is looked up only where a path is expected
and nothing is at that path: a local directory or file called ``kjv`` wins over the shipped model,
with a warning that says how to reach the shipped one. A shipped model is read-only: files that
belong next to it go to the user's cache folder (``textvae.hub.output_dir``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from textvae.errors import TextVAEError

log = logging.getLogger(__name__)
_warned: set[str] = set()

PRETRAINED = Path(__file__).resolve().parent / "pretrained"
SHIPPED = {  # name → what it is, for `textvae.hub.shipped.describe` and error messages
    "kjv": "LSTM sentence VAE trained on the King James Bible (recipes/kjv/candidates.toml)",
}


def shipped_path(name: str) -> Path:
    """The folder of the shipped model ``name``; a one-line error for an unknown name or a broken install."""
    if name not in SHIPPED:
        raise TextVAEError(f"no shipped model {name!r}; textvae ships: {', '.join(sorted(SHIPPED))}")
    folder = PRETRAINED / name
    if not (folder / "model.safetensors").is_file():
        raise TextVAEError(f"{folder}: the shipped model {name!r} is missing from this install (reinstall textvae)")
    return folder


def resolve_model(path: str | Path) -> Path:
    """What a model argument means: the path itself when something is there (a run directory, a
    checkpoint file, an exported directory), else the shipped model of that name, else the path
    unchanged (the command that opens it says what is missing)."""
    path = Path(path)
    name = str(path)
    if path.exists():
        if name in SHIPPED and name not in _warned:
            _warned.add(name)  # once per process: a command resolves its model argument more than once
            log.warning(
                "./%s exists here and is used instead of the shipped model %r (to use the shipped one, run "
                "from another folder or pass %s)",
                name,
                name,
                PRETRAINED / name,
            )
        return path
    return shipped_path(name) if name in SHIPPED else path
