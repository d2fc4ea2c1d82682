"""Where a command writes the files that belong next to a model (evaluation JSON and figures, the
``neighbours`` cache, attribute vectors): one rule for all of them.

Into the model's folder (the run or export directory, or the folder of a checkpoint file) when it
is writable; otherwise (a read-only folder, or a model shipped inside the textvae package) into a
folder of the user's cache (``platformdirs.user_cache_dir("textvae")``, which honours
``XDG_CACHE_HOME``), one per model folder, and the command says where.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def model_folder(path: str | Path) -> Path:
    """The folder a model lives in: a run or export directory itself, or a checkpoint file's folder."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def cache_folder(path: str | Path) -> Path:
    """The user-cache folder that stands in for a model folder: ``<cache>/models/<name>-<hash of its path>``."""
    from platformdirs import user_cache_dir

    folder = model_folder(path).resolve()
    key = hashlib.sha256(str(folder).encode("utf-8")).hexdigest()[:12]
    return Path(user_cache_dir("textvae")) / "models" / f"{folder.name}-{key}"


def _shipped(folder: Path) -> bool:
    """Inside the installed package, or a shipped model's folder (``textvae.hub.shipped``): never written."""
    import textvae
    from textvae.hub.shipped import PRETRAINED

    resolved = folder.resolve()
    return any(
        resolved == top or top in resolved.parents for top in (Path(textvae.__file__).resolve().parent, PRETRAINED)
    )


def writable_folder(path: str | Path) -> Path:
    """Where files next to the model at ``path`` go: its folder when writable, else its cache folder (created)."""
    folder = model_folder(path)
    if os.access(folder, os.W_OK | os.X_OK) and not _shipped(folder):
        return folder
    cache = cache_folder(path)
    cache.mkdir(parents=True, exist_ok=True)
    log.warning("%s is read-only: files that belong next to the model go to %s", folder, cache)
    return cache


def find_beside(path: str | Path, name: str) -> Path:
    """A file written next to the model: in its folder if there, else in its cache folder (the model's
    folder's path, even when neither exists, for the error message)."""
    beside = model_folder(path) / name
    if beside.is_file():
        return beside
    cached = cache_folder(path) / name
    return cached if cached.is_file() else beside
