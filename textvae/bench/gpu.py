"""The CUDA additions of ``textvae bench`` alone, sized to finish in about a minute on one H200:

    python -m textvae.bench.gpu [--json OUT] [--data-root DIR] [--device cuda|cpu] [--sizes gpu|tiny]

graphed steps (toolkit and plain PyTorch) beside the eager ones, aggregate model-steps/s of 1, 4
and 8 processes without and with MPS, and the image MLP's images/s, eager and graphed
(``scripts/gpu_bench.sh`` runs it). Each row that fails says so in the table and the rest go on;
the table is printed at the end and the JSON written with ``--json``. ``--device cpu`` runs the
same code paths without a GPU (the CUDA-only rows say "needs CUDA").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import torch

from textvae.checkpoint import atomic_write_text
from textvae.errors import TextVAEError

from .models import QUICK, TINY
from .report import table
from .suite import GPU_SECTIONS, run

# QUICK's rounds, with enough steps per round that a graphed round (about 2 ms a step) is not all noise
GPU = replace(QUICK, graph_steps=50, image_steps=50, process_seconds=1.0)
GPU_SIZES = {"gpu": GPU, "tiny": replace(TINY, process_on_cpu=True)}  # tiny: the tests, on a CPU


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textvae.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results here")
    parser.add_argument("--data-root", type=Path, default=None, help="directory with ptb.{train,valid,test}.txt")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--sizes", choices=sorted(GPU_SIZES), default="gpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cuda = torch.version.cuda
    logging.info("torch %s, CUDA %s, GPU available: %s", torch.__version__, cuda, torch.cuda.is_available())
    try:
        results = run(GPU_SIZES[args.sizes], device=args.device, data_root=args.data_root, sections=GPU_SECTIONS)
    except TextVAEError as err:
        sys.stderr.write(f"textvae bench: error: {err}\n")
        return 2
    sys.stdout.write(table(results) + "\n")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
        sys.stdout.write(f"results: {args.json}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
