"""Writing a corpus directory atomically: every file or none, the data card renamed last."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from _errors import PrepareError


def write_atomically(out: Path, files: dict[str, bytes]) -> None:
    """Write every file to a temporary file in ``out``, then rename them into place in the given order.

    The last file is the completion marker (the data card): an old copy of it is removed before the
    first rename, so a present marker always describes the files next to it. If writing fails, the
    temporary files are removed (and ``out`` too if this call created it).
    """
    if out.exists() and not out.is_dir():
        raise PrepareError(f"{out}: exists and is not a directory")
    created = not out.exists()
    temps: dict[str, str] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        umask = os.umask(0)
        os.umask(umask)
        for name, data in files.items():
            fd, temps[name] = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temps[name], 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        (out / list(files)[-1]).unlink(missing_ok=True)
        for name in files:
            os.replace(temps.pop(name), out / name)
    except OSError as err:
        for temp in temps.values():
            Path(temp).unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise PrepareError(f"{out}: cannot write ({err.strerror or err})") from None
