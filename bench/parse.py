#!/usr/bin/env python3
"""Helper for bench/compare.sh (python3, standard library only).

Every run NAME leaves raw files in the work directory W:
  NAME.time        "%U %S %M %e" from /usr/bin/time (user s, sys s, max RSS KiB, wall s)
  NAME.uas.time    the same for the SIPp UAS / imsload serve of that run (if any)
  NAME.rss         "t_s vmrss_kib vmhwm_kib cpu_ticks" samples of the generator process
  NAME.cpu         /proc/stat 'cpu' lines before and after the run
  NAME.report.json NAME.series.csv   (imsload)
  NAME.stat.csv                      (SIPp -trace_stat)

  parse.py imsload W NAME OFFERED CALLS  -> writes W/NAME.json, prints a one-line verdict
  parse.py sipp    W NAME OFFERED CALLS  -> the same for SIPp
  parse.py pass    W NAME                -> exit status 0 if that run passed
  parse.py reg-imsload W NAME USERS RATE / reg-sipp W NAME USERS RATE
  parse.py table W                  -> the final tables from all W/*.json
"""
import csv
import json
import math
import os
import sys

FAIL_PCT = 1.0      # a step fails above this share of failed calls
# imsload's workers close each second of the series 100 ms before the row is written
# (src/load/runner.rs): a row stamped t counts what happened up to t - 0.1 s.
SERIES_LEAD = 0.1


def series_t(row):
    """The instant up to which an imsload series row counts (the final 'done' row is written
    when the workers have finished: its own time)."""
    t = float(row["t_s"])
    return t if row.get("phase") == "done" else t - SERIES_LEAD
RATE_MIN = 0.95     # ... or below this share of the offered rate


def read_time(path):
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 4:
                    try:
                        u, s, m, e = float(p[0]), float(p[1]), int(p[2]), float(p[3])
                    except ValueError:
                        continue
                    return {"user_s": u, "sys_s": s, "cpu_s": u + s, "maxrss_kb": m, "wall_s": e}
    except OSError:
        pass
    return None


def read_rss(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) == 4:
                    out.append((float(p[0]), int(p[1]), int(p[2]), int(p[3])))
    except OSError:
        pass
    return out


def read_cpu(path):
    """Two /proc/stat 'cpu' lines (before, after): (busy CPU seconds, wall seconds)."""
    try:
        with open(path) as f:
            rows = [[int(x) for x in l.split()[1:]] for l in f if l.startswith("cpu ")]
    except (OSError, ValueError):
        return None
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    delta = [y - x for x, y in zip(a, b)]
    hz = os.sysconf("SC_CLK_TCK")
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal
    idle = delta[3] + delta[4]
    return (total - idle) / hz, total / hz / (os.cpu_count() or 1)


def others_s(d):
    """CPU seconds the rest of the machine used during a run (not generator, not target)."""
    if "machine_busy_s" not in d or "cpu_s" not in d:
        return None
    return max(0.0, d["machine_busy_s"] - d["cpu_s"] - d.get("uas_cpu_s", 0.0))


def pct(a, b):
    return 100.0 * a / b if b else float("nan")


def base(w, name, gen, offered):
    d = {"name": name, "gen": gen, "offered": offered}
    t = read_time(os.path.join(w, name + ".time"))
    if t:
        d.update(t)
    u = read_time(os.path.join(w, name + ".uas.time"))
    if u:
        d["uas_cpu_s"] = u["cpu_s"]
        d["uas_maxrss_kb"] = u["maxrss_kb"]
        d["uas_wall_s"] = u["wall_s"]
    m = read_cpu(os.path.join(w, name + ".cpu"))
    if m:
        d["machine_busy_s"], d["machine_span_s"] = m
    rss = read_rss(os.path.join(w, name + ".rss"))
    if rss:
        d["rss_samples"] = rss
        d["vmhwm_kb"] = max(r[2] for r in rss)
        # /usr/bin/time's figure is exact; the 0.2 s samples cover a process it lost.
        d["maxrss_kb"] = max(d.get("maxrss_kb", 0), d["vmhwm_kb"])
    return d


def verdict(d):
    placed = d.get("placed", 0)
    if placed == 0:
        d["fail_pct"] = 100.0
        d["pass"] = False
        return d
    d["fail_pct"] = pct(placed - d["completed"], placed)
    # The offered number of calls must have been placed too (a generator that stops early
    # because it fell behind its --duration did not achieve the rate).
    d["placed_ratio"] = placed / d["total_wanted"] if d.get("total_wanted") else 1.0
    d["rate_ratio"] = d["achieved"] / d["offered"] if d["offered"] else float("nan")
    d["pass"] = (d["fail_pct"] <= FAIL_PCT and d["rate_ratio"] >= RATE_MIN
                 and d["placed_ratio"] >= RATE_MIN)
    if d.get("cpu_s") is not None and d["completed"]:
        d["cpu_per_10k"] = d["cpu_s"] / d["completed"] * 10000.0
    d["others_s"] = others_s(d)
    if d.get("uas_cpu_s") is not None and d.get("gen_secs"):
        # The UAS lives a little longer than the generator: divide by the generator's call time.
        d["uas_cpu_pct"] = 100.0 * d["uas_cpu_s"] / max(d["gen_secs"], 1e-9)
    return d


def interior(vals):
    """Per-second values without the first and the last (partial) second."""
    return vals[1:-1] if len(vals) > 2 else vals


def cmd_imsload(w, name, offered, total_wanted):
    d = base(w, name, "imsload", offered)
    d["total_wanted"] = total_wanted
    try:
        with open(os.path.join(w, name + ".report.json")) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        d["error"] = "no report: %s" % e
        d["placed"] = 0
        d["completed"] = 0
        return finish(w, d)
    c = r["counters"]
    d["placed"] = c["calls_attempted"]
    d["completed"] = c["calls_completed"]
    d["failed"] = c["calls_failed"]
    d["timeouts"] = c["calls_timeout"]
    d["limited"] = c["calls_limited"] + c["calls_unplaced"]
    d["retrans"] = c["retransmits"]
    d["achieved_tool"] = r["achieved_cps"]  # over the whole call phase, tail included
    d["gen_secs"] = r["call_phase_s"]
    d["lag_p99_ms"] = r.get("scheduling_lag", {}).get("p99_ms")
    d["lag_max_ms"] = r.get("scheduling_lag", {}).get("max_ms")
    d["late_actions"] = c.get("late_actions", 0)
    srd = r.get("rfc6076", {}).get("session_request_delay", {})
    d["srd_p99_ms"] = srd.get("p99_ms")
    d["stop_reason"] = r.get("stop_reason")
    rows = read_series(os.path.join(w, name + ".series.csv"))
    cum, pts = 0, []
    for x in rows:
        cum += int(float(x["calls_attempted"]))
        pts.append((series_t(x), cum))
    d["achieved"] = placing_rate(pts, d["placed"], d["achieved_tool"])
    calling = [x for x in rows if x.get("phase") == "calling"]
    per_s = [float(x["calls_attempted"]) for x in calling]
    if per_s:
        inner = interior(per_s)
        d["per_s_min"] = min(inner)
        d["per_s_max"] = max(inner)
    if rows:
        d["live_max"] = max(int(float(x.get("active_calls", 0))) for x in rows)
    d["active_peak_kb"] = peak_before(d, rows)
    return finish(w, d)


def peak_before(d, rows):
    """imsload's peak RSS up to the end of its call phase (before it ends its calls and
    de-registers): the highest VmHWM sampled by then. /usr/bin/time's figure otherwise."""
    rss = d.get("rss_samples", [])
    t_calling = [float(x["t_s"]) for x in rows if x.get("phase") == "calling"]
    if rss and t_calling:
        before = [s for s in rss if s[0] <= t_calling[-1] - 0.1]
        if before:
            return max(s[2] for s in before)
    return d.get("maxrss_kb")


def placing_rate(points, placed, fallback):
    """Calls placed / the time it took to place them (from the start of the process to the
    last INVITE, from the per-second counts), the same way for both generators: the rate the
    generator achieved, without the tail of its last calls (which belongs to the target)."""
    t = done_time(points, placed) if placed else None
    return placed / t if t else fallback


def read_series(path):
    try:
        with open(path) as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def read_sipp_stat(path):
    """SIPp -trace_stat CSV: header line, then one ';'-separated row per period and at exit."""
    try:
        with open(path, encoding="latin-1") as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
    except OSError:
        return []
    if not lines:
        return []
    head = lines[0].split(";")
    rows = []
    for l in lines[1:]:
        v = l.split(";")
        if len(v) < len(head) - 1:
            continue
        rows.append(dict(zip(head, v)))
    return rows


def epoch_of(field):
    # "2026-11-25\t04:22:38.292599\t1795580558.292599"
    try:
        return float(field.split("\t")[-1])
    except (ValueError, IndexError):
        return float("nan")


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return 0.0


def cmd_sipp(w, name, offered, total_wanted):
    d = base(w, name, "sipp", offered)
    d["total_wanted"] = total_wanted
    rows = read_sipp_stat(os.path.join(w, name + ".stat.csv"))
    if not rows:
        d["error"] = "no SIPp statistics"
        d["placed"] = 0
        d["completed"] = 0
        return finish(w, d)
    last = rows[-1]
    d["placed"] = int(num(last["OutgoingCall(C)"]))
    d["completed"] = int(num(last["SuccessfulCall(C)"]))
    d["failed"] = int(num(last["FailedCall(C)"]))
    d["retrans"] = int(num(last["Retransmissions(C)"]))
    d["achieved_tool"] = num(last["CallRate(C)"])  # over its whole run, tail included
    t0 = epoch_of(last["StartTime"])
    pts = [(epoch_of(r["CurrentTime"]) - t0, int(num(r["OutgoingCall(C)"]))) for r in rows]
    d["achieved"] = placing_rate(pts, d["placed"], d["achieved_tool"])
    d["gen_secs"] = epoch_of(last["CurrentTime"]) - t0
    d["live_max"] = max(int(num(r["CurrentCall"])) for r in rows)
    d["active_peak_kb"] = d.get("maxrss_kb")
    d["fail_kinds"] = {k[:-3]: int(num(v)) for k, v in last.items()
                       if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)"
                       and num(v) > 0}
    # Per-second created calls, from the periodic rows (not the final row at exit).
    per_s = [num(r["OutgoingCall(P)"]) for r in rows[:-1]]
    per_s = [x for x in per_s if x > 0]
    if per_s:
        inner = interior(per_s)
        d["per_s_min"] = min(inner)
        d["per_s_max"] = max(inner)
    return finish(w, d)


def finish(w, d):
    verdict(d)
    with open(os.path.join(w, d["name"] + ".json"), "w") as f:
        json.dump(d, f)
    extra = ""
    if d.get("error"):
        extra = "  ERROR " + d["error"]
    if d.get("fail_kinds"):
        extra += "  " + " ".join("%s=%d" % kv for kv in d["fail_kinds"].items())
    if d["gen"] == "imsload" and d.get("late_actions"):
        extra += "  late_actions=%d lag_p99=%.1fms" % (d["late_actions"], d.get("lag_p99_ms") or 0)
    print("  %-8s %6.0f/s offered: placed %7d completed %7d fail %5.2f%% achieved %8.1f/s "
          "(%5.1f%%) retrans %6d cpu %5.2fs rss %6.1fMB uas-cpu %s others %s -> %s%s" % (
              d["gen"], d["offered"], d.get("placed", 0), d.get("completed", 0), d["fail_pct"],
              d.get("achieved", 0.0), 100 * d.get("rate_ratio", 0.0) if not math.isnan(
                  d.get("rate_ratio", float("nan"))) else 0.0,
              d.get("retrans", 0), d.get("cpu_s", float("nan")),
              d.get("maxrss_kb", 0) / 1024.0,
              ("%3.0f%%" % d["uas_cpu_pct"]) if "uas_cpu_pct" in d else "  ?",
              fmt(d.get("others_s"), "%.1fs"),
              "PASS" if d["pass"] else "FAIL", extra))
    sys.stdout.flush()
    return d


# ---------------------------------------------------------------- registrations

def done_time(points, total):
    """points: [(t, cumulative)], one a second. The time at which `total` was reached:
    inside the (partial) second that reached it, at the pace of the second before, or
    linearly if it is the first."""
    prev_t, prev_c, pace = 0.0, 0, None
    for t, c in points:
        if c >= total:
            if c == prev_c:
                return t
            if pace:
                return prev_t + (total - prev_c) / pace
            return prev_t + (t - prev_t) * (total - prev_c) / (c - prev_c)
        if t > prev_t and c > prev_c:
            pace = (c - prev_c) / (t - prev_t)
        prev_t, prev_c = t, c
    return None


def sustained(points):
    """Median registrations per full second (without the first and the last second)."""
    per = []
    for (t0, c0), (t1, c1) in zip(points, points[1:]):
        if t1 > t0:
            per.append((c1 - c0) / (t1 - t0))
    per = per[:-1]  # the second that completed the registrations is partial
    if not per:
        return None
    per.sort()
    return per[len(per) // 2]


def cmd_reg_imsload(w, name, users, rate):
    d = base(w, name, "imsload", rate)
    d["users"] = users
    try:
        with open(os.path.join(w, name + ".report.json")) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        d["error"] = str(e)
        return reg_finish(w, d)
    c = r["counters"]
    d["reg_ok"] = c["reg_ok"]
    d["reg_failed"] = c["reg_failed"] + c["reg_timeouts"] + c["reg_auth_rejected"]
    rrd = r["rfc6076"]["registration_request_delay"]
    d["rrd_p50_ms"] = rrd.get("p50_ms")
    d["rrd_p99_ms"] = rrd.get("p99_ms")
    rows = read_series(os.path.join(w, name + ".series.csv"))
    cum, pts, retr = 0, [], 0
    for x in rows:
        if pts and pts[-1][1] >= d["reg_ok"]:
            break  # registration over: later rows are the idle phase and de-registration
        cum += int(float(x["reg_ok"]))
        pts.append((series_t(x), cum))
        retr += int(float(x["retransmits"]))
    d["retrans"] = retr  # retransmissions up to the second that completed registration
    t = done_time(pts, d["reg_ok"]) if d["reg_ok"] else None
    d["reg_phase_s"] = t
    d["reg_per_s"] = d["reg_ok"] / t if t else 0.0
    d["reg_sustained"] = sustained(pts)
    d["active_peak_kb"] = peak_before(d, rows)
    # CPU of the registration phase alone: the first sample after it ended.
    rss = d.get("rss_samples", [])
    after = [s for s in rss if t is not None and s[0] >= t]
    if after:
        d["reg_cpu_s"] = after[0][3] / os.sysconf("SC_CLK_TCK")
    # RSS once registered and idle: the last sample taken in the 'calling' phase.
    rss = d.get("rss_samples", [])
    t_calling = [float(x["t_s"]) for x in rows if x["phase"] == "calling"]
    if rss and t_calling:
        end = t_calling[-1]
        before = [s for s in rss if s[0] <= end - 0.3]
        if before:
            d["settled_rss_kb"] = before[-1][1]
    return reg_finish(w, d)


def cmd_reg_sipp(w, name, users, rate):
    d = base(w, name, "sipp", rate)
    d["users"] = users
    rows = read_sipp_stat(os.path.join(w, name + ".stat.csv"))
    if not rows:
        d["error"] = "no SIPp statistics"
        return reg_finish(w, d)
    last = rows[-1]
    d["reg_ok"] = int(num(last["SuccessfulCall(C)"]))
    d["reg_failed"] = int(num(last["FailedCall(C)"]))
    d["active_peak_kb"] = d.get("maxrss_kb")
    d["retrans"] = int(num(last["Retransmissions(C)"]))
    t0 = epoch_of(last["StartTime"])
    pts = [(epoch_of(r["CurrentTime"]) - t0, int(num(r["SuccessfulCall(C)"]))) for r in rows]
    while len(pts) > 1 and pts[-2][1] >= d["reg_ok"]:
        pts.pop()  # idle rows after the last registration
    t = done_time(pts, d["reg_ok"]) if d["reg_ok"] else None
    d["reg_phase_s"] = t
    d["reg_per_s"] = d["reg_ok"] / t if t else 0.0
    d["reg_sustained"] = sustained(pts)
    return reg_finish(w, d)


def reg_finish(w, d):
    d["others_s"] = others_s(d)
    d.setdefault("reg_ok", 0)
    d.setdefault("reg_failed", 0)
    cpu = d.get("reg_cpu_s", d.get("cpu_s"))  # SIPp: its whole run is the registrations
    if cpu is not None and d["reg_ok"]:
        d["cpu_per_10k"] = cpu / d["reg_ok"] * 10000.0
    with open(os.path.join(w, d["name"] + ".json"), "w") as f:
        json.dump(d, f)
    print("  %-8s %6d users at %6.0f/s offered: ok %7d failed %6d in %s -> %8.0f reg/s "
          "(full seconds: %s/s), "
          "retrans %6d, rrd p99 %s ms, cpu %5.2fs, rss %6.1fMB (settled %s), serve cpu %s rss %s, others %s%s" % (
              d["gen"], d["users"], d["offered"], d["reg_ok"], d["reg_failed"],
              ("%.2fs" % d["reg_phase_s"]) if d.get("reg_phase_s") else "?",
              d.get("reg_per_s", 0.0), fmt(d.get("reg_sustained"), "%.0f"), d.get("retrans", 0),
              ("%.1f" % d["rrd_p99_ms"]) if d.get("rrd_p99_ms") is not None else "-",
              d.get("cpu_s", float("nan")), d.get("maxrss_kb", 0) / 1024.0,
              ("%.1fMB" % (d["settled_rss_kb"] / 1024.0)) if "settled_rss_kb" in d else "-",
              ("%.2fs" % d["uas_cpu_s"]) if "uas_cpu_s" in d else "?",
              ("%.1fMB" % (d["uas_maxrss_kb"] / 1024.0)) if "uas_maxrss_kb" in d else "?",
              fmt(d.get("others_s"), "%.1fs"),
              ("  ERROR " + d["error"]) if d.get("error") else ""))
    sys.stdout.flush()
    return d


# ---------------------------------------------------------------- final table

def load(w, name):
    try:
        with open(os.path.join(w, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(x, spec="%.1f", none="-"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return spec % x


def ratio(a, b, spec="%.2f"):
    if a is None or b is None or not b or (isinstance(a, float) and math.isnan(a)):
        return "-"
    return (spec + "x") % (a / b)


def cmd_table(w):
    with open(os.path.join(w, "meta.json")) as f:
        meta = json.load(f)
    out = []
    p = out.append
    p("")
    p("imsload vs SIPp %s, loopback UDP, %s; %s" % (meta["sipp_version"], meta["machine"], meta["when"]))
    p("target: sipp -sn uas (fresh per run, -buff_size 8388608); imsload --workers %s; "
      "SIPp -sn uac (one thread) with -buff_size 8388608" % meta["workers"])
    p("")

    # Step search.
    steps = meta["steps"]
    best = {}
    p("Step search (%ss per step, hold 0; a step passes with <= %.0f%% failed calls and >= %.0f%% "
      "of the offered rate; a failed step is run once more). achieved/s = calls placed / time to "
      "place them, from each tool's per-second counts (+-0.5 %%; the tail of the last calls is "
      "left out):" % (meta["step_secs"], FAIL_PCT, 100 * RATE_MIN))
    p("| cps | gen | placed | fail % | achieved/s | retrans | gen CPU s | CPU s/10k calls | peak RSS MB | UAS CPU % | rest of machine CPU s | result |")
    p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in steps:
        for g in ("imsload", "sipp"):
            d = load(w, "step-%s-%d" % (g, s))
            if not d:
                continue
            if d["pass"] and (best.get(g) is None or s > best[g]):
                best[g] = s
            t1 = load(w, "step-%s-%d.try1" % (g, s))
            res = "pass" if d["pass"] else "FAIL"
            if t1:
                res += " (2nd try; 1st: %.2f %% failed, %.0f/s)" % (t1["fail_pct"], t1.get("achieved", 0))
            p("| %d | %s | %d | %.2f | %.0f | %d | %s | %s | %s | %s | %s | %s |" % (
                s, g, d["placed"], d["fail_pct"], d.get("achieved", 0), d.get("retrans", 0),
                fmt(d.get("cpu_s"), "%.2f"), fmt(d.get("cpu_per_10k"), "%.2f"),
                fmt(d.get("maxrss_kb", 0) / 1024.0, "%.1f"), fmt(d.get("uas_cpu_pct"), "%.0f"),
                fmt(d.get("others_s"), "%.1f"), res))
    p("")

    def cap(g):
        b = best.get(g)
        if b is None:
            return "< %d" % steps[0]
        last = max([s for s in steps if load(w, "step-%s-%d" % (g, s))] or [0])
        top = b == steps[-1] and last == steps[-1]
        return ">= %d" % b if top else "%d" % b

    fi = load(w, "fixed-imsload")
    fs = load(w, "fixed-sipp")
    li, li0 = load(w, "live-imsload"), load(w, "idle-imsload")
    ls, ls0 = load(w, "live-sipp"), load(w, "idle-sipp")

    def per_live(live, idle):
        if not live or not idle or not live.get("live_max"):
            return None
        return (live["active_peak_kb"] - idle["active_peak_kb"]) * 1024.0 / live["live_max"]

    mi, ms = per_live(li, li0), per_live(ls, ls0)

    p("Summary (ratio = imsload / SIPp, same run, same machine):")
    p("| figure | imsload | SIPp | ratio |")
    p("|---|---:|---:|---:|")
    bi, bs = best.get("imsload"), best.get("sipp")
    p("| highest calls/s with < 1 %% failures (steps %s) | %s | %s | %s |" % (
        "/".join(str(s) for s in steps), cap("imsload"), cap("sipp"), ratio(bi, bs)))
    if fi and fs:
        fc = meta["fixed_cps"]
        p("| CPU s per 10,000 calls (at %d cps, %ss) | %s | %s | %s |" % (
            fc, meta["fixed_secs"], fmt(fi.get("cpu_per_10k"), "%.2f"), fmt(fs.get("cpu_per_10k"), "%.2f"),
            ratio(fi.get("cpu_per_10k"), fs.get("cpu_per_10k"))))
        p("| peak RSS at %d cps, hold 0 (MB) | %s | %s | %s |" % (
            fc, fmt(fi["maxrss_kb"] / 1024.0), fmt(fs["maxrss_kb"] / 1024.0),
            ratio(fi["maxrss_kb"], fs["maxrss_kb"])))
        p("| achieved / offered at %d cps, as each tool reports it (imsload achieved_cps, SIPp CallRate(C)) | %s | %s | |" % (
            fc, fmt(100 * fi["achieved_tool"] / fc, "%.2f %%"), fmt(100 * fs["achieved_tool"] / fc, "%.2f %%")))
        p("| calls in the busiest / quietest full second at %d cps | %s / %s | %s / %s | |" % (
            fc, fmt(fi.get("per_s_max"), "%.0f"), fmt(fi.get("per_s_min"), "%.0f"),
            fmt(fs.get("per_s_max"), "%.0f"), fmt(fs.get("per_s_min"), "%.0f")))
        p("| failed calls at %d cps | %d | %d | |" % (
            fc, fi["placed"] - fi["completed"], fs["placed"] - fs["completed"]))
    # CPU per 10k calls at the highest step both passed.
    common = [s for s in steps if (load(w, "step-imsload-%d" % s) or {}).get("pass")
              and (load(w, "step-sipp-%d" % s) or {}).get("pass")]
    if common:
        s = common[-1]
        a, b = load(w, "step-imsload-%d" % s), load(w, "step-sipp-%d" % s)
        p("| CPU s per 10,000 calls (at %d cps, highest step both passed) | %s | %s | %s |" % (
            s, fmt(a.get("cpu_per_10k"), "%.2f"), fmt(b.get("cpu_per_10k"), "%.2f"),
            ratio(a.get("cpu_per_10k"), b.get("cpu_per_10k"))))
        p("| peak RSS at %d cps (MB) | %s | %s | %s |" % (
            s, fmt(a["maxrss_kb"] / 1024.0), fmt(b["maxrss_kb"] / 1024.0),
            ratio(a["maxrss_kb"], b["maxrss_kb"])))
    if li and ls:
        p("| peak live calls (%d cps, hold %ss, %ss) | %d | %d | |" % (
            meta["live_cps"], meta["live_hold"], meta["live_secs"], li.get("live_max", 0), ls.get("live_max", 0)))
        p("| peak RSS with those live calls / same rate with hold 0 (MB) | %s / %s | %s / %s | |" % (
            fmt(li["active_peak_kb"] / 1024.0), fmt(li0["active_peak_kb"] / 1024.0 if li0 else None),
            fmt(ls["active_peak_kb"] / 1024.0), fmt(ls0["active_peak_kb"] / 1024.0 if ls0 else None)))
        p("| memory per live call (bytes) | %s | %s | %s |" % (
            fmt(mi, "%.0f"), fmt(ms, "%.0f"), ratio(mi, ms)))
        p("| imsload at the end: all live calls ended at once: peak RSS (MB), BYE retransmissions | %s, %d | | |" % (
            fmt(li["maxrss_kb"] / 1024.0), li.get("retrans", 0)))
    ri, rs, r1 = load(w, "reg-imsload-big"), load(w, "reg-sipp-big"), load(w, "reg-imsload-small")
    if ri:
        p("| registrations/s with MD5 digest vs `imsload serve`: %d users / time to register all (offered %d/s) | %s | %s | %s |" % (
            ri["users"], ri["offered"], fmt(ri.get("reg_per_s"), "%.0f"),
            fmt(rs.get("reg_per_s"), "%.0f") if rs else "-",
            ratio(ri.get("reg_per_s"), rs.get("reg_per_s")) if rs else "-"))
        p("| registrations/s in full seconds (median) | %s | %s | %s |" % (
            fmt(ri.get("reg_sustained"), "%.0f"), fmt(rs.get("reg_sustained"), "%.0f") if rs else "-",
            ratio(ri.get("reg_sustained"), rs.get("reg_sustained")) if rs else "-"))
        p("| time to register all %d users (s) | %s | %s | |" % (
            ri["users"], fmt(ri.get("reg_phase_s"), "%.2f"), fmt(rs.get("reg_phase_s"), "%.2f") if rs else "-"))
        p("| REGISTER retransmissions / failures during registration | %d / %d | %s | |" % (
            ri.get("retrans", 0), ri.get("reg_failed", 0),
            ("%d / %d" % (rs.get("retrans", 0), rs.get("reg_failed", 0))) if rs else "-"))
        p("| CPU s per 10,000 registrations (generator, until all are registered) | %s | %s | %s |" % (
            fmt(ri.get("cpu_per_10k"), "%.2f"), fmt(rs.get("cpu_per_10k"), "%.2f") if rs else "-",
            ratio(ri.get("cpu_per_10k"), rs.get("cpu_per_10k")) if rs else "-"))
        if rs:
            p("| peak RSS while registering %d users (MB; SIPp keeps no state once a REGISTER is done) | %s | %s | %s |" % (
                ri["users"], fmt(ri["active_peak_kb"] / 1024.0), fmt(rs["active_peak_kb"] / 1024.0),
                ratio(ri["active_peak_kb"], rs["active_peak_kb"])))
    rl = load(w, "reg-imsload-big-low")
    if rl:
        p("| imsload at %d reg/s offered: registrations/s, retransmissions, peak RSS while registering (MB) | %s, %d, %s | | |" % (
            rl["offered"], fmt(rl.get("reg_per_s"), "%.0f"), rl.get("retrans", 0),
            fmt(rl["active_peak_kb"] / 1024.0)))
    for big, label in ((ri, "at %d reg/s" % (ri or {}).get("offered", 0)),
                       (rl, "at %d reg/s" % (rl or {}).get("offered", 0))):
        if not big or not r1:
            continue
        du = big["users"] - r1["users"]
        peak = (big["active_peak_kb"] - r1["active_peak_kb"]) * 1024.0 / du * 1000 / 1e6
        settled = None
        if big.get("settled_rss_kb") and r1.get("settled_rss_kb"):
            settled = (big["settled_rss_kb"] - r1["settled_rss_kb"]) * 1024.0 / du * 1000 / 1e6
        p("| imsload memory per 1,000 registered users %s: peak RSS while registering / RSS once registered, %gk vs %gk users (MB) | %s / %s | | |" % (
            label, big["users"] / 1000.0, r1["users"] / 1000.0, fmt(peak, "%.2f"), fmt(settled, "%.2f")))
    if ri and r1:
        du = ri["users"] - r1["users"]
        if ri.get("uas_maxrss_kb") and r1.get("uas_maxrss_kb"):
            sv = (ri["uas_maxrss_kb"] - r1["uas_maxrss_kb"]) * 1024.0 / du * 1000 / 1e6
            p("| `imsload serve` (registrar) memory per 1,000 bindings, peak RSS (MB) | %s | | |" % fmt(sv, "%.2f"))
    busy = [(d.get("others_s"), d.get("machine_span_s")) for d in
            (load(w, f[:-5]) for f in sorted(os.listdir(w))
             if f.endswith(".json") and f != "meta.json" and not f.endswith(".report.json"))
            if d and d.get("others_s") is not None and d.get("machine_span_s")]
    if busy:
        o = sum(b[0] for b in busy)
        t = sum(b[1] for b in busy)
        p("")
        p("noise: the rest of the machine (not the generator, not the target) used %.1f CPU-s over "
          "%.0f s of runs (%.0f %% of one core on average; see the per-step column)" % (o, t, 100 * o / t))
    p("")
    notes = meta.get("notes", [])
    for n in notes:
        p("note: " + n)
    print("\n".join(out))


def main():
    a = sys.argv[1:]
    if not a:
        print(__doc__)
        return 2
    if a[0] == "imsload":
        cmd_imsload(a[1], a[2], float(a[3]), int(a[4]))
    elif a[0] == "sipp":
        cmd_sipp(a[1], a[2], float(a[3]), int(a[4]))
    elif a[0] == "reg-imsload":
        cmd_reg_imsload(a[1], a[2], int(a[3]), float(a[4]))
    elif a[0] == "reg-sipp":
        cmd_reg_sipp(a[1], a[2], int(a[3]), float(a[4]))
    elif a[0] == "pass":
        d = load(a[1], a[2])
        return 0 if d and d.get("pass") else 1
    elif a[0] == "table":
        cmd_table(a[1])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
