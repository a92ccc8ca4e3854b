#!/usr/bin/env bash
# Start N hbt processes on this machine as one multi-host JAX job (jax.distributed over
# localhost), each with its own slice of every global batch: the same code path as a GPU cluster
# or a pod, testable on a CPU. On a real cluster run one process per host with the same
# --coordinator (host 0's address) and --num_processes, and --process_id set per host.
#
#   launch/multihost.sh [--dry-run] N WORKDIR [--config.x=y ...]
#
# Process i writes WORKDIR.process$i.log. HBT_COORDINATOR_PORT (default 12355), HBT_PYTHON
# (default python). DRY_RUN=1 (or --dry-run) prints the N commands instead of starting them.

set -euo pipefail
source "$(dirname "$0")/common.sh"
(($# >= 2)) || die 'N WORKDIR [--config.x=y ...]'
n=$1 workdir=$2; shift 2
cd "$REPO"
port=${HBT_COORDINATOR_PORT:-12355}
pids=()
for ((i = 0; i < n; i++)); do
  cmd=("$PYTHON" -m hbt.main --config=configs/xquad.py --workdir="$workdir"
       --coordinator=localhost:$port --num_processes="$n" --process_id=$i "$@")
  if [[ $DRY_RUN == 1 ]]; then
    run "${cmd[@]}"
    continue
  fi
  "${cmd[@]}" > "${workdir%/}.process$i.log" 2>&1 &
  pids+=($!)
done
[[ $DRY_RUN == 1 ]] && exit 0
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
tail -n 30 "${workdir%/}.process0.log"
exit $status
