#!/usr/bin/env python3
"""Registrations/s through the lab IMS core (lab/ims) and where the time goes.

usage (root; the lab running):  python3 bench/ims_reg.py RUNDIR RATE[,RATE...] [SECONDS] [--capture]
                                    [-- IMSLOAD-ARGS...]   (e.g. -- --ue-ports users)

For each rate, imsload (target/release/imsload, inside the lab's namespace) registers
RATE x SECONDS users of RUNDIR/subscribers.csv with AKA at --reg-rate RATE, then de-registers
them. Meanwhile /proc is sampled every 0.25 s: CPU time of every process in the namespace,
summed per node (process group of RUNDIR/{pcscf,icscf,scscf,hss}.pid, imsload apart).
Printed per rate: registrations ok/failed/timed out, extra challenge rounds, achieved rate over
the registration window, RRD percentiles, and each node's CPU (% of one core) during that window
(first to last second of the series in phase "registering"). With --capture, tcpdump records
the lab's loopback during the run and tshark splits the time: SIP response times per hop
(UE-P, P-I, I-S) and Diameter answer times per command (Cx, at the CSCF's side of the HSS).
Arguments after "--" are passed to imsload as they are. "pcscf_records": the P-CSCF's
`ulpcscf.status` Records, read once all users should be registered (SECONDS + 0.5 s in).
"""
import csv
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMSLOAD = os.path.join(ROOT, "target/release/imsload")
DOMAIN = "ims.mnc001.mcc001.3gppnetwork.org"
TCK = os.sysconf("SC_CLK_TCK")
NODES = ["pcscf", "icscf", "scscf", "hss"]


def proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        # fields after the comm: state(3) ppid pgrp ... utime(14) stime(15)
        return int(rest[2]), int(rest[11]) + int(rest[12])
    except (OSError, IndexError):
        return None


class Sampler(threading.Thread):
    """Cumulative CPU ticks per node, every 0.25 s. A process that exits takes its ticks with
    it: only long-lived processes (the CSCFs, the HSS, imsload) are measured."""

    def __init__(self, ns, groups):
        super().__init__(daemon=True)
        self.ns, self.groups, self.samples, self.stop = ns, groups, [], False
        self.seen = {}

    def run(self):
        while not self.stop:
            pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True,
                                  text=True).stdout.split()
            now = time.time()
            for p in pids:
                t = proc_ticks(p)
                if t is None:
                    continue
                pgrp, ticks = t
                node = self.groups.get(pgrp, "imsload")
                self.seen[p] = (node, ticks)
            tot = {}
            for node, ticks in self.seen.values():
                tot[node] = tot.get(node, 0) + ticks
            # the whole machine (other tenants included): busy and all ticks of every CPU
            with open("/proc/stat") as f:
                cpu = [int(x) for x in f.readline().split()[1:]]
            tot["_busy"] = sum(cpu) - cpu[3] - cpu[4]
            tot["_all"] = sum(cpu)
            self.samples.append((now, tot))
            time.sleep(0.25)

    def at(self, t):
        """Sample nearest to wall time t."""
        return min(self.samples, key=lambda s: abs(s[0] - t))


def udp_errors(ns):
    """The namespace's UDP receive-buffer drops (all sockets) so far."""
    txt = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
                         capture_output=True, text=True).stdout
    rows = [l.split() for l in txt.splitlines() if l.startswith("Udp:")]
    return int(dict(zip(rows[0][1:], rows[1][1:]))["RcvbufErrors"])


def socket_drops(ns):
    """UDP drops per local address (ss's skmem d field): which node's socket overflowed."""
    txt = subprocess.run(["ip", "netns", "exec", ns, "ss", "-uanm"], capture_output=True,
                         text=True).stdout
    out, local = {}, None
    for l in txt.splitlines():
        f = l.split()
        if f and f[0] in ("UNCONN", "ESTAB"):
            local = f[3]
        elif "skmem:(" in l and local:
            sk = l.split("skmem:(")[1].split(")")[0]
            d = [x for x in sk.split(",") if x.startswith("d")]
            if d and int(d[0][1:]) > 0:
                out[local] = out.get(local, 0) + int(d[0][1:])
    return out


def ts(s):
    # 2026-11-25T07:07:55.381061415Z -> epoch seconds (nanoseconds cut to micro)
    s = s.rstrip("Z")
    if "." in s:
        a, b = s.split(".")
        s = a + "." + b[:6]
    return datetime.fromisoformat(s + "+00:00").timestamp()


def pcscf_records(rundir, into):
    txt = subprocess.run(["kamcmd", "-s", f"unix:{rundir}/pcscf_ctl", "ulpcscf.status"],
                         capture_output=True, text=True).stdout
    into += [int(l.split(":")[1]) for l in txt.splitlines() if l.strip().startswith("Records:")]


def run_rate(rundir, ns, groups, rate, seconds, capture, extra=()):
    users_total = sum(1 for _ in open(os.path.join(rundir, "subscribers.csv"))) - 1
    n = min(int(rate * seconds), users_total)
    csvf = os.path.join(rundir, f"bench-users-{rate}.csv")
    with open(os.path.join(rundir, "subscribers.csv")) as f, open(csvf, "w") as o:
        for i, line in enumerate(f):
            if i <= n:
                o.write(line)
    report = os.path.join(rundir, f"bench-{rate}.json")
    series = os.path.join(rundir, f"bench-{rate}.csv")
    pcap = os.path.join(rundir, f"bench-{rate}.pcap")
    dump = None
    if capture:
        dump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", "lo", "-s", "0",
                                 "-B", "16384", "-w", pcap, "udp or tcp port 3868"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    drops0 = udp_errors(ns)
    s = Sampler(ns, groups)
    s.start()
    time.sleep(0.6)
    t0 = time.time()
    records = []
    rec = threading.Timer(min(n / rate, seconds) + 0.5, pcscf_records, (rundir, records))
    rec.start()
    subprocess.run(["ip", "netns", "exec", ns, IMSLOAD, "--target", "127.0.0.21:5060",
                    "--domain", DOMAIN, "--users-file", csvf, "--reg-rate", str(rate),
                    "--cps", "0", "--duration", "1s", "--drain", "20s", "--expires", "3600",
                    "--quiet", "--report", report, "--series", series, *extra],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    rec.join()
    time.sleep(0.6)
    s.stop = True
    s.join()
    if dump:
        time.sleep(0.5)
        dump.terminate()
        dump.wait()
    drops = udp_errors(ns) - drops0
    per_socket = socket_drops(ns)
    r = json.load(open(report))
    c = r["counters"]
    shm = {}
    for node in ["pcscf", "icscf", "scscf"]:
        txt = subprocess.run(["kamcmd", "-s", f"unix:{rundir}/{node}_ctl", "core.shmmem"],
                             capture_output=True, text=True).stdout
        vals = dict(l.strip().split(": ") for l in txt.splitlines() if ": " in l)
        # max_used: the peak since the node started (restart the lab per rate for a clean one)
        shm[node] = (f"{int(vals['max_used']) >> 20}/{int(vals['total']) >> 20} MB"
                     if "max_used" in vals else "node gone (crashed?)")
    rows = list(csv.DictReader(open(series)))
    reg_rows = [x for x in rows if x["phase"] == "registering"]
    # a series row is stamped at the end of its second
    w0 = ts(reg_rows[0]["utc"]) - 1.0
    w1 = ts(reg_rows[-1]["utc"])
    a, b = s.at(w0), s.at(w1)
    dt = b[0] - a[0]
    cpu = {k: 100.0 * (b[1].get(k, 0) - a[1].get(k, 0)) / TCK / dt for k in NODES + ["imsload"]}
    cpu["machine_busy_of_all_cpus"] = (100.0 * (b[1]["_busy"] - a[1]["_busy"])
                                       / max(1, b[1]["_all"] - a[1]["_all"]))
    ok_in_window = sum(int(x["reg_ok"]) for x in reg_rows)
    rrd = r["rfc6076"]["registration_request_delay"]
    out = {
        "rate": rate, "users": n, "reg_ok": c["reg_ok"], "reg_failed": c["reg_failed"],
        "reg_timeouts": c["reg_timeouts"], "extra_challenges": c["reg_extra_challenges"],
        "retransmits": c["retransmits"], "window_s": round(dt, 2),
        "achieved_per_s": round(ok_in_window / max(dt, 1e-9), 1),
        "rrd_p50_ms": rrd["p50_ms"], "rrd_p90_ms": rrd["p90_ms"], "rrd_p99_ms": rrd["p99_ms"],
        "rrd_max_ms": rrd["max_ms"], "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
        "shm_peak": shm, "udp_rcvbuf_drops": drops, "drops_by_socket": per_socket, "status": r["status_codes"], "run_s": round(wall, 1), "pcscf_records": sum(records) if records else None,
        "imsload_args": " ".join(extra), "loadavg": open("/proc/loadavg").read().split()[:3],
    }
    if capture:
        out["hops"] = split_time(pcap)
    return out


def split_time(pcap):
    """Median and p99 response times (ms) per SIP hop and per Diameter command."""
    def fields(filt, *f):
        args = ["tshark", "-r", pcap, "-Y", filt, "-T", "fields"]
        for x in f:
            args += ["-e", x]
        return [l.split("\t") for l in subprocess.run(args, capture_output=True, text=True)
                .stdout.splitlines() if l.strip()]

    def pct(v, p):
        v = sorted(v)
        return round(v[min(len(v) - 1, int(p * len(v)))], 2) if v else None

    out = {}
    # SIP: per hop, first request -> first final response with the same top Via branch (each
    # sender adds its own Via, so a branch names one hop's transaction). Retransmissions and
    # 100 Trying ignored.
    names = {"127.0.0.21": "P", "127.0.0.22": "I", "127.0.0.23": "S"}
    sent = {}
    for t, src, dst, status, branches in fields(
            'sip.CSeq.method == "REGISTER"', "frame.time_epoch", "ip.src", "ip.dst",
            "sip.Status-Code", "sip.Via.branch"):
        top = branches.split(",")[0]
        if not status:
            sent.setdefault(top, (float(t), names.get(src, "UE"), names.get(dst, dst)))
        elif int(status) >= 200 and top in sent:
            t0, asker, hop = sent.pop(top)
            out.setdefault(f"SIP {asker}->{hop} {status}", []).append(1000 * (float(t) - t0))
    for cmds, rts in fields("diameter.flags.request == 0 && diameter.resp_time",
                            "diameter.cmd.code", "diameter.resp_time"):
        # several Diameter messages in one TCP segment: comma-separated, in order
        for cmd, rt in zip(cmds.split(","), rts.split(",")):
            name = {"300": "UAR", "301": "SAR", "302": "LIR", "303": "MAR"}.get(cmd, cmd)
            out.setdefault(f"Cx {name}", []).append(1000 * float(rt))
    return {k: {"n": len(v), "p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99)}
            for k, v in sorted(out.items())}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    if "--" in sys.argv:
        sys.argv = sys.argv[:sys.argv.index("--")]
    rundir = sys.argv[1]
    rates = [int(x) for x in sys.argv[2].split(",")]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3][0].isdigit() else 10.0
    capture = "--capture" in sys.argv
    ns = open(os.path.join(rundir, "netns")).read().strip()
    groups = {int(open(os.path.join(rundir, f"{n}.pid")).read()): n for n in NODES}
    for rate in rates:
        res = run_rate(rundir, ns, groups, rate, seconds, capture, extra)
        print(json.dumps(res), flush=True)
        time.sleep(3)  # the S-CSCF's timer drops the de-registered users


if __name__ == "__main__":
    main()
