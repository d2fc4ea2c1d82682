"""Reading the source files of a corpus from a local directory, or downloading them (urllib)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from _errors import PrepareError

DOWNLOAD_TIMEOUT_S = 60


def check_source_dir(source: Path) -> None:
    if not source.is_dir():
        raise PrepareError(f"{source}: source directory not found")


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PrepareError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PrepareError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise PrepareError(f"{path}: cannot read ({err.strerror or err})") from None


def download(url: str) -> bytes:
    """The bytes at ``url`` (http, https or file), read with urllib."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        raise PrepareError(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except urllib.error.URLError as err:
        raise PrepareError(f"{url}: download failed ({err.reason})") from None
    except (OSError, ValueError) as err:
        raise PrepareError(f"{url}: download failed ({err})") from None


def fetch(name: str, *, source: Path | None, url: str) -> bytes:
    """File ``name`` from the local directory ``source``, or else downloaded from ``url/name``."""
    if source is not None:
        return read_file(source / name)
    return download(f"{url.rstrip('/')}/{name}")


def check_out_is_not_source(out: Path, source: Path | None) -> None:
    """Writing into the source directory would replace the files being read (a re-split would lose them)."""
    if source is not None and out.exists() and out.resolve() == source.resolve():
        raise PrepareError(f"{out}: --out must not be the --source directory")
