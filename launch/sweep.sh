#!/usr/bin/env bash
# Fan a sweep out over hosts (ssh, in parallel; each host runs its share in sequence) or run it here
# in sequence.
#
#   launch/sweep.sh [--dry-run] lines RUNS_FILE ROOT [--config.x=y ...]
#       One hbt.main run per line of RUNS_FILE: 'NAME --config.a=b --config.c=d ...' (no spaces
#       inside a value; blank lines and # comments skipped), in ROOT/NAME, with the trailing flags
#       added to every run. With HOSTS=h1,h2,... the lines are dealt round-robin to the hosts.
#   launch/sweep.sh [--dry-run] sweep SWEEP_FILE WORKDIR [HOST=GLOBS ...] [-- runner flags]
#       The sweep runner (python -m hbt.experiments.sweep: paired comparisons, resumable, with
#       run summaries) on a sweep file such as configs/sweeps/strategies.py: here, or on each HOST
#       for the runs its comma-separated GLOBS name (--only), e.g. h1='*.seed0' h2='*.seed1'.
#
# Hosts need this repository at the same path (REMOTE_REPO to change it), its environment
# (HBT_PYTHON, default python; e.g. HBT_PYTHON=.venv/bin/python) and the data. Each host's output
# goes to LOGS/HOST.log here (LOGS default sweep-logs). HBT_CONFIG picks the base config of 'lines'
# (default configs/xquad.py). Relative paths (RUNS_FILE aside) are taken from the repository root.
# DRY_RUN=1 (or --dry-run) prints the commands instead.

set -euo pipefail
source "$(dirname "$0")/common.sh"

CONFIG=${HBT_CONFIG:-configs/xquad.py}
REMOTE_REPO=${REMOTE_REPO:-$REPO}
LOGS=${LOGS:-sweep-logs}

# on_hosts HOST CMD HOST CMD ...: each CMD (a shell string) over ssh on its HOST, all at once.
on_hosts() {
  local pids=() hosts=() status=0
  run mkdir -p "$LOGS"
  while (($#)); do
    local host=$1 cmd="cd $(printf '%q' "$REMOTE_REPO") && $2"
    shift 2
    if [[ $DRY_RUN == 1 ]]; then
      run ssh "$host" "$cmd"
    else
      echo "$host: $cmd" >&2
      ssh "$host" "$cmd" > "$LOGS/$host.log" 2>&1 &
      pids+=($!)
      hosts+=("$host")
    fi
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "failed on ${hosts[$i]}: see $LOGS/${hosts[$i]}.log" >&2
      status=1
    fi
  done
  return $status
}

lines() {  # RUNS_FILE ROOT [flags...]
  local file=$1 root=${2%/}
  shift 2
  [[ -f $file ]] || die "no runs file '$file'"
  local names=() commands=() n=0 words name
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    line=${line%%#*}
    read -r -a words <<< "$line"
    ((${#words[@]})) || continue
    name=${words[0]}
    [[ $name =~ ^[A-Za-z0-9_.=-]+$ ]] || die "$file:$n: run name '$name' must be [A-Za-z0-9_.=-]+"
    for w in "${words[@]:1}"; do
      [[ $w == --* ]] || die "$file:$n: '$w' is not a flag (--config.x=y)"
    done
    names+=("$name")
    commands+=("$(printf '%q ' "$PYTHON" -m hbt.main --config="$CONFIG" --workdir="$root/$name" \
      "${words[@]:1}" "$@")")
  done < "$file"
  ((${#names[@]})) || die "$file holds no run"
  if [[ -z ${HOSTS:-} ]]; then
    cd "$REPO"
    local failed=()
    for i in "${!names[@]}"; do
      if [[ $DRY_RUN == 1 ]]; then
        echo "${commands[$i]% }"
      elif ! { echo "== ${names[$i]}" >&2; eval "${commands[$i]}"; }; then
        failed+=("${names[$i]}")
      fi
    done
    ((${#failed[@]} == 0)) || { echo "failed runs: ${failed[*]}" >&2; return 1; }
    return 0
  fi
  IFS=, read -r -a hosts <<< "$HOSTS"
  local per_host=() args=()
  for i in "${!names[@]}"; do
    local h=$((i % ${#hosts[@]}))
    # In sequence on the host; a failed run does not stop the next; the exit status says if any did.
    per_host[$h]="${per_host[$h]:-failed=0}; ${commands[$i]% } || failed=1"
  done
  for h in "${!hosts[@]}"; do
    [[ -n ${per_host[$h]:-} ]] && args+=("${hosts[$h]}" "${per_host[$h]}; exit \$failed")
  done
  on_hosts "${args[@]}"
}

sweep() {  # SWEEP_FILE WORKDIR [HOST=GLOBS ...] [-- flags]
  local file=$1 workdir=$2
  shift 2
  local specs=()
  while (($#)) && [[ $1 != -- ]]; do
    [[ $1 == *=* ]] || die "'$1' is not HOST=GLOBS"
    specs+=("$1")
    shift
  done
  (($#)) && shift  # the --
  local base=("$PYTHON" -m hbt.experiments.sweep --sweep="$file" --workdir="$workdir" "$@")
  if ((${#specs[@]} == 0)); then
    cd "$REPO"
    run "${base[@]}"
    return
  fi
  local args=()
  for spec in "${specs[@]}"; do
    local cmd
    cmd=$(printf '%q ' "${base[@]}" --only="${spec#*=}")
    args+=("${spec%%=*}" "${cmd% }")
  done
  on_hosts "${args[@]}"
}

command=${1:-}
(($# > 0)) && shift
case $command in
  lines) (($# >= 2)) || die 'lines RUNS_FILE ROOT [--config.x=y ...]'; lines "$@" ;;
  sweep) (($# >= 2)) || die 'sweep SWEEP_FILE WORKDIR [HOST=GLOBS ...] [-- flags]'; sweep "$@" ;;
  *) die "unknown command '$command'" ;;
esac
