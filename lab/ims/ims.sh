#!/usr/bin/env bash
# The lab IMS core: imshss (Diameter Cx HSS, this crate) + Kamailio P-CSCF, I-CSCF, S-CSCF,
# all on loopback inside a network namespace of their own.
#
# usage: lab/ims/ims.sh start|stop|status|configs RUNDIR
#   start   create the namespace, write configs into RUNDIR, start imshss then the S-, I- and
#           P-CSCF (each in its own process group, each CSCF in a private mount namespace
#           whose /etc/hosts names the lab hosts), wait until every CSCF answers OPTIONS and
#           both Diameter peers (I-CSCF, S-CSCF) have opened their Cx connection to the HSS
#   stop    SIGTERM each process group, SIGKILL after 5 s, kill what is left in the
#           namespace, delete the namespace
#   status  namespace, processes, Diameter peers
#   configs write the configs, subscribers, I-CSCF database and RUNDIR/start.sh (`start.sh
#           ELEMENT` runs one element with them) for elements that run elsewhere, each on its
#           own host with the addresses below (lab/migration/lab.sh up --ims: one QEMU guest
#           each, RUNDIR as their config disk at GUEST_DIR, runtime files in GUEST_RUN)
#
# Inside the namespace (only there):
#   HSS    127.0.0.20:3868 (TCP, hss.DOMAIN)
#   P-CSCF 127.0.0.21:5060 (UDP+TCP, pcscf.DOMAIN)   <- UEs send everything here
#   I-CSCF 127.0.0.22:4060 and :5060 (icscf.DOMAIN, DOMAIN)
#   S-CSCF 127.0.0.23:6060 (scscf.DOMAIN)
# Run a command there with:  ip netns exec "$(cat RUNDIR/netns)" COMMAND...
#
# Environment (defaults):
#   NS=imslab-<hash of RUNDIR>   namespace name (RUNDIR/netns records it)
#   DOMAIN=ims.mnc001.mcc001.3gppnetwork.org
#   NUSERS=100                   generated subscribers (when SUBSCRIBERS is not given):
#                                IMSI 001010000000001.., impu sip:IMSI@DOMAIN, impi IMSI@DOMAIN,
#                                k = 000102030405060708090a0b0c0d + %04x(i), opc = OPC, amf
#                                8000, sqn 0, tel tel:+1555%07d(i) (a second IMPU in the
#                                implicit set); written to RUNDIR/subscribers.csv
#   OPC=cd63cb71954a9f4e48a5994e37a02baf
#   SUBSCRIBERS=FILE             use this subscriber CSV (impu,impi,password,k,opc,amf,sqn[,tel])
#   IMSHSS=path of imshss        default: imshss on PATH, else target/release/imshss
#   CHILDREN=4 DBGLEVEL=2 READY_TIMEOUT=30 (s)
#   ICSCF_ACCEPT_UNKNOWN_PEERS=0 1: the I-CSCF's Diameter stack (cdp, 127.0.0.22:3869) accepts a
#                                CER from any Origin-Host, as the reference kamailio-ims config
#                                does; what a Diameter probe (imsprobe) needs to reach it. 0:
#                                only the HSS is a peer; cdp ignores other CERs (no CEA)
#   IPSEC=0                      1: the P-CSCF does 3GPP sec-agree (ims_ipsec_pcscf: ipsec_create on
#                                the 401, ipsec_forward on the 200 and towards the UE) on a second
#                                address, 10.45.0.1, of a veth pair to the UEs' own namespace
#                                NS-ue (UE addresses 10.45.0.2-254; RUNDIR/ue-netns records it).
#                                Needs a kernel with ESP (lab/kguest/run.sh on a machine without)
#   IPSEC_MAX=32                 simultaneous IPsec UEs (ipsec_max_connections)
#   REAUTH=0                     1: the S-CSCF challenges every refresh REGISTER, protected or
#                                not (a de-registration through the SAs it still takes at once),
#                                so that with IPSEC=1 every refresh renews the UE's SAs
#                                (TS 33.203 7.4)
#   MIN_EXPIRES=60               the S-CSCF's shortest registration (min_expires), seconds
#   RTPENGINE=0                  1: the P-CSCF anchors every call's media through an rtpengine
#                                (Debian rtpengine-daemon, user-space forwarding) started in the
#                                namespace before it: NG control on PCSCF_IP:2223, media on the
#                                P-CSCF's UE-side address (PCSCF_IP, or 10.45.0.1 with IPSEC=1),
#                                ports RTPENGINE_PORTS; its log is RUNDIR/rtpengine.log. Media
#                                is not sent through the UEs' SAs (TS 33.203 protects SIP only)
#   RTPENGINE_PORTS=30000-30999  rtpengine's media ports (two per call leg)
#                                (configs: the P-CSCF's start.sh starts it too, on PCSCF_IP)
#   HSS_IP PCSCF_IP ICSCF_IP SCSCF_IP   the elements' addresses (127.0.0.20-23)
#   GUEST_DIR=/mnt GUEST_RUN=/run/ims   (configs) where the elements see RUNDIR, and where they
#                                write runtime files
#   SHM_MB=128 PKG_MB=16         Kamailio's shared and per-process memory (-m, -M); at a few
#                                hundred registrations/s the CSCFs' shared memory is what runs
#                                out first (docs/ims-lab.md, "Registrations per second")
#
# Needs root (namespaces, mounts) and the Debian packages kamailio, kamailio-ims-modules,
# kamailio-presence-modules, kamailio-sqlite-modules, sqlite3, sipsak, iproute2, util-linux.
# Nothing outside RUNDIR and the namespace is touched: /etc/hosts is bind-mounted over only in
# the CSCFs' private mount namespaces.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CMD=${1:-}
[ $# -ge 2 ] || { echo "usage: $0 start|stop|status|configs RUNDIR" >&2; exit 2; }
RUNDIR=$(realpath -m "$2")
DOMAIN=${DOMAIN:-ims.mnc001.mcc001.3gppnetwork.org}
NUSERS=${NUSERS:-100}
OPC=${OPC:-cd63cb71954a9f4e48a5994e37a02baf}
CHILDREN=${CHILDREN:-4}
DBGLEVEL=${DBGLEVEL:-2}
READY_TIMEOUT=${READY_TIMEOUT:-30}
SHM_MB=${SHM_MB:-128}
ICSCF_ACCEPT_UNKNOWN_PEERS=${ICSCF_ACCEPT_UNKNOWN_PEERS:-0}
case "$ICSCF_ACCEPT_UNKNOWN_PEERS" in 0|1) ;; *)
  echo "ims.sh: ICSCF_ACCEPT_UNKNOWN_PEERS=$ICSCF_ACCEPT_UNKNOWN_PEERS: give 0 or 1" >&2; exit 2 ;;
esac
PKG_MB=${PKG_MB:-16}
IPSEC=${IPSEC:-0}
case "$IPSEC" in 0|1) ;; *) echo "ims.sh: IPSEC=$IPSEC: give 0 or 1" >&2; exit 2 ;; esac
IPSEC_MAX=${IPSEC_MAX:-32}
REAUTH=${REAUTH:-0}
case "$REAUTH" in 0|1) ;; *) echo "ims.sh: REAUTH=$REAUTH: give 0 or 1" >&2; exit 2 ;; esac
MIN_EXPIRES=${MIN_EXPIRES:-60}
[[ "$MIN_EXPIRES" =~ ^[0-9]+$ ]] ||
  { echo "ims.sh: MIN_EXPIRES=$MIN_EXPIRES: give whole seconds, e.g. 60" >&2; exit 2; }
RTPENGINE=${RTPENGINE:-0}
case "$RTPENGINE" in 0|1) ;; *) echo "ims.sh: RTPENGINE=$RTPENGINE: give 0 or 1" >&2; exit 2 ;; esac
RTPENGINE_PORTS=${RTPENGINE_PORTS:-30000-30999}
[[ "$RTPENGINE_PORTS" =~ ^[0-9]+-[0-9]+$ ]] ||
  { echo "ims.sh: RTPENGINE_PORTS=$RTPENGINE_PORTS: give FIRST-LAST, e.g. 30000-30999" >&2; exit 2; }
RTPENGINE_NG_PORT=2223
PCSCF_UE_IP=10.45.0.1
HSS_IP=${HSS_IP:-127.0.0.20} PCSCF_IP=${PCSCF_IP:-127.0.0.21}
ICSCF_IP=${ICSCF_IP:-127.0.0.22} SCSCF_IP=${SCSCF_IP:-127.0.0.23}
HSS_PORT=3868 SCSCF_PORT=6060
XSD_SRC=/usr/share/doc/kamailio/examples/ims/scscf/CxDataType_Rel7.xsd

if [ -z "${NS:-}" ]; then
  if [ -s "$RUNDIR/netns" ]; then NS=$(cat "$RUNDIR/netns")
  else NS="imslab-$(printf '%s' "$RUNDIR" | cksum | cut -d' ' -f1)"; fi
fi

die() { echo "ims.sh: $*" >&2; exit 1; }
log() { echo "ims.sh: $*" >&2; }
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$NS"; }
in_ns() { ip netns exec "$NS" "$@"; }

find_imshss() {
  if [ -n "${IMSHSS:-}" ]; then echo "$IMSHSS"; return; fi
  if command -v imshss >/dev/null 2>&1; then command -v imshss; return; fi
  echo "$ROOT/target/release/imshss"
}

check_prereqs() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespace, bind mount of /etc/hosts)"
  local missing=() moddir
  moddir=$(ls -d /usr/lib/*/kamailio/modules 2>/dev/null | head -n1 || true)
  [ -n "$moddir" ] || moddir=/usr/lib/kamailio/modules
  command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
  [ -f "$moddir/ims_registrar_scscf.so" ] || missing+=(kamailio-ims-modules)
  [ -f "$moddir/presence.so" ] || missing+=(kamailio-presence-modules)
  [ -f "$moddir/db_sqlite.so" ] || missing+=(kamailio-sqlite-modules)
  [ -f "$XSD_SRC" ] || missing+=("kamailio (for $XSD_SRC)")
  command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
  command -v sipsak >/dev/null 2>&1 || missing+=(sipsak)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
  if [ "$RTPENGINE" = 1 ]; then
    command -v rtpengine >/dev/null 2>&1 || missing+=(rtpengine-daemon)
    [ -f "$moddir/rtpengine.so" ] || missing+=("kamailio (for rtpengine.so)")
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    die "missing Debian package(s): ${missing[*]} (apt-get install --no-install-recommends ${missing[*]}, or bash .ci/setup)"
  fi
  [ -x "$(find_imshss)" ] || die "no imshss binary at $(find_imshss): cargo build --release --bin imshss (or set IMSHSS)"
}

gen_subscribers() {
  local out=$1
  awk -v n="$NUSERS" -v d="$DOMAIN" -v opc="$OPC" 'BEGIN {
    print "impu,impi,password,k,opc,amf,sqn,tel"
    for (i = 1; i <= n; i++) {
      imsi = sprintf("00101%010d", i)
      printf "sip:%s@%s,%s@%s,,000102030405060708090a0b0c0d%04x,%s,8000,000000000000,tel:+1555%07d\n", imsi, d, imsi, d, i, opc, i
    }
  }' >"$out"
}

write_configs() {
  mkdir -p "$RUNDIR/cfg"
  cat >"$RUNDIR/hosts" <<EOF
127.0.0.1 localhost
$HSS_IP hss.$DOMAIN
$PCSCF_IP pcscf.$DOMAIN
$ICSCF_IP icscf.$DOMAIN $DOMAIN
$SCSCF_IP scscf.$DOMAIN
EOF
  local name ip port accept
  for name in icscf scscf; do
    if [ $name = icscf ]; then ip=$ICSCF_IP port=3869 accept=$ICSCF_ACCEPT_UNKNOWN_PEERS
    else ip=$SCSCF_IP port=3870 accept=0; fi
    sed -e "s/@NAME@/$name/g" -e "s/@DOMAIN@/$DOMAIN/g" -e "s/@IP@/$ip/g" \
        -e "s/@ACCEPT_PORT@/$port/g" -e "s/@HSS_PORT@/$HSS_PORT/g" \
        -e "s/@ACCEPT_UNKNOWN@/$accept/g" \
        "$HERE/cdp.xml.in" >"$RUNDIR/cfg/$name.xml"
  done
  cp "$XSD_SRC" "$RUNDIR/cfg/"
  cp "$HERE/pcscf.cfg" "$HERE/icscf.cfg" "$HERE/scscf.cfg" "$RUNDIR/cfg/"
  rm -f "$RUNDIR/icscf.db"
  sed -e "s/@DOMAIN@/$DOMAIN/g" -e "s/@SCSCF_PORT@/$SCSCF_PORT/g" "$HERE/icscf.sql" |
    sqlite3 "$RUNDIR/icscf.db"
  if [ -n "${SUBSCRIBERS:-}" ]; then
    cp "$SUBSCRIBERS" "$RUNDIR/subscribers.csv"
  else
    gen_subscribers "$RUNDIR/subscribers.csv"
  fi
}

# start NAME CMD...: in its own session (pid = process group id), inside the namespace
start_proc() {
  local name=$1; shift
  setsid ip netns exec "$NS" "$@" >"$RUNDIR/$name.log" 2>&1 </dev/null &
  echo $! >"$RUNDIR/$name.pid"
}

# element_cmd NAME DIR RUN HSS: the command line (in CMD) of one element of the core, with its
# configs under DIR, its runtime files (sockets, the I-CSCF's database) under RUN, and the HSS
# binary HSS. The one place that says how each element is started, here and in the guests.
element_cmd() {
  local name=$1 dir=$2 run=$3 hss=$4
  if [ "$name" = hss ]; then
    CMD=("$hss" --listen "$HSS_IP:$HSS_PORT" --realm "$DOMAIN" --subscribers "$dir/subscribers.csv")
    return
  fi
  CMD=(kamailio -DD -E -Y "$run/run-$name" -m "$SHM_MB" -M "$PKG_MB" -f "$dir/cfg/$name.cfg"
       -A "DBGLEVEL=$DBGLEVEL" -A "CHILDREN=$CHILDREN" -A "DOMAIN=\"$DOMAIN\""
       -A "CTLSOCK=\"unix:$run/${name}_ctl\"")
  case "$name" in
    scscf) CMD+=(-A "SCSCF_IP=$SCSCF_IP" -A "CX_XSD=\"$dir/cfg/CxDataType_Rel7.xsd\""
                 -A "CDP_XML=\"$dir/cfg/scscf.xml\"" -A "MIN_EXPIRES=$MIN_EXPIRES")
           [ "$REAUTH" = 0 ] || CMD+=(-A WITH_REAUTH) ;;
    icscf) CMD+=(-A "ICSCF_IP=$ICSCF_IP" -A "DB_URL=\"sqlite:///$run/icscf.db\""
                 -A "CDP_XML=\"$dir/cfg/icscf.xml\"") ;;
    pcscf) CMD+=(-A "PCSCF_IP=$PCSCF_IP")
           [ "$RTPENGINE" = 0 ] ||
             CMD+=(-A "RTPENGINE_SOCK=\"udp:$PCSCF_IP:$RTPENGINE_NG_PORT\"") ;;
  esac
}

# rtpengine_cmd MEDIA_IP RUN: the P-CSCF's rtpengine (RTPENGINE=1), in RTPE, in the foreground:
# its NG control on PCSCF_IP, its media on MEDIA_IP, its pid file under RUN.
rtpengine_cmd() {
  RTPE=(rtpengine --config-file=none --foreground --log-stderr --table=-1
        -i "$1" -n "$PCSCF_IP:$RTPENGINE_NG_PORT"
        -m "${RTPENGINE_PORTS%-*}" -M "${RTPENGINE_PORTS#*-}" -L 6 -p "$2/rtpengine.pidfile")
}

start_kamailio() {
  local name=$1; shift
  # A runtime dir of its own: three instances starting at once each create the default
  # /var/run/kamailio if it is missing, and the losers of that race exit (seen in the kernel
  # guest, whose /run starts empty).
  mkdir -p "$RUNDIR/run-$name"
  element_cmd "$name" "$RUNDIR" "$RUNDIR" "$(find_imshss)"
  # private mount namespace: our hosts file over /etc/hosts for this process tree only
  start_proc "$name" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$RUNDIR/hosts" "${CMD[@]}" "$@"
}

# The configs of a core whose elements run elsewhere, and the script that starts each there.
cmd_configs() {
  command -v sqlite3 >/dev/null 2>&1 || die "missing sqlite3 (apt-get install sqlite3)"
  [ -f "$XSD_SRC" ] || die "missing $XSD_SRC (Debian package kamailio)"
  local gdir=${GUEST_DIR:-/mnt} grun=${GUEST_RUN:-/run/ims} name
  mkdir -p "$RUNDIR"
  write_configs
  {
    echo '#!/bin/sh'
    echo "# start.sh ELEMENT: runs one element of the lab IMS core; written by lab/ims/ims.sh configs"
    echo 'set -e'
    echo "mkdir -p $grun/run-\$1"
    echo "cp $gdir/icscf.db $grun/icscf.db"
    echo 'case "$1" in'
    for name in hss scscf icscf pcscf; do
      element_cmd "$name" "$gdir" "$grun" "$gdir/imshss"
      printf '  %s)' "$name"
      if [ "$name" = pcscf ] && [ "$RTPENGINE" = 1 ]; then
        # its rtpengine first, bound before Kamailio starts (its NG port, 0x08AF = 2223, in
        # /proc/net/udp: the guest has no ss)
        rtpengine_cmd "$PCSCF_IP" "$grun"
        printf ' %q' "${RTPE[@]}"
        printf ' >%q 2>&1 &\n' "$grun/rtpengine.log"
        printf '    n=0; while ! grep -q %q /proc/net/udp && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done\n' \
          "$(printf ':%04X ' "$RTPENGINE_NG_PORT")"
        printf '   '
      fi
      printf ' exec'
      printf ' %q' "${CMD[@]}"
      printf ' ;;\n'
    done
    echo '  *) echo "start.sh: no element $1 (hss, scscf, icscf, pcscf)" >&2; exit 2 ;;'
    echo 'esac'
  } >"$RUNDIR/start.sh"
  chmod 755 "$RUNDIR/start.sh"
}

alive() { local p; p=$(cat "$RUNDIR/$1.pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

wait_for() { # wait_for WHAT TEST-CMD...
  local what=$1; shift
  local deadline=$((SECONDS + READY_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    for p in hss scscf icscf pcscf rtpengine; do
      if [ -f "$RUNDIR/$p.pid" ] && ! alive $p; then
        log "$p exited during start-up; last lines of $RUNDIR/$p.log:"
        tail -n 25 "$RUNDIR/$p.log" >&2 || true
        return 1
      fi
    done
    if [ $SECONDS -ge $deadline ]; then
      log "timeout (${READY_TIMEOUT}s) waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

options_ok() { in_ns sipsak -s "sip:$1" -H 127.0.0.1; }   # 200 to OPTIONS
udp_bound() { in_ns ss -Hlun "src $1" | grep -q .; }     # a UDP socket bound to IP:PORT

# rtpengine for the P-CSCF, in its own process group; its media on MEDIA_IP
start_rtpengine() {
  rtpengine_cmd "$1" "$RUNDIR"
  start_proc rtpengine "${RTPE[@]}"
  # the P-CSCF's rtpengine module pings it once at start and, finding none, leaves it out
  # for a minute: it must be up first
  wait_for "rtpengine NG port" udp_bound "$PCSCF_IP:$RTPENGINE_NG_PORT"
}

cmd_start() {
  check_prereqs
  mkdir -p "$RUNDIR"
  if ns_exists; then die "namespace $NS exists already (running? stop it: $0 stop $RUNDIR)"; fi
  ip netns add "$NS"
  echo "$NS" >"$RUNDIR/netns"
  # from here on a failed start cleans up after itself
  trap 'log "start failed, cleaning up"; cmd_stop >/dev/null 2>&1 || true; exit 1' ERR
  ip -n "$NS" link set lo up
  if [ "$IPSEC" = 1 ]; then
    # the UEs' side: a namespace of their own (both ends of an SA pair cannot share one), up
    # before the P-CSCF starts, as it binds the address
    ip netns add "$NS-ue"
    echo "$NS-ue" >"$RUNDIR/ue-netns"
    ip link add pv0 netns "$NS" type veth peer name uv0 netns "$NS-ue"
    ip -n "$NS" addr add "$PCSCF_UE_IP/24" dev pv0
    ip -n "$NS" link set pv0 up
    ip -n "$NS-ue" link set lo up
    ip -n "$NS-ue" link set uv0 up
  fi
  write_configs
  local t0=$SECONDS
  element_cmd hss "$RUNDIR" "$RUNDIR" "$(find_imshss)"
  start_proc hss "${CMD[@]}"
  wait_for "imshss listening" grep -q "listening on" "$RUNDIR/hss.log"
  start_kamailio scscf
  start_kamailio icscf
  local pcscf_args=()
  if [ "$IPSEC" = 1 ]; then
    pcscf_args+=(-A WITH_IPSEC -A "PCSCF_UE_IP=$PCSCF_UE_IP"
      -A "PCSCF_UE_IP_STR=\"$PCSCF_UE_IP\"" -A "IPSEC_MAX=$IPSEC_MAX")
  fi
  if [ "$RTPENGINE" = 1 ]; then
    if [ "$IPSEC" = 1 ]; then start_rtpengine "$PCSCF_UE_IP"; else start_rtpengine "$PCSCF_IP"; fi
  fi
  start_kamailio pcscf "${pcscf_args[@]}"
  wait_for "S-CSCF OPTIONS" options_ok "$SCSCF_IP:$SCSCF_PORT"
  wait_for "I-CSCF OPTIONS" options_ok "$ICSCF_IP:4060"
  wait_for "P-CSCF OPTIONS" options_ok "$PCSCF_IP:5060"
  # CDP connects to its peers on a timer: wait until the HSS saw both CERs succeed
  wait_for "Cx peer scscf" grep -q "CER from scscf.$DOMAIN: open" "$RUNDIR/hss.log"
  wait_for "Cx peer icscf" grep -q "CER from icscf.$DOMAIN: open" "$RUNDIR/hss.log"
  trap - ERR
  log "ready in $((SECONDS - t0)) s: namespace $NS, P-CSCF $PCSCF_IP:5060, $(($(wc -l <"$RUNDIR/subscribers.csv") - 1)) subscribers in $RUNDIR/subscribers.csv"
}

# true while a process of group $1 is alive; zombies do not count (whoever inherited them may
# take seconds to reap them, and kill -0 succeeds on a zombie)
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }'
}

stop_groups() { # SIGTERM all groups at once, up to 5 s for them to exit, then SIGKILL
  local name pid pids=() i
  for name in "$@"; do
    pid=$(cat "$RUNDIR/$name.pid" 2>/dev/null) || continue
    [ -n "$pid" ] || continue
    pids+=("$pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    kill -CONT -- "-$pid" 2>/dev/null || true
  done
  for i in $(seq 50); do
    local any=0
    for pid in "${pids[@]}"; do group_alive "$pid" && any=1; done
    [ $any -eq 1 ] || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for name in "$@"; do rm -f "$RUNDIR/$name.pid"; done
}

cmd_stop() {
  stop_groups pcscf icscf scscf hss rtpengine
  if ns_exists; then
    # whatever is left in our namespace was started by us (e.g. a stray Kamailio child)
    local left
    left=$(ip netns pids "$NS" 2>/dev/null || true)
    if [ -n "$left" ]; then
      # shellcheck disable=SC2086
      kill -KILL $left 2>/dev/null || true
      sleep 0.2
    fi
    ip netns del "$NS"
  fi
  if [ -s "$RUNDIR/ue-netns" ]; then
    ip netns del "$(cat "$RUNDIR/ue-netns")" 2>/dev/null || true
  fi
  rm -f "$RUNDIR/netns" "$RUNDIR/ue-netns" "$RUNDIR"/*_ctl "$RUNDIR"/*_rpc.fifo
  log "stopped ($NS)"
}

cmd_status() {
  local rc=0 p
  if ns_exists; then echo "namespace $NS: present"; else echo "namespace $NS: absent"; rc=1; fi
  local elements=(hss scscf icscf pcscf)
  [ ! -f "$RUNDIR/rtpengine.pid" ] || elements+=(rtpengine)
  for p in "${elements[@]}"; do
    if alive $p; then echo "$p: running (pgid $(cat "$RUNDIR/$p.pid"))"; else echo "$p: stopped"; rc=1; fi
  done
  if [ -f "$RUNDIR/hss.log" ]; then
    echo "Cx peers opened: $(grep -c ': open (Cx)' "$RUNDIR/hss.log" || true)"
  fi
  return $rc
}

case "$CMD" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  configs) cmd_configs ;;
  *) echo "usage: $0 start|stop|status|configs RUNDIR" >&2; exit 2 ;;
esac
