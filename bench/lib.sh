# bench/lib.sh — sourced by the bench scripts: free ports to run on, and stopping what a run started.

# descendants PID...: every descendant of the PIDs, deepest first, by pid (never by name).
descendants() {
    local p c
    for p in "$@"; do
        for c in $(pgrep -P "$p" 2>/dev/null); do
            descendants "$c"
            echo "$c"
        done
    done
}

# stop_tree PID...: SIGTERM to each PID and its descendants, SIGKILL 0.3 s later to what is left.
# The calling shell (its $$ and $BASHPID) may be among them to stop its children: it is spared.
stop_tree() {
    local all p
    all=$(descendants "$@" 2>/dev/null; printf '%s\n' "$@")
    for p in $all; do
        [ "$p" != $$ ] && [ "$p" != "$BASHPID" ] && kill -TERM "$p" 2>/dev/null
    done
    sleep 0.3
    for p in $all; do
        [ "$p" != $$ ] && [ "$p" != "$BASHPID" ] && kill -KILL "$p" 2>/dev/null
    done
    return 0
}

# alloc_port VAR [SPAN]: a UDP port with SPAN free ports from it (on any address), into VAR,
# counting up from the caller's PORT (which moves past it).
alloc_port() {
    local span=${2:-1} i busy
    while :; do
        busy=0
        for i in $(seq 0 $((span - 1))); do
            ss -Hlun "sport = :$((PORT + i))" 2>/dev/null | grep -q . && busy=1
        done
        [ "$busy" = 0 ] && break
        PORT=$((PORT + span))
    done
    printf -v "$1" '%s' "$PORT"
    PORT=$((PORT + span))
}
# wait_port PORT: until something listens on it (at most 5 s).
wait_port() {
    local i
    for i in $(seq 50); do
        ss -Hlun "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}
