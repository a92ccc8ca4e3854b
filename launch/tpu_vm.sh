#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): create, install, run on all workers, fetch, delete.
#
#   launch/tpu_vm.sh [--dry-run] create  NAME ZONE ACCELERATOR   # e.g. v4-32; VERSION: the image
#   launch/tpu_vm.sh [--dry-run] install NAME ZONE               # this repo's HEAD, pip, jax[tpu]
#   launch/tpu_vm.sh [--dry-run] run     NAME ZONE WORKDIR [--config.x=y ...]
#   launch/tpu_vm.sh [--dry-run] fetch   NAME ZONE WORKDIR DEST  # eval/ and tensorboard/ back here
#   launch/tpu_vm.sh [--dry-run] delete  NAME ZONE
#   launch/tpu_vm.sh [--dry-run] all     NAME ZONE ACCELERATOR WORKDIR DEST [--config.x=y ...]
#                                        # create, install, run, fetch (the VM is kept: delete it)
#
# `install` copies the committed HEAD of this repository (git archive) to every worker, into
# ~/hbt/.venv installs requirements.txt (less its test section) and the jax TPU build.
# `run` starts hbt.main on every worker at once with HBT_MULTIHOST=1 (jax.distributed.initialize()
# finds the pod's hosts by itself), with --config=$HBT_CONFIG (default configs/paper.py). WORKDIR
# should be a gs:// bucket, so that checkpoints outlive the VM and every worker sees them. Each
# worker needs the data (HBT_DATA_DIR, passed on when set) or downloads it. DRY_RUN=1 (or
# --dry-run) prints the gcloud commands instead of running them.

set -euo pipefail
source "$(dirname "$0")/common.sh"

JAX_VERSION=0.10.2
VERSION=${VERSION:-tpu-ubuntu2204-base}
CONFIG=${HBT_CONFIG:-configs/paper.py}
REMOTE_DIR='~/hbt'  # on every worker

tpu() { run gcloud compute tpus tpu-vm "$@"; }

create() {  # NAME ZONE ACCELERATOR
  tpu create "$1" --zone="$2" --accelerator-type="$3" --version="$VERSION"
}

install() {  # NAME ZONE
  local tarball=${TMPDIR:-/tmp}/hbt-$1.tar.gz
  run git -C "$REPO" archive --format=tar.gz -o "$tarball" HEAD
  tpu scp --zone="$2" --worker=all "$tarball" "$1:hbt.tar.gz"
  # requirements.txt without its test section (torch, sentence-transformers: not needed to run).
  tpu ssh "$1" --zone="$2" --worker=all --command="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && \
tar -xzf hbt.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR && python3 -m venv .venv && \
. .venv/bin/activate && sed -n '/^# tests/q;p' requirements.txt > requirements-run.txt && \
pip install -q -r requirements-run.txt && pip install -q 'jax[tpu]==$JAX_VERSION'"
}

run_workers() {  # NAME ZONE WORKDIR [flags...]
  local name=$1 zone=$2 workdir=$3
  shift 3
  local env="HBT_MULTIHOST=1${HBT_DATA_DIR:+ HBT_DATA_DIR=$(printf '%q' "$HBT_DATA_DIR")}"
  local flags=''
  (($#)) && flags=$(printf ' %q' "$@")
  tpu ssh "$name" --zone="$zone" --worker=all --command="cd $REMOTE_DIR && . .venv/bin/activate && \
$env python -m hbt.main --config=$CONFIG --workdir=$(printf '%q' "$workdir")$flags"
}

fetch() {  # NAME ZONE WORKDIR DEST
  local name=$1 zone=$2 workdir=$3 dest=$4
  run mkdir -p "$dest"
  if [[ $workdir == gs://* ]]; then
    run gcloud storage cp --recursive "${workdir%/}/eval" "${workdir%/}/tensorboard" "$dest"
  else  # a workdir on the VM: process 0 (worker 0) writes the reports
    tpu scp --recurse --zone="$zone" --worker=0 "$name:${workdir%/}/eval" \
      "$name:${workdir%/}/tensorboard" "$dest"
  fi
}

delete() {  # NAME ZONE
  tpu delete "$1" --zone="$2" --quiet
}

command=${1:-}
(($# > 0)) && shift
case $command in
  create) (($# == 3)) || die 'create NAME ZONE ACCELERATOR'; create "$@" ;;
  install) (($# == 2)) || die 'install NAME ZONE'; install "$@" ;;
  run) (($# >= 3)) || die 'run NAME ZONE WORKDIR [--config.x=y ...]'; run_workers "$@" ;;
  fetch) (($# == 4)) || die 'fetch NAME ZONE WORKDIR DEST'; fetch "$@" ;;
  delete) (($# == 2)) || die 'delete NAME ZONE'; delete "$@" ;;
  all)
    (($# >= 5)) || die 'all NAME ZONE ACCELERATOR WORKDIR DEST [--config.x=y ...]'
    name=$1 zone=$2 accelerator=$3 workdir=$4 dest=$5
    shift 5
    create "$name" "$zone" "$accelerator"
    install "$name" "$zone"
    run_workers "$name" "$zone" "$workdir" "$@"
    fetch "$name" "$zone" "$workdir" "$dest"
    echo "done; the VM is kept: launch/tpu_vm.sh delete $name $zone" ;;
  *) die "unknown command '$command'" ;;
esac
