#!/usr/bin/env python3
"""QEMU side of the migration lab: boots the guest, migrates it over QMP, reports, stops QEMUs.

lab.sh owns the network and the command line; it calls this with the run directory:

    labctl.py RUN_DIR boot                 start the guests on host src (config.json)
    labctl.py RUN_DIR migrate [--vm NAME] [opts]   move one to the other host, print one JSON line
    labctl.py RUN_DIR status [--vm NAME]   one JSON line: where the guests run
    labctl.py RUN_DIR stop                 quit every QEMU of the lab (by its pid file)

A lab runs one guest ("guest", files RUN_DIR/HOST.*) or, with `lab.sh up --ims`, the four
elements of an IMS core, each its own guest (files RUN_DIR/NAME-HOST.*) that migrates alone.
    labctl.py - sip-check IP:PORT [SECS]   exit 0 once an OPTIONS gets 200 (run in a netns)

Python 3 stdlib only. QMP is line-delimited JSON on a unix socket; asynchronous events
(STOP, RESUME, MIGRATION, MIGRATION_PASS) arrive between replies, each with QEMU's own
wall-clock timestamp (g_get_real_time), so events of two QEMUs on one machine share a clock
with each other, with tcpdump's stamps and with imsprobe's UTC edges.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

HOSTS = ("src", "dst")
MIG_IP = {"src": "198.51.100.129", "dst": "198.51.100.130"}  # the migration link's ends
MIG_PORT = 4444
GUEST_MAC = "52:54:00:4c:41:42"


def log(msg):
    print(f"lab: {msg}", file=sys.stderr, flush=True)


class LabError(Exception):
    pass


def now_us():
    return time.time_ns() // 1000


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


class Qmp:
    """A QMP connection that keeps every event it reads, tagged with the host it came from."""

    def __init__(self, path, host, timeout=15.0):
        self.host = host
        self.events = []
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except OSError as e:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise LabError(f"cannot connect to {host} QEMU's QMP socket {path}: {e}")
                time.sleep(0.05)
        # No QMP reply takes long; a silent QEMU is a hung QEMU.
        self.sock.settimeout(30)
        self.file = self.sock.makefile("rb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise LabError(f"{self.host} QEMU closed its QMP connection")
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                ts = r.get("timestamp", {})
                self.events.append({
                    "host": self.host,
                    "event": r["event"],
                    "wall_us": ts.get("seconds", 0) * 1_000_000 + ts.get("microseconds", 0),
                    "data": r.get("data", {}),
                })
            elif "error" in r:
                raise LabError(f"{self.host} QMP {name}: {r['error'].get('desc', r['error'])}")
            else:
                return r.get("return")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def read_config(run_dir):
    cfg_path = os.path.join(run_dir, "config.json")
    if not os.path.exists(cfg_path):
        raise LabError(f"no lab is up ({cfg_path} missing): run lab/migration/lab.sh up")
    with open(cfg_path) as f:
        return json.load(f)


def guests(cfg):
    """The lab's guests: the IMS lab lists its four; the one-guest lab is described by the
    top-level settings it always had."""
    if "vms" in cfg:
        return cfg["vms"]
    return [{"name": "guest", "ip": cfg["guest_ip"], "mac": GUEST_MAC, "mem_mib": cfg["mem_mib"],
             "tap": "tap0", "mig_port": MIG_PORT}]


class Lab:
    """One guest of the lab (the only one, or the one named) and its QEMUs on the two hosts."""

    def __init__(self, run_dir, vm=None):
        self.run = run_dir
        self.cfg = read_config(run_dir)
        all_vms = guests(self.cfg)
        names = [v["name"] for v in all_vms]
        if vm is None:
            if len(all_vms) > 1:
                raise LabError(f"this lab runs {len(all_vms)} guests ({', '.join(names)}): "
                               "say which with --vm NAME")
            self.vm = all_vms[0]
        else:
            match = [v for v in all_vms if v["name"] == vm]
            if not match:
                raise LabError(f"no guest '{vm}' in this lab (it has {', '.join(names)})")
            self.vm = match[0]
        # the one-guest lab keeps the file names it always had
        self.prefix = "" if self.vm["name"] == "guest" else self.vm["name"] + "-"
        self.state_path = os.path.join(run_dir, self.prefix + "state.json")

    def path(self, host, what):
        return os.path.join(self.run, f"{self.prefix}{host}.{what}")

    def ns(self, host):
        return f"{self.cfg['name']}-{host}"

    def state(self):
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def save_state(self, st):
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, self.state_path)

    # -- QEMU processes --------------------------------------------------------------------

    def qemu_argv(self, host, incoming):
        c, vm = self.cfg, self.vm
        append = (f"console=ttyS0 panic=-1 quiet ipv6.disable=1 lab.ip={vm['ip']}/25 "
                  f"lab.sip={c['sip_responder']} lab.dirty={c['dirty_mb_s']} lab.ws={c['ws_mib']}")
        if vm.get("role"):
            append += f" lab.role={vm['role']} lab.wait={vm['wait']}"
        if c["accel"] == "kvm":
            accel = ["-accel", "kvm", "-cpu", "host"]
        else:
            accel = ["-accel", "tcg"]
        argv = [
            "ip", "netns", "exec", self.ns(host),
            # Above the machine's other work, as a hypervisor host gives its guests their CPUs:
            # the destination loads the last stop-and-copy data at the link's speed only if
            # it gets the CPU. With two busy loops beside the lab and QEMU at nice 0, the data
            # in flight after QEMU's downtime took 31-119 ms to load (4 in 6 over 60 ms); at
            # -10, 8-15 ms, as on an idle machine. (The IMS lab keeps 0: its four guests above
            # the load generator and the probes would starve them.)
            "nice", "-n", str(c.get("qemu_nice", 0)), "qemu-system-x86_64",
            "-name", f"{c['name']}-{self.prefix}{host}", *accel,
            # Both ends must build the same machine: same binary, same options, and no option
            # ROM for the NIC (romfile=), whose size would otherwise have to match too.
            "-machine", "pc", "-m", str(vm["mem_mib"]), "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", f"file:{self.path(host, 'serial.log')}",
            "-kernel", os.path.join(c["guest_dir"], "vmlinuz"),
            "-initrd", os.path.join(c["guest_dir"], "initramfs.gz"),
            "-append", append,
            "-netdev", f"tap,id=net0,ifname={vm['tap']},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net0,mac={vm['mac']},romfile=",
            "-qmp", f"unix:{self.path(host, 'qmp')},server=on,wait=off",
            "-pidfile", self.path(host, "pid"), "-daemonize",
            # QEMU's own trace points inside the downtime (src-downtime-start ... dst vm start),
            # to split STOP->RESUME into its parts.
            # (-msg timestamp=on puts "PID@SECONDS.MICROS:" in front of each trace line)
            "-D", self.path(host, "trace.log"), "-trace", "vmstate_downtime_checkpoint",
            "-msg", "timestamp=on",
        ]
        if c["sip_responder"] in ("kamailio", "ims"):
            # one read-only image opened by both QEMUs: shared storage, no storage migration
            argv += ["-drive", f"file={os.path.join(c['guest_dir'], 'rootfs-kamailio.img')},"
                               "format=raw,if=virtio,readonly=on"]
        if c["sip_responder"] == "ims":
            # the IMS core's configs, subscribers and imshss (lab/ims/ims.sh configs), shared too
            argv += ["-drive", f"file={os.path.join(c['guest_dir'], 'ims-config.img')},"
                               "format=raw,if=virtio,readonly=on"]
        if incoming:
            # "defer": listen only after capabilities are set on this side too (migrate-incoming)
            argv += ["-incoming", "defer"]
        return argv

    def pid(self, host):
        """The pid of this host's QEMU if it is alive and really ours, else None."""
        try:
            with open(self.path(host, "pid")) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        # a recycled pid must never be taken for our QEMU
        return pid if self.path(host, "qmp").encode() in cmdline else None

    def start_qemu(self, host, incoming):
        if self.pid(host):
            raise LabError(f"a QEMU already runs on {host} (pid {self.pid(host)}): "
                           "run lab/migration/lab.sh down")
        for what in ("pid", "qmp", "trace.log"):
            try:
                os.unlink(self.path(host, what))
            except FileNotFoundError:
                pass
        serial = self.path(host, "serial.log")
        if os.path.exists(serial):  # keep the guest's console history of the last stay there
            os.replace(serial, serial + ".old")
        with open(self.path(host, "qemu.log"), "w") as out:
            r = subprocess.run(self.qemu_argv(host, incoming), stdout=out,
                               stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            with open(self.path(host, "qemu.log")) as f:
                tail = f.read()[-800:]
            raise LabError(f"QEMU on {host} did not start (exit {r.returncode}): {tail.strip()}")
        pid = self.pid(host)
        if not pid:
            raise LabError(f"QEMU on {host} started but left no pid file {self.path(host, 'pid')}")
        return pid

    def stop_qemu(self, host, qmp=None):
        """Quit this host's QEMU: QMP quit, then SIGTERM, then SIGKILL; wait until it is gone."""
        pid = self.pid(host)
        if qmp is not None:
            try:
                qmp.cmd("quit")
            except (LabError, OSError):
                pass
            qmp.close()
        if pid:
            for sig, wait in ((None, 3.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                    time.sleep(0.02)
                if not os.path.exists(f"/proc/{pid}"):
                    break
            if os.path.exists(f"/proc/{pid}"):
                raise LabError(f"QEMU pid {pid} on {host} survived SIGKILL")
        for what in ("pid", "qmp"):
            try:
                os.unlink(self.path(host, what))
            except FileNotFoundError:
                pass

    def wait_console(self, host, pattern, timeout):
        path = self.path(host, "serial.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path, errors="replace") as f:
                    text = f.read()
                if re.search(pattern, text):
                    return True
                failed = re.search(r"LAB: failed: (.*)", text)
                if failed:
                    raise LabError(f"guest on {host}: {failed.group(1)}; see {path}")
            except FileNotFoundError:
                pass
            if not self.pid(host):
                raise LabError(f"QEMU on {host} exited while booting; see {path}")
            time.sleep(0.1)
        raise LabError(f"guest on {host} printed no '{pattern}' within {timeout:.0f} s; see {path}")

    # -- subcommands -----------------------------------------------------------------------

    def boot(self):
        self.start_boot()
        self.finish_boot()

    def start_boot(self):
        self.boot_t0 = time.monotonic()
        pid = self.start_qemu("src", incoming=False)
        log(f"QEMU pid {pid} booting {self.vm['name']} on src "
            f"({self.vm['mem_mib']} MiB, {self.cfg['accel']})")

    def finish_boot(self):
        host = "src"
        t0 = self.boot_t0
        self.wait_console(host, r"LAB: ready", 180)
        if self.cfg["dirty_mb_s"] > 0:
            # the dirtier touches its whole working set first; wait so the first precopy round
            # already sees the steady rate
            # (not anchored: console output of other programs can share its line)
            self.wait_console(host, r"dirtier: ready", 180)
        self.save_state({"host": host, "migrations": 0, "booted_wall_us": now_us()})
        log(f"{self.vm['name']} booted on {host} in {time.monotonic() - t0:.1f} s")

    def status(self):
        out = self.status_fields()
        out.update(guest_ip=self.vm["ip"], sip=f"{self.vm['ip']}:5060",
                   probe_netns=self.ns("probe"), config=public_config(self.cfg))
        print(json.dumps(out), flush=True)
        return 0 if out["up"] else 1

    def status_fields(self):
        st = self.state()
        out = {"up": False, "host": None, "qemu_pid": None, "qemu_status": None}
        if st:
            host = st["host"]
            out.update(host=host, migrations=st["migrations"], qemu_pid=self.pid(host))
            if out["qemu_pid"]:
                try:
                    q = Qmp(self.path(host, "qmp"), host, timeout=5)
                    out["qemu_status"] = q.cmd("query-status")["status"]
                    q.close()
                except LabError as e:
                    out["error"] = str(e)
            out["up"] = out["qemu_status"] == "running"
        return out

    def stop(self):
        for host in HOSTS:
            pid = self.pid(host)
            if pid:
                log(f"stopping QEMU pid {pid} on {host}")
                q = None
                try:
                    q = Qmp(self.path(host, "qmp"), host, timeout=2)
                except LabError:
                    pass
                self.stop_qemu(host, q)
        return 0

    def migrate(self, opts):
        st = self.state()
        if not st:
            raise LabError("the guest is not booted (no state.json): run lab/migration/lab.sh up")
        src = st["host"]
        dst = "dst" if src == "src" else "src"
        cfg = public_config(self.cfg)
        cfg["bw_mb_s"] = opts.get("bw", cfg["bw_mb_s"])
        cfg["downtime_limit_ms"] = opts.get("downtime_limit", cfg["downtime_limit_ms"])
        timeout = opts.get("timeout", 120.0)
        res = {"ok": False, "vm": self.vm["name"], "from": src, "to": dst,
               "started_wall_us": None, "ended_wall_us": None,
               "qemu": None, "events": [], "stop_to_resume_ms": None, "config": cfg,
               "guest_ip": self.vm["ip"], "probe_netns": self.ns("probe"),
               "loadavg_start": loadavg()}
        t_cmd = now_us()
        qs = qd = cap = None
        committed = False  # True once the source reported "completed": the guest lives on dst
        try:
            if not self.pid(src):
                raise LabError(f"no QEMU runs on {src}, where the lab says the guest is; "
                               "run lab/migration/lab.sh down, then up")
            qs = Qmp(self.path(src, "qmp"), src)
            status = qs.cmd("query-status")["status"]
            if status != "running":
                raise LabError(f"the guest on {src} is '{status}', not running")
            log(f"starting the incoming QEMU of {self.vm['name']} on {dst}")
            # the reference study's migration time starts here: the target's container (its
            # QEMU) starting, and ends when the VM runs there
            res["target_started_wall_us"] = now_us()
            self.start_qemu(dst, incoming=True)
            qd = Qmp(self.path(dst, "qmp"), dst)
            # "events" on both ends: MIGRATION status changes (and MIGRATION_PASS on the source)
            for q in (qs, qd):
                q.cmd("migrate-set-capabilities",
                      capabilities=[{"capability": "events", "state": True}])
            qs.cmd("migrate-set-parameters", **{
                "max-bandwidth": int(cfg["bw_mb_s"] * 1_000_000),
                "downtime-limit": int(cfg["downtime_limit_ms"])})
            res["qemu_parameters"] = {k: v for k, v in qs.cmd("query-migrate-parameters").items()
                                      if k in ("max-bandwidth", "downtime-limit",
                                               "announce-initial", "announce-max",
                                               "announce-rounds", "announce-step")}
            uri = f"tcp:{MIG_IP[dst]}:{self.vm['mig_port']}"
            qd.cmd("migrate-incoming", uri=uri)
            if opts.get("capture", True):
                cap = Capture(self, dst)
            log(f"migrating {self.vm['name']} {src} -> {dst} over {uri} (bw {cfg['bw_mb_s']} MB/s, downtime-limit "
                f"{cfg['downtime_limit_ms']} ms, link {cfg['link_mbit'] or 'unshaped'} Mbit/s)")
            res["started_wall_us"] = now_us()
            qs.cmd("migrate", uri=uri)
            deadline = time.monotonic() + timeout
            last_active = None
            while True:
                info = qs.cmd("query-migrate")
                status = info.get("status")
                if status in ("completed", "failed", "cancelled"):
                    break
                if status == "active":
                    last_active = info
                if time.monotonic() > deadline:
                    log(f"not completed after {timeout:.0f} s: migrate_cancel")
                    qs.cmd("migrate_cancel")
                    end = time.monotonic() + 15
                    while status not in ("failed", "cancelled", "completed") \
                            and time.monotonic() < end:
                        time.sleep(0.1)
                        info = qs.cmd("query-migrate")
                        status = info.get("status")
                    break
                time.sleep(0.05)
            res["ended_wall_us"] = now_us()
            res["qemu"] = info
            if last_active:
                # the last in-flight sample holds what the final record lacks: the measured dirty
                # rate and QEMU's own downtime estimate before switchover
                res["qemu_last_active"] = {
                    "expected-downtime": last_active.get("expected-downtime"),
                    "dirty-pages-rate": last_active.get("ram", {}).get("dirty-pages-rate"),
                    "dirty_mb_s": round(last_active.get("ram", {}).get("dirty-pages-rate", 0)
                                        * last_active.get("ram", {}).get("page-size", 4096)
                                        / 1e6, 1),
                }
            if status != "completed":
                raise LabError(f"migration {status}" + (
                    f" after the {timeout:.0f} s timeout (the guest dirties memory faster than "
                    "the link sends it? raise --downtime-limit or lower --dirty)"
                    if time.monotonic() > deadline else
                    f": {info.get('error-desc', 'no error-desc from QEMU')}"))
            committed = True
            # The source is done once it has sent everything; the guest runs again only when
            # the destination has loaded the state and started the CPU (RESUME).
            end = time.monotonic() + 30
            while qd.cmd("query-status")["status"] != "running":
                if time.monotonic() > end:
                    raise LabError(f"the destination never started the guest; see "
                                   f"{self.path(dst, 'qemu.log')}")
                time.sleep(0.01)
            qs.cmd("query-status")  # collects the source's queued events
            if cap:
                resume = next((e["wall_us"] for e in qd.events if e["event"] == "RESUME"), None)
                # QEMU announces the guest's MAC for ~1 s after resume (announce-* parameters)
                wait = (resume or now_us()) / 1e6 + opts.get("capture_s", 1.2) - time.time()
                if wait > 0:
                    time.sleep(wait)
                res["announce"] = cap.finish(resume)
                cap = None
            res["ok"] = True
        except (LabError, OSError, subprocess.SubprocessError) as e:
            res["error"] = str(e)
            log(f"error: {e}")
        finally:
            if cap:
                cap.finish(None)
            events = (qs.events if qs else []) + (qd.events if qd else [])
            events.sort(key=lambda e: e["wall_us"])
            res["events"] = events
            done = next((e["wall_us"] for e in events if e["host"] == src
                         and e["event"] == "MIGRATION"
                         and e["data"].get("status") == "completed"), None)
            if done:
                # QEMU's own stamp of completion is exact; the 50 ms poll that saw it is not
                res["poll_ended_wall_us"] = res["ended_wall_us"]
                res["ended_wall_us"] = done
            stop = next((e["wall_us"] for e in events
                         if e["host"] == src and e["event"] == "STOP"), None)
            resume = next((e["wall_us"] for e in events
                           if e["host"] == dst and e["event"] == "RESUME"), None)
            if resume and res.get("target_started_wall_us"):
                res["target_start_to_resume_ms"] = round(
                    (resume - res["target_started_wall_us"]) / 1000, 3)
            if stop and resume:
                res["stop_to_resume_ms"] = round((resume - stop) / 1000, 3)
                cp = self.checkpoints(stop, res["started_wall_us"])
                res["checkpoints_vs_stop_ms"] = cp
                if "src-downtime-end" in cp and "dst-precopy-loadvm-completed" in cp:
                    # STOP->RESUME in three parts: QEMU's own figure (source side), the data
                    # still in flight when the source was done (socket buffers, the shaped
                    # link's queue), and the destination's switch-on after loading it all
                    res["pause_parts_ms"] = {
                        "source_until_sent": cp["src-downtime-end"],
                        "in_flight_until_loaded": round(cp["dst-precopy-loadvm-completed"]
                                                        - cp["src-downtime-end"], 3),
                        "loaded_until_resume": round(res["stop_to_resume_ms"]
                                                     - cp["dst-precopy-loadvm-completed"], 3),
                    }
            if committed:
                # the guest now lives on dst: retire the source, whatever else went wrong
                self.stop_qemu(src, qs)
                st.update(host=dst, migrations=st["migrations"] + 1)
                self.save_state(st)
            else:
                # the guest stays where it was: drop the half-made destination, and make sure
                # the source runs (QEMU restarts it after a failed switchover, but a guest
                # left paused would be a silent outage for every later trial)
                if qd is not None or self.pid(dst):
                    self.stop_qemu(dst, qd)
                if qs is not None:
                    try:
                        if qs.cmd("query-status")["status"] != "running":
                            qs.cmd("cont")
                    except LabError as e:
                        res["error"] += f"; and the source guest could not be resumed: {e}"
                    qs.close()
            res["command_wall_ms"] = round((now_us() - t_cmd) / 1000, 1)
            res["loadavg_end"] = loadavg()
            print(json.dumps(res), flush=True)
        return 0 if res["ok"] else 1

    def checkpoints(self, stop_us, since_us):
        """QEMU's downtime trace points of this migration, in ms after the source's STOP.
        Trace lines look like "PID@SECONDS.MICROS:vmstate_downtime_checkpoint NAME"."""
        out = {}
        pat = re.compile(r"^\d+@(\d+)\.(\d+):vmstate_downtime_checkpoint (\S+)")
        for host in HOSTS:
            try:
                with open(self.path(host, "trace.log"), errors="replace") as f:
                    lines = f.readlines()
            except FileNotFoundError:
                continue
            for line in lines:
                m = pat.match(line)
                if not m:
                    continue
                t_us = int(m.group(1)) * 1_000_000 + int(m.group(2).ljust(6, "0")[:6])
                if since_us and t_us >= since_us:
                    out[m.group(3)] = round((t_us - stop_us) / 1000, 3)
        return out


class Capture:
    """tcpdump on the destination's switch port: every frame with the guest's MAC as source.
    The first one is what makes the switch re-learn where the guest is."""

    def __init__(self, lab, dst):
        self.port = f"sw-{dst}"
        self.path = os.path.join(lab.run, lab.prefix + "announce.txt")
        self.out = open(self.path, "w")
        self.err_path = os.path.join(lab.run, lab.prefix + "announce.err")
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns("sw"), "timeout", "300", "tcpdump", "-i", self.port,
             "-n", "-e", "-tt", "-l", "-U", "--time-stamp-precision=micro",
             "ether", "src", lab.vm["mac"]],
            stdout=self.out, stderr=self.err)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(self.err_path) as f:
                if "listening on" in f.read():
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        log(f"tcpdump on {self.port} did not start; no announce timing (see {self.err_path})")

    def finish(self, resume_us):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        self.err.close()
        if resume_us is None:
            return None
        frames = []
        with open(self.path, errors="replace") as f:
            for line in f:
                m = re.match(r"^(\d+)\.(\d{6}) .*ethertype (\S+(?: ARP)?) \(0x([0-9a-f]{4})\)", line)
                if not m:
                    continue
                t_us = int(m.group(1)) * 1_000_000 + int(m.group(2))
                kind = {"8035": "RARP", "0806": "ARP", "0800": "IPv4"}.get(m.group(4), m.group(4))
                frames.append((t_us, kind))
        out = {"port": self.port, "frames": len(frames)}
        if frames:
            out["first_frame_vs_resume_ms"] = round((frames[0][0] - resume_us) / 1000, 3)
            out["first_frame_kind"] = frames[0][1]
            out["rarp_vs_resume_ms"] = [round((t - resume_us) / 1000, 3)
                                        for t, k in frames if k == "RARP"]
            out["garp_vs_resume_ms"] = [round((t - resume_us) / 1000, 3)
                                        for t, k in frames if k == "ARP"][:8]
            ip = [t for t, k in frames if k == "IPv4"]
            if ip:
                # the guest's first own IP packet from the new host: a reply to a probe
                out["first_ipv4_vs_resume_ms"] = round((ip[0] - resume_us) / 1000, 3)
        return out


def public_config(c):
    return {k: c[k] for k in ("mem_mib", "dirty_mb_s", "ws_mib", "link_mbit", "bw_mb_s",
                              "downtime_limit_ms", "accel", "sip_responder",
                              "sockbuf_kib", "qemu_nice") if k in c}


def each_guest(run_dir):
    return [Lab(run_dir, v["name"]) for v in guests(read_config(run_dir))]


def boot_all(run_dir):
    """Starts every guest's QEMU at once, then waits for each: four TCG guests booting one
    after another would take four times as long."""
    labs = each_guest(run_dir)
    for lab in labs:
        lab.start_boot()
    for lab in labs:
        lab.finish_boot()
    return 0


def status_all(run_dir, vm):
    """One line. With several guests: each one's fields under "vms", "up" when all run."""
    labs = each_guest(run_dir)
    if vm is not None or len(labs) == 1:
        return Lab(run_dir, vm).status()
    cfg = labs[0].cfg
    vms = {}
    for lab in labs:
        f = lab.status_fields()
        f.update(ip=lab.vm["ip"], role=lab.vm.get("role"), mem_mib=lab.vm["mem_mib"])
        vms[lab.vm["name"]] = f
    out = {"up": all(v["up"] for v in vms.values()), "vms": vms,
           "probe_netns": labs[0].ns("probe"), "config": public_config(cfg)}
    print(json.dumps(out), flush=True)
    return 0 if out["up"] else 1


def cpu(run_dir, args):
    """Prints the CPU (% of one core) the guest's QEMU used over a window, on its current host:
    what a trigger watches (the study migrated a VM past 90 % of a resource)."""
    vm = take_vm(args)
    over = 1.0
    if args[:1] == ["--over"] and len(args) == 2:
        over = float(args[1])
    elif args:
        raise LabError(f"cpu: unknown options {args} (cpu --vm NAME [--over S])")
    lab = Lab(run_dir, vm)
    st = lab.state()
    pid = lab.pid(st["host"]) if st else None
    if not pid:
        raise LabError(f"{lab.vm['name']}'s QEMU is not running")

    def ticks():
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    t0, c0 = time.monotonic(), ticks()
    time.sleep(over)
    t1, c1 = time.monotonic(), ticks()
    print(f"{(c1 - c0) / os.sysconf('SC_CLK_TCK') / (t1 - t0) * 100:.1f}", flush=True)
    return 0


def stop_all(run_dir):
    for lab in each_guest(run_dir):
        lab.stop()
    return 0


def take_vm(args):
    """Removes `--vm NAME` from args; returns NAME or None."""
    if "--vm" in args:
        i = args.index("--vm")
        if i + 1 >= len(args):
            raise LabError("--vm needs a guest's name")
        name = args[i + 1]
        del args[i:i + 2]
        return name
    return None


def sip_check(target, secs):
    """Exit 0 once an OPTIONS to IP:PORT gets a 200 (retrying for SECS), else 1."""
    ip, port = target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    # a connected socket knows its own address: a real SIP stack (Kamailio) answers to the
    # Via's sent-by, so it must be right
    s.connect((ip, int(port)))
    me_ip, me_port = s.getsockname()
    deadline = time.monotonic() + secs
    n = 0
    while time.monotonic() < deadline:
        n += 1
        call_id = f"lab-check-{os.getpid()}-{n}"
        req = (f"OPTIONS sip:{ip}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {me_ip}:{me_port};rport;branch=z9hG4bK{call_id}\r\n"
               f"From: <sip:lab@check>;tag={n}\r\nTo: <sip:{ip}:{port}>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
               "Content-Length: 0\r\n\r\n")
        try:
            s.send(req.encode())
            while True:
                data = s.recv(65535).decode(errors="replace")
                if call_id in data:
                    if data.startswith("SIP/2.0 200"):
                        return 0
                    break
        except OSError:
            time.sleep(0.2)
    print(f"lab: no 200 to OPTIONS from {target} within {secs} s", file=sys.stderr)
    return 1


def parse_migrate_opts(args):
    opts = {}
    names = {"--timeout": ("timeout", float), "--bw": ("bw", float),
             "--downtime-limit": ("downtime_limit", int), "--capture-s": ("capture_s", float)}
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--no-capture":
            opts["capture"] = False
            i += 1
        elif a in names and i + 1 < len(args):
            key, conv = names[a]
            try:
                opts[key] = conv(args[i + 1])
            except ValueError:
                raise LabError(f"{a} needs a number, not '{args[i + 1]}'")
            i += 2
        else:
            raise LabError(f"unknown migrate option '{a}' (known: --timeout S, --bw MB/s, "
                           "--downtime-limit MS, --capture-s S, --no-capture)")
    return opts


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    run_dir, cmd, rest = argv[1], argv[2], argv[3:]
    try:
        if cmd == "sip-check":
            return sip_check(rest[0], float(rest[1]) if len(rest) > 1 else 30)
        if cmd == "boot":
            return boot_all(run_dir)
        if cmd == "status":
            return status_all(run_dir, take_vm(rest))
        if cmd == "stop":
            return stop_all(run_dir)
        if cmd == "cpu":
            return cpu(run_dir, list(rest))
        if cmd == "migrate":
            try:
                vm = take_vm(rest)
                opts = parse_migrate_opts(rest)
                lab = Lab(run_dir, vm)
            except LabError as e:
                print(json.dumps({"ok": False, "error": str(e)}), flush=True)
                raise
            return lab.migrate(opts)
        raise LabError(f"unknown command '{cmd}'")
    except LabError as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
