#!/usr/bin/env bash
# Start/stop the imsload lab target (lab/kamailio/kamailio.cfg) by hand.
#
# usage: lab/kamailio/start.sh start|stop|status|restart [RUNDIR]
#   start   generate the subscriber DB (if needed), start Kamailio in the
#           background in its own process group, wait until OPTIONS gets 200
#   stop    SIGTERM the process group, SIGKILL it after 5 s
#   status  running or not, uptime and number of registered contacts
#
# RUNDIR (default /tmp/imsload-lab) holds subscriber.db, users.csv (SIPp
# injection file), kamailio.log, kamailio.pid, the ctl socket and the rpc fifo.
#
# Environment (defaults):
#   LISTEN_IP=127.0.0.1  LISTEN_PORT=5060   UDP and TCP; only 127.x is accepted
#   SIP_DOMAIN=ims.local NUSERS=1000         users user0001..userNNNN (%04d)
#   PASS_PREFIX=pw_                          password = PASS_PREFIX + username
#   CHILDREN=4  SHM_MB=256  PKG_MB=16  READY_TIMEOUT=20 (s)
#   OPEN_FILES (default: hard nofile limit minus 512, at most 65536)
#   DEFINES="WITH_INVITE_AUTH WITH_REQUIRE_REG WITH_DEBUG"  (any subset)
#
# This script never installs anything; .ci/run does (apt-get install kamailio
# kamailio-sqlite-modules sqlite3 sipsak).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CMD=${1:-}
RUNDIR=$(realpath -m "${2:-/tmp/imsload-lab}") # absolute: the sqlite URL needs it
LISTEN_IP=${LISTEN_IP:-127.0.0.1}
LISTEN_PORT=${LISTEN_PORT:-5060}
SIP_DOMAIN=${SIP_DOMAIN:-ims.local}
NUSERS=${NUSERS:-1000}
PASS_PREFIX=${PASS_PREFIX:-pw_}
CHILDREN=${CHILDREN:-4}
SHM_MB=${SHM_MB:-256}
PKG_MB=${PKG_MB:-16}
READY_TIMEOUT=${READY_TIMEOUT:-20}
DEFINES=${DEFINES:-}
CFG=${CFG:-$HERE/kamailio.cfg}
PIDFILE=$RUNDIR/kamailio.pid
LOG=$RUNDIR/kamailio.log
CTL=$RUNDIR/kamailio_ctl

# Kamailio aborts at start when open_files_limit exceeds the hard RLIMIT_NOFILE
HARD_NOFILE=$(ulimit -Hn)
[ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=66048
OPEN_FILES=${OPEN_FILES:-$((HARD_NOFILE - 512 < 65536 ? HARD_NOFILE - 512 : 65536))}
TCP_MAXCONN=${TCP_MAXCONN:-$((OPEN_FILES * 3 / 4))}

die() { echo "start.sh: $*" >&2; exit 1; }

usage() { echo "usage: $0 start|stop|status|restart [RUNDIR]" >&2; exit 2; }

check_pkgs() {
  local missing=()
  command -v kamailio >/dev/null 2>&1 || missing+=("kamailio (kamailio binary)")
  command -v kamcmd >/dev/null 2>&1 || missing+=("kamailio (kamcmd binary)")
  compgen -G "/usr/lib/*/kamailio/modules/db_sqlite.so" >/dev/null ||
    compgen -G "/usr/lib/kamailio/modules/db_sqlite.so" >/dev/null ||
    missing+=("kamailio-sqlite-modules (db_sqlite.so)")
  [ -d /usr/share/kamailio/db_sqlite ] ||
    missing+=("kamailio-sqlite-modules (/usr/share/kamailio/db_sqlite schemas)")
  command -v sqlite3 >/dev/null 2>&1 || missing+=("sqlite3 (sqlite3 CLI)")
  command -v sipsak >/dev/null 2>&1 || missing+=("sipsak (readiness probe)")
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'start.sh: missing Debian package: %s\n' "${missing[@]}" >&2
    echo "start.sh: install with: apt-get install --no-install-recommends kamailio kamailio-sqlite-modules sqlite3 sipsak (or run .ci/run)" >&2
    exit 1
  fi
}

gen_subscribers() {
  local db=$RUNDIR/subscriber.db schema=/usr/share/kamailio/db_sqlite
  local stamp="$NUSERS $SIP_DOMAIN $PASS_PREFIX"
  if [ -s "$db" ] && [ "$(cat "$db.stamp" 2>/dev/null)" = "$stamp" ]; then return 0; fi
  rm -f "$db" "$db.tmp"
  {
    cat "$schema/standard-create.sql" "$schema/auth_db-create.sql"
    echo "BEGIN;"
    awk -v n="$NUSERS" -v d="$SIP_DOMAIN" -v p="$PASS_PREFIX" 'BEGIN {
      for (i = 1; i <= n; i++) {
        u = sprintf("user%04d", i)
        printf("INSERT INTO subscriber(username,domain,password) VALUES(\x27%s\x27,\x27%s\x27,\x27%s%s\x27);\n", u, d, p, u)
      } }'
    echo "COMMIT;"
  } | sqlite3 "$db.tmp"
  mv "$db.tmp" "$db"
  awk -v n="$NUSERS" -v d="$SIP_DOMAIN" -v p="$PASS_PREFIX" 'BEGIN {
    print "SEQUENTIAL"
    for (i = 1; i <= n; i++) { u = sprintf("user%04d", i); printf("%s;%s%s;%s\n", u, p, u, d) } }' \
    >"$RUNDIR/users.csv"
  echo "$stamp" >"$db.stamp"
  echo "$(sqlite3 "$db" 'SELECT count(*) FROM subscriber') subscribers in $db (domain $SIP_DOMAIN, password ${PASS_PREFIX}<user>)"
}

kam_args() {
  ARGS=(-f "$CFG" -m "$SHM_MB" -M "$PKG_MB" -Y "$RUNDIR" -w "$RUNDIR" -P "$PIDFILE"
    -A "LISTEN_IP=$LISTEN_IP" -A "LISTEN_PORT=$LISTEN_PORT"
    -A "CHILDREN=$CHILDREN" -A "OPEN_FILES=$OPEN_FILES" -A "TCP_MAXCONN=$TCP_MAXCONN"
    -A "SIP_DOMAIN=\"$SIP_DOMAIN\"" -A "DBURL=\"sqlite:///$RUNDIR/subscriber.db\""
    -A "CTLSOCK=\"unix:$CTL\"" -A "RPCFIFO=\"$RUNDIR/kamailio_rpc.fifo\"" -A "RPCREPLYDIR=\"$RUNDIR/\"")
  local d
  for d in $DEFINES; do ARGS+=(-A "$d"); done
}

running_pid() {
  local pid
  [ -s "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

options_ok() {
  sipsak -s "sip:$LISTEN_IP:$LISTEN_PORT" -H 127.0.0.1 >/dev/null 2>&1
}

do_start() {
  local pid
  if pid=$(running_pid); then echo "already running, pid $pid"; return 0; fi
  case "$LISTEN_IP" in 127.*) ;; *) die "LISTEN_IP must be a 127.0.0.0/8 address" ;; esac
  check_pkgs
  local t0=$EPOCHREALTIME
  mkdir -p "$RUNDIR"
  gen_subscribers
  kam_args
  kamailio -c "${ARGS[@]}" >"$RUNDIR/cfgcheck.log" 2>&1 ||
    { tail -30 "$RUNDIR/cfgcheck.log" >&2; die "config check failed (see $RUNDIR/cfgcheck.log)"; }
  # Kamailio refuses to start when its pid file names a live process
  rm -f "$PIDFILE" "$CTL"
  # -DD: no fork into background (we background it), -E: log to stderr = $LOG.
  # setsid: own session/process group, so stop can kill every child at once
  setsid kamailio -DD -E "${ARGS[@]}" >"$LOG" 2>&1 </dev/null &
  local kpid=$! deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$kpid" 2>/dev/null; then
      tail -30 "$LOG" >&2
      die "kamailio exited during start-up (log: $LOG)"
    fi
    if options_ok; then
      echo "sip:$LISTEN_IP:$LISTEN_PORT udp+tcp, domain $SIP_DOMAIN" >"$RUNDIR/listen"
      printf 'ready: sip:%s:%s (udp+tcp) pid %s, %s users @%s, %.2fs (log %s)\n' \
        "$LISTEN_IP" "$LISTEN_PORT" "$kpid" "$NUSERS" "$SIP_DOMAIN" \
        "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$LOG"
      return 0
    fi
    sleep 0.2
  done
  tail -30 "$LOG" >&2
  # when a child fails to initialise the main and TCP processes may hang: kill the group
  kill -TERM -- "-$kpid" 2>/dev/null || true
  sleep 2
  kill -KILL -- "-$kpid" 2>/dev/null || true
  rm -f "$PIDFILE"
  die "no 200 to OPTIONS after ${READY_TIMEOUT}s (log: $LOG)"
}

do_stop() {
  local pid
  if ! pid=$(running_pid); then echo "not running"; rm -f "$PIDFILE"; return 0; fi
  # kamailio was started with setsid: its pid is also its process group id
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  local i
  for i in $(seq 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    echo "process group $pid still alive after 5s: SIGKILL" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  echo "stopped pid $pid"
}

do_status() {
  local pid
  if ! pid=$(running_pid); then echo "not running"; return 1; fi
  echo "running pid $pid: $(cat "$RUNDIR/listen" 2>/dev/null) (log $LOG)"
  kamcmd -s "unix:$CTL" core.uptime 2>/dev/null | grep -i uptime || true
  # (usrloc's counter: expired contacts count until the 30 s timer removes them)
  kamcmd -s "unix:$CTL" stats.get_statistics location_contacts 2>/dev/null || true
}

case "$CMD" in
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
restart) do_stop; do_start ;;
*) usage ;;
esac
