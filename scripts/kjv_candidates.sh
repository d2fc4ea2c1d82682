#!/usr/bin/env bash
# The shipped KJV generator's comparison (recipes/kjv/README.md): train the candidates of
# recipes/kjv/candidates.toml (re-running resumes), then evaluate each on the same 500 held-out test
# verses with the reconstruction columns (BLEU, content words kept, homotopies) and tabulate them.
#   bash scripts/kjv_candidates.sh [RUNS_DIR [RESULTS_DIR]]   (default runs/kjv_candidates, recipes/results/kjv_candidates)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-runs/kjv_candidates}
results=${2:-recipes/results/kjv_candidates}
textvae=.venv/bin/textvae
"$textvae" ablate recipes/kjv/candidates.toml --out "$runs" --jobs "${JOBS:-2}"
mkdir -p "$results/eval"
for row in "$runs"/*/seed0; do
    name=$(basename "$(dirname "$row")")
    extra=(--generation --code-use)
    [ "$name" = lm ] && extra=(--generation)   # a language model has no code to use
    "$textvae" eval "$row" "${extra[@]}" --num-samples 200 --json "$results/eval/$name.json" --plot "$results/eval/$name.kl.png"
done
"$textvae" report "$runs"                       # the ablation's table and plots, in the runs directory
"$textvae" report "$results"/eval/*.json > "$results/candidates.md"
cp "$runs"/results.{json,md,csv} "$results"/ 2>/dev/null || true
cat "$results/candidates.md"
