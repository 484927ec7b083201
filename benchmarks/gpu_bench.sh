#!/usr/bin/env bash
# The GPU figures in one run, on a machine without network access (~4-5 min expected on an H100; at most ~8 min,
# since each benchmark has its own timeout):
#   1. generation: crossdistill.generation (continuous batching) vs one-at-a-time HF model.generate, tokens/s
#   2. training:   a cdsdft step vs a TRL SFTTrainer step, step time and peak GPU memory
# both on a random-init model of the Llama-3.2-1B shape (timings are those of the real model; nothing to download).
#
# Run from the repo root:   bash benchmarks/gpu_bench.sh
# Needs: python3 with torch (CUDA) there; benchmarks/gpu_carry/ (made here by benchmarks/gpu_prepare.sh, git-ignored)
# carried along: the wheels are installed with --no-index into /tmp/site and put ahead of the image's packages, so
# transformers/trl/peft/datasets are the versions this project is tested with. See benchmarks/README.md (## GPU).
#
# Output: one JSON line per benchmark on stdout, each tagged with "bench": env, generate, train (a failed benchmark
# prints {"bench": ..., "error": ...} and the others still run); full logs in $OUT (or /tmp/gpu_bench) as *.log.
# Knobs (environment): GEN_ARGS, TRAIN_ARGS (extra arguments, appended: they override the defaults below),
# GEN_TIMEOUT (default 200 s), TRAIN_TIMEOUT (250 s), SHAPE (llama-3.2-1b), DEVICE (cuda), PYTHON (python3),
# WHEELS (benchmarks/gpu_carry/wheels), SITE (/tmp/site). CPU smoke test of this script itself:
#   SHAPE=tiny-llama DEVICE=cpu GEN_ARGS="--n 4 --batch-size 4 --baseline-n 2 --max-new-tokens 8 --threads 1" \
#   TRAIN_ARGS="--batch 2 --seq-len 64 --warmup 1 --steps 2 --repeats 1 --threads 1" bash benchmarks/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/benchmarks/gpu_carry
WHEELS=${WHEELS:-$CARRY/wheels}
SITE=${SITE:-/tmp/site}
SHAPE=${SHAPE:-llama-3.2-1b}
DEVICE=${DEVICE:-cuda}
LOGS=${OUT:-/tmp/gpu_bench}
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1

t_start=$(date +%s)
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "$WHEELS"/*.whl >"$LOGS/pip.log" 2>&1 || { echo '{"bench": "env", "error": "pip install of the carried wheels failed"}'; cat "$LOGS/pip.log" >&2; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  echo "[gpu_bench] no wheels in $WHEELS: using the image's packages (trl/datasets may be missing)" >&2
fi
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
"$PY" - <<'EOF' 2>"$LOGS/env.log" || echo '{"bench": "env", "error": "see env.log"}'
import importlib.metadata as m, json, platform
import torch
out = {"bench": "env", "python": platform.python_version(), "torch": torch.__version__,
       "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
for p in ("transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "huggingface-hub", "pyarrow"):
    try:
        out[p] = m.version(p)
    except m.PackageNotFoundError:
        out[p] = None
for mod in ("crossdistill.generation", "crossdistill.training", "trl", "peft", "datasets"):
    try:
        __import__(mod)
    except Exception as e:  # noqa: BLE001
        out.setdefault("import_errors", {})[mod] = f"{type(e).__name__}: {e}"[:300]
print(json.dumps(out), flush=True)
EOF

# run one benchmark: its last stdout line is the JSON result; tag it, or report the failure
bench() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$PY" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.log"
  local rc=$?
  local last=$(tail -n 1 "$LOGS/$name.out")
  if [ $rc -eq 0 ] && [ "${last:0:1}" = "{" ]; then
    "$PY" -c 'import json,sys; d=json.loads(sys.argv[1]); print(json.dumps({"bench": sys.argv[2], **d, "wall_s": int(sys.argv[3])}))' \
      "$last" "$name" "$(( $(date +%s) - t0 ))"
  else
    echo "{\"bench\": \"$name\", \"error\": \"exit $rc after $(( $(date +%s) - t0 )) s (124: timeout); see $name.log\"}"
    tail -n 30 "$LOGS/$name.log" >&2
  fi
}

DATA=$CARRY/gsm8k_train.jsonl
[ -f "$DATA" ] || DATA=""   # synthetic word problems then
# generation: 512 GSM8K rewrite prompts, 256 rows decoding together, 256 new tokens each, no EOS (random weights);
# the baseline (batch 1, model.generate) on 4 of them, half before and half after ours
bench generate "${GEN_TIMEOUT:-200}" benchmarks/bench_generate.py --random-init "$SHAPE" --device "$DEVICE" \
  --data "$DATA" --n 512 --batch-size 256 --baseline-n 4 --max-new-tokens 256 ${GEN_ARGS:-}
# training: LoRA r16 all-linear, bf16, batch 8 x 1024 tokens, 3 warm-up + 10 timed steps, sides alternated twice
bench train "${TRAIN_TIMEOUT:-250}" benchmarks/bench_train.py --random-init "$SHAPE" --device "$DEVICE" \
  --batch 8 --seq-len 1024 --warmup 3 --steps 10 --repeats 2 ${TRAIN_ARGS:-}
echo "[gpu_bench] total $(( $(date +%s) - t_start )) s; logs in $LOGS" >&2
