#!/usr/bin/env bash
# One prepared script for an accelerator machine: installs the CUDA build of jax (same version as
# requirements.txt) and what hbt's model and train step import, then runs bench/bench_mfu.py: the
# train step and the encoder of multilingual-e5-small and of an XLM-R-large-shaped encoder (random
# weights, bf16, batch 128, query/passage lengths 64/256), printing ms/step, TFLOP/s and MFU
# against the device's dense bf16 peak (H200: 989 TFLOP/s).
#
#   bash bench/gpu.sh                  # JAX_CUDA=cuda13 for the CUDA 13 wheels (driver >= 580)
#   STEPS=20 MODELS=xlmr-large bash bench/gpu.sh
#
# It needs no data and no hub access. It writes only its virtualenv (VENV, default .venv-gpu) and,
# when OUT is set, a copy of its output in $OUT/gpu_bench.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
JAX_CUDA=${JAX_CUDA:-cuda12}
VENV=${VENV:-.venv-gpu}
STEPS=${STEPS:-10}
MODELS=${MODELS:-e5-small,xlmr-large}
LOG=${OUT:+$OUT/gpu_bench.txt}
LOG=${LOG:-/dev/null}

pin() { grep -E "^$1==" requirements.txt; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q "jax[$JAX_CUDA]==$(pin jax | cut -d= -f3)" "$(pin flax)" \
      "$(pin optax)" "$(pin ml-collections)" "$(pin numpy)" "$(pin absl-py)"
  "$VENV/bin/python" -c 'import jax; print(jax.__version__, jax.devices())'
  XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9} \
      "$VENV/bin/python" bench/bench_mfu.py --platform gpu --model "$MODELS" --batch 128 \
      --query-length 64 --passage-length 256 --steps "$STEPS" --dtype bfloat16
} 2>&1 | tee "$LOG"
