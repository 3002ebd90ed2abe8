#!/usr/bin/env bash
# One-command check of the migration lab: up -> migrate -> migrate back -> down, with each
# migrate's JSON line checked against the contract (docs/migration-lab.md) and the guest
# answering SIP OPTIONS from the probe namespace after each move. Exit 0 = all good.
#
# usage: sudo lab/migration/selftest.sh [lab.sh up options]    (about 25 s under TCG)
# Uses its own lab name (LAB_NAME, default mlab-selftest), so a lab you have up is not touched.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export LAB_NAME=${LAB_NAME:-mlab-selftest}
LAB=$HERE/lab.sh
OUT=$(mktemp -d /tmp/mlab-selftest.XXXXXX)

fail() { echo "selftest: FAIL: $*" >&2; exit 1; }
cleanup() { "$LAB" down >/dev/null 2>&1 || echo "selftest: lab.sh down failed" >&2; }
trap cleanup EXIT

"$LAB" check || fail "this machine cannot run the lab (see above)"
# a lab left over from an interrupted selftest is ours to remove
"$LAB" down >/dev/null 2>&1 || true

t0=$(date +%s.%N)
"$LAB" up "$@" >"$OUT/up.json" || fail "lab.sh up failed"
echo "selftest: up in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s" >&2

# check_migration FILE FROM TO: the contract's fields, and numbers that make sense together
check_migration() {
  python3 - "$@" <<'EOF' || fail "$1 does not meet the contract (see above)"
import json, sys
path, frm, to = sys.argv[1:4]
lines = [l for l in open(path).read().splitlines() if l.strip()]
assert len(lines) == 1, f"expected exactly one JSON line on stdout, got {len(lines)}"
d = json.loads(lines[0])
for k in ("ok", "from", "to", "started_wall_us", "ended_wall_us", "qemu", "events",
          "stop_to_resume_ms", "config"):
    assert k in d, f"no '{k}'"
assert d["ok"] is True, f"ok is {d['ok']}: {d.get('error')}"
assert (d["from"], d["to"]) == (frm, to), f"went {d['from']} -> {d['to']}, not {frm} -> {to}"
q = d["qemu"]
assert q["status"] == "completed", q["status"]
for k in ("total-time", "downtime", "setup-time"):
    assert isinstance(q.get(k), int), f"qemu.{k} = {q.get(k)}"
assert q["ram"]["transferred"] > 0
assert d["started_wall_us"] <= d["ended_wall_us"]
ev = {(e["host"], e["event"]) for e in d["events"]}
for need in ((frm, "STOP"), (to, "RESUME"), (frm, "MIGRATION"), (frm, "MIGRATION_PASS")):
    assert need in ev, f"no {need[1]} event from {need[0]}"
for e in d["events"]:
    assert d["started_wall_us"] - 10_000_000 < e["wall_us"] < d["ended_wall_us"] + 10_000_000, e
s2r = d["stop_to_resume_ms"]
# QEMU measures its downtime on the source only; the real pause can only be longer
assert 0 < s2r < 60_000 and s2r >= q["downtime"] - 1, f"STOP->RESUME {s2r} ms vs downtime {q['downtime']}"
for k in ("mem_mib", "dirty_mb_s", "link_mbit", "bw_mb_s", "downtime_limit_ms", "accel"):
    assert k in d["config"], f"no config.{k}"
print(f"selftest: {frm} -> {to} ok: QEMU downtime {q['downtime']} ms, STOP->RESUME {s2r} ms, "
      f"total {q['total-time']} ms, {q['ram']['transferred'] / 1e6:.1f} MB", file=sys.stderr)
EOF
}

"$LAB" migrate >"$OUT/m1.json" || fail "first migrate exited non-zero: $(cat "$OUT/m1.json")"
check_migration "$OUT/m1.json" src dst
"$LAB" exec-probe python3 "$HERE/labctl.py" - sip-check 198.51.100.10:5060 10 ||
  fail "no SIP answer after moving to dst"

"$LAB" migrate >"$OUT/m2.json" || fail "migrate back exited non-zero: $(cat "$OUT/m2.json")"
check_migration "$OUT/m2.json" dst src
"$LAB" exec-probe ping -c 1 -W 2 -q 198.51.100.10 >/dev/null || fail "no ping after moving back"

"$LAB" status >"$OUT/status.json" || fail "status says the guest is not running"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["host"] == "src" and d["migrations"] == 2, d' \
  "$OUT/status.json" || fail "status does not say src after two migrations"

trap - EXIT
"$LAB" down >/dev/null || fail "lab.sh down failed"
for n in src dst probe sw; do
  [ ! -e "/run/netns/$LAB_NAME-$n" ] || fail "namespace $LAB_NAME-$n is still there after down"
done
rm -rf "$OUT"
echo "selftest: PASS (up, two migrations, down) in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s" >&2
