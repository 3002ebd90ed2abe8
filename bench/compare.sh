#!/usr/bin/env bash
# bench/compare.sh — imsload and SIPp side by side, in one run, on 127.0.0.1 (UDP).
#
# Figures (printed as a table at the end; nothing is written into the repository):
#   * highest calls/s with < 1 % failed calls: the same step search for `imsload --ruri`
#     and `sipp -sn uac`, both against a fresh `sipp -sn uas` per step, hold 0
#     (a step fails with > 1 % failed calls or < 95 % of the offered rate achieved; a failed
#     step is run once more, against noise; the search of a generator stops at the first
#     step that fails twice)
#   * CPU seconds (user+sys of the generator, /usr/bin/time) per 10,000 completed calls,
#     peak RSS
#   * achieved / offered rate at a fixed rate
#   * memory per live call: peak RSS with ~10,000 calls held (long hold) minus peak RSS of
#     the same rate with hold 0, divided by the live calls (imsload: up to the end of its
#     call phase, before it ends the calls; SIPp is stopped with its calls up)
#   * registrations/s with MD5 digest against `imsload serve` (imsload, and SIPp with
#     bench/register.xml), and imsload's memory per 1,000 registered users (100k vs 1k)
#   * (SECTIONS=observe, not in the default set; `hep` is the same) the cost of watching a run:
#     imsload's CPU-s per 10,000 calls at a fixed rate against `sipp -sn uas` without, with
#     `--metrics` scraped every second, and with every message mirrored (`--hep`) to a local UDP
#     sink and over TCP to a local reader; alternating runs, and the ratios (goals: metrics <
#     1.02, HEP < 1.15)
#
# The machine may be shared and noisy: compare the ratios measured in the same run, not the
# absolute figures across runs. Generators and steps are interleaved (imsload step N, SIPp
# step N, imsload step N+1, ...) so that both see the same background load.
#
# Usage: bench/compare.sh            (about 7-10 minutes, plus the build)
# Knobs (environment): STEPS="2000 4000 ..." STEP_SECS=10 FIXED_CPS=1000 FIXED_SECS=20
#   LIVE_CPS=500 LIVE_SECS=20 LIVE_HOLD=60 REG_USERS=100000 REG_SMALL=1000 REG_RATE=20000
#   REG_RATE_LOW=5000
#   WORKERS= (imsload --workers; default: its own, one per core) SKIP_BUILD=1 KEEP=1 (keep the
#   work directory with every raw file) PORT_BASE= SECTIONS="steps fixed live reg" (a subset
#   runs only those parts; add `observe` for the cost of --metrics and --hep) HEP_CPS=2000 HEP_SECS=20 HEP_ROUNDS=3
#   IMSLOAD_EXTRA="--timer-resol 0s" (arguments added to every imsload run)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PARSE=(python3 "$HERE/parse.py")

STEPS=${STEPS:-"2000 4000 6000 8000 10000 12000 14000 16000 18000 20000 22000 25000 30000"}
STEP_SECS=${STEP_SECS:-10}
FIXED_CPS=${FIXED_CPS:-1000}
FIXED_SECS=${FIXED_SECS:-20}
LIVE_CPS=${LIVE_CPS:-500}
LIVE_SECS=${LIVE_SECS:-20}
LIVE_HOLD=${LIVE_HOLD:-60}
REG_USERS=${REG_USERS:-100000}
REG_SMALL=${REG_SMALL:-1000}
REG_RATE=${REG_RATE:-20000}
REG_RATE_LOW=${REG_RATE_LOW:-5000}
WORKERS=${WORKERS:-}
KEEP=${KEEP:-0}
SECTIONS=${SECTIONS:-"steps fixed live reg"}
HEP_CPS=${HEP_CPS:-2000}
HEP_SECS=${HEP_SECS:-20}
HEP_ROUNDS=${HEP_ROUNDS:-3}
# Extra imsload arguments of the next calls_imsload (the observe section sets --metrics, --hep).
# IMSLOAD_EXTRA="--timer-resol 0s": extra imsload arguments for every run (e.g. a before/after).
read -r -a IMS_BASE <<< "${IMSLOAD_EXTRA:-}"
IMS_EXTRA=()
BUF=8388608
PORT=${PORT_BASE:-$((21000 + RANDOM % 20000))}

for t in sipp python3 /usr/bin/time timeout ss pgrep; do
    command -v "$t" >/dev/null || { echo "compare.sh: $t is missing (sipp: apt-get install sip-tester; /usr/bin/time: apt-get install time)" >&2; exit 2; }
done

W=$(mktemp -d /tmp/imsload-bench.XXXXXX)
PIDS=()

# shellcheck source=lib.sh
. "$HERE/lib.sh"
cleanup() {
    stop_tree "${PIDS[@]}" $$
    if [ "$KEEP" = 1 ]; then
        echo "raw files kept in $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP

# SIPp with one UDP socket needs few descriptors; imsload few too. Raise anyway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Concurrent call cap for both (sipp -l, imsload --max-calls): far above what the runs need,
# below the descriptor limit (SIPp warns otherwise).
MAX_CALLS=$(($(ulimit -n) - 1000))
[ "$MAX_CALLS" -gt 100000 ] && MAX_CALLS=100000

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }

# (alloc_port and wait_port: bench/lib.sh)

# start_bg NAME LIMIT_S SIGNAL CMD...: CMD under /usr/bin/time (W/NAME.time) and timeout
# (SIGNAL at LIMIT_S, KILL 5 s later), in W, output to W/NAME.out/.err. Sets BG to the pid
# of the time process and LEAF to the pid of CMD; samples CMD's VmRSS/VmHWM into W/NAME.rss.
start_bg() {
    local name=$1 limit=$2 sig=$3
    shift 3
    (cd "$W" && exec /usr/bin/time -f '%U %S %M %e' -o "$W/$name.time" \
        timeout -k 5 -s "$sig" "$limit" "$@") >"$W/$name.out" 2>"$W/$name.err" &
    BG=$!
    PIDS+=("$BG")
    LEAF=""
    local i t
    for i in $(seq 100); do
        t=$(pgrep -P "$BG" 2>/dev/null | head -1)
        [ -n "$t" ] && LEAF=$(pgrep -P "$t" 2>/dev/null | head -1)
        [ -n "$LEAF" ] && break
        sleep 0.01
    done
    [ -n "$LEAF" ] && sample_rss "$LEAF" "$W/$name.rss" &
    PIDS+=("$!")
}

# sample_rss PID FILE: "t_s vmrss_kib vmhwm_kib cpu_ticks" every 0.2 s while PID lives
# (bash only, no forks; cpu_ticks = utime+stime from /proc/PID/stat).
sample_rss() {
    local pid=$1 out=$2 k v rest r h d st f t0=$EPOCHREALTIME
    while [ -r "/proc/$pid/status" ]; do
        r=0 h=0
        while read -r k v rest; do
            case $k in VmRSS:) r=$v ;; VmHWM:) h=$v ;; esac
        done <"/proc/$pid/status" 2>/dev/null || break
        read -r st <"/proc/$pid/stat" 2>/dev/null || break
        read -r -a f <<<"${st##*) }"  # fields from the 3rd (state) on: utime is f[11], stime f[12]
        if [ "$r" != 0 ]; then
            d=$((10#${EPOCHREALTIME/./} - 10#${t0/./}))
            printf '%d.%06d %s %s %s\n' $((d / 1000000)) $((d % 1000000)) "$r" "$h" \
                $((f[11] + f[12])) >>"$out"
        fi
        sleep 0.2
    done
}

# wait_bg PID LIMIT_S: wait for a start_bg job, killing it (and its children) past LIMIT_S.
wait_bg() {
    local pid=$1 limit=$2 i
    for i in $(seq $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    echo "  (still running after ${limit}s: killed)" >&2
    for i in $(descendants "$pid") "$pid"; do kill -KILL "$i" 2>/dev/null; done
    wait "$pid" 2>/dev/null
    return 1
}

# stop_bg PID SIGNAL: signal the command of a start_bg job (via its timeout), then wait.
stop_bg() {
    local pid=$1 sig=$2 t
    t=$(pgrep -P "$pid" 2>/dev/null | head -1)
    [ -n "$t" ] && kill -s "$sig" "$t" 2>/dev/null
    wait_bg "$pid" 10
}

# ------------------------------------------------------------------------------- build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release --bin imsload"
    ok=0
    for try in 1 2 3 4 5; do
        if (cd "$ROOT" && timeout 900 cargo build --release --bin imsload) >"$W/build.log" 2>&1; then
            ok=1
            break
        fi
        tail -5 "$W/build.log" >&2
        log "build failed (someone's work in progress?); retrying in 60 s ($try/5)"
        sleep 60
    done
    [ "$ok" = 1 ] || { echo "compare.sh: cannot build imsload" >&2; exit 1; }
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# A private copy: other people rebuild target/release while we measure.
cp "$TARGET_DIR/release/imsload" "$W/imsload" || exit 1
IMSLOAD=$W/imsload
IMS_VERSION=$("$IMSLOAD" --version 2>/dev/null)
IMS_COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo "+dirty")
SIPP_VERSION=$(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*[^ ]*' | head -1)
WORKER_ARGS=()
[ -n "$WORKERS" ] && WORKER_ARGS=(--workers "$WORKERS")

python3 - "$W/meta.json" <<EOF
import json, os, sys, time, platform
model = ""
try:
    for l in open("/proc/cpuinfo"):
        if l.startswith("model name"):
            model = l.split(":", 1)[1].strip(); break
except OSError:
    pass
json.dump({
  "sipp_version": "$SIPP_VERSION", "imsload_version": "$IMS_VERSION ($IMS_COMMIT)",
  "machine": "%d cores, %s, Linux %s" % (os.cpu_count(), model, platform.release()),
  "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
  "workers": "${WORKERS:-default (one per core)}",
  "steps": [int(s) for s in "$STEPS".split()], "step_secs": $STEP_SECS,
  "fixed_cps": $FIXED_CPS, "fixed_secs": $FIXED_SECS,
  "live_cps": $LIVE_CPS, "live_secs": $LIVE_SECS, "live_hold": $LIVE_HOLD,
  "reg_users": $REG_USERS, "reg_small": $REG_SMALL, "reg_rate": $REG_RATE, "reg_rate_low": $REG_RATE_LOW,
  "notes": [
    "SIPp gets -buff_size $BUF (8 MiB asked; SO_RCVBUF/SO_SNDBUF are capped by net.core.rmem_max=%s/wmem_max=%s); imsload asks for 8 MiB with SO_RCVBUFFORCE (past the cap when root)" % (
        open("/proc/sys/net/core/rmem_max").read().strip(), open("/proc/sys/net/core/wmem_max").read().strip()),
    "SIPp -sn uac runs one thread; imsload runs one worker (socket + task) per core by default; both share the 2 cores with the SIPp UAS",
    "CPU = user+sys of the generator process over its whole run (/usr/bin/time), divided by completed calls",
    "SIPp REGISTER: bench/register.xml (REGISTER, 401, REGISTER with digest, 200), one fixed digest user name (SIPp 3.6 cannot take [fieldN] inside [authentication]), bindings per injected user",
    "imsload keeps each client transaction, request bytes included, until Timer K (T4 = 5 s) after its final response; registering at R/s thus holds ~2R x 5 s transactions, so its memory per registered user depends on the rate (hence the two rates)",
    "rest of machine CPU = busy CPU-s in /proc/stat during the run minus the generator's and the target's: other people's builds and tests show up here (a noisy step is worth re-running)",
    "imsload: $IMS_VERSION ($IMS_COMMIT)",
  ],
}, open(sys.argv[1], "w"))
EOF

log "work directory $W; imsload $IMS_VERSION ($IMS_COMMIT); SIPp $SIPP_VERSION"

# ------------------------------------------------------------------------------- runs
# cpu_snap NAME: the machine's CPU counters (/proc/stat) into W/NAME.cpu, before and after a
# run: what the rest of the machine burnt meanwhile shows how noisy the run was.
cpu_snap() {
    local l
    read -r l </proc/stat
    echo "$l" >>"$W/$1.cpu"
}

# start_uas NAME: a fresh `sipp -sn uas` on a new port; sets UAS_PORT and UAS_BG.
start_uas() {
    alloc_port UAS_PORT
    start_bg "$1.uas" 600 TERM sipp -sn uas -i 127.0.0.1 -p "$UAS_PORT" -nostdin \
        -buff_size "$BUF"
    UAS_BG=$BG
    wait_port "$UAS_PORT" || { echo "  SIPp UAS did not start:" >&2; cat "$W/$1.uas.err" "$W/$1.uas.out" >&2; }
}

# calls_imsload NAME CPS CALLS HOLD_S SECS: imsload --ruri against a fresh SIPp UAS.
# With hold 0, --calls ends the run (imsload then waits for its last calls); --duration is
# 2 s longer so that it does not cut in first and CANCEL a call that is still ringing.
calls_imsload() {
    local name=$1 cps=$2 calls=$3 hold=$4 secs=$5 dur=$5
    [ "$hold" = 0 ] && dur=$((secs + 2))
    cpu_snap "$name"
    start_uas "$name"
    start_bg "$name" $((secs + 25)) INT "$IMSLOAD" --target "127.0.0.1:$UAS_PORT" \
        --ruri "sip:service@127.0.0.1:$UAS_PORT" --bind 127.0.0.1 "${WORKER_ARGS[@]}" \
        --cps "$cps" --calls "$calls" --hold "${hold}s" --duration "${dur}s" --drain 10s \
        --max-calls "$MAX_CALLS" --quiet --report "$W/$name.report.json" --series "$W/$name.series.csv" \
        "${IMS_BASE[@]}" "${IMS_EXTRA[@]}"
    wait_bg "$BG" $((secs + 35))
    stop_bg "$UAS_BG" TERM
    cpu_snap "$name"
}

# calls_sipp NAME CPS CALLS HOLD_S SECS [KILL_AT_S]: sipp -sn uac against a fresh SIPp UAS.
# With KILL_AT_S, SIPp gets SIGTERM then and exits at once with its calls still up (for the
# live-call run: its -timeout only stops new calls and waits for the held ones; and not KILL:
# timeout(1) would kill itself with it and /usr/bin/time would lose SIPp's figures).
calls_sipp() {
    local name=$1 cps=$2 calls=$3 hold=$4 secs=$5 limit sig=INT lp
    limit=$((secs + 25))
    [ -n "${6:-}" ] && { limit=$6; sig=TERM; }
    cpu_snap "$name"
    start_uas "$name"
    alloc_port lp
    start_bg "$name" "$limit" "$sig" sipp -sn uac "127.0.0.1:$UAS_PORT" -i 127.0.0.1 -p "$lp" \
        -s service -r "$cps" -rp 1000 -m "$calls" -d $((hold * 1000)) -l "$MAX_CALLS" \
        -recv_timeout 5000 -timeout $((secs + 15))s -nostdin -buff_size "$BUF" \
        -trace_stat -stf "$W/$name.stat.csv" -fd 1
    wait_bg "$BG" $((limit + 10))
    stop_bg "$UAS_BG" TERM
    cpu_snap "$name"
}

want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---- 1. step search
if want steps; then
log "1/4 step search: ${STEPS// /, } calls/s for ${STEP_SECS}s each, hold 0"
# step GEN CPS: one step (run again once if it fails); status 1 if it failed twice.
step() {
    local g=$1 s=$2 n=$(($2 * STEP_SECS)) name="step-$1-$2" f try
    for try in 1 2; do
        if [ "$try" = 2 ]; then
            # Keep the first try's files under NAME.try1.* and run the step again.
            for f in "$W/$name".*; do mv "$f" "$W/$name.try1.${f#"$W/$name."}"; done
            echo "  (failed: once more)"
        fi
        "calls_$g" "$name" "$s" "$n" 0 "$STEP_SECS"
        "${PARSE[@]}" "$g" "$W" "$name" "$s" "$n"
        "${PARSE[@]}" pass "$W" "$name" && return 0
    done
    return 1
}
alive_i=1 alive_s=1
for s in $STEPS; do
    [ "$alive_i" = 1 ] && { step imsload "$s" || alive_i=0; }
    [ "$alive_s" = 1 ] && { step sipp "$s" || alive_s=0; }
    [ "$alive_i" = 0 ] && [ "$alive_s" = 0 ] && break
done
fi

# ---- 2. fixed rate: accuracy, CPU per call, RSS
if want fixed; then
log "2/4 fixed rate: $FIXED_CPS calls/s for ${FIXED_SECS}s, hold 0"
n=$((FIXED_CPS * FIXED_SECS))
calls_imsload fixed-imsload "$FIXED_CPS" "$n" 0 "$FIXED_SECS"
"${PARSE[@]}" imsload "$W" fixed-imsload "$FIXED_CPS" "$n"
calls_sipp fixed-sipp "$FIXED_CPS" "$n" 0 "$FIXED_SECS"
"${PARSE[@]}" sipp "$W" fixed-sipp "$FIXED_CPS" "$n"
fi

# ---- 3. memory per live call
if want live; then
n=$((LIVE_CPS * LIVE_SECS))
log "3/4 live calls: $LIVE_CPS calls/s for ${LIVE_SECS}s with hold ${LIVE_HOLD}s (~$n live), and the same with hold 0"
calls_imsload idle-imsload "$LIVE_CPS" "$n" 0 "$LIVE_SECS"
"${PARSE[@]}" imsload "$W" idle-imsload "$LIVE_CPS" "$n"
calls_imsload live-imsload "$LIVE_CPS" "$n" "$LIVE_HOLD" "$LIVE_SECS"
"${PARSE[@]}" imsload "$W" live-imsload "$LIVE_CPS" "$n" | sed 's/-> FAIL/(calls still up at the end: expected)/'
calls_sipp idle-sipp "$LIVE_CPS" "$n" 0 "$LIVE_SECS"
"${PARSE[@]}" sipp "$W" idle-sipp "$LIVE_CPS" "$n"
calls_sipp live-sipp "$LIVE_CPS" "$n" "$LIVE_HOLD" "$LIVE_SECS" $((LIVE_SECS + 2))
"${PARSE[@]}" sipp "$W" live-sipp "$LIVE_CPS" "$n" | sed 's/-> FAIL/(calls still up at the end: expected)/'
fi

# ---- 4. registrations
if want reg; then
log "4/4 registrations with digest against imsload serve: $REG_USERS and $REG_SMALL users at $REG_RATE/s, $REG_USERS at $REG_RATE_LOW/s; SIPp $REG_USERS at $REG_RATE/s"
# reg_imsload NAME USERS RATE
reg_imsload() {
    local name=$1 users=$2 rate=$3 p
    cpu_snap "$name"
    alloc_port p
    start_bg "$name.uas" 600 INT "$IMSLOAD" serve --listen "127.0.0.1:$p" --quiet
    local sbg=$BG
    wait_port "$p"
    start_bg "$name" 90 INT "$IMSLOAD" --target "127.0.0.1:$p" --bind 127.0.0.1 "${WORKER_ARGS[@]}" \
        --users "$users" --reg-rate "$rate" --cps 0 --duration 3s --drain 10s --quiet \
        --report "$W/$name.report.json" --series "$W/$name.series.csv"
    wait_bg "$BG" 100
    stop_bg "$sbg" INT
    cpu_snap "$name"
    "${PARSE[@]}" reg-imsload "$W" "$name" "$users" "$rate"
}
reg_imsload reg-imsload-big "$REG_USERS" "$REG_RATE"
reg_imsload reg-imsload-small "$REG_SMALL" "$REG_RATE"
# Registering keeps each transaction ~5 s after its 200 (RFC 3261 Timer K = T4), so the
# footprint grows with the rate as well as with the users: the same at a lower rate.
reg_imsload reg-imsload-big-low "$REG_USERS" "$REG_RATE_LOW"

{
    echo SEQUENTIAL
    seq -f 'reg%06.0f' 1 "$REG_USERS"
} >"$W/reg-users.csv"
cpu_snap reg-sipp-big
alloc_port p
start_bg reg-sipp-big.uas 600 INT "$IMSLOAD" serve --listen "127.0.0.1:$p" --quiet
sbg=$BG
wait_port "$p"
alloc_port lp
reg_secs=$((REG_USERS / REG_RATE + 1))
start_bg reg-sipp-big $((reg_secs + 40)) INT sipp "127.0.0.1:$p" -sf "$HERE/register.xml" \
    -inf "$W/reg-users.csv" -s ims.local -i 127.0.0.1 -p "$lp" -r "$REG_RATE" -rp 1000 \
    -m "$REG_USERS" -l "$MAX_CALLS" -recv_timeout 5000 -timeout $((reg_secs + 30))s -nostdin \
    -buff_size "$BUF" -trace_stat -stf "$W/reg-sipp-big.stat.csv" -fd 1
wait_bg "$BG" $((reg_secs + 50))
stop_bg "$sbg" INT
cpu_snap reg-sipp-big
"${PARSE[@]}" reg-sipp "$W" reg-sipp-big "$REG_USERS" "$REG_RATE"
fi

# ---- 5. the cost of --metrics and --hep (only with SECTIONS containing observe, or hep)
if want observe || want hep; then
log "5/5 observe: $HEP_CPS calls/s for ${HEP_SECS}s, hold 0: without, with --metrics (scraped every second), with --hep to a local UDP sink, and over TCP to a local reader; alternating, $HEP_ROUNDS rounds"
# The sink: a bound socket that is never read. The kernel delivers into it (work charged to
# the sender, as a real collector's path would be) and drops what overflows, silently: no
# ICMP, so no send errors, and no reader competing for the cores.
alloc_port hep_port
start_bg hep-sink 3600 TERM python3 -c "import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', $hep_port))
time.sleep(3600)"
hep_sink=$BG
wait_port "$hep_port"
# The TCP sink reads and discards (a stream that is not read stops the sender once the
# windows fill); its CPU is its own, not the generator's.
alloc_port hep_tcp_port
start_bg hep-tcp-sink 3600 TERM python3 -c "import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('127.0.0.1', $hep_tcp_port)); l.listen(4)
while True:
    c, _ = l.accept()
    while c.recv(1 << 20):
        pass
    c.close()"
hep_tcp_sink=$BG
wait_port "$hep_tcp_port"
alloc_port metrics_port
# The scraper: what Prometheus does at a 1 s interval (a GET of /metrics), in a loop that the
# section stops; its own CPU is not the generator's.
start_bg scraper 3600 TERM python3 -c "import time, urllib.request
while True:
    try:
        urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics', timeout=1).read()
    except OSError:
        pass
    time.sleep(1)"
scraper=$BG
n=$((HEP_CPS * HEP_SECS))
for r in $(seq "$HEP_ROUNDS"); do
    IMS_EXTRA=()
    calls_imsload "obs-off-$r" "$HEP_CPS" "$n" 0 "$HEP_SECS"
    "${PARSE[@]}" imsload "$W" "obs-off-$r" "$HEP_CPS" "$n"
    IMS_EXTRA=(--metrics "127.0.0.1:$metrics_port" --metrics-linger 0s)
    calls_imsload "obs-metrics-$r" "$HEP_CPS" "$n" 0 "$HEP_SECS"
    "${PARSE[@]}" imsload "$W" "obs-metrics-$r" "$HEP_CPS" "$n"
    IMS_EXTRA=(--hep "127.0.0.1:$hep_port")
    calls_imsload "obs-hep-$r" "$HEP_CPS" "$n" 0 "$HEP_SECS"
    "${PARSE[@]}" imsload "$W" "obs-hep-$r" "$HEP_CPS" "$n"
    IMS_EXTRA=(--hep "127.0.0.1:$hep_tcp_port" --hep-transport tcp)
    calls_imsload "obs-heptcp-$r" "$HEP_CPS" "$n" 0 "$HEP_SECS"
    "${PARSE[@]}" imsload "$W" "obs-heptcp-$r" "$HEP_CPS" "$n"
done
IMS_EXTRA=()
stop_bg "$scraper" TERM
stop_bg "$hep_sink" TERM
stop_bg "$hep_tcp_sink" TERM
python3 - "$W" "$HEP_ROUNDS" "$HEP_CPS" <<'EOF'
import json, statistics, sys
w, rounds, cps = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def per10k(name):
    try:
        u, s = open(f"{w}/{name}.time").read().split()[:2]
        rep = json.load(open(f"{w}/{name}.report.json"))
    except (OSError, ValueError):
        return None, None
    done = rep["counters"]["calls_completed"]
    return ((float(u) + float(s)) / done * 10000 if done else None), rep
def fmt(x):
    return "-" if x is None else f"{x:.3f}"
print(f"Observation cost at {cps} calls/s: imsload CPU-s (user+sys) per 10,000 completed calls")
names = {"off": "without", "metrics": "--metrics", "hep": "--hep to a local UDP sink",
         "heptcp": "--hep over TCP to a local reader"}
cols = {k: [] for k in names}
ratios = {k: [] for k in names}
def hs(rep):
    hep = (rep or {}).get("hep")
    return (f" (mirrored {hep['mirrored']}, dropped {hep['dropped']}, send errors {hep['send_errors']})"
            if hep else "")
for r in range(1, rounds + 1):
    line = []
    base, _ = per10k(f"obs-off-{r}")
    for k, label in names.items():
        v, rep = per10k(f"obs-{k}-{r}")
        if v is None:
            continue
        cols[k].append(v)
        if base and k != "off":
            ratios[k].append(v / base)
        line.append(f"{label} {fmt(v)}{hs(rep)}")
    print(f"  round {r}: " + "; ".join(line))
if cols["off"]:
    mo = statistics.median(cols["off"])
    for k, goal in (("metrics", 1.02), ("hep", 1.15), ("heptcp", 1.15)):
        if cols[k]:
            mk = statistics.median(cols[k])
            rr = ", ".join(f"{x:.2f}" for x in ratios[k])
            print(f"  median: without {mo:.3f}, {names[k]} {mk:.3f}: ratio {mk / mo:.3f} "
                  f"(per round {rr}; goal < {goal})")
EOF
fi

log "done"
"${PARSE[@]}" table "$W"
