"""What ``textvae ablate --executor local|slurm`` asks the scheduler for: flags, or an ``--executor-config`` file.

Site settings (partition, account, QoS, module loads) belong to the machine, not to the ablation, so
they stay out of the committed recipes: give them as ``--slurm-*`` flags or in a TOML file with the
same names without the prefix (flags win over the file)::

    rows_per_job = 4          # rows trained at the same time in one job (on its GPU, under MPS)
    partition = "gpu"
    time = 720                # minutes per job; a job that times out is requeued and resumes its rows
    gpus_per_job = 1
    cpus_per_job = 8
    account = "my-lab"
    qos = "normal"
    setup = ["module load cuda/12.4", "source ~/venvs/textvae/bin/activate"]
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textvae.errors import TextVAEError

EXECUTORS = ("pool", "local", "slurm")  # ablate --executor: this machine's worker pool, or submitit's executors


@dataclass(frozen=True)
class ExecutorSettings:
    rows_per_job: int = 4  # the rows one GPU holds well under MPS (textvae ablate --jobs, README's GPU section)
    partition: str | None = None
    time: int = 240  # minutes per job; longer rows span several jobs through requeue
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    account: str | None = None
    qos: str | None = None
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load ..., a venv's activate)

    def __post_init__(self) -> None:
        for name, least in (("rows_per_job", 1), ("time", 1), ("gpus_per_job", 0), ("cpus_per_job", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise TextVAEError(f"--{_flag(name)} must be an integer ≥ {least}, got {value!r}")
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise TextVAEError(f"--{_flag(name)} must be a non-empty string, got {value!r}")
        if not all(isinstance(line, str) for line in self.setup):
            raise TextVAEError(f"--slurm-setup must be lines of shell, got {list(self.setup)!r}")


def _flag(name: str) -> str:
    return name.replace("_", "-") if name == "rows_per_job" else "slurm-" + name.replace("_", "-")


KEYS = tuple(field.name for field in dataclasses.fields(ExecutorSettings))


def load_settings(path: Path | None, flags: dict[str, Any]) -> ExecutorSettings:
    """The settings of ``path`` (a TOML file; None: none) with the ``flags`` that are not None over them."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TextVAEError(f"{path}: executor config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise TextVAEError(f"{path}: not a TOML file ({err})") from None
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise TextVAEError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
        if isinstance(values.get("setup"), list):
            values["setup"] = tuple(values["setup"])
        elif "setup" in values:
            raise TextVAEError(f"{path}: 'setup' must be a list of shell lines")
    for key, value in flags.items():
        if value is not None and value != [] and value != ():
            values[key] = tuple(value) if key == "setup" else value
    return ExecutorSettings(**values)
