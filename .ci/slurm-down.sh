#!/usr/bin/env bash
# Stop the one-node cluster started by .ci/slurm-up.sh: each daemon by the pid it wrote.
#   .ci/slurm-down.sh [STATE_DIR]     (default /tmp/sixn-slurm)
set -uo pipefail
STATE=${1:-${SIXN_SLURM_DIR:-/tmp/sixn-slurm}}
stop() {  # stop <name> <pid file>
    [ -f "$2" ] || return 0
    local pid
    pid=$(cat "$2")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "slurm-down: stopped $1 (pid $pid)" >&2
    fi
    rm -f "$2"
}
stop slurmd "$STATE/slurmd.pid"
stop slurmctld "$STATE/slurmctld.pid"
stop munged "$STATE/munge/munged.pid"
