#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtualenv in .venv with torch and crossdistill installed.
# Idempotent: a second call only checks. Override the torch requirement with CROSSDISTILL_TORCH
# (e.g. CROSSDISTILL_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu").
# Everything else is installed within constraints.txt, the exact versions the test suite passed with; set
# CROSSDISTILL_CONSTRAINTS to another file, or to nothing (CROSSDISTILL_CONSTRAINTS= ) for the newest versions
# pyproject.toml allows.
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
CONSTRAINTS=${CROSSDISTILL_CONSTRAINTS-constraints.txt}
cflag=()
if [ -n "$CONSTRAINTS" ]; then
  [ -f "$CONSTRAINTS" ] || { echo "setup: constraints file '$CONSTRAINTS' not found" >&2; exit 2; }
  cflag=(-c "$CONSTRAINTS")
  if ! "$VPY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup: note: $CONSTRAINTS was recorded on Python 3.11; on $("$VPY" -V) its pins do not apply"
  fi
fi
stamp=".venv/.installed"
want="constraints=${CONSTRAINTS:-none}"
if ! "$VPY" -c "import crossdistill, trl, peft, pytest" 2>/dev/null || [ pyproject.toml -nt "$stamp" ] \
    || { [ -n "$CONSTRAINTS" ] && [ "$CONSTRAINTS" -nt "$stamp" ]; } || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ ! -e .venv/bin/pip ] && "$VPY" -c "import crossdistill, trl, peft, pytest" 2>/dev/null; then
    # a venv made without pip (`venv --without-pip`, sharing another venv's packages): it works, leave it as it is
    echo "setup: .venv has no pip; using its packages as they are (not checked against ${CONSTRAINTS:-nothing})"
  else
    echo "setup: installing crossdistill and its dependencies (${want})"
    "$VPY" -m pip install -q "${cflag[@]}" -e ".[test]"
    echo "$want" > "$stamp"
  fi
fi
