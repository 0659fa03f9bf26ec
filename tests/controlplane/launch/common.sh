# Shared by the launcher parts (sourced by scripts/cluster): logging, the
# binaries, component processes and their health.
# Needs: $state, $logs, $pids, $up_timeout, $components (start order).

log() { echo "cluster: $*" >&2; }
die() { echo "cluster: error: $*" >&2; exit 1; }

bindir() {
    if [[ -f $state/bindir && -x $(cat "$state/bindir")/kube-apiserver ]]; then
        cat "$state/bindir"
    else
        die "no binaries recorded in $state/bindir: run scripts/cluster up"
    fi
}

kubectl_admin() { "$(bindir)/kubectl" --kubeconfig="$state/kubeconfig" "$@"; }

# --- processes -------------------------------------------------------------

# start_time PID -> the kernel's start time of that process (field 22 of its
# stat), which survives exec and differs for a recycled pid.
start_time() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    read -ra f <<<"$stat"
    echo "${f[19]}"
}

# pid_of NAME -> the pid of that component while it is the process `start` made:
# same pid and start time (so not a recycled pid), and not a zombie. The command
# line is not checked: between fork and exec it is still this script's, and a
# component checked then was taken for one that had exited ("etcd exited while
# starting" with nothing in its log).
pid_of() {
    local f=$pids/$1.pid pid started
    [[ -f $f ]] || return 1
    read -r pid started <"$f" || true
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(start_time "$pid") == "$started" ]] || return 1
    grep -q ') Z' "/proc/$pid/stat" 2>/dev/null && return 1
    echo "$pid"
}

# plane_pids -> every process whose command line names this state dir and runs
# one of the plane's binaries, whether or not a pid file knows it.
plane_pids() {
    local p exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case " ${plane_binaries[*]} " in *" ${exe##*/} "*) ;; *) continue ;; esac
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$state/" && echo "${p#/proc/}"
    done
    # Without this the status is the last grep's: another plane's process listed last
    # made `left=$(plane_pids)` fail, and `set -e` ended `up` without a word.
    return 0
}

# start NAME [ENVVAR=VALUE...] [+PREFIX...] -- ARGS... : run a component in
# the background, in its own session, logging to logs/NAME.log. Words starting
# with + are a command the binary runs under (e.g. +nsenter +--net=...).
start() {
    local name=$1; shift
    local envs=() prefix=()
    while [[ $1 != -- ]]; do
        if [[ $1 == +* ]]; then prefix+=("${1#+}"); else envs+=("$1"); fi
        shift
    done
    shift
    local bin
    bin=$(bindir)/$name
    echo "=== $(date -u +%FT%TZ) starting $name" >>"$logs/$name.log"
    # 8>&-: the component must not inherit (and so hold) the state dir's lock.
    env "${envs[@]}" setsid "${prefix[@]}" "$bin" "$@" </dev/null >>"$logs/$name.log" 2>&1 8>&- &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$pids/$name.pid"
}

# stop NAME... : SIGTERM the recorded processes, then SIGKILL what is left after 10 s.
stop() {
    local name pid victims=()
    for name in "$@"; do
        pid=$(pid_of "$name") && victims+=("$pid")
    done
    ((${#victims[@]})) || return 0
    kill -TERM "${victims[@]}" 2>/dev/null || true
    for _ in $(seq 1 100); do
        for name in "$@"; do pid_of "$name" >/dev/null && { sleep 0.1; continue 2; }; done
        return 0
    done
    kill -KILL "${victims[@]}" 2>/dev/null || true
}

# --- health -----------------------------------------------------------------

# healthy NAME -> 0 if that component runs and answers its health check, the
# function health_NAME (dashes as underscores) that its part defines.
healthy() {
    pid_of "$1" >/dev/null && "health_${1//-/_}"
}

# wait_healthy NAME... : wait until each answers `healthy NAME`. A component
# that is slow gets up to $up_timeout seconds; one whose process is gone fails
# at once, with its log.
wait_healthy() {
    local name deadline=$((SECONDS + up_timeout))
    for name in "$@"; do
        until healthy "$name"; do
            if ! pid_of "$name" >/dev/null; then
                print_logs 60 "$name"
                die "$name exited while starting (log: $logs/$name.log)"
            fi
            if ((SECONDS > deadline)); then
                print_logs 60 "$name"
                die "$name not healthy after ${up_timeout}s (log: $logs/$name.log)"
            fi
            sleep 0.3
        done
    done
}

# print_logs N [NAME...] : the last N lines of each component log.
print_logs() {
    local n=${1:-40}; shift || true
    local names=("$@") name
    ((${#names[@]})) || names=("${components[@]}")
    for name in "${names[@]}"; do
        [[ -f $logs/$name.log ]] || continue
        echo "----- last $n lines of $logs/$name.log -----" >&2
        tail -n "$n" "$logs/$name.log" >&2
    done
}

# free_port -> a loopback port nothing listens on, not handed out before.
used_ports=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        [[ $used_ports == *" $p "* ]] && continue
        if [[ -z $(ss -Hltn "sport = :$p" 2>/dev/null) ]]; then
            used_ports+="$p "
            echo "$p"
            return
        fi
    done
}
