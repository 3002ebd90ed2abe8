#!/usr/bin/env bash
# What `imsload --ipsec` costs, against the lab IMS core (lab/ims/ims.sh IPSEC=1): each UE makes
# four ESP SAs (and their policies) with the P-CSCF over netlink XFRM, then registers and
# de-registers through them. Compared with the same UEs registering in clear through the same
# P-CSCF port (5060). Figures are RATIOS within one run: everything runs in a QEMU/TCG guest
# (this host's kernel has no ESP), where every absolute time is inflated many times.
#
# usage (as root, from anywhere):  bench/ipsec.sh [options]
#   --sizes "50 100"        populations for the A/B comparison
#   --rounds 5              A/B pairs per population (order alternates: ipsec,plain then
#                           plain,ipsec, so that a drift of the shared host cancels out)
#   --rate 100              offered initial registrations/s (above the 50-60/s the guest's core
#                           took in clear, so that at N=100 the phase is bound by capacity; it
#                           also holds imsload's start and the N/rate ramp)
#   --t1 2s                 imsload's SIP T1 (RFC 3261 default 500ms): the emulated core takes
#                           seconds under load, and retransmissions would mostly measure that
#   --max-sizes "200 400 600 800" then look for the largest population that registers fully with
#                           --ipsec (stops at the first that does not); "" skips it
#   --max-rate 25           offered registrations/s for that search (gentle: it is about
#                           whether they all register, not how fast)
#   --no-batch              skip the `ip -batch` reference (4 SAs + 4 policies per fake UE)
#   --batch-ues "50 100"    fake UE counts for it (default: the --sizes)
#   --mem 2048 --timeout 1500   guest memory (MiB) and overall guest time limit (s)
#   --no-copy               use /tmp/ipsec-bench/bin as it is (default: copy imsload and
#                           imshss from target/release first, so that a rebuild cannot change
#                           them mid-run)
# Output: one line per run, then medians and the ratios ipsec/plain; also saved on the host to
# /tmp/ipsec-bench/results-<UTC time>.txt. Exit code: 0, or 1 when a run of the A/B part did
# not register every UE, or run.sh's (125: no guest possible here).
#
# How it measures (per run, each on a freshly started lab, so no run inherits another's state:
# the P-CSCF keeps a de-registered IPsec UE's ports and SAs until expiry + 30 s, and keeps the
# plain UEs' contacts too):
#   - registration phase: from imsload's start (its report's started_utc, taken before it binds
#     its sockets) to the last packet on the UEs' veth (uv0) before imsload's series says
#     "calling" (a 10 Hz sampler reads /proc/<imsload>/net/dev, so up to ~0.1 s late); the call
#     phase (--cps 0) is silent, so the last packet before it is the last 200 OK
#   - CPU: imsload (/proc/PID/stat, from its exec: its start, and its sockets, three per UE with
#     --ipsec and one in clear, count in the registration phase), the P-CSCF (every process of
#     its process group) and the rest of the core (I-CSCF, S-CSCF, HSS), read when the series
#     shows the call phase (so the registration phase alone; the silent call phase adds
#     nothing) and when the report file appears (the de-registration phase; imsload then still
#     draws its PNG plot, which costs seconds in the guest and is left out on purpose)
#   - the kernel's work for a packet crossing the veth is mostly done in the SENDER's context
#     (veth delivers in its transmit path): imsload's system time includes the P-CSCF side's
#     ESP input and policy checks for what imsload sends, and the P-CSCF's includes the UE side's
# Per the lab (tests/ims_lab.rs): UEs on 10.45.0.10.. in the UE namespace, P-CSCF 10.45.0.1:5060,
# CHILDREN=1 (each of the P-CSCF's 2*IPSEC_MAX IPsec ports gets CHILDREN receiver processes),
# IPSEC_MAX = N + 10, the lab used as it is. (Beyond IPSEC_MAX 100 its client ports 5100+i run
# into its server ports 5200+i; Kamailio then listens once on each shared port and 200 UEs still
# registered fully in a trial: a port serves as one UE's client port and another's server port.)
# Beyond 240 UEs the /24 runs out of addresses and UEs share them (imsload --ue-ips 240).
set -uo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
WORK=/tmp/ipsec-bench
BIN=$WORK/bin
DOMAIN=ims.mnc001.mcc001.3gppnetwork.org
LAB_DIR=$ROOT/lab/ims
UE_IPS_MAX=240              # 10.45.0.10 .. 10.45.0.249 (the P-CSCF's UE side is 10.45.0.0/24)

SIZES="50 100" ROUNDS=5 RATE=100 T1=2s MAX_SIZES="200 400 600 800" MAX_RATE=25 BATCH=1 BATCH_UES=
MEM=2048 TIMEOUT=1500 COPY=1 IN_GUEST=0
ARGS=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --t1) T1=$2; shift 2 ;;
    --max-sizes) MAX_SIZES=$2; shift 2 ;;
    --max-rate) MAX_RATE=$2; shift 2 ;;
    --no-batch) BATCH=0; shift ;;
    --batch-ues) BATCH_UES=$2; shift 2 ;;
    --mem) MEM=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --no-copy) COPY=0; shift ;;
    --in-guest) IN_GUEST=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "ipsec.sh: unknown option $1 (--help)" >&2; exit 2 ;;
  esac
done
BATCH_UES=${BATCH_UES:-$SIZES}
for n in $SIZES $MAX_SIZES $ROUNDS $BATCH_UES; do
  case "$n" in ''|*[!0-9]*) echo "ipsec.sh: not a number: $n" >&2; exit 2 ;; esac
done

# ------------------------------------------------------------------------------- on the host
if [ "$IN_GUEST" = 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "ipsec.sh: needs root (lab/kguest/run.sh does)" >&2; exit 125; }
  mkdir -p "$BIN"
  if [ "$COPY" = 1 ]; then
    for b in imsload imshss; do
      [ -x "$ROOT/target/release/$b" ] || { echo "ipsec.sh: no $ROOT/target/release/$b (cargo build --release)" >&2; exit 2; }
      cp "$ROOT/target/release/$b" "$BIN/$b.tmp" && mv "$BIN/$b.tmp" "$BIN/$b"
    done
  fi
  for b in imsload imshss; do
    [ -x "$BIN/$b" ] || { echo "ipsec.sh: no $BIN/$b" >&2; exit 2; }
  done
  out=$WORK/results-$(date -u +%Y%m%dT%H%M%SZ).txt
  {
    echo "# bench/ipsec.sh ${ARGS[*]}"
    echo "# host: $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) (the guest shares these cores)"
    echo "# binaries: $(stat -c '%n %y' "$BIN/imsload" "$BIN/imshss" | tr '\n' ';')"
  } | tee "$out"
  # The guest gets its settings as arguments (run.sh passes no environment but PATH).
  "$ROOT/lab/kguest/run.sh" --timeout "$TIMEOUT" --mem "$MEM" -- \
    bash "$SELF" --in-guest "${ARGS[@]}" 2>&1 | tee -a "$out"
  rc=${PIPESTATUS[0]}
  echo "# host load average after: $(cut -d' ' -f1-3 /proc/loadavg); guest exit $rc; saved in $out" | tee -a "$out"
  exit "$rc"
fi

# ------------------------------------------------------------------------------ in the guest
G=$WORK/guest              # in the guest's memory (the host tree is read-only under an overlay)
mkdir -p "$G"
# The guest's init leaves the open-files limit at 1024. The P-CSCF's main process holds every
# IPsec port's UDP and TCP socket (4 per IPSEC_MAX) and a socketpair per child (2 per IPsec UDP
# port with CHILDREN=1): at IPSEC_MAX 210 it fails to fork ("socketpair failed: Too many open
# files", "Cannot fork") and exits, after ims.sh has already found it ready.
ulimit -n 65536
TICK=$(getconf CLK_TCK)
RUNS=$G/runs.tsv
: >"$RUNS"
RUNDIR= BATCH_NS=
AB_INCOMPLETE=0

# A sleep without a fork per call (the sampler runs at 10 Hz on an emulated CPU).
mkfifo "$G/sleep.fifo"
exec {SLEEP_FD}<>"$G/sleep.fifo"
nap() { read -r -t "$1" -u "$SLEEP_FD" _ || true; }

lab_stop() {
  [ -n "$RUNDIR" ] || return 0
  bash "$LAB_DIR/ims.sh" stop "$RUNDIR" >>"$G/lab.log" 2>&1 || true
  RUNDIR=
}
cleanup() {
  lab_stop
  [ -z "$BATCH_NS" ] || ip netns del "$BATCH_NS" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# lab_start N IPSEC_MAX: a fresh lab (IPsec on, CHILDREN=1, N subscribers) with the UEs'
# addresses in place; sets RUNDIR, UENS, PG (the P-CSCF's process group), CORE_PGS, UE_IPS
lab_start() {
  local n=$1 max=$2 i
  RUNDIR=$G/lab-$n-$((++LAB_SEQ))
  LAST_RUNDIR=$RUNDIR
  rm -rf "$RUNDIR"
  if ! IPSEC=1 IPSEC_MAX=$max CHILDREN=1 NUSERS=$n IMSHSS=$BIN/imshss READY_TIMEOUT=240 \
      bash "$LAB_DIR/ims.sh" start "$RUNDIR" >>"$G/lab.log" 2>&1; then
    LAB_ERR="lab start failed: $(tail -n 3 "$G/lab.log" | tr '\n' ' ')"
    RUNDIR=
    return 1
  fi
  UENS=$(cat "$RUNDIR/ue-netns")
  PG=$(cat "$RUNDIR/pcscf.pid")
  CORE_PGS="$(cat "$RUNDIR/icscf.pid") $(cat "$RUNDIR/scscf.pid") $(cat "$RUNDIR/hss.pid")"
  UE_IPS=$(( n < UE_IPS_MAX ? n : UE_IPS_MAX ))
  for ((i = 0; i < UE_IPS; i++)); do echo "addr add 10.45.0.$((10 + i))/24 dev uv0"; done |
    ip -n "$UENS" -batch - || { LAB_ERR="could not add the UE addresses"; return 1; }
  # ims.sh finds the P-CSCF ready while it may still be forking receivers (2*IPSEC_MAX of
  # them); one that fails to fork exits then. Wait until its process count holds for a second.
  local prev=-1
  for ((i = 0; i < 60; i++)); do
    PCSCF_PROCS=$(ps -e -o pgid= | awk -v g="$PG" '$1 == g' | wc -l)
    [ "$PCSCF_PROCS" != "$prev" ] || break
    prev=$PCSCF_PROCS
    nap 1
  done
  if [ "$PCSCF_PROCS" = 0 ]; then
    LAB_ERR="the P-CSCF exited after start: $(grep -E 'ERROR|CRITICAL' "$RUNDIR/pcscf.log" | grep -vE 'clean_sa|clean_policy' | tail -n 2 | tr '\n' ' ')"
    return 1
  fi
  MEM_USED=$(free -m | awk '/^Mem:/ {print $3}')
}

# CPU ticks (utime+stime) of the P-CSCF's process group and of the other three groups
core_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$PG" -v c="$CORE_PGS" '
    BEGIN { n = split(c, a, " "); for (i = 1; i <= n; i++) core[a[i]] = 1 }
    { sub(/^.*\) /, ""); t = $12 + $13; if ($3 == p) P += t; else if ($3 in core) C += t }
    END { print P + 0, C + 0 }'
}
proc_ticks() { # PID: its utime+stime (all threads)
  local line a
  read -r line <"/proc/$1/stat" 2>/dev/null || { echo 0; return; }
  read -r -a a <<<"${line##*) }"
  echo $((a[11] + a[12]))
}

# run_one MODE N ROUND RATE: one imsload run on a fresh lab; a line to stdout and to $RUNS.
# Returns 1 when not every UE registered.
run_one() {
  local mode=$1 n=$2 round=$3 rate=$4 max=$(($2 + 10))
  local tag="$mode-$n-$round" extra
  LAB_ERR=
  if ! lab_start "$n" "$max"; then
    printf '%-6s N=%-4s round %s: %s\n' "$mode" "$n" "$round" "$LAB_ERR"
    lab_stop
    return 1
  fi
  if [ "$mode" = ipsec ]; then extra=(--ipsec); else extra=(--ue-ports users); fi
  local rep=$G/$tag.json ser=$G/$tag.csv log=$G/$tag.log
  rm -f "$rep" "$ser"
  local pc0 pk0
  read -r pc0 pk0 <<<"$(core_ticks)"
  # --ue-ports users: in clear, too, each UE has its own socket on its own address, as with
  # --ipsec (which gives each UE three); a bounded run: SIGTERM (imsload then de-registers and
  # takes its SAs away) after 200 s, SIGKILL 20 s later
  timeout -k 20 200 ip netns exec "$UENS" "$BIN/imsload" --target 10.45.0.1:5060 \
    --domain "$DOMAIN" --users-file "$RUNDIR/subscribers.csv" --bind 10.45.0.10 \
    --ue-ips "$UE_IPS" "${extra[@]}" --reg-rate "$rate" --t1 "$T1" --cps 0 --duration 3s \
    --drain 60s --quiet --report "$rep" --series "$ser" >"$log" 2>&1 &
  local tpid=$! pid= i=0
  # `timeout` forks; `ip netns exec` execs imsload: imsload is timeout's child
  while [ -z "$pid" ] && [ $((i++)) -lt 100 ]; do
    pid=$(pgrep -P "$tpid" | head -n 1)
    [ -n "$pid" ] || nap 0.02
  done
  local now pk last_pk= t_last= reg_end= name rxp txp L
  local ci_reg= pc_reg= pk_reg= ci_end= pc_end= pk_end= mem_reg=
  while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
    now=$EPOCHREALTIME
    # packets on the UEs' link, as seen from imsload's own namespace
    pk=
    while IFS=' :' read -r name _ rxp _ _ _ _ _ _ _ txp _; do
      [ "$name" = uv0 ] && { pk=$((rxp + txp)); break; }
    done 2>/dev/null <"/proc/$pid/net/dev"
    if [ -n "$pk" ]; then
      if [ -z "$last_pk" ]; then last_pk=$pk
      elif [ "$pk" != "$last_pk" ]; then
        [ -n "$reg_end" ] || t_last=$now
        last_pk=$pk
      fi
    fi
    if [ -z "$reg_end" ] && [ -s "$ser" ]; then
      mapfile -t L <"$ser"
      case "${L[-1]}" in *,calling,*|*,draining,*|*,de-registering,*|*,done,*)
        # the registration phase is over (all initial REGISTERs concluded): CPU so far
        reg_end=$t_last
        ci_reg=$(proc_ticks "$pid")
        read -r pc_reg pk_reg <<<"$(core_ticks)"
        mem_reg=$(free -m | awk '/^Mem:/ {print $3}') ;;
      esac
    fi
    if [ -s "$rep" ]; then
      # the report is written before the plots: the run's CPU, without the drawing
      ci_end=$(proc_ticks "$pid")
      read -r pc_end pk_end <<<"$(core_ticks)"
      break
    fi
    nap 0.1
  done
  wait "$tpid"
  local rc=$?
  local row
  if [ ! -s "$rep" ]; then
    printf '%-6s N=%-4s round %s: no report (exit %s): %s\n' "$mode" "$n" "$round" "$rc" \
      "$(tail -n 3 "$log" | tr '\n' ' ')"
    lab_stop
    return 1
  fi
  # the figures, per UE, in ms of CPU; the registration phase in s
  local t_start
  t_start=$(date -d "$(jq -r .started_utc "$rep")" +%s.%N)
  row=$(jq -r --arg mode "$mode" --argjson n "$n" --arg round "$round" \
      --arg t0 "$t_start" --arg t1 "${reg_end:-}" --argjson tick "$TICK" \
      --arg ci0 0 --arg ci1 "${ci_reg:-}" --arg ci2 "${ci_end:-}" \
      --arg pc0 "$pc0" --arg pc1 "${pc_reg:-}" --arg pc2 "${pc_end:-}" \
      --arg pk0 "$pk0" --arg pk1 "${pk_reg:-}" --arg pk2 "${pk_end:-}" '
    def num: if . == "" then null else tonumber end;
    def ms($a; $b): if ($a|num) == null or ($b|num) == null then "-"
      else (((($b|num) - ($a|num)) / $tick * 1000 / $n) * 100 | round / 100) end;
    .counters as $c
    | (if ($t0|num) != null and ($t1|num) != null then (($t1|num) - ($t0|num)) else null end) as $treg
    | [$n, $mode, $round, $c.reg_ok, $c.reg_attempts, $c.dereg_ok, $c.retransmits,
       (if $treg then ($treg * 100 | round / 100) else "-" end),
       (if $treg and $treg > 0 then ($c.reg_ok / $treg * 10 | round / 10) else "-" end),
       (.rfc6076.registration_request_delay | (.p50_ms | round), (.p90_ms | round)),
       ms($ci0; $ci1), ms($pc0; $pc1), ms($pk0; $pk1),
       ms($ci1; $ci2), ms($pc1; $pc2), ms($pk1; $pk2),
       $c.ipsec_sa_setups, $c.ipsec_no_security_server, $c.late_actions,
       $c.reg_failed, $c.reg_timeouts] | @tsv' "$rep")
  echo "$row" >>"$RUNS"
  echo "$row" | awk -F'\t' -v procs="$PCSCF_PROCS" -v mem0="$MEM_USED" -v mem1="${mem_reg:--}" '{
    printf "%-5s N=%-4s r%s  reg %s/%s dereg %s rtx %-3s | reg phase %5s s %6s reg/s rrd p50 %5s p90 %5s ms | CPU ms/UE reg: imsload %6s P-CSCF %6s I+S+HSS %6s | dereg: %6s %6s %6s | SAs %s noSecSrv %s failed %s timeouts %s late %s | P-CSCF procs %s, guest MiB used %s/%s\n",
      $2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $21, $22, $20, procs, mem0, mem1 }'
  local ok
  ok=$(echo "$row" | cut -f4)
  [ "$rc" = 0 ] || echo "       (imsload exit $rc: $(grep -v '^$' "$log" | grep -iE 'error|fail|refus|cannot' | head -n 2 | tr '\n' ' '))"
  lab_stop
  [ "$ok" = "$n" ]
}

echo "== guest: kernel $(uname -r), $(nproc) vCPUs, $(free -m | awk '/^Mem:/ {print $2}') MiB; imsload --reg-rate $RATE --t1 $T1 --cps 0 --duration 3s"
echo "   columns: reg ok/attempts, de-reg ok, imsload retransmissions; registration phase (imsload's start"
echo "   to the last packet on the UE link) and reg/s; RRD; CPU ms per UE in the registration phase, then in the"
echo "   de-registration phase (plain UEs are challenged again on de-registration, IPsec UEs are not:"
echo "   the lab's S-CSCF takes an integrity-protected de-REGISTER unchallenged)"

# --------------------------------------------------------------------- A/B: ipsec vs plain
LAB_SEQ=0
# A warm-up pair, not counted: the guest's first run reads every binary over 9p into its page
# cache, and its first SA instantiates (and self-tests) the kernel's crypto (seen: the first
# run of a boot took twice as long as the next ones).
echo "warm-up (not counted):"
RUNS_KEPT=$RUNS RUNS=$G/warm-up.tsv
run_one ipsec 10 warm "$RATE"
run_one plain 10 warm "$RATE"
RUNS=$RUNS_KEPT
for n in $SIZES; do
  for ((r = 1; r <= ROUNDS; r++)); do
    if [ $((r % 2)) = 1 ]; then order="ipsec plain"; else order="plain ipsec"; fi
    for mode in $order; do
      run_one "$mode" "$n" "$r" "$RATE" || AB_INCOMPLETE=1
    done
  done
done

# Medians per population and mode, the ratio of the medians, and the median of the per-round
# ratios (a round's ipsec and plain runs ran back to back, so they share the host's load).
echo
echo "== medians over rounds; ratio ipsec/plain of the medians, and median of the per-round ratios"
awk -F'\t' -v order="$SIZES" '
  function median(v, n,   i, j, t) {
    if (n == 0) return "-"
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j > 0 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  BEGIN {
    nk = split("8 9 10 11 12 13 14 15 16 17 7", cols, " ")
    split("reg-phase-s reg/s rrd-p50-ms rrd-p90-ms imsload-ms/UE(reg) P-CSCF-ms/UE(reg) I+S+HSS-ms/UE(reg) imsload-ms/UE(dereg) P-CSCF-ms/UE(dereg) I+S+HSS-ms/UE(dereg) retransmissions", names, " ")
  }
  {
    sizes[$1] = 1; rounds[$1, $3] = 1
    for (k = 1; k <= nk; k++) { x = $(cols[k]); if (x != "-" && x != "") { have[$1, $2, $3, k] = 1; val[$1, $2, $3, k] = x + 0 } }
    runs[$1, $2]++; if ($4 != $1) short[$1, $2]++
  }
  END {
    ns = split(order, sorted, " ")
    for (si = 1; si <= ns; si++) {
      s = sorted[si]; if (!(s in sizes)) continue
      printf "N=%s (runs: ipsec %d, plain %d; not all registered: ipsec %d, plain %d)\n", s, runs[s, "ipsec"], runs[s, "plain"], short[s, "ipsec"] + 0, short[s, "plain"] + 0
      printf "  %-22s %10s %10s %8s %14s\n", "", "ipsec", "plain", "ratio", "paired ratio"
      for (k = 1; k <= nk; k++) {
        na = nb = nr = 0; split("", va); split("", vb); split("", vr)
        for (rk in rounds) {
          split(rk, rr, SUBSEP); if (rr[1] != s) continue; r = rr[2]
          if ((s, "ipsec", r, k) in have) va[++na] = val[s, "ipsec", r, k]
          if ((s, "plain", r, k) in have) vb[++nb] = val[s, "plain", r, k]
          if (((s, "ipsec", r, k) in have) && ((s, "plain", r, k) in have) && val[s, "plain", r, k] != 0)
            vr[++nr] = val[s, "ipsec", r, k] / val[s, "plain", r, k]
        }
        a = median(va, na); b = median(vb, nb); m = median(vr, nr)
        ratio = (a != "-" && b != "-" && b != 0) ? sprintf("%.2f", a / b) : "-"
        printf "  %-22s %10s %10s %8s %14s\n", names[k], a, b, ratio, (m == "-") ? "-" : sprintf("%.2f", m)
      }
    }
  }' "$RUNS"
# what --ipsec adds to imsload's own CPU per UE (SA set-up and removal, two more sockets, ESP)
awk -F'\t' -v order="$SIZES" '
  $12 != "-" { s[$1, $2] += $12; c[$1, $2]++ } $15 != "-" { d[$1, $2] += $15; e[$1, $2]++ }
  END { ns = split(order, o, " "); for (i = 1; i <= ns; i++) { n = o[i]
    if (c[n, "ipsec"] && c[n, "plain"] && e[n, "ipsec"] && e[n, "plain"])
      printf "N=%s: imsload CPU per UE, ipsec minus plain (means): registration %+.2f ms, de-registration %+.2f ms\n",
        n, s[n, "ipsec"] / c[n, "ipsec"] - s[n, "plain"] / c[n, "plain"], d[n, "ipsec"] / e[n, "ipsec"] - d[n, "plain"] / e[n, "plain"] } }' "$RUNS"

# ------------------------------------------------- reference: the same SAs made by `ip -batch`
if [ "$BATCH" = 1 ]; then
  echo
  echo "== ip -batch reference: N fake UEs x (4 SAs + 4 policies, hmac-sha-1-96/null), added, read"
  echo "   back (get: what an ip xfrm command costs without making anything: ip opens a netlink socket"
  echo "   per xfrm command, imsload keeps one) and deleted, one command per object, in a fresh namespace"
  for bn in $BATCH_UES; do
    BATCH_NS=ipsec-bench-$$
    ip netns add "$BATCH_NS" && ip -n "$BATCH_NS" link set lo up
    # the four transport-mode SAs of a UE as imsload makes them (UE:port-c -> P:port-s,
    # UE:port-s <- P:port-c, and the two opposite ones), each with a policy selecting its flow
    awk -v n="$bn" -v del="$G/batch-del.txt" -v get="$G/batch-get.txt" 'BEGIN {
      k = "0x" sprintf("%040d", 0)
      for (u = 0; u < n; u++) {
        ue = sprintf("10.46.%d.%d", int(u / 250), u % 250 + 1); p = "10.46.255.1"
        uc = 40000 + 2 * u; us = uc + 1; pc = 10000 + u; ps = 20000 + u
        split(ue " " p " " uc " " ps " out|" ue " " p " " us " " pc " out|" p " " ue " " pc " " us " in|" p " " ue " " ps " " uc " in", f, "|")
        for (i = 1; i <= 4; i++) {
          split(f[i], a, " "); spi = 1048576 * i + u
          printf "xfrm state add src %s dst %s proto esp spi %d mode transport auth-trunc hmac(sha1) %s 96 enc ecb(cipher_null) \047\047 sel src %s dst %s sport %s dport %s proto udp\n", a[1], a[2], spi, k, a[1], a[2], a[3], a[4]
          printf "xfrm policy add src %s dst %s sport %s dport %s proto udp dir %s tmpl src %s dst %s proto esp spi %d mode transport\n", a[1], a[2], a[3], a[4], a[5], a[1], a[2], spi
          printf "xfrm policy delete src %s dst %s sport %s dport %s proto udp dir %s\nxfrm state delete src %s dst %s proto esp spi %d\n", a[1], a[2], a[3], a[4], a[5], a[1], a[2], spi > del
          printf "xfrm policy get src %s dst %s sport %s dport %s proto udp dir %s\nxfrm state get src %s dst %s proto esp spi %d\n", a[1], a[2], a[3], a[4], a[5], a[1], a[2], spi > get
        }
      }
    }' >"$G/batch-add.txt"
    for rep in 1 2; do
      for what in add get del; do
        /usr/bin/time -o "$G/batch.time" -f '%e %U %S' \
          ip -n "$BATCH_NS" -batch "$G/batch-$what.txt" >/dev/null 2>"$G/batch.err"
        [ -s "$G/batch.err" ] && echo "   ip -batch $what: $(head -n 2 "$G/batch.err" | tr '\n' ' ')"
        left=$(ip -n "$BATCH_NS" xfrm state | grep -c '^src')
        tail -n 1 "$G/batch.time" | awk -v n="$bn" -v w="$what" -v r="$rep" -v left="$left" '{
          printf "   N=%-4s #%s %-3s wall %.2f s, CPU %.2f s (user %.2f sys %.2f) = %.2f ms CPU per UE; SAs left: %s\n",
            n, r, w, $1, $2 + $3, $2, $3, ($2 + $3) * 1000 / n, left }'
      done
    done
    ip netns del "$BATCH_NS"; BATCH_NS=
  done
fi

# ---------------------------------------------------- the largest population that registers
if [ -n "$MAX_SIZES" ]; then
  echo
  echo "== largest population registering with --ipsec (IPSEC_MAX = N+10, CHILDREN=1, --reg-rate $MAX_RATE)"
  largest=none
  for n in $MAX_SIZES; do
    if run_one ipsec "$n" max "$MAX_RATE"; then
      largest=$n
    else
      echo "   stops at N=$n; the P-CSCF's errors, and the kernel's if it ran out of memory:"
      grep -E 'ERROR|CRITICAL' "$LAST_RUNDIR/pcscf.log" 2>/dev/null | grep -vE 'clean_sa|clean_policy' |
        sed -E 's/^ *[0-9]+\([0-9]+\) //' | sort | uniq -c | sort -rn | head -n 4 | sed 's/^/     /'
      dmesg 2>/dev/null | grep -E 'Out of memory|oom-kill:' | tail -n 2 | sed 's/^/     kernel: /'
      break
    fi
  done
  echo "   largest tried that registered fully: $largest (P-CSCF processes and guest memory in the lines above)"
fi

exit "$AB_INCOMPLETE"
