#!/usr/bin/env bash
# Fill benchmarks/gpu_carry/ (git-ignored) with what benchmarks/gpu_bench.sh needs on a GPU machine without network:
#   wheels/   pure-Python wheels of the versions this project is tested with (transformers, trl, peft, datasets and
#             the two datasets needs that the GPU image lacks); installed there with --no-index into /tmp/site
#   gsm8k_train.jsonl   the first 512 rows of ../shared/data/gsm8k/train.jsonl (the generation prompts), if present
# Run once here, from the repo root, with network; then name benchmarks/gpu_carry in the device tool's `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=benchmarks/gpu_carry
mkdir -p "$DEST/wheels"
PY=${PYTHON:-.venv/bin/python}
# the versions of this checkout's venv (what the tests ran against); the GPU image (python 3.12) has torch, accelerate,
# tokenizers, safetensors, huggingface-hub, pyarrow, pandas, xxhash, fsspec, ... but no trl/datasets/dill/multiprocess
PKGS=()
for p in transformers trl peft datasets dill multiprocess; do
  v=$("$PY" -c "import importlib.metadata as m; print(m.version('$p'))")
  PKGS+=("$p==$v")
done
rm -f "$DEST"/wheels/*.whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST/wheels" "${PKGS[@]}"
for w in "$DEST"/wheels/*.whl; do
  case "$w" in *-none-any.whl) ;; *) echo "not a pure-Python wheel: $w" >&2; exit 1;; esac
done
DATA=../shared/data/gsm8k/train.jsonl
if [ -f "$DATA" ]; then head -n 512 "$DATA" > "$DEST/gsm8k_train.jsonl"; fi
du -sh "$DEST"; ls -l "$DEST" "$DEST/wheels"
