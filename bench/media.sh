#!/usr/bin/env bash
# bench/media.sh — how many concurrent G.711 calls with media this machine carries, both legs of
# every call imsload's (its embedded target answers; no relay), as media.md's goal counts them.
#
# Per step of CALLS (concurrent calls; twice as many RTP streams): RTP loss, send lateness (the
# send-time jitter) p50/p99, the longest gap per stream p99, and CPU (user+sys of the whole run)
# per 1,000 streams, as the share of a core they keep busy. A step passes with loss < 0.1 % and
# send lateness p99 < 1 ms. Each step runs every mode of MODES, alternating, ROUNDS times each:
# `plain` (one datagram per packet) and `gso` (--media-gso: UDP GSO trains), so a run compares
# the two on the same noisy machine (compare the rows of one run, not figures across runs).
#
# Usage: bench/media.sh                      (about 1 minute per step, mode and round, plus the build)
# Knobs (environment): CALLS="500 1000 2000 3000" HOLD=20 STEADY=15 ROUNDS=1 MODES="plain gso"
#   SKIP_BUILD=1 IMSLOAD=/path/to/imsload (another build) IMSLOAD_EXTRA= (arguments added to
#   every run)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CALLS=${CALLS:-"500 1000 2000 3000"}
HOLD=${HOLD:-20}
STEADY=${STEADY:-15}
ROUNDS=${ROUNDS:-1}
read -r -a MODES <<< "${MODES:-plain gso}"
read -r -a EXTRA <<< "${IMSLOAD_EXTRA:-}"

for t in python3 /usr/bin/time timeout; do
    command -v "$t" >/dev/null || { echo "media.sh: $t is missing (/usr/bin/time: apt-get install time)" >&2; exit 2; }
done
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bin imsload) || exit 1
fi
BIN=${IMSLOAD:-"$ROOT/target/release/imsload"}
W=$(mktemp -d /tmp/imsload-media.XXXXXX)
trap 'rm -rf "$W"' EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP

# run MODE CALLS TAG: one run; its report and CPU under $W/TAG.*
run() {
    local mode=$1 calls=$2 tag=$3 more=()
    [ "$mode" = gso ] && more=(--media-gso)
    local users=$((2 * calls)) cps=$(((calls + HOLD - 1) / HOLD))
    local reg=$((users < 2000 ? users : 2000))
    # Registration takes users/reg s, the calls ramp up over HOLD s, then STEADY s at `calls`.
    local dur=$((HOLD + STEADY))
    /usr/bin/time -f "%U %S" -o "$W/$tag.cpu" timeout $((dur + users / reg + 60)) \
        "$BIN" --users "$users" --reg-rate "$reg" --cps "$cps" --hold "${HOLD}s" \
        --duration "${dur}s" --media g711 --quiet --report "$W/$tag.json" "${more[@]}" "${EXTRA[@]}" \
        >"$W/$tag.out" 2>&1 || { echo "  $tag: imsload failed, see below" >&2; tail -n 5 "$W/$tag.out" >&2; }
}

printf '%-6s %-5s %9s %8s %8s %8s %9s %9s %s\n' calls mode streams loss% "late50" "late99" "gap99" "core/1k" verdict
for calls in $CALLS; do
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate which mode goes first, against drifts in the background load.
        modes=("${MODES[@]}")
        [ $((round % 2)) = 0 ] && mapfile -t modes < <(printf '%s\n' "${MODES[@]}" | tac)
        for b in "${modes[@]}"; do
            tag="$calls-$round-$b"
            run "$b" "$calls" "$tag"
            python3 - "$W/$tag.json" "$W/$tag.cpu" "$calls" "$b" <<'EOF'
import json, sys
rep, cpu, calls, mode = sys.argv[1:5]
try:
    m = json.load(open(rep))["media"]
    u, s = map(float, open(cpu).read().split()[-2:])
except (OSError, ValueError, KeyError) as e:
    print(f"{calls:<6} {mode:<5} no report ({e})")
    sys.exit(0)
# Stream-seconds of media: every stream sends 50 packets a second (20 ms ptime).
stream_s = m["packets_sent"] / 50
core_per_1k = (u + s) / (stream_s / 1000) if stream_s else float("nan")
late = m["send_lateness"]
ok = m["loss_pct"] < 0.1 and late["p99_ms"] < 1.0
print(f"{calls:<6} {mode:<5} {m['streams']:9d} {m['loss_pct']:8.3f} {late['p50_ms']:8.2f} "
      f"{late['p99_ms']:8.2f} {m['longest_gap']['p99_ms']:9.1f} {core_per_1k:9.3f} "
      f"{'pass' if ok else 'FAIL'}")
EOF
        done
    done
done
echo "late50/late99: send lateness percentiles (ms); gap99: longest gap per stream, p99 (ms);"
echo "core/1k: CPU-s of the whole run per 1,000 stream-seconds of media (a core's share per 1,000 streams)"
