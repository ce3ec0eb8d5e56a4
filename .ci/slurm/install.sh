#!/usr/bin/env bash
# Install a single-node SLURM (munge, slurmctld, slurmd, client tools) on Debian/Ubuntu, for the SLURM tests.
#   bash .ci/slurm/install.sh          (root, or passwordless sudo)
# Idempotent and quiet: exits at once when everything is there; prints apt's output only if it fails.
set -euo pipefail
missing() {
  local need=() b
  for b in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client sinfo:slurm-client; do
    command -v "${b%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${b%%:*}" ] || need+=("${b##*:}")
  done
  printf '%s\n' "${need[@]}" | sort -u | grep . || true
}
need=$(missing)
[ -z "$need" ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
command -v apt-get >/dev/null || { echo "install.sh: no apt-get; install munge and slurm (slurmctld, slurmd, client) by hand" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "install.sh: installing $(echo $need)" >&2
if ! { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install.sh: apt-get failed" >&2
  exit 1
fi
need=$(missing)
[ -z "$need" ] || { echo "install.sh: still missing after install: $(echo $need)" >&2; exit 1; }
