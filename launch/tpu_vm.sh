#!/usr/bin/env bash
# Run hbt on every worker of a Cloud TPU VM (pod slice). JAX's runtime finds the other hosts by
# itself on TPU; HBT_MULTIHOST=1 makes hbt.main call jax.distributed.initialize().
#
#   launch/tpu_vm.sh NAME ZONE ACCELERATOR WORKDIR [--config.x=y ...]
#   e.g. launch/tpu_vm.sh hbt-v4 us-central2-b v4-32 gs://bucket/runs/hybrid --config.train.alpha=0.5
#
# WORKDIR should be shared storage (a gs:// bucket) so checkpoints survive the VM; the data
# directory (HBT_DATA_DIR) must hold xquad-r/ and mlqa-r/ on every worker, or leave it unset to
# download them there.
set -euo pipefail
name=$1 zone=$2 accelerator=$3 workdir=$4; shift 4
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)

gcloud compute tpus tpu-vm describe "$name" --zone "$zone" >/dev/null 2>&1 ||
  gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$accelerator" \
    --version tpu-ubuntu2204-base
gcloud compute tpus tpu-vm scp --recurse --zone "$zone" --worker=all "$repo" "$name":~/hbt
gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "
  cd ~/hbt && python3 -m venv .venv && . .venv/bin/activate &&
  pip install -q -r requirements.txt && pip install -q 'jax[tpu]==0.10.2' &&
  HBT_MULTIHOST=1 python -m hbt.main --config=configs/paper.py --workdir=$workdir $*"
