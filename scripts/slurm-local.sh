#!/usr/bin/env bash
# A one-node Slurm on this machine, for the tests and for trying the --emit slurm scripts:
#   scripts/slurm-local.sh up     start munged (if not running), slurmctld and slurmd; prints
#                                 the line to export (export SLURM_CONF=...)
#   scripts/slurm-local.sh down   stop what `up` started and remove its state
# Debian's packages: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
# Runs as root without systemd. Everything (config, state, spool, logs, pids) lives in one
# scratch folder, $SLURM_LOCAL_DIR (default /tmp/resnet-exp-slurm). `up` twice is harmless:
# the second finds the cluster answering and only prints the export line.
# Settings and traps: ../shared/docs/CLUSTER.md in the project notes.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/resnet-exp-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

say() { echo "slurm-local: $*" >&2; }
die() {
  say "$*"
  exit 1
}
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
  local cpus mem
  cpus=$(nproc)
  # Leave 512 MB to the system; a job asking for more than RealMemory is refused.
  mem=$(($(free -m | awk '/^Mem:/ {print $2}') - 512))
  cat >"$CONF" <<CONF
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# pgid: a child that ignores SIGTERM still dies with its job (linuxproc let it live).
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MailProg=/bin/true
# The tests read finished jobs with scontrol show job for MinJobAge seconds.
KillWait=30
MinJobAge=600
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=cinode NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=cinode Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi
  [[ -f /etc/munge/munge.key ]] || die "no /etc/munge/munge.key: install munge (apt-get install munge)"
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$DIR/munged.ours" # so that `down` stops only a munged it started
}

wait_idle() {
  for _ in $(seq 1 60); do
    if sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then return 0; fi
    sleep 0.5
  done
  die "the node did not become idle in 30 s; see $DIR/slurmctld.log and $DIR/slurmd.log"
}

up() {
  command -v slurmctld >/dev/null || die "slurmctld not found: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
  if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && scontrol ping >/dev/null 2>&1; then
    say "already up ($DIR)"
  else
    stop_daemons
    # A reused state folder brings back old jobs and job ids: start clean.
    rm -rf "$DIR/state" "$DIR/spool"
    mkdir -p "$DIR/state" "$DIR/spool"
    write_conf
    start_munge
    # setsid + nohup: the daemons outlive this script and its terminal.
    setsid nohup slurmctld -D -i -f "$CONF" >>"$DIR/slurmctld.out" 2>&1 </dev/null &
    echo $! >"$DIR/slurmctld.pid"
    setsid nohup slurmd -D -N cinode -f "$CONF" >>"$DIR/slurmd.out" 2>&1 </dev/null &
    echo $! >"$DIR/slurmd.pid"
    wait_idle
    say "up: node cinode, $(nproc) CPUs, state in $DIR"
  fi
  echo "export SLURM_CONF=$CONF"
}

stop_pid() {
  local file=$1
  if alive "$file"; then
    local pid
    pid=$(cat "$file")
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop_daemons() {
  mkdir -p "$DIR"
  # The order CLUSTER.md found clean: slurmd, slurmctld, then munged.
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
}

down() {
  stop_daemons
  if [[ -f $DIR/munged.ours ]]; then
    stop_pid /run/munge/munged.pid
    rm -f "$DIR/munged.ours"
  fi
  rm -rf "$DIR/state" "$DIR/spool"
  say "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
