#!/usr/bin/env bash
# The PTB paper ablation on one GPU: recipes/ptb/ablation.toml as written (12 rows, SGD lr 1.0, clip 5, lr
# halved on plateau, at most 5 decays), every row trained to its stopping rule and evaluated at K = 500 on all
# 3,761 test sentences, rows as processes sharing the GPU (through the CUDA MPS daemon where it can be started).
# Writes OUT_DIR/{results.json,results.md,results.csv,*.png} and OUT_DIR/run.json (gpu, date, command,
# wall_seconds), then copies them to recipes/results/ptb_paper_gpu/ unless KEEP_RECIPES=1.
#
# Usage: bash scripts/reproduce_ptb_gpu.sh [OUT_DIR]        (default runs/ptb_paper_gpu; re-running resumes)
# Environment: PYTHON (default .venv/bin/python; python3 where PyTorch is preinstalled), PTB_ROOT (default
# ../shared/data/ptb), JOBS (default 12: every row at once), MAX_MINUTES (a wall-clock cap per row's training,
# default none: a capped row says so in its result and its verdict), EXTRA (more --set KEY=VALUE, space-separated).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-runs/ptb_paper_gpu}
python=${PYTHON:-.venv/bin/python}
ptb=${PTB_ROOT:-../shared/data/ptb}
[ -f "$ptb/ptb.test.txt" ] || { echo "reproduce_ptb_gpu: no PTB files in $ptb (set PTB_ROOT)" >&2; exit 2; }
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo "reproduce_ptb_gpu: this needs a CUDA GPU (torch.cuda.is_available() is False)" >&2; exit 2; }

args=(ablate recipes/ptb/ablation.toml --out "$out" --jobs "${JOBS:-12}"
      --set "data.root=$ptb" --set train.device=cuda --set eval.device=cuda)
[ -n "${MAX_MINUTES:-}" ] && args+=(--set "train.max_minutes=$MAX_MINUTES")
for kv in ${EXTRA:-}; do args+=(--set "$kv"); done

started=$(date +%s.%N)
status=0
"$python" -m textvae "${args[@]}" || status=$?
ended=$(date +%s.%N)

mkdir -p "$out"
"$python" - "$out" "$started" "$ended" "$status" "textvae ${args[*]}" <<'PY'
import json, sys, datetime, torch
out, started, ended, status, command = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
run = {
    "gpu": torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
    "command": command,
    "wall_seconds": round(ended - started, 1),
    "exit_status": status,
}
with open(f"{out}/run.json", "w", encoding="utf-8") as handle:
    json.dump(run, handle, indent=2)
print(json.dumps(run))
PY
if [ "${KEEP_RECIPES:-0}" != 1 ] && [ -f "$out/results.json" ]; then
  mkdir -p recipes/results/ptb_paper_gpu
  cp "$out"/results.json "$out"/results.md "$out"/results.csv "$out"/run.json recipes/results/ptb_paper_gpu/
  cp "$out"/*.png recipes/results/ptb_paper_gpu/ 2>/dev/null || true
fi
[ -f "$out/results.md" ] && cat "$out/results.md"
exit "$status"
