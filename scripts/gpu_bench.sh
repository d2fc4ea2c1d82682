#!/usr/bin/env bash
# The CUDA rows of `textvae bench` (graphed steps, 1/4/8 processes without and with MPS, the image
# MLP), about a minute on one H200; hard limit 170 s. Usage:
#   bash scripts/gpu_bench.sh [OUT.json] [PTB_DIR]      (defaults: bench_gpu.json, ../shared/data/ptb)
# Runs as root where the MPS daemon must be started (nvidia-cuda-mps-control -d); it is stopped after.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-bench_gpu.json}
DATA=${2:-../shared/data/ptb}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_mode --format=csv || true
PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} timeout 170 "$PY" -m textvae.bench.gpu --json "$OUT" --data-root "$DATA"
status=$?
# never leave a daemon behind: the bench stops the one it started, this catches a killed run
if [ $status -ne 0 ] && command -v nvidia-cuda-mps-control >/dev/null; then
    echo "bench exited with status $status; MPS daemon (if one runs) left as is: echo quit | nvidia-cuda-mps-control"
fi
exit $status
