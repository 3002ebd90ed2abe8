#!/usr/bin/env bash
# A QEMU live-migration lab on one Linux box: two "hosts" and a probe client as network
# namespaces behind a bridge "switch", a small guest that answers SIP OPTIONS, real precopy
# migration over TCP between the hosts, driven through QMP. See docs/migration-lab.md.
#
# usage: lab/migration/lab.sh COMMAND [options]
#   up [--mem MiB] [--dirty MB/s] [--ws MiB] [--link-mbit N] [--bw MB/s]
#      [--downtime-limit ms] [--sip-responder static|kamailio]
#                      network + guest booted on host "src"; prints one JSON line (what to
#                      probe); defaults: 256 MiB, idle, 1000 Mbit/s link, 125 MB/s, 300 ms
#   up --ims [--mem-hss MiB] [--mem-cscf MiB] [--link-mbit N] [--bw MB/s] [--downtime-limit ms]
#      [--rtpengine]   an IMS core in four guests on "src", as in the reference study: the HSS
#                      (imshss, 198.51.100.20:3868, 1024 MiB) and the P-, I- and S-CSCF
#                      (Kamailio with lab/ims's configs; .21:5060, .22:4060, .23:6060; 256 MiB
#                      each); names resolve inside the guests; NUSERS subscribers (default 100)
#                      in RUN_DIR/ims/subscribers.csv (lab/ims/ims.sh's columns); --rtpengine:
#                      the P-CSCF guest anchors every call's media through an rtpengine of its
#                      own (lab/ims/ims.sh RTPENGINE=1; media on .21, ports 30000-30999), so a
#                      P-CSCF migration is what its calls hear
#   migrate [--vm NAME] [--timeout s] [--bw MB/s] [--downtime-limit ms] [--no-capture]
#                      move the guest (with --ims: the one named, hss|pcscf|icscf|scscf) to
#                      the other host; prints ONE JSON line; exit 0 = ok
#   status [--vm NAME] one JSON line: where the guests run; exit 0 when all run
#   cpu --vm NAME [--over S]   the CPU (% of one core) the guest's QEMU used over S seconds
#                      (default 1), wherever it runs now: a trigger's monitor
#   trials [imsprobe trials options]   (--ims) the reference study's experiment: imsprobe trials
#                      from the probe namespace, migrating hss, pcscf, icscf, scscf one after
#                      another per trial (each run of `migrate` flips a guest's host), probing
#                      each at its layers (RUN_DIR/ims/targets.toml); --load PROFILE runs
#                      imsload with the lab's subscribers through the P-CSCF; a --trigger
#                      reads the P-CSCF guest's CPU unless --monitor is given; --rate
#                      defaults to 100 probes/s per layer (1,000 overloads TCG guests)
#   down               stop every process of the lab, remove its namespaces; idempotent
#   exec-probe CMD...  run CMD in the probe namespace (where the clients/probes belong)
#   check [--ims]      exit 0 when this machine can run the lab (root, tools; with --ims also
#                      the IMS guests' root image, sqlite3, Kamailio's Cx schema); else say why
#
# Environment: LAB_NAME (namespace prefix, default mlab), LAB_RUN_DIR (default
# /run/imsprobe-$LAB_NAME), GUEST_DIR (default /var/cache/imsprobe-migration-lab/guest),
# ACCEL (tcg | kvm; default tcg), LINK_QUEUE_MS (tbf queue of the shaped link, default 10),
# SOCKBUF_KIB (the hosts' largest TCP send and receive buffer, default 2048), QEMU_NICE (the
# guests' QEMU priority; default -10 for the one guest, 0 with --ims, whose four guests would
# otherwise starve the load generator and the probes on the same cores).
# Needs root. Installs nothing: lab/migration/setup.sh does.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_NAME=${LAB_NAME:-mlab}
RUN_DIR=${LAB_RUN_DIR:-/run/imsprobe-$LAB_NAME}
GUEST_DIR=${GUEST_DIR:-/var/cache/imsprobe-migration-lab/guest}
ACCEL=${ACCEL:-tcg}
LINK_QUEUE_MS=${LINK_QUEUE_MS:-10}
SOCKBUF_KIB=${SOCKBUF_KIB:-2048}
QEMU_NICE=${QEMU_NICE:-}
NS_SRC=$LAB_NAME-src NS_DST=$LAB_NAME-dst NS_PROBE=$LAB_NAME-probe NS_SW=$LAB_NAME-sw
ALL_NS=("$NS_SRC" "$NS_DST" "$NS_PROBE" "$NS_SW")

# TEST-NET-2 (RFC 5737) and only inside the namespaces: 198.51.100.0/25 is the service LAN
# behind the switch, 198.51.100.128/25 the separate migration link between the two hosts (as a
# cluster keeps migration traffic off the service network, so probes never queue behind it).
GUEST_IP=198.51.100.10
# The IMS lab's elements, in the reference study's order of migration: name, address, role's
# listening port (the guest is ready once it is bound). Memory: --mem-hss, --mem-cscf.
IMS_VMS=("hss 198.51.100.20 tcp:3868" "pcscf 198.51.100.21 udp:5060"
         "icscf 198.51.100.22 udp:4060" "scscf 198.51.100.23 udp:6060")
IMS_DOMAIN=ims.mnc001.mcc001.3gppnetwork.org
TAPS=(tap0)
HOST_IP_SRC=198.51.100.1 HOST_IP_DST=198.51.100.2 PROBE_IP=198.51.100.100
MIG_IP_SRC=198.51.100.129 MIG_IP_DST=198.51.100.130

die() { echo "lab.sh: $*" >&2; exit 1; }
say() { echo "lab: $*" >&2; }
ns() { ip netns exec "$1" "${@:2}"; }
ns_exists() { [ -e "/run/netns/$1" ]; }
labctl() { python3 "$HERE/labctl.py" "$RUN_DIR" "$@"; }

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, taps, tc): run with sudo"; }

need_tools() {
  local c missing=()
  for c in qemu-system-x86_64 ip tc python3 busybox gcc; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run lab/migration/setup.sh"
}

# Serialises lab.sh calls: a status during a migrate would otherwise steal the QMP socket,
# and two ups would race for the same namespaces.
lock() {
  mkdir -p "$RUN_DIR"
  exec 8>"$RUN_DIR/lock"
  flock -w 300 8 || die "another lab.sh holds $RUN_DIR/lock for more than 5 min"
}

number() { # number NAME VALUE: a non-negative integer or decimal, else die
  [[ "$2" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$1 needs a number, not '$2'"
}

net_up() {
  local n
  for n in "${ALL_NS[@]}"; do
    ip netns add "$n"
    # no IPv6: no router solicitations or DAD on the wires, nothing but the lab's traffic
    ns "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    # TCP buffers of a set size, whatever the machine's (a namespace starts with the host's).
    # What the migration socket holds when the source stops is sent after QEMU's downtime
    # ends, so it lengthens the real pause beyond QEMU's figure: with Debian's maxima (4 MiB
    # send, 6 MiB receive) by 20-45 ms on an idle machine, up to 63 ms seen; capped at 2 MiB,
    # by 8-18 ms, with the same throughput (median ~720 Mbit/s either way, 12 trials each;
    # 1 MiB cost 15 % of it). A host with a 32 MiB tcp_rmem added ~20 ms more.
    local buf=$((SOCKBUF_KIB * 1024))
    ns "$n" sysctl -qw net.ipv4.tcp_rmem="4096 131072 $buf" net.ipv4.tcp_wmem="4096 16384 $buf"
    ns "$n" ip link set lo up
  done
  # The switch: a plain learning bridge, no STP, forwarding at once. It learns where the
  # guest's MAC is from the frames it sees; after migration, from the destination's RARP.
  ns "$NS_SW" ip link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
  ns "$NS_SW" ip link set br0 up
  # Cables (veth pairs) are made inside the switch namespace and their far end moved straight
  # into the host namespace: no interface of the lab ever exists in the root namespace.
  local host swport
  for host in src dst probe; do
    swport=sw-$host
    ns "$NS_SW" ip link add "$swport" type veth peer name up0 netns "$LAB_NAME-$host"
    ns "$NS_SW" ip link set "$swport" master br0 up
    ns "$LAB_NAME-$host" ip link set up0 up
  done
  ns "$NS_PROBE" ip addr add "$PROBE_IP/25" dev up0
  # Each host bridges its uplink with the guest's tap, as a hypervisor host does.
  local ip
  for host in src dst; do
    ip=$HOST_IP_SRC
    [ $host = dst ] && ip=$HOST_IP_DST
    ns "$LAB_NAME-$host" ip link add br0 type bridge stp_state 0 forward_delay 0
    ns "$LAB_NAME-$host" ip link set up0 master br0
    local tap
    for tap in "${TAPS[@]}"; do
      ns "$LAB_NAME-$host" ip tuntap add dev "$tap" mode tap
      ns "$LAB_NAME-$host" ip link set "$tap" master br0 up
    done
    ns "$LAB_NAME-$host" ip addr add "$ip/25" dev br0
    ns "$LAB_NAME-$host" ip link set br0 up
  done
  # The migration link, host to host.
  ns "$NS_SRC" ip link add mig0 type veth peer name mig0 netns "$NS_DST"
  ns "$NS_SRC" ip addr add "$MIG_IP_SRC/25" dev mig0
  ns "$NS_DST" ip addr add "$MIG_IP_DST/25" dev mig0
  ns "$NS_SRC" ip link set mig0 up
  ns "$NS_DST" ip link set mig0 up
  ns "$NS_PROBE" ping -c 1 -W 2 -q "$HOST_IP_SRC" >/dev/null || die "probe cannot reach src host"
  ns "$NS_SRC" ping -c 1 -W 2 -q "$MIG_IP_DST" >/dev/null || die "migration link is down"
}

shape_link() { # shape_link MBIT: tbf on both directions of the migration link (0 = unshaped)
  local n
  for n in "$NS_SRC" "$NS_DST"; do
    if [ "$1" = 0 ]; then
      ns "$n" tc qdisc del dev mig0 root 2>/dev/null || true
    else
      # QEMU lifts its own max-bandwidth for the final stop-and-copy, so only a real bottleneck
      # like this one gives the downtime a 1 Gbit/s network has. The queue is kept short
      # (LINK_QUEUE_MS) like a switch port's: a deep one would hold stop-and-copy data that
      # QEMU counts as sent, stretching the real pause beyond QEMU's downtime figure.
      ns "$n" tc qdisc replace dev mig0 root tbf rate "${1}mbit" burst 256kb latency "${LINK_QUEUE_MS}ms"
    fi
  done
}

cmd_up() {
  local mem=256 dirty=0 ws='' link=1000 bw=125 dtl=300 sip=static
  local ims=0 mem_hss='' mem_cscf='' rtpe=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --ims) ims=1; sip=ims; shift ;;
      --rtpengine) rtpe=1; shift ;;
      --mem-hss) number "$1" "${2:-}"; mem_hss=$2; shift 2 ;;
      --mem-cscf) number "$1" "${2:-}"; mem_cscf=$2; shift 2 ;;
      --mem) number "$1" "${2:-}"; mem=$2; shift 2 ;;
      --dirty) number "$1" "${2:-}"; dirty=$2; shift 2 ;;
      --ws) number "$1" "${2:-}"; ws=$2; shift 2 ;;
      --link-mbit) number "$1" "${2:-}"; link=$2; shift 2 ;;
      --bw) number "$1" "${2:-}"; bw=$2; shift 2 ;;
      --downtime-limit) number "$1" "${2:-}"; dtl=$2; shift 2 ;;
      --sip-responder)
        case "${2:-}" in static|kamailio) sip=$2 ;; *) die "--sip-responder is static or kamailio" ;; esac
        shift 2 ;;
      *) die "unknown up option '$1' (see the top of $0)" ;;
    esac
  done
  [ "${mem%.*}" -ge 128 ] || die "--mem $mem is too small: the guest kernel needs 128 MiB"
  if [ $ims = 0 ] && [ -n "$mem_hss$mem_cscf" ]; then die "--mem-hss and --mem-cscf go with --ims"; fi
  if [ $ims = 0 ] && [ $rtpe = 1 ]; then die "--rtpengine goes with --ims (the P-CSCF guest runs it)"; fi
  if [ $ims = 1 ]; then
    # the study's sizes: 1 GiB for the HSS, 256 MiB for each CSCF
    mem_hss=${mem_hss:-1024} mem_cscf=${mem_cscf:-256}
    [ "$dirty" = 0 ] || die "--dirty is for the one-guest lab: the IMS guests' load is imsload's"
    # Kamailio's shared memory (64 MiB here) and four children sit beside the kernel
    for m in "$mem_hss" "$mem_cscf"; do
      [ "${m%.*}" -ge 192 ] || die "--mem-hss/--mem-cscf $m is too small: an IMS guest needs 192 MiB"
    done
  fi
  # the dirtier's working set must fit beside the kernel and initramfs; half of RAM does
  [ -n "$ws" ] || ws=$(( ${mem%.*} / 2 > 512 ? 512 : ${mem%.*} / 2 ))
  [ "$ws" -le $(( ${mem%.*} - 96 )) ] || die "--ws $ws MiB does not fit a $mem MiB guest"
  [[ "$SOCKBUF_KIB" =~ ^[0-9]+$ ]] && [ "$SOCKBUF_KIB" -ge 64 ] \
    || die "SOCKBUF_KIB is a size in KiB, at least 64, not '$SOCKBUF_KIB'"
  if [ -z "$QEMU_NICE" ]; then
    if [ $ims = 1 ]; then QEMU_NICE=0; else QEMU_NICE=-10; fi
  fi
  [[ "$QEMU_NICE" =~ ^-?[0-9]+$ ]] && [ "$QEMU_NICE" -ge -20 ] && [ "$QEMU_NICE" -le 19 ] \
    || die "QEMU_NICE is a nice value from -20 to 19, not '$QEMU_NICE'"
  case "$ACCEL" in
    tcg) ;;
    kvm) [ -w /dev/kvm ] || die "ACCEL=kvm but /dev/kvm is not usable" ;;
    *) die "ACCEL is tcg or kvm, not '$ACCEL'" ;;
  esac
  need_tools
  lock
  local n up=()
  for n in "${ALL_NS[@]}"; do ns_exists "$n" && up+=("$n"); done
  if [ ${#up[@]} -gt 0 ] || [ -e "$RUN_DIR/config.json" ]; then
    die "a lab named '$LAB_NAME' is already up (${up[*]:-$RUN_DIR/config.json}): run '$0 down' first"
  fi

  local build=()
  [ "$sip" != static ] && build=(--kamailio)
  GUEST_DIR=$GUEST_DIR "$HERE/build-guest.sh" "${build[@]}"

  # From here on a failure (set -e or die) must leave nothing behind.
  UP_DONE=0
  trap '[ "$UP_DONE" = 1 ] || { say "up failed; cleaning up"; do_down || true; }' EXIT
  find "$RUN_DIR" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf {} +
  # Every QEMU of this lab, including the incoming ones started much later, must load the very
  # same guest: a rebuild of the shared cache (another lab's up, a changed source) must not
  # reach a lab that is already up. So the lab keeps its own copy (11 MB, tmpfs), and a hard
  # link to the Kamailio image (330 MB), which a rebuild replaces by rename, not in place.
  mkdir -p "$RUN_DIR/guest"
  cp "$GUEST_DIR/vmlinuz" "$GUEST_DIR/initramfs.gz" "$RUN_DIR/guest/"
  if [ "$sip" != static ]; then
    mkdir -p "$GUEST_DIR/in-use"
    ln -f "$GUEST_DIR/rootfs-kamailio.img" "$GUEST_DIR/in-use/$LAB_NAME.img"
    ln -sf "$GUEST_DIR/in-use/$LAB_NAME.img" "$RUN_DIR/guest/rootfs-kamailio.img"
  fi
  local vms='' guest_ip=$GUEST_IP
  if [ $ims = 1 ]; then
    IMS_RTPENGINE=$rtpe ims_config_disk
    vms=$(ims_vms_json "$mem_hss" "$mem_cscf")
    guest_ip=$(ims_vm pcscf ip)
  fi
  cat >"$RUN_DIR/config.json" <<EOF
{"name": "$LAB_NAME", "mem_mib": $mem, "dirty_mb_s": $dirty, "ws_mib": $ws,
 "link_mbit": $link, "bw_mb_s": $bw, "downtime_limit_ms": $dtl, "accel": "$ACCEL",
 "sockbuf_kib": $SOCKBUF_KIB, "qemu_nice": $QEMU_NICE,
 "sip_responder": "$sip", "guest_ip": "$guest_ip", "guest_dir": "$RUN_DIR/guest"$vms}
EOF
  [ $ims = 1 ] && TAPS=(tap0 tap1 tap2 tap3)
  say "network: namespaces ${ALL_NS[*]}"
  net_up
  shape_link "$link"
  labctl boot
  if [ $ims = 1 ]; then
    ims_ready
    UP_DONE=1
    local pcscf
    pcscf=$(ims_vm pcscf ip):$(ims_vm pcscf port)
    say "up: the IMS core runs on src; UEs register through the P-CSCF $pcscf"
    say "  with the subscribers in $RUN_DIR/ims/subscribers.csv, from namespace $NS_PROBE:"
    say "  $0 exec-probe imsload --target $pcscf --domain $IMS_DOMAIN --users-file $RUN_DIR/ims/subscribers.csv ..."
    labctl status
    return
  fi
  # Ready means reachable from where the clients are, at both layers the probes use.
  local i=0
  until ns "$NS_PROBE" ping -c 1 -W 1 -q "$GUEST_IP" >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 60 ] || die "the guest does not answer ping from $NS_PROBE; see $RUN_DIR/src.serial.log"
  done
  ns "$NS_PROBE" python3 "$HERE/labctl.py" - sip-check "$GUEST_IP:5060" 60 ||
    die "the guest does not answer SIP OPTIONS; see $RUN_DIR/src.serial.log"
  UP_DONE=1
  say "up: guest $GUEST_IP (SIP udp/5060, ICMP) runs on src; probe from namespace $NS_PROBE:"
  say "  $0 exec-probe imsprobe --target $GUEST_IP:5060 ..."
  labctl status
}

# The IMS core's configs (lab/ims/ims.sh configs, with the guests' addresses), subscribers and
# imshss, as the read-only second disk every IMS guest mounts. Kamailio's memory and children are
# cut to fit a 256 MiB guest, and its log level to warnings: the log lives in guest memory.
ims_config_disk() {
  local d=$RUN_DIR/ims hss
  hss=${IMSHSS:-$(command -v imshss 2>/dev/null || echo "$HERE/../../target/release/imshss")}
  [ -x "$hss" ] || die "no imshss at $hss: cargo build --release --bin imshss (or set IMSHSS)"
  rm -rf "$d"
  HSS_IP=$(ims_vm hss ip) PCSCF_IP=$(ims_vm pcscf ip) ICSCF_IP=$(ims_vm icscf ip) SCSCF_IP=$(ims_vm scscf ip) \
    DOMAIN=$IMS_DOMAIN SHM_MB=${IMS_SHM_MB:-48} PKG_MB=8 CHILDREN=2 DBGLEVEL=1 \
    RTPENGINE=${IMS_RTPENGINE:-0} \
    GUEST_DIR=/mnt GUEST_RUN=/run/ims bash "$HERE/../ims/ims.sh" configs "$d" >&2
  cp "$hss" "$d/imshss"
  # what the probes know of the elements (imsprobe --targets), beside, not on, the disk
  local v name ip wait
  {
    echo "# The IMS lab's elements (lab.sh up --ims) for imsprobe --targets; written by lab.sh."
    for v in "${IMS_VMS[@]}"; do
      read -r name ip wait <<<"$v"
      printf '\n[targets.%s]\nhost = "%s"\n' "$name" "$ip"
      case "$wait" in
        tcp:*) printf 'diameter_port = %s\nlayers = ["diameter", "icmp"]\n' "${wait#tcp:}"
               echo 'description = "HSS (imshss, Diameter Cx) in its own guest"' ;;
        udp:*) printf 'sip_port = %s\n' "${wait#udp:}"
               echo "description = \"$(tr a-z A-Z <<<"${name:0:1}")-CSCF (Kamailio) in its own guest\"" ;;
      esac
    done
  } >"$RUN_DIR/ims-targets.toml"
  mkfs.ext4 -q -F -O ^has_journal -L imscfg -d "$d" "$RUN_DIR/guest/ims-config.img" \
    "$(( $(du -sk "$d" | cut -f1) / 1024 + 8 ))M"
}

ims_vm() { # NAME ip|port: a field of the IMS guest NAME (IMS_VMS)
  local v name ip wait
  for v in "${IMS_VMS[@]}"; do
    read -r name ip wait <<<"$v"
    [ "$name" = "$1" ] || continue
    case "$2" in ip) echo "$ip" ;; port) echo "${wait#*:}" ;; esac
    return
  done
  die "no IMS guest named $1"
}

ims_vms_json() { # MEM_HSS MEM_CSCF: the "vms" member of config.json
  local i=0 v name ip wait mem out=''
  for v in "${IMS_VMS[@]}"; do
    read -r name ip wait <<<"$v"
    [ "$name" = hss ] && mem=$1 || mem=$2
    out+="${out:+, }{\"name\": \"$name\", \"ip\": \"$ip\", \"role\": \"$name\", \"wait\": \"$wait\","
    out+=" \"mem_mib\": $mem, \"tap\": \"tap$i\", \"mac\": \"52:54:00:4c:49:$(printf %02x $((0x50 + i)))\","
    out+=" \"mig_port\": $((4450 + i))}"
    i=$((i + 1))
  done
  echo ", \"vms\": [$out]"
}

# Ready means: every element answers from where the UEs are (ICMP; SIP OPTIONS to each CSCF),
# and both Diameter clients (I- and S-CSCF) have opened their Cx connection to the HSS, which
# imshss prints on its console.
ims_ready() {
  local v name ip wait i
  for v in "${IMS_VMS[@]}"; do
    read -r name ip wait <<<"$v"
    i=0
    until ns "$NS_PROBE" ping -c 1 -W 1 -q "$ip" >/dev/null 2>&1; do
      i=$((i + 1))
      [ $i -lt 60 ] || die "$name ($ip) does not answer ping from $NS_PROBE; see $RUN_DIR/$name-src.serial.log"
    done
    case "$wait" in udp:*)
      ns "$NS_PROBE" python3 "$HERE/labctl.py" - sip-check "$ip:${wait#udp:}" 60 ||
        die "$name does not answer SIP OPTIONS on $ip:${wait#udp:}"
    esac
  done
  for name in scscf icscf; do
    i=0
    until grep -q "CER from $name.$IMS_DOMAIN: open" "$RUN_DIR/hss-src.serial.log" 2>/dev/null; do
      i=$((i + 1))
      [ $i -lt 300 ] || die "the $name never opened its Cx connection to the HSS; see $RUN_DIR/hss-src.serial.log"
      sleep 0.2
    done
  done
}

# imsprobe trials over the four IMS guests, from the probe namespace. Options it does not
# recognise go to imsprobe as they are.
cmd_trials() {
  [ -s "$RUN_DIR/ims-targets.toml" ] || die "no IMS lab is up: run $0 up --ims"
  local root probe load imsload args=() trigger=0 monitor=0
  root=$(cd "$HERE/../.." && pwd)
  probe=${IMSPROBE:-$(command -v imsprobe 2>/dev/null || echo "$root/target/release/imsprobe")}
  imsload=${IMSLOAD:-$(command -v imsload 2>/dev/null || echo "$root/target/release/imsload")}
  [ -x "$probe" ] || die "no imsprobe at $probe: cargo build --release (or set IMSPROBE)"
  while [ $# -gt 0 ]; do
    case "$1" in
      --load)
        [ -n "${2:-}" ] || die "--load needs a profile"
        [ -x "$imsload" ] || die "no imsload at $imsload: cargo build --release (or set IMSLOAD)"
        load=$(realpath "$2")
        # the profile's users are the lab's subscribers (AKA keys the HSS holds)
        args+=(--load-cmd "exec $imsload --profile $load --target {target} --domain $IMS_DOMAIN --users-file $RUN_DIR/ims/subscribers.csv --report {report} --series {series} --quiet")
        shift 2 ;;
      --trigger) trigger=1; args+=("$1" "${2:-}"); shift 2 ;;
      --monitor) monitor=1; args+=("$1" "${2:-}"); shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  # 100 probes/s per layer unless told: at imsprobe's default 1,000/s, seven layers' probes
  # took the four emulated CPUs (TCG) and the core failed every registration (measured).
  case " ${args[*]} " in *" --rate "*) ;; *) args+=(--rate 100) ;; esac
  if [ $trigger = 1 ] && [ $monitor = 0 ]; then
    args+=(--monitor "command $HERE/lab.sh cpu --vm pcscf" --monitor-parser number)
  fi
  local seq=() v name
  for v in "${IMS_VMS[@]}"; do
    read -r name _ <<<"$v"
    seq+=(--target "$name" --migrate "$HERE/lab.sh migrate --vm $name")
  done
  # from the repository's root, where relative paths in profiles (monitors) point
  cd "$root"
  exec ip netns exec "$NS_PROBE" env LAB_NAME="$LAB_NAME" "$probe" trials \
    --targets "$RUN_DIR/ims-targets.toml" "${seq[@]}" "${args[@]}"
}

# Stops what the lab started and removes its namespaces. Every QEMU is stopped through its pid
# file (QMP quit, then signals); anything else still inside a lab namespace (a tcpdump, a
# probe started with exec-probe) is named and stopped by pid, since its network is going away.
do_down() {
  [ -e "$RUN_DIR/config.json" ] && labctl stop || true
  local n pid
  for n in "${ALL_NS[@]}"; do
    ns_exists "$n" || continue
    for pid in $(ip netns pids "$n" 2>/dev/null); do
      say "stopping pid $pid in $n: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
      kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
      [ -z "$(ip netns pids "$n" 2>/dev/null)" ] && break
      sleep 0.1
    done
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    # deleting the namespace deletes its veths, bridges and taps with it
    ip netns del "$n" 2>/dev/null || true
  done
  rm -f "$RUN_DIR/config.json" "$RUN_DIR"/*state.json "$GUEST_DIR/in-use/$LAB_NAME.img" \
    "$RUN_DIR/ims-targets.toml"
  rm -rf "$RUN_DIR/guest"
  say "down: nothing of lab '$LAB_NAME' is left running"
}

# What a test asks before it runs the lab: cheap, builds and starts nothing.
cmd_check() {
  need_root
  need_tools
  command -v tcpdump >/dev/null || die "missing tcpdump: run lab/migration/setup.sh"
  case "$(LC_ALL=C ldd /bin/busybox 2>&1)" in
    *"not a dynamic"*|*"statically linked"*) ;;
    *) die "/bin/busybox is not busybox-static: run lab/migration/setup.sh" ;;
  esac
  [ -e /dev/net/tun ] || die "no /dev/net/tun: the guest's tap device needs the tun driver"
  ip netns add "$LAB_NAME-check" 2>/dev/null && ip netns del "$LAB_NAME-check" ||
    die "cannot create network namespaces here"
  if [ "$ACCEL" = kvm ] && [ ! -w /dev/kvm ]; then die "ACCEL=kvm but /dev/kvm is not usable"; fi
  if [ "${1:-}" = --ims ]; then
    [ -s "$GUEST_DIR/rootfs-kamailio.img" ] ||
      die "no root image for the IMS guests: run lab/migration/setup.sh --kamailio, then lab/migration/build-guest.sh --kamailio (.ci/setup does both)"
    command -v sqlite3 >/dev/null || die "missing sqlite3 (the I-CSCF's database): apt-get install sqlite3"
    [ -f /usr/share/doc/kamailio/examples/ims/scscf/CxDataType_Rel7.xsd ] ||
      die "missing Kamailio's Cx schema (Debian package kamailio)"
  fi
  echo "lab.sh: this machine can run the migration lab ($ACCEL)" >&2
}

case "${1:-}" in
  up) need_root; shift; cmd_up "$@" ;;
  check) shift; cmd_check "$@" ;;
  migrate)
    need_root; shift
    [ -e "$RUN_DIR/config.json" ] || {
      echo '{"ok": false, "error": "no lab is up: run lab/migration/lab.sh up"}'
      die "no lab is up: run $0 up"
    }
    lock
    labctl migrate "$@" ;;
  status)
    need_root
    if [ ! -e "$RUN_DIR/config.json" ]; then
      echo '{"up": false, "host": null}'
      exit 1
    fi
    lock
    labctl status ;;
  down) need_root; lock; do_down ;;
  cpu)
    need_root; shift
    [ -e "$RUN_DIR/config.json" ] || die "no lab is up: run $0 up"
    labctl cpu "$@" ;;
  trials) need_root; shift; cmd_trials "$@" ;;
  exec-probe)
    need_root; shift
    [ $# -gt 0 ] || die "exec-probe needs a command"
    ns_exists "$NS_PROBE" || die "no probe namespace $NS_PROBE: run $0 up"
    exec ip netns exec "$NS_PROBE" "$@" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
