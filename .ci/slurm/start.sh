#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback, for tests of `snakemake --profile ...slurm...`.
#
#   bash .ci/slurm/start.sh DIR [--fake-gpus N] [--partition NAME]
#
# DIR holds state, spool, logs and PID files; stop with `bash .ci/slurm/stop.sh DIR`.
# Needs root (it writes /etc/slurm and runs the daemons as root) and the packages from install.sh.
# Facts this relies on:
#  * the config must be /etc/slurm/slurm.conf: the jobstep plugin drops SLURM_CONF before its inner srun;
#  * there is no slurmdbd, so the Snakemake profile must use `slurm-status-command: squeue`, and MinJobAge
#    must stay >= 300 so that finished jobs remain visible to squeue long enough (3600: the whole test-small
#    run, ablations included, stays visible until the test checks every job's final state);
#  * fake GPUs: `Gres=gpu:fake:N` on the node plus one gres.conf line per GPU with its own File=.
# Idempotent: if a cluster started from the same DIR with the same settings is up, it says so and exits 0.
# If SLURM daemons run that this DIR did not start, it fails with a message naming what to stop.
set -euo pipefail
die() { echo "start.sh: $*" >&2; exit 1; }
D=${1:?usage: start.sh DIR [--fake-gpus N] [--partition NAME]}; shift
NGPU=0; PART=debug
while [ $# -gt 0 ]; do
  case $1 in
    --fake-gpus) NGPU=${2:?--fake-gpus needs a number}; shift;;
    --partition) PART=${2:?--partition needs a name}; shift;;
    *) die "unknown option $1";;
  esac; shift
done
[[ $NGPU =~ ^[0-9]+$ ]] || die "--fake-gpus wants a number, got '$NGPU'"
[ "$(id -u)" -eq 0 ] || die "needs root (writes /etc/slurm, runs munged/slurmctld/slurmd)"
for b in munged slurmctld slurmd sinfo; do
  command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || die "$b not found: run .ci/slurm/install.sh first"
done
mkdir -p "$D"
D=$(cd "$D" && pwd)
E=/etc/slurm
CONF=$E/slurm.conf
MARK="# written by shadowllm .ci/slurm/start.sh"
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

NCPU=$(nproc)
MEM=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) * 3 / 4 ))
GRES_LINE=""; [ "$NGPU" -gt 0 ] && GRES_LINE="Gres=gpu:fake:$NGPU"
NEWCONF=$(cat <<CONF
$MARK (state in $D)
ClusterName=shadowllm-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=5
SchedulerParameters=sched_interval=1
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM $GRES_LINE State=UNKNOWN
PartitionName=$PART Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
)

wait_node() {  # wait until the node answers in a usable state
  local st=""
  for _ in $(seq 1 60); do
    st=$(sinfo -h -o %t 2>/dev/null | head -1 || true)
    case $st in idle|mix|mixed|alloc|allocated) return 0;; esac
    sleep 0.5
  done
  echo "start.sh: SLURM node did not come up (state '${st:-no answer}'); logs in $D/log" >&2
  sinfo -N -l >&2 || true
  tail -n 20 "$D/log/slurmctld.log" "$D/log/slurmd.log" >&2 2>/dev/null || true
  return 1
}

# --- already running? -------------------------------------------------------------------------
if alive "$D/slurmctld.pid" && alive "$D/slurmd.pid"; then
  if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$NEWCONF" ]; then
    wait_node || exit 1
    echo "SLURM already up from $D (config $CONF); nothing to do"
    exit 0
  fi
  die "a cluster from $D is running with other settings (GPUs/partition/config): run 'bash .ci/slurm/stop.sh $D' first"
fi
others=$(pidof slurmctld slurmd slurmdbd 2>/dev/null || true)
[ -z "$others" ] || die "SLURM daemons already running (pids: $others) that $D did not start (or only half of them).
  Stop them first: 'bash .ci/slurm/stop.sh OTHER_DIR' for a cluster started by this script elsewhere,
  or stop the system's slurmctld/slurmd (see 'ps -fp ${others// /,}')."

# --- configuration ----------------------------------------------------------------------------
mkdir -p "$D"/{state,spool,log} "$E"
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  cp -p "$CONF" "$CONF.before-shadowllm"
  echo "start.sh: saved the existing $CONF as $CONF.before-shadowllm" >&2
fi
printf '%s\n' "$NEWCONF" > "$CONF"
rm -f "$E/gres.conf"
if [ "$NGPU" -gt 0 ]; then
  echo "$MARK" > "$E/gres.conf"
  for i in $(seq 0 $((NGPU - 1))); do
    rm -f "$D/fakegpu$i"
    mknod "$D/fakegpu$i" c 1 3 2>/dev/null || : > "$D/fakegpu$i"   # a /dev/null twin; a plain file if mknod is refused
    echo "NodeName=localhost Name=gpu Type=fake File=$D/fakegpu$i" >> "$E/gres.conf"
  done
fi

# --- munge ------------------------------------------------------------------------------------
if alive /run/munge/munged.pid; then
  echo "start.sh: munged already running (pid $(cat /run/munge/munged.pid)); using it" >&2
  rm -f "$D/munged.pid"          # not ours: stop.sh leaves it alone
else
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --force
    chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key
  fi
  mkdir -p /run/munge; chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 1 20); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  alive /run/munge/munged.pid || die "munged did not start"
  cp /run/munge/munged.pid "$D/munged.pid"
fi

# --- slurm ------------------------------------------------------------------------------------
# -c: clean start, forget jobs from an earlier run in the same DIR
/usr/sbin/slurmctld -c || die "slurmctld failed to start; see $D/log/slurmctld.log"
/usr/sbin/slurmd -N localhost || die "slurmd failed to start; see $D/log/slurmd.log"
wait_node || exit 1
echo "SLURM up: partition '$PART', $NCPU CPUs, ${MEM} MB, $NGPU fake GPU(s); config $CONF, state $D"
