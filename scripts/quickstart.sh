#!/usr/bin/env bash
# The main job: set up, then train and evaluate an LSTM language model and a plain LSTM VAE on the
# embedded corpus (King James Bible, offline) and print one results table. Re-running resumes.
# Usage: bash scripts/quickstart.sh [OUT_DIR]   (default runs/quickstart)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
out=${1:-runs/quickstart}
textvae=.venv/bin/textvae
for name in lm vae; do
  if [ -f "$out/$name/last.pt" ]; then
    "$textvae" train "recipes/quickstart/$name.toml" --out "$out/$name" --resume
  else
    "$textvae" train "recipes/quickstart/$name.toml" --out "$out/$name"
  fi
  "$textvae" eval "$out/$name" --json "$out/$name.json" > /dev/null
done
echo
echo "Quickstart results (embedded KJV Bible, test split; nats per sentence; recipes/quickstart/):"
"$textvae" report "$out/lm.json" "$out/vae.json"
