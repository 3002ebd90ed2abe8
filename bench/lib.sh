# bench/lib.sh — sourced by the bench scripts: stopping what a run started.

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
