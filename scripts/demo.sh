#!/usr/bin/env bash
# The main job: set up (once), then run the embedded demo recipe end to end. Extra args go to `crossdistill run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/crossdistill run "$@"
