#!/usr/bin/env bash
# A real two-node SLURM cluster on this machine, for sbrrepro's SLURM tests and CI (Debian/Ubuntu,
# as root): munge, MariaDB + slurmdbd (accounting: submitit reads job states with sacct), slurmctld,
# and two slurmd daemons n1 and n2 on one host. No systemd: every daemon is started by hand, and
# stopped by name, waiting until it is gone.
#
#   bash slurm/cluster.sh start    # install Debian's packages if needed, start, wait for idle nodes
#   bash slurm/cluster.sh stop     # stop the daemons, remove the hosts line
#   bash slurm/cluster.sh status
set -euo pipefail

RUN=/run/sbrrepro-slurm
CONF=/etc/slurm
CLUSTER=sbrrepro
CPUS=${SBRREPRO_SLURM_CPUS:-$(nproc)}
HOSTS_LINE="127.0.0.1 n1 n2 # sbrrepro-slurm"

log() { echo "slurm/cluster.sh: $*" >&2; }

install_packages() {
    local pkgs=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server) cmd
    for cmd in slurmctld slurmd sinfo munged slurmdbd mysqld_safe; do
        command -v "$cmd" >/dev/null || break
    done
    if ! command -v "$cmd" >/dev/null; then
        log "installing ${pkgs[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "timed out waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

write_configs() {
    local host
    host=$(hostname -s)
    mkdir -p "$RUN"/{state,log,spool} "$CONF"
    chown -R slurm:slurm "$RUN"
    cat > "$CONF/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$RUN/state
SlurmdSpoolDir=$RUN/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$RUN/log/slurmctld.log
SlurmdLogFile=$RUN/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=2
MpiDefault=none
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=17001 CPUs=$CPUS RealMemory=4000
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=17002 CPUs=$CPUS RealMemory=4000
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
    cat > "$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$RUN/log/slurmdbd.log
EOF
    chown slurm:slurm "$CONF/slurmdbd.conf"
    chmod 600 "$CONF/slurmdbd.conf"
}

start() {
    install_packages
    write_configs
    grep -q "sbrrepro-slurm" /etc/hosts || echo "$HOSTS_LINE" >> /etc/hosts

    # munge
    [ -s /etc/munge/munge.key ] || mungekey --create >/dev/null 2>&1 || mungekey -c
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    pgrep -x munged >/dev/null || runuser -u munge -- munged
    wait_for 10 munge bash -c "munge -n | unmunge"

    # MariaDB on loopback only, then slurmdbd
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! pgrep -x mariadbd >/dev/null && ! pgrep -x mysqld >/dev/null; then
        (mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 &)
    fi
    wait_for 60 MariaDB mysqladmin ping
    mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    if ! pgrep -x slurmdbd >/dev/null; then
        # A fresh cluster numbers its jobs from 1 again: old accounting records would answer for them.
        mysql -e "DROP DATABASE IF EXISTS slurm_acct_db"
        slurmdbd
    fi
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true

    pgrep -x slurmctld >/dev/null || slurmctld
    wait_for 30 slurmctld scontrol ping
    for n in n1 n2; do
        pgrep -f "slurmd -N $n" >/dev/null || slurmd -N "$n"
    done
    wait_for 60 "two idle nodes" bash -c '[ "$(sinfo -h -t idle -o %D)" = 2 ]'
    log "up: $(sinfo -h -o '%P %D %t')"
}

stop_daemon() {  # stop_daemon NAME: TERM it, and wait until it is gone (a restart must not find it)
    pkill -x "$1" 2>/dev/null || true
    wait_for 30 "$1 to stop" bash -c "! pgrep -x $1" || pkill -9 -x "$1" 2>/dev/null || true
}

stop() {
    scancel --user=root 2>/dev/null || true
    for d in slurmd slurmctld slurmdbd; do stop_daemon "$d"; done
    mysqladmin shutdown 2>/dev/null || true
    stop_daemon mariadbd
    stop_daemon munged
    sed -i '/sbrrepro-slurm/d' /etc/hosts
    rm -rf "$RUN"
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo && squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
