#!/usr/bin/env bash
# The repository's GPU check: every GPU code path of textvae exercised and timed on one CUDA GPU, in about
# four and a half minutes at most on an H200 (PyTorch preinstalled, no network needed). Each part has its own time limit, writes
# its JSON and log under OUT_DIR, and a failing part does not stop the others; the tables come last.
#
#   1. scripts/gpu_graph_check.py  the graphed training step vs the uncaptured one (200 steps, one injected
#                                  non-finite batch), ms/step against a plain and a graphed plain reference
#   2. scripts/gpu_eval_check.py   a short PTB training, then `textvae eval` on GPU vs CPU on that checkpoint,
#                                  the full test set at K = 500, tf32/bf16 deviation, eval-path throughput
#   3. scripts/gpu_bench.sh        `textvae bench --device cuda`'s CUDA rows: graphed steps, 1/4/8 processes
#                                  without and with MPS, the image MLP's images/s
#   4. scripts/gpu_engine_check.py kill -9 and --resume on CUDA give the uninterrupted run's weights
#
# Usage: bash scripts/gpu_check.sh [OUT_DIR]    (default runs/gpu_check)
# Environment: PYTHON (default .venv/bin/python, else python3), PTB_ROOT (default ../shared/data/ptb),
# DATA_ROOT (the folder holding ptb/ and mnist/, default ../shared/data), PARTS (default "graph eval bench engine").
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/gpu_check}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
export PYTHON=$py PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
data=${DATA_ROOT:-../shared/data}
ptb=${PTB_ROOT:-$data/ptb}

nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu --format=csv 2>&1 | tee "$out/gpu.txt"
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' \
  2>&1 | tee -a "$out/gpu.txt"

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, record the status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" >&2
  timeout -k 5 "$limit" "$@" >"$out/$name.log" 2>&1
  local status=$?
  echo "$name status=$status seconds=$((SECONDS - t0))" | tee -a "$out/status.txt" >&2
}

for p in ${PARTS:-graph eval bench engine}; do
  case $p in
    graph) part graph 90 "$py" scripts/gpu_graph_check.py --data "$ptb" --out "$out/graph.json" --budget-s 70 ;;
    eval) part eval 90 "$py" scripts/gpu_eval_check.py --data-root "$ptb" --train-steps 300 --out "$out/eval.json" \
      --work "$out/eval_work" ;;
    bench) part bench 75 bash scripts/gpu_bench.sh "$out/bench.json" "$ptb" ;;
    engine) part engine 40 "$py" scripts/gpu_engine_check.py --device cuda --data "$data" ;;
    *) echo "gpu_check: unknown part $p (graph, eval, bench, engine)" >&2; exit 2 ;;
  esac
done

# the tables each part printed last, in one place
for p in ${PARTS:-graph eval bench engine}; do
  echo
  echo "==================== $p ($(grep "^$p " "$out/status.txt" | tail -1))"
  tail -n 40 "$out/$p.log"
done
