#!/usr/bin/env bash
# bench/media-sipp.sh — SIPp 3.6's rtp_stream beside imsload as the RTP *sender* of G.711 calls,
# in the same run, measured by the same receiver: how many concurrent calls each sender carries
# with < 0.1 % loss and packets on time.
#
# Per run, on loopback (nothing leaves 127.0.0.0/8):
#   * `imsload serve` (127.0.0.1) is the registrar and proxy (no authentication for INVITEs);
#   * the receiver, `imsload --users 1 --cps 0 --media g711` (127.0.0.3, one worker), registers
#     user0001 and answers every call to it with RTP back (--media-gso: its return stream costs
#     it little), and counts every RTP packet it reads;
#   * the sender (127.0.0.2) calls sip:user0001@ims.local through serve, CALLS/HOLD calls a second
#     for HOLD+STEADY seconds, each held HOLD s (up to CALLS concurrent, STEADY s at the peak):
#       sipp    `sipp -sf bench/sipp_rtp_uac.xml` (INVITE offering PCMU, ACK, rtp_stream of a
#               raw mu-law tone looped, hold, pause, BYE);
#       imsload `imsload --ruri sip:user0001@ims.local --calls N --media g711` (no registration;
#               it also reads and measures the receiver's stream, which SIPp drops unread);
#   * tcpdump -Q in on lo records every RTP packet from the sender to the receiver (first 54
#     bytes, nanosecond stamps: on lo the same kernel receive stamps the receiver reads).
# Per stream (SSRC) of that capture, as the receiver computes them (RFC 3550 A.8 jitter in
# the 8 kHz clock; the longest time between two packets): jitter p99 and longest gap p99 and
# max over the streams. Loss: packets the receiver read (measured + unmatched) against packets
# that reached it on the wire (what the kernel dropped at its socket, or never delivered).
# CPU: user+sys of the sender process (/usr/bin/time) per 1,000 stream-seconds sent.
# A run passes with loss < 0.1 %, longest gap p99 < 3 packet times (60 ms), every call placed
# and < 0.1 % of them failed.
#
# Why the capture and not the receiver's own per-stream figures: SIPp 3.6 sends every call's
# stream from its one media socket (-mi:-mp), each with its own SSRC, and imsload learns a
# foreign SSRC only from an address one stream alone talks to (src/media/engine.rs, by_addr):
# with two SIPp calls up, the receiver counts their packets as `media_unmatched`. So loss comes
# from the receiver's counts, timing from the capture, for both senders alike; for imsload's
# runs the receiver's own per-stream figures are printed beside them as a check.
#
# Usage: bench/media-sipp.sh       (per step and sender about 2*HOLD+STEADY+10 s, plus the build)
# Needs root (tcpdump on lo), sipp with RTPSTREAM (Debian sip-tester), tcpdump, python3, time.
# Knobs (environment): CALLS="200 500 1000 2000" HOLD=20 STEADY=15 ROUNDS=1 (per step: sipp
#   then imsload, the order flipped every other round) SENDERS="sipp imsload" SKIP_BUILD=1
#   IMSLOAD=/path/to/imsload (another build) IMSLOAD_EXTRA= (arguments added to the sender
#   imsload) SIPP_EXTRA= (arguments added to sipp, e.g. "-rtp_threadtasks 50") KEEP=1 (keep
#   the work directory: captures, reports, outputs)
set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CALLS=${CALLS:-"200 500 1000 2000"}
HOLD=${HOLD:-20}
STEADY=${STEADY:-15}
ROUNDS=${ROUNDS:-1}
KEEP=${KEEP:-0}
read -r -a SENDERS <<< "${SENDERS:-sipp imsload}"
read -r -a EXTRA <<< "${IMSLOAD_EXTRA:-}"
read -r -a SIPP_X <<< "${SIPP_EXTRA:-}"
SERVE_IP=127.0.0.1 TX_IP=127.0.0.2 RX_IP=127.0.0.3 DOMAIN=ims.local CALLEE=user0001

for t in sipp tcpdump python3 /usr/bin/time timeout ss pgrep; do
    command -v "$t" >/dev/null || { echo "media-sipp.sh: $t is missing (sipp: apt-get install sip-tester; /usr/bin/time: apt-get install time)" >&2; exit 2; }
done
case $(sipp -v 2>&1) in
*RTPSTREAM*) ;;
*) echo "media-sipp.sh: this sipp has no rtp_stream (sipp -v lacks RTPSTREAM)" >&2; exit 2 ;;
esac
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release --bin imsload) || exit 1
fi
W=$(mktemp -d /tmp/imsload-media-sipp.XXXXXX)
# A private copy: others rebuild target/release while we measure.
cp "${IMSLOAD:-${CARGO_TARGET_DIR:-$ROOT/target}/release/imsload}" "$W/imsload" || exit 1
BIN=$W/imsload
PIDS=()

# shellcheck source=lib.sh
. "$HERE/lib.sh"
cleanup() {
    stop_tree "${PIDS[@]}"
    if [ "$KEEP" = 1 ]; then echo "raw files kept in $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

PORT=$((21000 + RANDOM % 20000))
# bg NAME LIMIT_S CMD...: CMD in the background under timeout (INT at LIMIT_S, KILL 5 s later),
# in W, output to W/NAME.out; BG is its pid.
bg() {
    local name=$1 limit=$2
    shift 2
    (cd "$W" && exec timeout -k 5 -s INT "$limit" "$@") >"$W/$name.out" 2>&1 &
    BG=$!
    PIDS+=("$BG")
}
# stop PID: SIGINT to the command under a bg's timeout, then wait for it (at most 15 s).
stop() {
    local t i
    t=$(pgrep -P "$1" 2>/dev/null | head -1)
    [ -n "$t" ] && kill -INT "$t" 2>/dev/null
    for i in $(seq 150); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$1" 2>/dev/null && for i in $(descendants "$1") "$1"; do kill -KILL "$i" 2>/dev/null; done
    wait "$1" 2>/dev/null
}

# What rtp_stream plays: 1 s of a 400 Hz tone as headerless mu-law (SIPp 3.6 sends the file's
# bytes as they are, 160 a packet: a WAV header would go out as audio).
python3 - "$W/pcmu.raw" <<'EOF'
import math, sys
def ulaw(s):  # G.711 mu-law of a 16-bit sample (Sun's g711.c)
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), 32635) + 0x84
    e = 7
    while e > 0 and not s & (0x4000 >> (7 - e)):
        e -= 1
    return ~(sign | e << 4 | (s >> (e + 3)) & 0x0F) & 0xFF
open(sys.argv[1], "wb").write(bytes(ulaw(round(8000 * math.sin(2 * math.pi * 400 * i / 8000)))
                                    for i in range(8000)))
EOF
printf 'SEQUENTIAL\n%s;%s\n' "$CALLEE" "$DOMAIN" >"$W/callee.csv"

# run SENDER CALLS TAG: serve, the receiver, the capture and the sender; files W/TAG.*
run() {
    local sender=$1 calls=$2 tag=$3 sp tp mp serve rx cap i
    local cps=$(((calls + HOLD - 1) / HOLD))
    local total=$((cps * (HOLD + STEADY)))
    local limit=$((2 * HOLD + STEADY + 30))
    alloc_port sp
    bg "$tag.serve" $((limit + 60)) "$BIN" serve --listen "$SERVE_IP:$sp" --quiet
    serve=$BG
    wait_port "$sp" || { echo "  $tag: serve did not start" >&2; cat "$W/$tag.serve.out" >&2; }
    bg "$tag.rx" $((limit + 50)) "$BIN" --target "$SERVE_IP:$sp" --bind "$RX_IP" --domain "$DOMAIN" \
        --workers 1 --users 1 --cps 0 --media g711 --media-gso --quiet --report "$W/$tag.rx.json"
    rx=$BG
    bg "$tag.cap" $((limit + 40)) tcpdump -i lo -Q in -n -s 54 -B 131072 -Z root \
        --time-stamp-precision=nano -w "$W/$tag.pcap" \
        "src host $TX_IP and dst host $RX_IP and udp and udp[8] & 0xc0 = 0x80 and udp[9] & 0x7f = 0"
    cap=$BG
    for i in $(seq 50); do grep -q "listening on" "$W/$tag.cap.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$W/$tag.cap.out" 2>/dev/null ||
        { echo "  $tag: tcpdump does not capture (root needed):" >&2; cat "$W/$tag.cap.out" >&2; }
    sleep 1  # the receiver's REGISTER, and the capture's start
    case $sender in
    sipp)
        alloc_port tp
        alloc_port mp 3  # SIPp binds -mp (audio) and -mp + 2 (video)
        (cd "$W" && /usr/bin/time -f "%U %S" -o "$W/$tag.cpu" timeout -k 5 -s INT "$limit" \
            sipp "$SERVE_IP:$sp" -sf "$HERE/sipp_rtp_uac.xml" -inf "$W/callee.csv" \
            -i "$TX_IP" -p "$tp" -mi "$TX_IP" -mp "$mp" -r "$cps" -rp 1000 -m "$total" \
            -l $((2 * calls + 100)) -d $((HOLD * 1000)) -recv_timeout 10000 -nostdin \
            -buff_size 8388608 -trace_stat -stf "$W/$tag.stat.csv" -fd 1 "${SIPP_X[@]}") \
            >"$W/$tag.out" 2>&1 &
        ;;
    imsload)
        (cd "$W" && /usr/bin/time -f "%U %S" -o "$W/$tag.cpu" timeout -k 5 -s INT "$limit" \
            "$BIN" --target "$SERVE_IP:$sp" --bind "$TX_IP" --domain "$DOMAIN" \
            --ruri "sip:$CALLEE@$DOMAIN" --cps "$cps" --calls "$total" --hold "${HOLD}s" \
            --duration $((2 * HOLD + STEADY + 10))s --media g711 --quiet \
            --report "$W/$tag.tx.json" "${EXTRA[@]}") >"$W/$tag.out" 2>&1 &
        ;;
    esac
    PIDS+=("$!")
    wait "$!" || { echo "  $tag: $sender exited with status $?:" >&2; tail -n 5 "$W/$tag.out" >&2; }
    sleep 1.5  # what the capture holds in its ring before it stops
    stop "$cap"
    stop "$rx"
    stop "$serve"
}

printf '%-6s %-8s %5s %7s %7s %7s %7s %7s %8s %6s  %-15s %s\n' calls sender peak streams "loss%" jit99 gap99 gapmax core/1k failed "rx:jit99/gap99" verdict
for calls in $CALLS; do
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate which sender goes first, against drifts in the background load.
        order=("${SENDERS[@]}")
        [ $((round % 2)) = 0 ] && mapfile -t order < <(printf '%s\n' "${SENDERS[@]}" | tac)
        for s in "${order[@]}"; do
            tag="$calls-$round-$s"
            run "$s" "$calls" "$tag"
            python3 - "$W" "$tag" "$calls" "$s" $((((calls + HOLD - 1) / HOLD) * (HOLD + STEADY))) <<'EOF'
import json, struct, sys
w, tag, calls, sender, total = sys.argv[1:6]
P, total = f"{w}/{tag}", int(total)

def capture(path):
    """Per SSRC: [packets, jitter16, last transit, last arrival, longest gap, first arrival] (ns)."""
    b = open(path, "rb").read()
    magic = struct.unpack_from("<I", b)[0] if len(b) >= 24 else 0
    if magic not in (0xA1B23C4D, 0xA1B2C3D4):
        raise ValueError("no capture")
    mul = 1 if magic == 0xA1B23C4D else 1000
    st, off, n, up = {}, 24, len(b), struct.unpack_from
    while off + 16 <= n:
        sec, frac, cap, _ = up("<IIII", b, off)
        p, off = off + 16, off + 16 + cap
        r = p + 14 + (b[p + 14] & 0x0F) * 4 + 8  # Ethernet (lo), IPv4, UDP
        if r + 12 > off:
            continue
        ts, ssrc = up("!II", b, r + 4)
        t = sec * 1_000_000_000 + frac * mul
        # RFC 3550 A.8 as the receiver does it (src/media/quality.rs): arrival in the 8 kHz clock.
        transit = t * 8000 // 1_000_000_000 - ts
        s = st.get(ssrc)
        if s is None:
            st[ssrc] = [1, 0, transit, t, 0, t]
            continue
        d = abs((transit - s[2] + 0x80000000) % 0x100000000 - 0x80000000)
        s[1] += d - ((s[1] + 8) >> 4)
        s[0] += 1
        s[2] = transit
        s[4] = max(s[4], t - s[3])
        s[3] = t
    return st

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, -(-len(v) * q // 100) - 1))] if v else float("nan")

try:
    st = capture(P + ".pcap")
    rx = json.load(open(P + ".rx.json"))
    u, s = map(float, open(P + ".cpu").read().split()[-2:])
except (OSError, ValueError, KeyError) as e:
    print(f"{calls:<6} {sender:<8} no result ({e})")
    sys.exit(0)
streams = [x for x in st.values() if x[0] >= 2]
sent = sum(x[0] for x in st.values())
# Streams sending at once, at most (from each stream's first and last packet).
ev = sorted([(x[5], 1) for x in streams] + [(x[3], -1) for x in streams])
peak = cur = 0
for _, e in ev:
    cur += e
    peak = max(peak, cur)
c = rx["counters"]
got = c["media_packets_received"] + c["media_unmatched"]
loss = 100.0 * (sent - got) / sent if sent else float("nan")
jit = pct([(x[1] >> 4) / 8.0 for x in streams], 99)  # ms
gaps = [x[4] / 1e6 for x in streams]
gap99, gapmax = pct(gaps, 99), max(gaps, default=float("nan"))
core = (u + s) / (sent / 50 / 1000) if sent else float("nan")  # 50 packets a stream-second
failed = None
if sender == "sipp":
    try:
        rows = [l.rstrip("\n").split(";") for l in open(P + ".stat.csv") if l.strip()]
        failed = int(float(dict(zip(rows[0], rows[-1]))["FailedCall(C)"]))
    except (OSError, ValueError, KeyError, IndexError):
        pass
    check = "-"
else:
    try:
        failed = json.load(open(P + ".tx.json"))["counters"]["calls_failed"]
    except (OSError, ValueError, KeyError):
        pass
    m = rx["media"]
    check = f"{m['jitter']['p99_ms']:.2f}/{m['longest_gap']['p99_ms']:.1f}"
notes = []
if len(streams) < total:
    notes.append(f"{len(streams)} streams of the {total} calls asked")
if failed is None or failed * 1000 > total:
    notes.append(f"failed calls: {failed}")
ok = loss < 0.1 and gap99 < 60.0 and not notes
if c.get("rx_dropped"):
    notes.append(f"the receiver's sockets dropped {c['rx_dropped']} datagrams (SO_RXQ_OVFL)")
try:
    for l in open(P + ".cap.out"):
        if "dropped by kernel" in l and not l.startswith("0 "):
            notes.append("capture incomplete: " + l.strip())
except OSError:
    pass
if rx["media"]["streams"] != len(st):
    notes.append(f"the receiver answered {rx['media']['streams']} streams, the capture has {len(st)} SSRCs")
print(f"{calls:<6} {sender:<8} {peak:5d} {len(streams):7d} {loss:7.3f} {jit:7.2f} {gap99:7.1f} "
      f"{gapmax:7.1f} {core:8.3f} {'?' if failed is None else failed:>6}  {check:<15} "
      f"{'pass' if ok else 'FAIL'}")
for x in notes:
    print(f"       ({x})")
EOF
            [ "$KEEP" = 1 ] || rm -f "$W/$tag.pcap"  # ~70 bytes a packet: 250 MB at 2,000 calls
        done
    done
done
echo "peak: streams sending at once; streams: SSRCs sender -> receiver; loss%: of their packets on the wire, those"
echo "the receiver did not read; jit99: RFC 3550 jitter per stream, p99 (ms); gap99/gapmax: longest gap per"
echo "stream, p99/max (ms); core/1k: sender CPU-s (user+sys) per 1,000 stream-seconds sent; failed: the"
echo "sender's failed calls; rx:jit99/gap99: the receiver's own figures (imsload only: SIPp's streams share"
echo "one source address, so it cannot tell them apart). pass: loss < 0.1 %, gap99 < 60 ms (3 packet"
echo "times), every call placed and < 0.1 % failed."
