"""Training and IW-NLL throughput of the PTB LSTM VAE: now measured by ``textvae bench``, which this runs.

    python benchmarks/train_throughput.py [--quick] [--json OUT] [--threads N] [--device cpu|cuda]

``textvae bench`` (``textvae/bench/``) times the training step (SGD and Adam) and IW-NLL at
K = 500 beside their baselines in the same process: the matmul peak of the machine, the
plain-PyTorch step of ``benchmarks/reference_step.py`` and the one-sentence-at-a-time IW-NLL of
``benchmarks/naive_iw_nll.py``. Its options replace this script's old ones.
"""

from __future__ import annotations

import sys

from textvae.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
