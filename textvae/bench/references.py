"""The plain-PyTorch baselines of ``benchmarks/`` (outside the package), loaded by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from textvae.errors import TextVAEError

REPO = Path(__file__).resolve().parent.parent.parent
BENCHMARKS = REPO / "benchmarks"


def load_reference(name: str):
    path = BENCHMARKS / f"{name}.py"
    if not path.is_file():
        raise TextVAEError(
            f"textvae bench compares with the reference implementations in {BENCHMARKS}, which is not there "
            "(an installed copy has no benchmarks/ folder): run it from a source checkout (pip install -e .)"
        )
    spec = importlib.util.spec_from_file_location(f"textvae_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
