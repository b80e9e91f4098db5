#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for testing the HPC path (nipype's SLURM and
# SLURMGraph plugins, sbatch array jobs). Debian/Ubuntu packages, runs as root, loopback only,
# no systemd, no cgroups. Everything lives in one state directory; daemons are stopped by PID.
#
#   eval "$(scripts/slurm_local.sh start)"   # prints: export SLURM_CONF=...; export LOGNAME=...
#   eval "$(sudo scripts/slurm_local.sh start)"   # as a normal user (jobs then run as that user)
#   scripts/slurm_local.sh status            # uses $SLURM_CONF (or pass the state dir)
#   scripts/slurm_local.sh stop              # kills slurmd, slurmctld, munged by their PID files
#
# Options (environment):
#   SLURM_LOCAL_DIR     state directory to use (default: a new mktemp -d)
#   SLURM_LOCAL_CPUS    CPUs of the node (default: nproc)
#   SLURM_LOCAL_PORTS   "ctld,slurmd" TCP ports on 127.0.0.1 (default: 6817,6818, or a free
#                       pair when those are taken, so several clusters can run side by side)
#   SLURM_LOCAL_KEEP=1  keep the state directory on stop (logs for debugging)
#
# Own munged (own key, socket, PID file in the state dir; slurm.conf points at it with
# AuthInfo=socket=...), so an existing munge or Slurm installation on the machine is not touched.
set -euo pipefail

die() { echo "slurm_local.sh: $*" >&2; exit 1; }
log() { echo "slurm_local.sh: $*" >&2; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root or: sudo apt-get install slurm-wlm munge"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get; install Slurm + munge by hand"
    log "installing ${missing[*]} (apt-get)"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurm-wlm slurmctld slurmd slurm-client munge >&2
}

state_dir_from_env() {
    # stop/status: the state dir is an argument, $SLURM_LOCAL_DIR, or the folder of $SLURM_CONF
    if [ -n "${1:-}" ]; then echo "$1"
    elif [ -n "${SLURM_LOCAL_DIR:-}" ]; then echo "$SLURM_LOCAL_DIR"
    elif [ -n "${SLURM_CONF:-}" ]; then dirname "$SLURM_CONF"
    else die "which cluster? pass the state dir or export SLURM_CONF (printed by 'start')"
    fi
}

port_in_use() {  # something listens on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_ports() {  # two free TCP ports "ctld,slurmd" (another cluster may hold 6817/6818)
    local a b tries=0
    for a in 6817 $(for _ in 1 2 3 4 5 6 7 8; do echo $((20000 + RANDOM % 30000)); done); do
        b=$((a + 1))
        if ! port_in_use "$a" && ! port_in_use "$b"; then echo "$a,$b"; return 0; fi
        tries=$((tries + 1))
    done
    die "no free TCP port pair found on 127.0.0.1 (tried $tries); set SLURM_LOCAL_PORTS=ctld,slurmd"
}

kill_pidfiles() {  # kill_pidfiles FILE...: TERM (then KILL) the live processes named in them
    local f pid
    for f in "$@"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            wait_for 20 exit bash -c "! kill -0 $pid" || { log "PID $pid ($f) ignores TERM; KILL"; kill -9 "$pid" || true; }
        fi
        rm -f "$f"
    done
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        [ $((SECONDS - t0)) -lt "$limit" ] || return 1
        sleep 0.2
    done
}

start() {
    [ "$(id -u)" -eq 0 ] || die "start must run as root (slurmd runs jobs as their user)"
    install_packages
    local D=${SLURM_LOCAL_DIR:-$(mktemp -d /tmp/slurm_local.XXXXXX)}
    [ -f "$D/slurmctld.pid" ] && kill -0 "$(cat "$D/slurmctld.pid")" 2>/dev/null \
        && die "a cluster already runs from $D; stop it first: $0 stop $D"
    mkdir -p "$D"/{state,spool,log,munge}
    chmod 755 "$D"          # munged (user munge) must traverse it
    local cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
    local ports; ports=${SLURM_LOCAL_PORTS:-$(free_ports)} || exit 1
    # a failed start leaves no daemon behind (the state dir stays, for its logs)
    fail() {
        local why
        why=$(grep -h -m1 -E 'fatal|Address already in use' "$D"/log/*.log 2>/dev/null | head -1)
        kill_pidfiles "$D/slurmd.pid" "$D/slurmctld.pid" "$D/munge/munged.pid"
        die "$*${why:+: $why} (state dir $D kept for its logs; remove it when done)"
    }
    local mem_mb
    mem_mb=$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)

    # munge: private key, socket and PID file (the daemon refuses world-readable keys)
    # (munged wants the socket folder executable by all, the key folder private)
    local M=$D/munge
    mkdir -p "$M/private"
    dd if=/dev/urandom of="$M/private/munge.key" bs=1 count=1024 status=none
    chown -R munge:munge "$M"; chmod 755 "$M"; chmod 700 "$M/private"; chmod 400 "$M/private/munge.key"
    runuser -u munge -- munged --key-file="$M/private/munge.key" --socket="$M/munge.socket" \
        --pid-file="$M/munged.pid" --log-file="$M/munged.log" --seed-file="$M/private/munged.seed" \
        || fail "munged did not start; see $M/munged.log"
    wait_for 10 munge munge -n -S "$M/munge.socket" || fail "munge does not answer; see $M/munged.log"

    cat > "$D/slurm.conf" <<CONF
# one-node test cluster written by scripts/slurm_local.sh; state in $D
ClusterName=local
SlurmctldHost=$(hostname -s)
SlurmctldPort=${ports%,*}
SlurmdPort=${ports#*,}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$M/munge.socket
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$D/slurm.conf
    alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
    # both daemons fork and return 0 even when the child dies at once (e.g. port in use)
    slurmctld -i -f "$SLURM_CONF" && wait_for 10 slurmctld alive "$D/slurmctld.pid" \
        || fail "slurmctld did not start"
    slurmd -N localhost -f "$SLURM_CONF" && wait_for 10 slurmd alive "$D/slurmd.pid" \
        || fail "slurmd did not start"
    # the node is usable once sinfo reports it idle
    wait_for 60 node bash -c "sinfo -h -o %t | grep -qx idle" \
        || fail "node not idle after 60 s: $(sinfo 2>&1 | tail -1); logs in $D/log"
    log "cluster up: $(sinfo -h -o '%P %a %D %t %N' 2>&1)  (state dir $D)"
    echo "export SLURM_CONF=$D/slurm.conf"
    # evaluated by the caller's shell (start may run under sudo): nipype's SLURM plugin needs it
    echo 'export LOGNAME=${LOGNAME:-$(id -un)}'
}

stop() {
    local D; D=$(state_dir_from_env "${1:-}")
    [ -d "$D" ] || die "no state dir $D"
    export SLURM_CONF=$D/slurm.conf
    # cancel what is left so no slurmstepd outlives the cluster
    if [ -f "$D/slurmctld.pid" ] && kill -0 "$(cat "$D/slurmctld.pid")" 2>/dev/null; then
        scancel --partition=debug >/dev/null 2>&1 || true
    fi
    kill_pidfiles "$D/slurmd.pid" "$D/slurmctld.pid" "$D/munge/munged.pid"
    if [ "${SLURM_LOCAL_KEEP:-0}" = 1 ]; then log "stopped; state kept in $D"
    else rm -rf "$D"; log "stopped; removed $D"
    fi
}

status() {
    local D; D=$(state_dir_from_env "${1:-}")
    export SLURM_CONF=$D/slurm.conf
    local f ok=0
    for f in "$D/munge/munged.pid" "$D/slurmctld.pid" "$D/slurmd.pid"; do
        if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then echo "running: $(basename "$f" .pid) PID $(cat "$f")"
        else echo "not running: $(basename "$f" .pid)"; ok=1
        fi
    done
    sinfo 2>&1 || ok=1
    squeue 2>&1 || true
    return $ok
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    status) status "${2:-}" ;;
    *) echo "usage: $0 {start|stop [STATE_DIR]|status [STATE_DIR]}" >&2; exit 64 ;;
esac
