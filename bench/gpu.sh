#!/usr/bin/env bash
# One prepared script for an accelerator machine: runs bench/bench_mfu.py there, the train step
# and the encoder of multilingual-e5-small and of an XLM-R-large-shaped encoder (random weights,
# bf16, batch 128, query/passage lengths 64/256), for hbt (its 'matmul' attention and its 'fused',
# cuDNN flash attention) and the PyTorch peer of the same shape, loss and optimizer (eager and
# torch.compile), printing ms/step, TFLOP/s, MFU against the device's dense bf16 peak (H200:
# 989 TFLOP/s) and hbt's speed against PyTorch's; for 'fused', the min cosine of its embeddings
# against the matmul path's on randomly padded rows (its parity on the GPU).
#
#   bash bench/gpu.sh                  # JAX_CUDA=cuda13 for the CUDA 13 wheels (driver >= 580)
#   STEPS=20 MODELS=xlmr-large ENGINES=hbt,torch_eager bash bench/gpu.sh
#   WHEELS=.whl bash bench/gpu.sh      # offline: PYTHON's own CUDA jax, plus the wheels in .whl
#
# Python: if PYTHON (default python3) already runs jax on a GPU (an image with CUDA jax, offline),
# it is used as it is, and WHEELS may name a folder of wheels for what it lacks (hbt needs
# ml-collections beside jax, flax and optax; the PyTorch engines need torch and transformers).
# Otherwise it makes a virtualenv (VENV, default .venv-gpu) and installs the CUDA build of jax at
# requirements.txt's version, and what the hbt engines import, from the package index.
#
# It needs no data and no hub access. It writes only that virtualenv, /tmp/hbt-wheels and, when
# OUT is set, a copy of its output in $OUT/gpu_bench.txt. Each engine of each model runs in its own
# process, so a crash in one keeps the others' figures and no engine finds another's memory held (jax keeps what
# it has allocated; on 2026-11-30 a PyTorch engine run after hbt's in one process ran out of the
# H200's memory). The ratio lines after each engine compare every engine run so far.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
JAX_CUDA=${JAX_CUDA:-cuda12}
VENV=${VENV:-.venv-gpu}
STEPS=${STEPS:-10}
MODELS=${MODELS:-xlmr-large,e5-small}
ENGINES=${ENGINES:-hbt,hbt_fused,torch_eager,torch_compile}
LOG=${OUT:+$OUT/gpu_bench.txt}
LOG=${LOG:-/dev/null}

pin() { grep -E "^$1==" requirements.txt; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
      || true
  if "$PYTHON" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
    PY=$PYTHON
    echo "using $PYTHON's own CUDA jax"
  else
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || exit 1
    "$VENV/bin/pip" install -q "jax[$JAX_CUDA]==$(pin jax | cut -d= -f3)" "$(pin flax)" \
        "$(pin optax)" "$(pin ml-collections)" "$(pin numpy)" "$(pin absl-py)" || exit 1
    PY=$VENV/bin/python
  fi
  if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/hbt-wheels \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/hbt-wheels${PYTHONPATH:+:$PYTHONPATH}
  fi
  "$PY" - <<'EOF'
import importlib
for name in ('jax', 'jaxlib', 'flax', 'optax', 'ml_collections', 'torch', 'transformers'):
  try:
    print(name, importlib.import_module(name).__version__)
  except Exception as e:  # pylint: disable=broad-except
    print(name, 'missing:', e)
import jax
print(jax.devices())
EOF
  status=0
  results=$(mktemp)
  for model in ${MODELS//,/ }; do
    for engine in ${ENGINES//,/ }; do
      PYTHONUNBUFFERED=1 "$PY" bench/bench_mfu.py --platform cuda --model "$model" \
          --engines "$engine" --batch 128 --query-length 64 --passage-length 256 \
          --steps "$STEPS" --dtype bfloat16 --results "$results" \
          || { echo "bench_mfu.py --model $model --engines $engine failed"; status=1; }
    done
  done
  exit $status
} 2>&1 | tee "$LOG"
