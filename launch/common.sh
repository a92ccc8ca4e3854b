# Shared by the launch/*.sh scripts (sourced, not run). Dry-run mode: DRY_RUN=1 in the environment
# or --dry-run as the first argument prints each command, shell-quoted, instead of running it.

DRY_RUN=${DRY_RUN:-0}
if [[ ${1:-} == --dry-run ]]; then
  DRY_RUN=1
  shift
fi

# run CMD ARGS...: runs the command, or prints it (one line, shell-quoted) in dry-run mode.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'
    echo
  else
    "$@"
  fi
}

# die MESSAGE: prints the message and the script's usage (its header comment) and exits 2.
die() {
  echo "error: $*" >&2
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${HBT_PYTHON:-python}
