#!/usr/bin/env bash
# Stop what `.ci/slurm/start.sh DIR` started, by the PID files in DIR, and wait for each to exit.
#   bash .ci/slurm/stop.sh DIR
# munged is stopped only if start.sh started it (then DIR/munged.pid exists). Safe to run twice.
D=${1:?usage: stop.sh DIR}
[ -d "$D" ] || exit 0
stop() {
  local f=$1 p
  [ -s "$f" ] || return 0
  p=$(cat "$f")
  if kill "$p" 2>/dev/null; then
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$p" 2>/dev/null; then
      echo "stop.sh: pid $p ($f) ignored SIGTERM for 10 s; sending SIGKILL" >&2
      kill -9 "$p" 2>/dev/null
    fi
  fi
  rm -f "$f"
}
stop "$D/slurmd.pid"
stop "$D/slurmctld.pid"
stop "$D/munged.pid"
true
