#!/usr/bin/env python3
"""imsprobe benchmark (not a timed test): probe a local target at 1, 5 and 10 kHz per layer and
print the achieved rate, the send-interval jitter p99, the CPU % of imsprobe, and the smallest
gap it detects reliably, beside `ping -i` (iputils) run in the same benchmark.

    python3 bench/probe_bench.py [--seconds 10] [--rates 1000,5000,10000]
    python3 bench/probe_bench.py --no-build --steady-only --rates 1000,10000 --repeat 3 \
        --exe /tmp/imsprobe-old --exe target/release/imsprobe     # compare builds

Comparing builds: on a shared machine CPU figures drift with the neighbours' load, so the
steady-state runs of the given binaries alternate (rate by rate, `--repeat` rounds), and the
`build` column names the binary by its index in `--exe`.

Target: `imsload serve` on 127.0.0.1 (a light SIP UAS that answers OPTIONS with 200). ICMP goes to
the same loopback address (answered by the kernel).

Smallest gap detected reliably: the target process is paused with SIGSTOP/SIGCONT (what a VM's
stop-and-copy looks like to a client) for 1, 2, 5, 10 and 20 ms, five times each, while
imsprobe runs with --min-gap 0.25 ms. A pause length L is detected reliably when every injection
of L produced a reply gap within 2 probe intervals + 1 ms of the injected pause, and the run had
no unexplained gap of L/2 or more anywhere else (false positives: the noise floor). Injection times are matched to reported
gaps by wall clock.

Needs root for ICMP (raw socket) and for ping intervals below 2 ms. Network traffic stays on
127.0.0.1.
"""
import argparse
import calendar
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def utc_ns(label):
    """Unix ns of an RFC 3339 UTC label with nanoseconds (2026-11-25T04:24:33.300214805Z)."""
    return calendar.timegm(time.strptime(label[:19], "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(label[20:29])


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_probe(exe, target, rate, seconds, out, extra=(), during=None):
    """Runs imsprobe; `during(proc)` is called while it runs. Returns (report, cpu_s, wall_s)."""
    cpu0 = child_cpu()
    t0 = time.monotonic()
    p = subprocess.Popen(
        [exe, "--target", target, "--rate", str(rate), "--duration", f"{seconds}s",
         "--quiet", "--no-plot", "--no-capture", "--out", out, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if during:
        during(p)
    _, err = p.communicate(timeout=seconds + 60)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"imsprobe failed: {err}")
    with open(os.path.join(out, "report.json")) as f:
        rep = json.load(f)
    return rep, child_cpu() - cpu0, wall


def layer(rep, name):
    for l in rep["layers"]:
        if l["layer"] == name:
            return l
    return None


def run_ping(rate, seconds):
    if not shutil.which("ping"):
        return None
    n = int(rate * seconds)
    cpu0 = child_cpu()
    t0 = time.monotonic()
    p = subprocess.run(["ping", "-D", "-n", "-i", f"{1.0 / rate:.6f}",
                        "-c", str(n), "-W", "1", "127.0.0.1"],
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    cpu = child_cpu() - cpu0
    stamps = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\].*icmp_seq=", p.stdout, re.M)]
    got = len(stamps)
    ivals = sorted(abs((b - a) - 1.0 / rate) for a, b in zip(stamps, stamps[1:]))
    jit = ivals[int(0.99 * (len(ivals) - 1))] * 1e6 if ivals else None
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", p.stdout)
    return {
        "sent": n, "replies": got,
        "achieved_rate": (got - 1) / (stamps[-1] - stamps[0]) if got > 1 else 0.0,
        "reply_interval_jitter_p99_us": jit,
        "cpu_pct": 100.0 * cpu / wall, "wall_s": wall,
        "rtt_avg_ms": float(rtt.group(2)) if rtt else None,
        "error": p.stderr.strip()[:200] if p.returncode not in (0, 1) else None,
    }


def inject_pauses(pid, lengths_ms, reps, start_delay, spacing, log):
    def during(_proc):
        time.sleep(start_delay)
        for ms in lengths_ms:
            for _ in range(reps):
                a = time.monotonic_ns()
                w0 = time.time_ns()
                os.kill(pid, signal.SIGSTOP)
                b = time.monotonic_ns()
                # Sleep most of it, spin the rest for precision.
                end = a + int(ms * 1e6)
                if ms > 2:
                    time.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9 - 0.001))
                while time.monotonic_ns() < end:
                    pass
                c = time.monotonic_ns()
                os.kill(pid, signal.SIGCONT)
                d = time.monotonic_ns()
                log.append({"ms": ms, "injected_ms": ((c - a) + (d - b)) / 2e6,
                            "wall_mid_ns": w0 + (c - a) // 2})
                time.sleep(spacing)
    return during


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--exe", action="append", default=[],
                    help="imsprobe binary to measure (repeat to compare builds back to back in the "
                         "steady-state table, alternating; default target/release/imsprobe)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="steady-state runs per rate and binary (alternating between binaries)")
    ap.add_argument("--steady-only", action="store_true",
                    help="only the steady-state table (no ping, no pause injection)")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bins", "-q"], cwd=ROOT, check=True)
    exes = args.exe or [os.path.join(ROOT, "target/release/imsprobe")]
    exe = exes[0]
    serve = os.path.join(ROOT, "target/release/imsload")
    port = free_port()
    target = f"127.0.0.1:{port}"
    srv = subprocess.Popen([serve, "serve", "--listen", target, "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp(prefix="imsprobe-bench")
    results = []
    try:
        time.sleep(0.5)
        print(f"target: imsload serve on {target} (pid {srv.pid}); {args.seconds:.0f} s per run; "
              f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        print()
        print("== steady state: SIP OPTIONS + ICMP echo at the same rate each")
        hdr = (f"{'rate/layer':>10} {'build':>5} {'layer':>5} {'achieved/s':>11} {'send jitter p99 µs':>19} "
               f"{'pacer late p99 µs':>18} {'max reply ivl ms':>17} {'lost':>5} {'rtt p50/p99 ms':>16} {'CPU %':>6}")
        print(hdr)
        for rate in rates:
          for rep_i in range(args.repeat):
           for bi, ex in enumerate(exes):
            out = os.path.join(tmp, f"steady-{rate}-{bi}-{rep_i}")
            rep, cpu, wall = run_probe(ex, target, rate, args.seconds, out)
            cpu_pct = 100.0 * cpu / wall
            for name in ("sip", "icmp"):
                l = layer(rep, name)
                if not l:
                    continue
                s = l["summary"]
                print(f"{rate:>10} {bi:>5} {name:>5} {s['achieved_rate']:>11.1f} {s['send_interval_jitter_p99_us']:>19.1f} "
                      f"{rep['pacer']['lateness_p99_ns'] / 1e3:>18.1f} {s['max_reply_interval_ms']:>17.3f} "
                      f"{s['lost']:>5} {s['rtt_p50_ms']:>7.3f}/{s['rtt_p99_ms']:<8.3f} {cpu_pct:>6.1f}")
                results.append({"kind": "steady", "rate": rate, "layer": name, "cpu_pct": cpu_pct, **s,
                                "exe": ex, "pacer": rep["pacer"]})
        if args.steady_only:
            return
        print()
        print("== ping -D -i 1/rate -c rate*seconds 127.0.0.1 (iputils), same machine, same time")
        for rate in rates:
            r = run_ping(rate, args.seconds)
            if r is None:
                print("ping not installed (apt-get install iputils-ping): skipped")
                break
            print(f"{rate:>10} ping  achieved {r['achieved_rate']:>9.1f}/s  reply-interval jitter p99 "
                  f"{r['reply_interval_jitter_p99_us'] or 0:>8.1f} µs  rtt avg {r['rtt_avg_ms']} ms  "
                  f"CPU {r['cpu_pct']:.1f} %  replies {r['replies']}/{r['sent']}"
                  + (f"  ({r['error']})" if r['error'] else ""))
            results.append({"kind": "ping", "rate": rate, **r})
        print()
        print("== smallest gap detected reliably (SIP layer; target paused with SIGSTOP/SIGCONT)")
        lengths = [1, 2, 5, 10, 20]
        reps = 5
        for rate in rates:
            log = []
            interval_ms = 1000.0 / rate
            dur = 1.0 + len(lengths) * reps * 0.25 + 1.0
            out = os.path.join(tmp, f"gaps-{rate}")
            rep, _, _ = run_probe(exe, target, rate, dur, out,
                                  extra=["--sip", "--min-gap", "250us"],
                                  during=inject_pauses(srv.pid, lengths, reps, 1.0, 0.25, log))
            gaps = [(utc_ns(g["start_utc"]), utc_ns(g["end_utc"]), g["duration_ms"])
                    for g in layer(rep, "sip")["reply_gaps"]]
            line = []
            smallest = None
            for ms in lengths:
                inj = [x for x in log if x["ms"] == ms]
                ok = 0
                errs = []
                chosen = set()
                for x in inj:
                    # The longest gap around the pause midpoint.
                    m = [g for g in gaps if g[0] - 1e6 <= x["wall_mid_ns"] <= g[1] + 1e6]
                    if m:
                        best = max(m, key=lambda g: g[2])
                        chosen.add(best)
                        err = best[2] - x["injected_ms"]
                        errs.append(err)
                        if abs(err) <= 2 * interval_ms + 1.0:
                            ok += 1
                # False positives: gaps of at least half this length that no injection explains.
                explained = set()
                for x in log:
                    m = [g for g in gaps if g[0] - 1e6 <= x["wall_mid_ns"] <= g[1] + 1e6]
                    if m:
                        explained.add(max(m, key=lambda g: g[2]))
                false = [g for g in gaps if g not in explained and g[2] >= ms * 0.5]
                reliable = ok == len(inj) and not false
                if reliable and smallest is None:
                    smallest = ms
                line.append(f"{ms} ms: {ok}/{len(inj)} ok, err {min(errs, default=0):+.2f}..{max(errs, default=0):+.2f} ms,"
                            f" {len(false)} false")
            print(f"{rate:>10}/s  smallest reliable: {smallest if smallest else '>20'} ms   | " + " | ".join(line))
            results.append({"kind": "gaps", "rate": rate, "smallest_reliable_ms": smallest, "detail": line})
        with open(os.path.join(tmp, "bench.json"), "w") as f:
            json.dump(results, f, indent=1)
        print()
        print(f"raw results: {os.path.join(tmp, 'bench.json')}")
    finally:
        srv.send_signal(signal.SIGCONT)
        srv.terminate()
        srv.wait(timeout=10)


if __name__ == "__main__":
    main()
