#!/usr/bin/env bash
# One machine, all (or N) of its NVIDIA GPUs: one hbt process sees every GPU as a device of the mesh
# (config.mesh), so the global batch is split over them and jit inserts the collectives.
#
#   launch/gpu.sh [--dry-run] install                    # the CUDA build of jaxlib, same version
#   launch/gpu.sh [--dry-run] run WORKDIR [--config.x=y ...]
#
# GPUS=N uses the first N GPUs (CUDA_VISIBLE_DEVICES=0..N-1; default: all that nvidia-smi lists).
# HBT_CONFIG picks the config file (default configs/paper.py); HBT_PYTHON the interpreter (default
# python). XLA_PYTHON_CLIENT_MEM_FRACTION is left to JAX (75% of each GPU) unless set.
# DRY_RUN=1 (or --dry-run) prints the commands instead of running them.

set -euo pipefail
source "$(dirname "$0")/common.sh"

JAX_VERSION=0.10.2
CONFIG=${HBT_CONFIG:-configs/paper.py}

command=${1:-}
(($# > 0)) && shift
case $command in
  install)
    (($# == 0)) || die 'install takes no arguments'
    run "$PYTHON" -m pip install "jax[cuda12]==$JAX_VERSION" ;;
  run)
    (($# >= 1)) || die 'run WORKDIR [--config.x=y ...]'
    workdir=$1
    shift
    gpu_env=()
    if [[ -n ${GPUS:-} ]]; then
      [[ $GPUS =~ ^[1-9][0-9]*$ ]] || die "GPUS must be a positive integer, got '$GPUS'"
      gpu_env=(env "CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((GPUS - 1)))")
    fi
    cd "$REPO"
    # Fail early, and clearly, when JAX would fall back to the CPU.
    run "${gpu_env[@]}" "$PYTHON" -c \
      'import jax; n = jax.device_count("gpu"); print(f"{n} GPUs:", jax.devices())'
    run "${gpu_env[@]}" "$PYTHON" -m hbt.main --config="$CONFIG" --workdir="$workdir" "$@" ;;
  *) die "unknown command '$command'" ;;
esac
