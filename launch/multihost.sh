#!/usr/bin/env bash
# Start N hbt processes on this machine as one multi-host JAX job (jax.distributed over
# localhost), each with its own slice of every global batch: the same code path as a GPU cluster
# or a pod, testable on a CPU. On a real cluster run one process per host with the same
# --coordinator (host 0's address) and --num_processes, and --process_id set per host.
#
#   launch/multihost.sh N WORKDIR [--config.x=y ...]
set -euo pipefail
n=$1 workdir=$2; shift 2
cd "$(dirname "$0")/.."
port=${HBT_COORDINATOR_PORT:-12355}
pids=()
for ((i = 0; i < n; i++)); do
  python -m hbt.main --config=configs/xquad.py --workdir="$workdir" \
    --coordinator=localhost:$port --num_processes="$n" --process_id=$i "$@" \
    > "${workdir%/}.process$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
tail -n 30 "${workdir%/}.process0.log"
exit $status
