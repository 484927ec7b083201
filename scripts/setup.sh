#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtualenv in .venv with torch and crossdistill installed.
# Idempotent: a second call only checks. Override the torch requirement with CROSSDISTILL_TORCH
# (e.g. CROSSDISTILL_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VPY" -c "import torch" 2>/dev/null; then
  # Install torch first and pinned: a bare `torch` requirement resolved by pip would pull a multi-GB CUDA
  # build on a CPU-only machine. With a GPU, the default wheel (CUDA) is what you want.
  if command -v nvidia-smi >/dev/null 2>&1; then
    spec=${CROSSDISTILL_TORCH:-"torch"}
  else
    spec=${CROSSDISTILL_TORCH:-"torch==2.13.0"}
  fi
  echo "setup: installing $spec"
  # shellcheck disable=SC2086
  "$VPY" -m pip install -q $spec
fi
if ! "$VPY" -c "import crossdistill, trl, peft, pytest" 2>/dev/null || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: installing crossdistill and its dependencies"
  "$VPY" -m pip install -q -e ".[test]"
  touch .venv/.installed
fi
