#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying and testing
# `cargo xtask experiment … --executor slurm` (docs/grids.md).
#
#   scripts/slurm-local.sh install   install slurm-wlm and munge (Debian/Ubuntu packages; needs root)
#   scripts/slurm-local.sh start     install if needed, write slurm.conf for this machine's
#                                    CPUs and memory, start munged, slurmctld and slurmd
#   scripts/slurm-local.sh stop      stop the daemons (queued jobs are lost)
#   scripts/slurm-local.sh status    sinfo and squeue
#
# The state lives in /var/lib/kusari-slurm (SLURM_STATE_DIR to change it);
# the configuration is written to /etc/slurm/slurm.conf, where the SLURM
# commands look for it. Jobs run as root, with no cgroups and no accounting
# database (sacct has nothing to say; squeue does).
set -euo pipefail

state_dir="${SLURM_STATE_DIR:-/var/lib/kusari-slurm}"
conf=/etc/slurm/slurm.conf

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "slurm-local.sh: $1 needs root (it installs packages and starts system daemons)" >&2
        exit 1
    fi
}

install() {
    need_root install
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc)"
    # MB of memory the node offers jobs: all but 1 GB.
    mem="$(awk '/MemTotal/ { printf "%d", $2 / 1024 - 1024 }' /proc/meminfo)"
    mkdir -p /etc/slurm "$state_dir"/{ctld,d,log}
    cat >"$conf" <<EOF
# Written by kusari's scripts/slurm-local.sh: a one-node cluster on $host.
ClusterName=kusari-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state_dir/ctld
SlurmdSpoolDir=$state_dir/d
SlurmctldPidFile=$state_dir/slurmctld.pid
SlurmdPidFile=$state_dir/slurmd.pid
SlurmctldLogFile=$state_dir/log/slurmctld.log
SlurmdLogFile=$state_dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=60
KillWait=30
Waittime=0
MaxArraySize=100001
MaxJobCount=100000
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if ! pgrep -x munged >/dev/null; then
        if id munge >/dev/null 2>&1; then
            su -s /bin/sh munge -c "munged" 2>/dev/null || munged --force
        else
            munged --force
        fi
    fi
    munge -n | unmunge >/dev/null
}

start() {
    need_root start
    install
    write_conf
    start_munge
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    # Wait for the node to come up (a few seconds).
    for _ in $(seq 1 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            sinfo
            return
        fi
        sleep 0.5
    done
    echo "slurm-local.sh: the node did not come up; see $state_dir/log/" >&2
    sinfo >&2 || true
    exit 1
}

stop() {
    need_root stop
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    for _ in $(seq 1 40); do
        pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break
        sleep 0.25
    done
    rm -rf "$state_dir"/ctld/* "$state_dir"/d/*
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status)
    sinfo
    squeue
    ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
