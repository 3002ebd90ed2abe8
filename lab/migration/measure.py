#!/usr/bin/env python3
"""Measures the lab: migrations with imsprobe probing the guest, one table row per migration.

    sudo lab/migration/measure.py [--reps 3] [--imsprobe target/release/imsprobe]
                                  [--out DIR] CONFIG...

CONFIG is `MEM_MIB:DIRTY_MB_S[:lab.sh up options]`, e.g. `256:0` or `1024:50` or
`1024:50:--link-mbit 0`. For each config the lab is brought up (its own lab name,
mlab-measure), then each repetition runs imsprobe (SIP OPTIONS + ICMP, 1000/s each) from the
probe namespace, migrates after 2 s of probing (alternating directions), stops the probe 1.5 s
later, and lines up QEMU's figures, the QMP STOP/RESUME events, the switch capture and
imsprobe's gaps. Writes DIR/trials.jsonl and DIR/table.md (every trial, then medians), and
prints the table. This is how the figures in docs/migration-lab.md were made.
"""
import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(HERE, "lab.sh")
ENV = dict(os.environ, LAB_NAME=os.environ.get("LAB_NAME", "mlab-measure"))
GUEST = "198.51.100.10"


def utc_us(s):
    """imsprobe's "2026-11-25T06:38:23.708650937Z" -> unix microseconds."""
    base, frac = s.rstrip("Z").split(".")
    t = datetime.datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp()) * 1_000_000 + int(frac.ljust(9, "0")[:6])


def lab(*args, check=True):
    r = subprocess.run([LAB, *args], env=ENV, capture_output=True, text=True, timeout=600)
    if check and r.returncode != 0:
        sys.exit(f"measure: lab.sh {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r


def gap_at(layer, kind, stop_us, resume_us):
    """The longest gap of this kind that overlaps the migration's pause."""
    best = None
    for g in layer[kind]:
        s, e = utc_us(g["start_utc"]), utc_us(g["end_utc"])
        if s <= resume_us + 500_000 and e >= stop_us - 50_000:
            if best is None or g["duration_ms"] > best["duration_ms"]:
                best = dict(g, start_us=s, end_us=e)
    return best


def trial(args, out_dir, n):
    pdir = os.path.join(out_dir, f"probe-{n:02d}")
    probe = subprocess.Popen(
        [LAB, "exec-probe", args.imsprobe, "--target", f"{GUEST}:5060", "--rate", "1000",
         "--icmp", "--sip", "--duration", "300s", "--no-plot", "--quiet", "--out", pdir],
        env=ENV, stdout=subprocess.DEVNULL, stderr=open(pdir + ".log", "w"))
    try:
        time.sleep(2)
        m = lab("migrate", check=False)
        mig = json.loads(m.stdout.strip().splitlines()[-1])
        time.sleep(1.5)
    finally:
        probe.send_signal(signal.SIGINT)  # imsprobe writes every file on Ctrl-C
        try:
            probe.wait(30)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()
    rep = json.load(open(os.path.join(pdir, "report.json")))
    row = {"migration": mig, "probe_dir": pdir}
    if not mig.get("ok"):
        return row
    ev = mig["events"]
    stop = next(e["wall_us"] for e in ev if e["event"] == "STOP" and e["host"] == mig["from"])
    resume = next(e["wall_us"] for e in ev if e["event"] == "RESUME" and e["host"] == mig["to"])
    for layer in rep["layers"]:
        for kind, short in (("loss_windows", "loss"), ("reply_gaps", "gap")):
            g = gap_at(layer, kind, stop, resume)
            if g:
                row[f"{layer['layer']}_{short}_ms"] = round(g["duration_ms"], 1)
                row[f"{layer['layer']}_{short}_start_vs_stop_ms"] = round((g["start_us"] - stop) / 1000, 1)
                row[f"{layer['layer']}_{short}_end_vs_resume_ms"] = round((g["end_us"] - resume) / 1000, 1)
    return row


COLS = [  # header, how to get it from a row
    ("MiB", lambda r: r["migration"]["config"]["mem_mib"]),
    ("dirty MB/s", lambda r: r["migration"]["config"]["dirty_mb_s"]),
    ("link Mbit/s", lambda r: r["migration"]["config"]["link_mbit"]),
    ("QEMU total ms", lambda r: r["migration"]["qemu"]["total-time"]),
    ("MB sent", lambda r: round(r["migration"]["qemu"]["ram"]["transferred"] / 1e6, 1)),
    ("rounds", lambda r: r["migration"]["qemu"]["ram"]["dirty-sync-count"]),
    ("QEMU downtime ms", lambda r: r["migration"]["qemu"]["downtime"]),
    ("STOP→RESUME ms", lambda r: r["migration"]["stop_to_resume_ms"]),
    ("1st RARP after RESUME ms", lambda r: r["migration"]["announce"]["first_frame_vs_resume_ms"]),
    ("1st guest IP pkt after RESUME ms", lambda r: r["migration"]["announce"].get("first_ipv4_vs_resume_ms")),
    ("ICMP loss window ms", lambda r: r.get("icmp_loss_ms")),
    ("ICMP reply gap ms", lambda r: r.get("icmp_gap_ms")),
    ("SIP loss window ms", lambda r: r.get("sip_loss_ms")),
    ("SIP reply gap ms", lambda r: r.get("sip_gap_ms")),
    ("load 1 min", lambda r: r["migration"]["loadavg_start"][0]),
]


def cell(f, r):
    try:
        v = f(r)
    except (KeyError, TypeError, StopIteration):
        v = None
    return v


def table(rows):
    lines = ["| " + " | ".join(h for h, _ in COLS) + " |", "|" + "---|" * len(COLS)]
    groups = {}
    for r in rows:
        if not r["migration"].get("ok"):
            lines.append(f"| failed: {r['migration'].get('error')} |")
            continue
        lines.append("| " + " | ".join(str(cell(f, r)) for _, f in COLS) + " |")
        key = (cell(COLS[0][1], r), cell(COLS[1][1], r), cell(COLS[2][1], r))
        groups.setdefault(key, []).append(r)
    for key, rs in groups.items():
        med = []
        for i, (_, f) in enumerate(COLS):
            vals = [cell(f, r) for r in rs if cell(f, r) is not None]
            m = statistics.median(vals) if vals else None
            med.append(str(key[i]) if i < 3 else "-" if m is None else
                       str(round(m, 2 if abs(m) < 10 else 1)))
        lines.append("| **median** " + " | ".join(med) + f" (n={len(rs)}) |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--imsprobe", default=os.path.join(HERE, "..", "..", "target", "release", "imsprobe"))
    p.add_argument("--out", default=None)
    p.add_argument("configs", nargs="+")
    a = p.parse_args()
    a.imsprobe = os.path.abspath(a.imsprobe)
    out = a.out or f"/tmp/mlab-measure-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    os.makedirs(out, exist_ok=True)
    rows = []
    lab("down", check=False)
    try:
        for c in a.configs:
            mem, dirty, *extra = c.split(":", 2)
            up = ["up", "--mem", mem, "--dirty", dirty] + (extra[0].split() if extra else [])
            print(f"measure: {' '.join(up)}", file=sys.stderr, flush=True)
            lab(*up)
            for i in range(a.reps):
                r = trial(a, out, len(rows) + 1)
                rows.append(r)
                with open(os.path.join(out, "trials.jsonl"), "a") as f:
                    f.write(json.dumps(r) + "\n")
                m = r["migration"]
                print(f"measure:   {m.get('from')}->{m.get('to')} ok={m.get('ok')} "
                      f"downtime={(m.get('qemu') or {}).get('downtime')} "
                      f"stop->resume={m.get('stop_to_resume_ms')} icmp loss={r.get('icmp_loss_ms')} "
                      f"gap={r.get('icmp_gap_ms')} sip gap={r.get('sip_gap_ms')}",
                      file=sys.stderr, flush=True)
            lab("down")
    finally:
        lab("down", check=False)
    t = table(rows)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(t + "\n")
    print(t)
    print(f"measure: results in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
