#!/usr/bin/env bash
# The main job: set up, then run the quickstart collapse ablation on the embedded corpus (King James
# Bible, offline): an LSTM LM, a plain LSTM VAE and one row per remedy; prints the results table.
# Re-running resumes: finished rows are kept, an interrupted one continues from its checkpoint.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (default runs/quickstart)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
out=${1:-runs/quickstart}
echo "Quickstart collapse ablation (recipes/quickstart/ablation.toml) → $out" >&2
.venv/bin/textvae ablate recipes/quickstart/ablation.toml --out "$out" --jobs 2  # two rows at a time, one core each
