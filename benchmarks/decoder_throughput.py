"""Training throughput of each dilated-CNN preset against the LSTM decoder at the same width: now
measured by ``textvae bench`` (its decoder rows: tokens/s and FLOP/s at width 512), which this runs.

    python benchmarks/decoder_throughput.py [--quick] [--json OUT] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import sys

from textvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
