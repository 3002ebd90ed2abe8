#!/usr/bin/env bash
# bench/floor.sh — what is left for SIP to spend: imsload beside the floor of its own I/O layer.
#
# `udp_floor` (examples/udp_floor.rs) makes the same calls as `imsload --ruri --hold 0s` and
# answers them as `imsload serve` does, datagram for datagram and byte for byte in size, on the
# same driver (recvmmsg, sendmmsg, 1 ms timer quantum), with no SIP in the datagrams. Its CPU is
# the kernel's loopback UDP plus our I/O layer: no SIP engine on this layer and this machine can
# cost less, nor go faster. Printed, from one run (rounds alternate, the machine is shared):
#   1. generator CPU-s per 10,000 calls at FIXED rates: SIPp's UAC and imsload against
#      `sipp -sn uas`, and the floor's caller against its reflector; imsload/SIPp and floor/SIPp
#   2. the highest rate with >= 99 % of calls completed and >= 95 % of the offered rate achieved,
#      both ends on this machine: imsload against `imsload serve`, and the floor pair; with each
#      side's CPU at the last rate both passed
#
# Usage: bench/floor.sh   (about 6 minutes, plus the build). Knobs: FIXED="5000 10000"
#   ROUNDS=2 SECS=8 STEPS="30000 40000 50000 60000 70000" SKIP_BUILD=1 KEEP=1
set -u -o pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
FIXED=${FIXED:-"5000 10000"}
ROUNDS=${ROUNDS:-2}
SECS=${SECS:-8}
STEPS=${STEPS:-"30000 40000 50000 60000 70000"}
W=$(mktemp -d /tmp/floor.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$W"' EXIT
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bin imsload --example udp_floor) || exit 1
fi
IMSLOAD="$ROOT/target/release/imsload"
FLOOR="$ROOT/target/release/examples/udp_floor"
command -v sipp >/dev/null || { echo "floor.sh: sipp is missing (apt install sip-tester)" >&2; exit 1; }

port() { echo $((20000 + RANDOM % 30000)); }
# cpu FILE: user+sys seconds from /usr/bin/time's last line ("cpu U S").
cpu() { awk '/^cpu /{u=$2; s=$3} END{printf "%.2f", u+s}' "$1"; }
T=(/usr/bin/time -f "cpu %U %S")

# gen NAME KIND CPS SECS -> $W/NAME.{cpu,out}: one generator against its peer; the generator's CPU.
gen() {
    local name=$1 kind=$2 cps=$3 secs=$4 p; p=$(port)
    case $kind in
    sipp | imsload) sipp -sn uas -i 127.0.0.1 -p "$p" -nostdin -buff_size 4194304 >/dev/null 2>&1 & ;;
    # Both end on their own (time(1) would not pass a signal on), after the generator's drain.
    floor) "${T[@]}" -o "$W/$name.peer.cpu" "$FLOOR" serve "127.0.0.1:$p" $((secs + 2)) >/dev/null & ;;
    pair) "${T[@]}" -o "$W/$name.peer.cpu" "$IMSLOAD" serve --listen "127.0.0.1:$p" --quiet \
        --timer-resol 1ms --duration $((secs + 4))s >/dev/null 2>&1 & ;;
    esac
    local peer=$!
    sleep 0.5
    case $kind in
    sipp) "${T[@]}" -o "$W/$name.cpu" sipp -sn uac "127.0.0.1:$p" -i 127.0.0.1 -p "$(port)" -s svc \
        -r "$cps" -rp 1000 -m $((cps * secs)) -d 0 -l 100000 -timeout $((secs + 10))s -nostdin \
        -buff_size 4194304 -trace_stat -stf "$W/$name.stat.csv" >/dev/null 2>&1 ;;
    imsload | pair) "${T[@]}" -o "$W/$name.cpu" "$IMSLOAD" --target "127.0.0.1:$p" \
        --ruri "sip:svc@127.0.0.1:$p" --bind 127.0.0.1 --users 0 --cps "$cps" --hold 0s \
        --duration "${secs}s" --quiet --report "$W/$name.json" >/dev/null 2>&1 ;;
    floor) "${T[@]}" -o "$W/$name.cpu" "$FLOOR" call "127.0.0.1:$p" "$cps" "$secs" >"$W/$name.json" ;;
    esac
    case $kind in sipp | imsload) kill -TERM "$peer" 2>/dev/null ;; esac
    wait "$peer" 2>/dev/null
}

# completed NAME KIND CPS SECS: calls completed (floor: answered to the end; imsload: established)
# and whether the step passed.
passed() {
    python3 - "$W/$1.json" "$2" "$3" "$4" <<'EOF'
import json, sys
path, kind, cps, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
try:
    r = json.load(open(path))
except Exception:
    print("0 no"); sys.exit()
if kind == "floor":
    placed, done = r["placed"], r["completed"]
else:
    c = r["counters"]
    placed, done = c["calls_attempted"], c["calls_answered"]
ok = placed > 0 and done >= 0.99 * placed and done >= 0.95 * cps * secs
print(f"{done / secs:.0f} {'yes' if ok else 'no'}")
EOF
}

echo "floor.sh: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), work dir $W"
echo
echo "1. generator CPU-s per 10,000 calls, ${SECS}s at a fixed rate, hold 0, $ROUNDS rounds (alternating)"
printf "%8s %6s %10s %10s %10s %14s %12s\n" calls/s round sipp imsload floor imsload/sipp floor/sipp
for cps in $FIXED; do
    for r in $(seq "$ROUNDS"); do
        for k in sipp imsload floor; do gen "f$cps-$r-$k" "$k" "$cps" "$SECS"; done
        per() { awk -v c="$(cpu "$W/f$cps-$r-$1.cpu")" -v n=$((cps * SECS)) 'BEGIN{printf "%.3f", c*10000/n}'; }
        s=$(per sipp) i=$(per imsload) f=$(per floor)
        printf "%8s %6s %10s %10s %10s %13.2fx %11.2fx\n" "$cps" "$r" "$s" "$i" "$f" \
            "$(awk -v a="$i" -v b="$s" 'BEGIN{print a/b}')" "$(awk -v a="$f" -v b="$s" 'BEGIN{print a/b}')"
    done
done
echo
echo "2. highest calls/s, both ends on this machine (>= 99 % completed, >= 95 % of offered achieved)"
printf "%8s %30s %30s\n" calls/s "imsload vs serve (cpu gen+peer)" "floor pair (cpu gen+peer)"
best_i=0 best_f=0
for cps in $STEPS; do
    line=$(printf "%8s" "$cps")
    for k in pair floor; do
        gen "s$cps-$k" "$k" "$cps" "$SECS"
        read -r got ok <<<"$(passed "s$cps-$k" "$k" "$cps" "$SECS")"
        c=$(cpu "$W/s$cps-$k.cpu")
        line+=$(printf " %7s %3s cpu %5s+%5s" "$got" "$ok" "$c" "$(cpu "$W/s$cps-$k.peer.cpu")")
        if [ "$ok" = yes ]; then
            [ "$k" = pair ] && best_i=$cps || best_f=$cps
        fi
    done
    echo "$line"
done
echo
echo "highest rate passed: imsload vs serve $best_i calls/s, floor pair $best_f calls/s"
