//! Real-peer test harness: Kamailio (lab/kamailio/kamailio.cfg) and SIPp.
//!
//! Use from an integration test with `mod common;`. Every [`Kamailio`] and [`Sipp`]
//! is independent (own temp dir, ports, pid file, ctl socket, process group), so
//! tests may run in parallel. Dropping one always stops all of its processes.
//!
//! Needs the Debian packages `kamailio kamailio-sqlite-modules sqlite3` (and
//! `sip-tester` for SIPp); `.ci/run` installs them. Only std, anyhow and tempfile
//! are used (plus `md-5` for the digest in [`register`], and `serde_json` for the
//! reports in [`run`]).
//!
//! Also the helpers every test binary shares ([`run`]): a bounded wait for a child
//! process, imsprobe's report and `--pcap-only`, JSON access. Each test binary compiles
//! this module and uses a part of it, hence `allow(dead_code)`.
#![allow(dead_code)]

mod kguest;
mod migration_lab;
mod netns;
mod pause;
mod prometheus;
mod run;
mod shard;
// Like the dead code above: a test binary that uses none of it would warn.
#[allow(unused_imports)]
pub use kguest::*;
#[allow(unused_imports)]
pub use migration_lab::*;
#[allow(unused_imports)]
pub use netns::*;
#[allow(unused_imports)]
pub use pause::*;
#[allow(unused_imports)]
pub use prometheus::*;
#[allow(unused_imports)]
pub use run::*;
#[allow(unused_imports)]
pub use shard::*;

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

/// The lab configuration shared with `lab/kamailio/start.sh`.
pub const KAMAILIO_CFG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lab/kamailio/kamailio.cfg");
/// Password of user `u` is `PASS_PREFIX + u`.
pub const PASS_PREFIX: &str = "pw_";
/// The loopback address everything listens on.
pub const LISTEN_IP: &str = "127.0.0.1";
const SQLITE_SCHEMA_DIR: &str = "/usr/share/kamailio/db_sqlite";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(5);
const KAMCMD_TIMEOUT: Duration = Duration::from_secs(15);
/// Shared memory (MB) per Kamailio instance (-m); ample for 10^4..10^5 contacts.
const SHM_MB: u32 = 128;
/// Private memory (MB) per Kamailio process (-M); an ul.dump of many contacts is built there.
const PKG_MB: u32 = 32;

pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;

extern "C" {
    // libc's kill(2) and mkfifo(3); declared here to keep the harness on std + anyhow + tempfile
    fn kill(pid: i32, sig: i32) -> i32;
    fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

/// O_NONBLOCK on Linux (x86_64 and aarch64).
const O_NONBLOCK: i32 = 0o4000;
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `sig` to process `pid` (or to process group `-pid` when negative). True on success.
pub fn send_signal(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid, sig) == 0 }
}

/// `user0001`, `user0002`, ... (1-based, `%04d`, wider above 9999).
pub fn user_name(i: usize) -> String {
    format!("user{i:04}")
}

/// The password the harness and `lab/kamailio/start.sh` give `user`.
pub fn password_for(user: &str) -> String {
    format!("{PASS_PREFIX}{user}")
}

// ---------------------------------------------------------------------------
// ports, processes
// ---------------------------------------------------------------------------

fn reserved_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A port free for both UDP and TCP on 127.0.0.1, never handed out twice in
/// this test process (the sockets are closed again before returning).
pub fn free_port() -> Result<u16> {
    for _ in 0..200 {
        let udp = UdpSocket::bind((LISTEN_IP, 0)).context("bind UDP 127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        let Ok(tcp) = TcpListener::bind((LISTEN_IP, port)) else {
            continue;
        };
        drop((udp, tcp));
        if reserved_ports().lock().unwrap().insert(port) {
            return Ok(port);
        }
    }
    bail!("no free UDP+TCP port on 127.0.0.1 after 200 attempts")
}

/// Process state letter and process group of `pid`, from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ..." -- comm may contain spaces and parentheses
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Process state letter of `pid` (`R`, `S`, `T` stopped, `Z` zombie...), from /proc/<pid>/stat.
pub fn proc_state(pid: i32) -> Option<char> {
    proc_stat(pid).map(|(state, _)| state)
}

/// True when `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Live (non-zombie) processes whose process group is `pgid`, sorted.
pub fn group_pids(pgid: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((state, pgrp)) = proc_stat(pid) {
            if pgrp == pgid && state != 'Z' && state != 'X' {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    pids
}

/// Stops a process group led by `child` (spawned with `process_group(0)`): SIGTERM
/// (+SIGCONT, in case it was SIGSTOPped), up to `grace` for the group to exit,
/// then SIGKILL to the group regardless, then reap. The leader is reaped only at the
/// very end, so its pid (= the group id) cannot be reused while we signal the group.
fn stop_group(child: &mut Child, grace: Duration) {
    let pgid = child.id() as i32;
    send_signal(-pgid, SIGTERM);
    send_signal(-pgid, SIGCONT);
    let deadline = Instant::now() + grace;
    let mut leader_gone: Option<Instant> = None;
    while Instant::now() < deadline && !group_pids(pgid).is_empty() {
        // once the leader has exited nobody coordinates the rest (Kamailio's
        // shutdown occasionally leaves a TCP or FIFO process behind): kill them
        if !pid_alive(pgid) {
            let since = *leader_gone.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(300) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(-pgid, SIGKILL);
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && !group_pids(pgid).is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The last `n` lines of the file at `path` (for failure messages).
/// dumpcap on `lo` writing `file` with the capture `filter` (plus `extra` arguments), started
/// and capturing: it returns once dumpcap has written its pcapng section header, and 200 ms
/// later (the header comes as the capture opens, not when the filter is in place).
pub fn dumpcap(file: &Path, filter: &str, extra: &[&str]) -> Child {
    dumpcap_in(None, "lo", file, filter, extra)
}

/// [`dumpcap`] on interface `iface` of network namespace `ns` (`None`: ours).
pub fn dumpcap_in(
    ns: Option<&str>,
    iface: &str,
    file: &Path,
    filter: &str,
    extra: &[&str],
) -> Child {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "dumpcap"]);
            c
        }
        None => Command::new("dumpcap"),
    };
    let child = cmd
        .args(["-i", iface, "-q"])
        .args(extra)
        .args(["-f", filter, "-w"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dumpcap");
    let t0 = Instant::now();
    while std::fs::metadata(file).map_or(true, |m| m.len() == 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "dumpcap did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child
}

/// `tshark -r pcap` with display `filter`, one row per frame with `fields` split at `|`; `pre`
/// goes before `-r` (e.g. `-X lua_script:…`).
pub fn tshark_fields(pcap: &Path, pre: &[&str], filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(pre)
        .arg("-r")
        .arg(pcap)
        .args(["-Y", filter, "-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let o = cmd.output().expect("run tshark (apt-get install tshark)");
    assert!(
        o.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

pub fn tail_lines(path: &Path, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return format!("(no log at {})", path.display());
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn have_cmd(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file())
}

/// Runs `cmd` with stdout+stderr captured in a file, killing it after `timeout`.
fn run_with_timeout(mut cmd: Command, out_path: &Path, timeout: Duration) -> Result<(i32, String)> {
    let out = File::create(out_path)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = std::fs::read_to_string(out_path).unwrap_or_default();
    Ok((status.code().unwrap_or(-1), text))
}

fn unique_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos & 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn hard_nofile() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let hard = line.split_whitespace().nth(4)?;
    if hard == "unlimited" {
        Some(1 << 20)
    } else {
        hard.parse().ok()
    }
}

// ---------------------------------------------------------------------------
// Kamailio
// ---------------------------------------------------------------------------

/// What [`Kamailio::start`] sets up. `KamailioOpts::default()`: 10 users,
/// `ims.local`, no INVITE authentication, 2 children.
#[derive(Clone, Debug)]
pub struct KamailioOpts {
    /// Subscribers `user0001..` with password `pw_<user>`.
    pub users: usize,
    /// SIP domain = digest realm = alias of the server.
    pub domain: String,
    /// `-A WITH_INVITE_AUTH`: INVITE/MESSAGE/SUBSCRIBE/PUBLISH from local users get 407.
    pub invite_auth: bool,
    /// UDP receiver processes and TCP workers, each.
    pub children: u32,
    /// `-A SLOW_US=N`: every request holds a worker N µs (a small, slow element; 0 = off).
    pub slow_us: u32,
    /// `-A RTPENGINE_SOCK=…`: anchor every call's media through the rtpengine whose NG
    /// control port this is ([`Rtpengine`]).
    pub rtpengine: Option<u16>,
}

impl Default for KamailioOpts {
    fn default() -> Self {
        KamailioOpts {
            users: 10,
            domain: "ims.local".into(),
            invite_auth: false,
            children: 2,
            slow_us: 0,
            rtpengine: None,
        }
    }
}

/// One Kamailio instance from `lab/kamailio/kamailio.cfg` on 127.0.0.1:<free port>
/// (UDP and TCP), in its own process group and temp dir. Drop stops it.
pub struct Kamailio {
    child: Child,
    pgid: i32,
    addr: SocketAddr,
    opts: KamailioOpts,
    dir: tempfile::TempDir,
    log: PathBuf,
    ctl: PathBuf,
    startup: Duration,
}

/// Explains which Debian package is missing for Kamailio, if any.
pub fn kamailio_missing() -> Option<String> {
    let mut missing = Vec::new();
    if !have_cmd("kamailio") {
        missing.push("kamailio (no kamailio binary)");
    }
    if !have_cmd("kamcmd") {
        missing.push("kamailio (no kamcmd binary)");
    }
    if !Path::new(SQLITE_SCHEMA_DIR)
        .join("auth_db-create.sql")
        .is_file()
    {
        missing.push("kamailio-sqlite-modules (no /usr/share/kamailio/db_sqlite)");
    }
    if !have_cmd("sqlite3") {
        missing.push("sqlite3 (no sqlite3 CLI)");
    }
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "missing Debian package(s): {}; run .ci/run or apt-get install kamailio \
             kamailio-sqlite-modules sqlite3",
            missing.join(", ")
        ))
    }
}

impl Kamailio {
    /// Generates the subscriber DB, starts Kamailio, waits (up to 20 s) until an
    /// OPTIONS over UDP gets a 200. On failure the error carries the log tail.
    pub fn start(opts: KamailioOpts) -> Result<Kamailio> {
        if let Some(why) = kamailio_missing() {
            bail!(why);
        }
        if opts.domain.is_empty()
            || !opts
                .domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            bail!("domain {:?}: only [A-Za-z0-9.-] supported", opts.domain);
        }
        let t0 = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("imsload-kamailio-")
            .tempdir()?;
        create_subscriber_db(&dir.path().join("subscriber.db"), opts.users, &opts.domain)?;
        // the port may be taken between our probe and Kamailio's bind: retry then
        let mut last_err = anyhow!("kamailio did not start");
        for attempt in 0..3 {
            let port = free_port()?;
            let Spawned {
                mut child,
                pgid,
                addr,
                log,
                ctl,
            } = Self::spawn(&opts, dir.path(), port, attempt)?;
            let deadline = t0 + READY_TIMEOUT;
            match wait_ready(&child, addr, deadline)
                .and_then(|()| wait_all_forked(pgid, &log, deadline))
            {
                Ok(()) => {
                    let startup = t0.elapsed();
                    return Ok(Kamailio {
                        child,
                        pgid,
                        addr,
                        opts,
                        dir,
                        log,
                        ctl,
                        startup,
                    });
                }
                Err(e) => {
                    stop_group(&mut child, STOP_GRACE);
                    let tail = tail_lines(&log, 40);
                    let retry = tail.contains("in use");
                    last_err = e.context(format!(
                        "kamailio on {addr} not ready; log tail ({}):\n{tail}",
                        log.display()
                    ));
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }

    fn spawn(opts: &KamailioOpts, dir: &Path, port: u16, attempt: u32) -> Result<Spawned> {
        let log = dir.join(format!(
            "kamailio{}.log",
            if attempt == 0 {
                String::new()
            } else {
                format!(".{attempt}")
            }
        ));
        let ctl = dir.join("kamailio_ctl");
        let pidfile = dir.join("kamailio.pid");
        let _ = std::fs::remove_file(&pidfile);
        let _ = std::fs::remove_file(&ctl);
        let open_files = hard_nofile()
            .map(|h| h.saturating_sub(512).clamp(1024, 16384))
            .unwrap_or(1024);
        let d = dir.display();
        let mut cmd = Command::new("kamailio");
        cmd.args(["-DD", "-E", "-f", KAMAILIO_CFG])
            .arg("-Y")
            .arg(dir)
            .arg("-w")
            .arg(dir)
            .arg("-P")
            .arg(&pidfile)
            .args(["-m", &SHM_MB.to_string(), "-M", &PKG_MB.to_string()])
            .args(["-A", &format!("LISTEN_IP={LISTEN_IP}")])
            .args(["-A", &format!("LISTEN_PORT={port}")])
            .args(["-A", &format!("CHILDREN={}", opts.children.max(1))])
            .args(["-A", &format!("OPEN_FILES={open_files}")])
            .args(["-A", &format!("TCP_MAXCONN={}", open_files * 3 / 4)])
            .args(["-A", &format!("SIP_DOMAIN=\"{}\"", opts.domain)])
            .args(["-A", &format!("DBURL=\"sqlite:///{d}/subscriber.db\"")])
            .args(["-A", &format!("CTLSOCK=\"unix:{}\"", ctl.display())])
            .args(["-A", &format!("RPCFIFO=\"{d}/kamailio_rpc.fifo\"")])
            .args(["-A", &format!("RPCREPLYDIR=\"{d}/\"")]);
        if opts.invite_auth {
            cmd.args(["-A", "WITH_INVITE_AUTH"]);
        }
        if opts.slow_us > 0 {
            cmd.args(["-A", &format!("SLOW_US={}", opts.slow_us)]);
        }
        if let Some(ng) = opts.rtpengine {
            cmd.args(["-A", &format!("RTPENGINE_SOCK=\"udp:127.0.0.1:{ng}\"")]);
        }
        let out = File::options().create(true).append(true).open(&log)?;
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("spawn kamailio")?;
        let pgid = child.id() as i32;
        Ok(Spawned {
            child,
            pgid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            ctl,
        })
    }

    /// UDP and TCP address of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SIP domain (= digest realm).
    pub fn domain(&self) -> &str {
        &self.opts.domain
    }

    /// Number of subscribers in the DB (`user0001..`).
    pub fn users(&self) -> usize {
        self.opts.users
    }

    /// Password of `user` (`pw_<user>`).
    pub fn password_for(&self, user: &str) -> String {
        password_for(user)
    }

    /// Time from `start()` to the first 200 to OPTIONS (DB generation included).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Pid of the main process, which is also the process group id.
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// All live Kamailio processes of this instance (its process group), sorted.
    pub fn pids(&self) -> Vec<i32> {
        group_pids(self.pgid)
    }

    /// Sends `sig` to every process of the instance. False if none received it.
    pub fn signal(&self, sig: i32) -> bool {
        send_signal(-self.pgid, sig)
    }

    /// SIGSTOP to the whole instance (it stops answering; sockets stay bound).
    pub fn pause(&self) -> bool {
        self.signal(SIGSTOP)
    }

    /// SIGCONT after [`Kamailio::pause`].
    pub fn resume(&self) -> bool {
        self.signal(SIGCONT)
    }

    /// Runs `kamcmd -s unix:<ctl> <args>` (15 s timeout), returns its output.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("kamcmd");
        cmd.arg("-s")
            .arg(format!("unix:{}", self.ctl.display()))
            .args(args);
        let out = self
            .dir
            .path()
            .join(format!("kamcmd-{}.out", unique_token()));
        let (code, text) = run_with_timeout(cmd, &out, KAMCMD_TIMEOUT)?;
        let _ = std::fs::remove_file(&out);
        if code != 0 {
            bail!("kamcmd {args:?} exited {code}: {text}");
        }
        Ok(text)
    }

    /// Calls `method` over Kamailio's JSON-RPC fifo and returns the raw JSON reply
    /// (unlike kamcmd, which gives up on replies above 64 KB, any size). `params`
    /// is the JSON text of the params array, e.g. `["location"]`, or "" for none.
    pub fn jsonrpc(&self, method: &str, params: &str) -> Result<String> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = format!("rpcreply{}", unique_token()); // no '.' or '/' allowed
        let reply_path = self.dir.path().join(&name);
        let c_path = std::ffi::CString::new(reply_path.as_os_str().as_encoded_bytes())?;
        // SAFETY: c_path is a valid NUL-terminated string.
        if unsafe { mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            bail!(
                "mkfifo {}: {}",
                reply_path.display(),
                std::io::Error::last_os_error()
            );
        }
        let result = (|| {
            // our read end must be open before Kamailio tries to open the write end
            let mut reply = File::options()
                .read(true)
                .custom_flags(O_NONBLOCK)
                .open(&reply_path)?;
            let params = if params.is_empty() {
                String::new()
            } else {
                format!(",\"params\":{params}")
            };
            let req = format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\"{params},\"reply_name\":\"{name}\",\"id\":1}}\n"
            );
            if req.len() > 4000 {
                bail!("jsonrpc request too long for one atomic fifo write");
            }
            // one write below PIPE_BUF: atomic even with concurrent callers
            File::options()
                .write(true)
                .open(self.dir.path().join("kamailio_rpc.fifo"))
                .context("open kamailio_rpc.fifo")?
                .write_all(req.as_bytes())?;
            let deadline = Instant::now() + RPC_TIMEOUT;
            let mut out = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match reply.read(&mut buf) {
                    // EOF: either no writer yet, or the writer is done
                    Ok(0) if !out.is_empty() => break,
                    Ok(0) => {}
                    Ok(n) => {
                        out.extend_from_slice(&buf[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
                if Instant::now() > deadline {
                    bail!("no complete jsonrpc reply to {method} within {RPC_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        })();
        let _ = std::fs::remove_file(&reply_path);
        result
    }

    /// Number of unexpired contacts in the in-memory `location` table, counted one
    /// by one in a JSON-RPC `ul.dump` (exact at any size; an expired contact
    /// lingers until the usrloc timer, at most 30 s, removes it: not counted).
    pub fn registered_contacts(&self) -> Result<usize> {
        let dump = self.jsonrpc("ul.dump", "")?;
        count_contacts(&dump).with_context(|| {
            format!(
                "unexpected ul.dump reply: {}",
                &dump[..dump.len().min(2000)]
            )
        })
    }

    /// Every contact in the `location` table as (AoR, contact address), from a JSON-RPC
    /// `ul.dump`: where Kamailio would send to each user, its port included.
    pub fn contact_addresses(&self) -> Result<Vec<(String, String)>> {
        let dump = self.jsonrpc("ul.dump", "")?;
        if !dump.contains("\"Domains\"") {
            bail!(
                "unexpected ul.dump reply: {}",
                &dump[..dump.len().min(2000)]
            );
        }
        // AoR and Address values hold no quotes: a scan in document order pairs each contact
        // with the AoR above it.
        let mut out = Vec::new();
        let mut aor = String::new();
        let mut rest = dump.as_str();
        loop {
            let next = ["\"AoR\"", "\"Address\""]
                .iter()
                .filter_map(|k| rest.find(k).map(|i| (i, *k)))
                .min();
            let Some((i, key)) = next else { break };
            rest = &rest[i + key.len()..];
            let value = rest
                .trim_start()
                .strip_prefix(':')
                .map(str::trim_start)
                .and_then(|v| v.strip_prefix('"'))
                .and_then(|v| v.split('"').next())
                .unwrap_or("")
                .to_string();
            if key == "\"AoR\"" {
                aor = value;
            } else {
                out.push((aor.clone(), value));
            }
        }
        Ok(out)
    }

    /// usrloc's own counter of contacts (`usrloc:location_contacts`); includes
    /// expired contacts not yet removed by the timer. Cheap at any table size.
    pub fn contacts_counter(&self) -> Result<usize> {
        let out = self.kamcmd(&["stats.get_statistics", "location_contacts"])?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("usrloc:location_contacts = "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("unexpected stats output: {out}"))
    }

    /// The last 50 lines of Kamailio's log.
    pub fn log_tail(&self) -> String {
        tail_lines(&self.log, 50)
    }

    /// Kamailio's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The instance's working dir (DB, log, pid file, ctl socket).
    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// REGISTERs `user` (digest with its password) over UDP with the given
    /// Contact URI; returns the final status code.
    pub fn register(&self, user: &str, contact: &str, expires: u32) -> Result<u16> {
        register(
            self.addr,
            self.domain(),
            user,
            &password_for(user),
            contact,
            expires,
        )
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        stop_group(&mut self.child, STOP_GRACE);
    }
}

struct Spawned {
    child: Child,
    pgid: i32,
    addr: SocketAddr,
    log: PathBuf,
    ctl: PathBuf,
}

fn create_subscriber_db(db: &Path, users: usize, domain: &str) -> Result<()> {
    let mut sql = String::with_capacity(200 + users * 90);
    for f in ["standard-create.sql", "auth_db-create.sql"] {
        let p = Path::new(SQLITE_SCHEMA_DIR).join(f);
        sql += &std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))?;
        sql.push('\n');
    }
    sql += "BEGIN;\n";
    for i in 1..=users {
        let u = user_name(i);
        sql += &format!(
            "INSERT INTO subscriber(username,domain,password) VALUES('{u}','{domain}','{}');\n",
            password_for(&u)
        );
    }
    sql += "COMMIT;\n";
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn sqlite3")?;
    child.stdin.take().unwrap().write_all(sql.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() || !out.stderr.is_empty() {
        bail!(
            "sqlite3 {} failed: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn wait_ready(child: &Child, addr: SocketAddr, deadline: Instant) -> Result<()> {
    let pid = child.id() as i32;
    let mut last = String::from("no reply");
    while Instant::now() < deadline {
        // not try_wait(): the leader must stay unreaped while we may signal its group
        if !pid_alive(pid) {
            bail!("kamailio (pid {pid}) exited during start-up");
        }
        match options_ping(addr, Duration::from_millis(200)) {
            Ok(reply) if reply.starts_with("SIP/2.0 200") => return Ok(()),
            Ok(reply) => last = reply.lines().next().unwrap_or("").to_string(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no 200 to OPTIONS within {READY_TIMEOUT:?} (last: {last})")
}

/// Kamailio answers as soon as its UDP receivers run, while it may still be forking
/// timer/TCP/RPC processes: wait for all of them (the count it logs at start-up,
/// "processes (at least): N", which is exact for our config), so that `pids()` is
/// complete from the start. Without that line: until the count is stable for 300 ms.
fn wait_all_forked(pgid: i32, log: &Path, deadline: Instant) -> Result<()> {
    let expected: Option<usize> = std::fs::read_to_string(log).ok().and_then(|text| {
        let rest = &text[text.find("processes (at least): ")? + "processes (at least): ".len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    let (mut last, mut since) = (0, Instant::now());
    loop {
        let n = group_pids(pgid).len();
        match expected {
            Some(want) if n >= want => return Ok(()),
            None if n == last && since.elapsed() >= Duration::from_millis(300) => return Ok(()),
            _ => {}
        }
        if n != last {
            (last, since) = (n, Instant::now());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {expected:?} kamailio processes after {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Counts unexpired contacts in a JSON-RPC `ul.dump` reply. Every contact is an
/// object `"Contact":{...,"Expires":<seconds>|"expired"|"permanent",...}`; the
/// patterns cannot occur inside JSON strings (their quotes are escaped).
fn count_contacts(json: &str) -> Result<usize> {
    let compact: String = {
        // drop whitespace outside strings so that the patterns below are exact
        let (mut out, mut in_str, mut esc) = (String::with_capacity(json.len()), false, false);
        for c in json.chars() {
            if in_str {
                out.push(c);
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
            } else if c == '"' {
                in_str = true;
                out.push(c);
            } else if !c.is_whitespace() {
                out.push(c);
            }
        }
        out
    };
    if compact.contains("\"error\":") || !compact.contains("\"Domains\":") {
        bail!("not a ul.dump result");
    }
    let contacts = compact.matches("\"Contact\":{").count();
    let expires = compact.matches("\"Expires\":").count();
    let expired = compact.matches("\"Expires\":\"expired\"").count();
    if expires != contacts {
        bail!("{contacts} contacts but {expires} Expires fields");
    }
    Ok(contacts - expired)
}

// ---------------------------------------------------------------------------
// hand-rolled SIP over UDP (readiness probe, registration)
// ---------------------------------------------------------------------------

/// Sends one OPTIONS `sip:<addr>` over UDP and returns the first reply (any status).
pub fn options_ping(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let sock = UdpSocket::bind((LISTEN_IP, 0))?;
    sock.connect(addr)?;
    let local = sock.local_addr()?;
    let t = unique_token();
    let msg = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-h{t};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:harness@{LISTEN_IP}>;tag=h{t}\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: opt-{t}@{LISTEN_IP}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send(msg.as_bytes())?;
    recv_final(&sock, timeout)
}

/// Waits for the first final (>=200) reply on `sock`; skips 1xx.
fn recv_final(sock: &UdpSocket, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no final reply within {timeout:?}");
        }
        sock.set_read_timeout(Some(left))?;
        let n = sock.recv(&mut buf).context("recv")?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_code(&text).is_some_and(|c| c >= 200) {
            return Ok(text);
        }
    }
}

/// Status code of a SIP response (`None` for requests/garbage).
pub fn status_code(msg: &str) -> Option<u16> {
    let rest = msg.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The Via, From, To (with `;tag=<to_tag>` added), Call-ID and CSeq lines of request `req`
/// (full or compact names), in its order, each ending in CRLF: what a response copies.
pub fn dialog_headers(req: &str, to_tag: &str) -> String {
    let mut r = String::new();
    for line in req.lines().skip(1).take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => r += &format!("{line}\r\n"),
            "to" | "t" => r += &format!("{line};tag={to_tag}\r\n"),
            _ => {}
        }
    }
    r
}

/// Value of the first header `name` (case-insensitive; no compact forms).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .skip(1)
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

/// Parameter `name` of a digest challenge (`realm`, `nonce`, `qop`, `opaque`...).
pub fn digest_param(challenge: &str, name: &str) -> Option<String> {
    let body = challenge.trim().strip_prefix("Digest").unwrap_or(challenge);
    // split on commas outside quotes
    let mut parts = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in body.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            ',' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts.iter().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 2617 digest `response` (MD5; with qop=auth when `qop` is given).
pub fn digest_response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>, // (qop, nc, cnonce)
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some((qop, nc, cnonce)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Builds an `Authorization`/`Proxy-Authorization` value answering `challenge`.
pub fn digest_authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> Result<String> {
    let realm =
        digest_param(challenge, "realm").ok_or_else(|| anyhow!("no realm in {challenge}"))?;
    let nonce =
        digest_param(challenge, "nonce").ok_or_else(|| anyhow!("no nonce in {challenge}"))?;
    let opaque = digest_param(challenge, "opaque");
    let qop = digest_param(challenge, "qop")
        .map(|q| q.split(',').map(str::trim).any(|q| q == "auth"))
        .unwrap_or(false);
    let mut v = format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5");
    if qop {
        let cnonce = unique_token();
        let resp = digest_response(
            user,
            &realm,
            password,
            method,
            uri,
            &nonce,
            Some(("auth", "00000001", &cnonce)),
        );
        v += &format!(", response=\"{resp}\", qop=auth, nc=00000001, cnonce=\"{cnonce}\"");
    } else {
        let resp = digest_response(user, &realm, password, method, uri, &nonce, None);
        v += &format!(", response=\"{resp}\"");
    }
    if let Some(o) = opaque {
        v += &format!(", opaque=\"{o}\"");
    }
    Ok(v)
}

/// REGISTERs `user@domain` at `registrar` over UDP (from an ephemeral socket),
/// answering one 401 with MD5 digest; `contact` is the Contact URI to bind,
/// `expires` 0 removes it. Returns the final status code.
pub fn register(
    registrar: SocketAddr,
    domain: &str,
    user: &str,
    password: &str,
    contact: &str,
    expires: u32,
) -> Result<u16> {
    let sock = UdpSocket::bind((LISTEN_IP, 0))?;
    sock.connect(registrar)?;
    let local = sock.local_addr()?;
    let t = unique_token();
    let uri = format!("sip:{domain}");
    let build = |cseq: u32, auth: Option<&str>| {
        let mut m = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-r{t}-{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag=r{t}\r\n\
             To: <sip:{user}@{domain}>\r\n\
             Call-ID: reg-{t}@{LISTEN_IP}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>\r\n\
             Expires: {expires}\r\n"
        );
        if let Some(a) = auth {
            m += &format!("Authorization: {a}\r\n");
        }
        m += "Content-Length: 0\r\n\r\n";
        m
    };
    sock.send(build(1, None).as_bytes())?;
    let reply = recv_final(&sock, Duration::from_secs(5))?;
    let code = status_code(&reply).unwrap_or(0);
    if code != 401 {
        return Ok(code);
    }
    let challenge = header(&reply, "WWW-Authenticate")
        .ok_or_else(|| anyhow!("401 without WWW-Authenticate"))?;
    let auth = digest_authorization(challenge, user, password, "REGISTER", &uri)?;
    sock.send(build(2, Some(&auth)).as_bytes())?;
    let reply = recv_final(&sock, Duration::from_secs(5))?;
    Ok(status_code(&reply).unwrap_or(0))
}

/// Reads one SIP message from a stream (headers + Content-Length body).
pub fn read_sip_message(stream: &mut TcpStream, timeout: Duration) -> Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).context("read SIP headers")?;
        if n == 0 {
            bail!("connection closed after {} bytes", buf.len());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = header(&head, "Content-Length")
        .or_else(|| header(&head, "l"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(head + &String::from_utf8_lossy(&body))
}

// ---------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------

/// True when `sipp` (Debian package `sip-tester`) runs.
pub fn sipp_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("sipp")
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// In CI a missing SIPp is an error; elsewhere the SIPp tests are skipped.
pub fn sipp_or_skip(test: &str) -> bool {
    if sipp_available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "sipp missing in CI (package sip-tester)"
    );
    eprintln!("{test}: sipp not installed (package sip-tester), skipped");
    false
}

/// SIP transport for SIPp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn sipp_flag(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }
}

/// SIPp's built-in `uas`, plus Record-Route echoed in 180/200 so that a
/// record-routing proxy stays on the path of ACK and BYE.
const UAS_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="imsload harness UAS (Record-Route aware)">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK" optional="true" rtd="true" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <timewait milliseconds="4000"/>
</scenario>
"#;

/// SIPp's built-in `uac`, but ACK and BYE follow the dialog (R-URI = remote
/// Contact, Route = recorded route set), so calls work through a record-routing
/// proxy as well as directly against a UAS.
const UAC_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="imsload harness UAC (route set aware)">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"#;

/// True when 127.0.0.1:`port` is bound (UDP) or listening (TCP), per /proc/net.
pub fn port_bound(port: u16, transport: Transport) -> bool {
    let (file, want_state) = match transport {
        Transport::Udp => ("/proc/net/udp", None),
        Transport::Tcp => ("/proc/net/tcp", Some("0A")), // 0A = LISTEN
    };
    let Ok(table) = std::fs::read_to_string(file) else {
        return false;
    };
    let needle = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && f[1] == needle
            && match want_state {
                Some(s) => f[3] == s,
                None => true,
            }
    })
}

/// A SIPp UAS (answers every INVITE: 180, 200, waits for ACK and BYE) on
/// 127.0.0.1:<free port>, in its own process group. Drop kills it.
pub struct Sipp {
    child: Child,
    addr: SocketAddr,
    transport: Transport,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Sipp {
    /// UAS over UDP.
    pub fn uas() -> Result<Sipp> {
        Self::uas_on(Transport::Udp)
    }

    /// UAS over `transport`.
    pub fn uas_on(transport: Transport) -> Result<Sipp> {
        if !sipp_available() {
            bail!("sipp not found: install the Debian package sip-tester (or run .ci/run)");
        }
        let dir = tempfile::Builder::new()
            .prefix("imsload-sipp-uas-")
            .tempdir()?;
        let scen = dir.path().join("uas.xml");
        std::fs::write(&scen, UAS_SCENARIO)?;
        let log = dir.path().join("sipp.log");
        let mut last_err = anyhow!("sipp did not start");
        for _ in 0..3 {
            let port = free_port()?;
            let out = File::create(&log)?;
            let mut child = Command::new("sipp")
                .arg("-sf")
                .arg(&scen)
                .args([
                    "-i",
                    LISTEN_IP,
                    "-p",
                    &port.to_string(),
                    "-t",
                    transport.sipp_flag(),
                ])
                .args(["-nostdin", "-trace_err"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null()) // the screen
                .stderr(out)
                .process_group(0)
                .spawn()
                .context("spawn sipp")?;
            let pid = child.id() as i32;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if port_bound(port, transport) && pid_alive(pid) {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    return Ok(Sipp {
                        child,
                        addr,
                        transport,
                        dir,
                        log,
                    });
                }
                if !pid_alive(pid) || Instant::now() > deadline {
                    last_err = anyhow!(
                        "sipp UAS on port {port} did not come up: {}",
                        tail_lines(&log, 20)
                    );
                    stop_group(&mut child, Duration::from_secs(1));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Err(last_err)
    }

    /// Where the UAS listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A Contact URI for registering `user` at this UAS.
    pub fn contact_uri(&self, user: &str) -> String {
        match self.transport {
            Transport::Udp => format!("sip:{user}@{}", self.addr),
            Transport::Tcp => format!("sip:{user}@{};transport=tcp", self.addr),
        }
    }

    /// Pid of SIPp (also its process group id).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIPp's stderr plus its error trace, last lines.
    pub fn log_tail(&self) -> String {
        let mut s = tail_lines(&self.log, 30);
        if let Some(err) = find_file_with_suffix(self.dir.path(), "_errors.log") {
            s += "\n";
            s += &tail_lines(&err, 30);
        }
        s
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        stop_group(&mut self.child, Duration::from_secs(2));
    }
}

fn find_file_with_suffix(dir: &Path, suffix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
        })
}

/// Outcome of a SIPp UAC run (counters from its `-trace_stat` file).
#[derive(Clone, Debug)]
pub struct SippResult {
    /// `SuccessfulCall(C)`.
    pub successful: u64,
    /// `FailedCall(C)`.
    pub failed: u64,
    /// SIPp's exit code: 0 all calls succeeded, 1 some failed (or the global
    /// timeout hit: `-timeout_error`), 99 no call processed, 255/254 fatal.
    pub exit_code: i32,
    /// SIPp's stderr and error trace (tail), for assertion messages.
    pub log: String,
}

impl SippResult {
    /// Every one of `calls` succeeded and SIPp agreed (exit code 0).
    pub fn all_ok(&self, calls: u64) -> bool {
        self.exit_code == 0 && self.failed == 0 && self.successful == calls
    }
}

/// Places `calls` calls at `rate` calls/s from a SIPp UAC on UDP to
/// `sip:service@<target>` (fine against a [`Sipp`] UAS). See [`run_sipp_uac_to`].
pub fn run_sipp_uac(
    target: SocketAddr,
    calls: u32,
    rate: u32,
    timeout_s: u32,
) -> Result<SippResult> {
    run_sipp_uac_to(target, "service", Transport::Udp, calls, rate, timeout_s)
}

/// Places `calls` calls at `rate` calls/s to `sip:<service>@<target>` over
/// `transport` (e.g. through Kamailio to a registered user; ACK/BYE follow the
/// route set), waits for SIPp to finish (its `-timeout` is `timeout_s`, with
/// `-timeout_error`), returns the counters. `Err` only when SIPp could not run or
/// its statistics could not be read.
pub fn run_sipp_uac_to(
    target: SocketAddr,
    service: &str,
    transport: Transport,
    calls: u32,
    rate: u32,
    timeout_s: u32,
) -> Result<SippResult> {
    if !sipp_available() {
        bail!("sipp not found: install the Debian package sip-tester (or run .ci/run)");
    }
    let dir = tempfile::Builder::new()
        .prefix("imsload-sipp-uac-")
        .tempdir()?;
    let scen = dir.path().join("uac.xml");
    std::fs::write(&scen, UAC_SCENARIO)?;
    let stat = dir.path().join("stat.csv");
    let log = dir.path().join("sipp.log");
    let port = free_port()?;
    let mut child = Command::new("sipp")
        .arg(target.to_string())
        .arg("-sf")
        .arg(&scen)
        .args([
            "-s",
            service,
            "-i",
            LISTEN_IP,
            "-p",
            &port.to_string(),
            "-t",
            transport.sipp_flag(),
        ])
        .args(["-m", &calls.to_string(), "-r", &rate.max(1).to_string()])
        .args(["-timeout", &format!("{timeout_s}s"), "-timeout_error"])
        .args(["-nostdin", "-trace_err", "-trace_stat", "-fd", "1"])
        .arg("-stf")
        .arg(&stat)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .process_group(0)
        .spawn()
        .context("spawn sipp")?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_s) + 15);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            stop_group(&mut child, Duration::from_secs(1));
            bail!(
                "sipp UAC still running {timeout_s}+15 s after start: {}",
                tail_lines(&log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // nothing of the group may outlive the call (sipp does not fork, but be sure)
    send_signal(-(child.id() as i32), SIGKILL);
    let mut text = tail_lines(&log, 20);
    if let Some(err) = find_file_with_suffix(dir.path(), "_errors.log") {
        text += "\n";
        text += &tail_lines(&err, 30);
    }
    let exit_code = status.code().unwrap_or(-1);
    let csv = std::fs::read_to_string(&stat)
        .with_context(|| format!("sipp (exit {exit_code}) wrote no statistics: {text}"))?;
    let (successful, failed) = parse_sipp_stat(&csv)
        .with_context(|| format!("sipp statistics {}: {text}", stat.display()))?;
    Ok(SippResult {
        successful,
        failed,
        exit_code,
        log: text,
    })
}

/// (SuccessfulCall(C), FailedCall(C)) from the last line of a SIPp `-trace_stat` file.
fn parse_sipp_stat(csv: &str) -> Result<(u64, u64)> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let head: Vec<&str> = lines
        .next()
        .ok_or_else(|| anyhow!("empty"))?
        .split(';')
        .collect();
    let last: Vec<&str> = lines
        .next_back()
        .ok_or_else(|| anyhow!("no data line"))?
        .split(';')
        .collect();
    let col = |name: &str| -> Result<u64> {
        let i = head
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| anyhow!("no column {name}"))?;
        last.get(i)
            .ok_or_else(|| anyhow!("short line"))?
            .trim()
            .parse()
            .context(name.to_string())
    };
    Ok((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

/// rtpengine from Debian (`rtpengine-daemon`), in the foreground on loopback with userspace
/// forwarding (no kernel module), its NG control port free-picked, its media ports in
/// `ports`. Stopped (SIGKILL) when dropped.
pub struct Rtpengine {
    child: Child,
    ng: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn rtpengine_missing() -> Option<String> {
    (!Path::new("/usr/bin/rtpengine").exists()).then(|| {
        "rtpengine not found: install the Debian package rtpengine-daemon (or run .ci/setup)".into()
    })
}

impl Rtpengine {
    pub fn start(ports: std::ops::RangeInclusive<u16>) -> Result<Rtpengine> {
        let dir = tempfile::Builder::new()
            .prefix("imsload-rtpengine-")
            .tempdir()?;
        let log = dir.path().join("rtpengine.log");
        let mut last = anyhow!("rtpengine did not start");
        for _ in 0..3 {
            let ng = free_port()?;
            let mut child = Command::new("/usr/bin/rtpengine")
                .args([
                    "--config-file=none",
                    "--foreground",
                    "--log-stderr",
                    "--table=-1",
                ])
                .args(["-i", LISTEN_IP, "-n", &format!("{LISTEN_IP}:{ng}")])
                .args([
                    "-m",
                    &ports.start().to_string(),
                    "-M",
                    &ports.end().to_string(),
                ])
                .args(["-L", "5", "-p"])
                .arg(dir.path().join("pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log)?)
                .process_group(0)
                .spawn()
                .context("spawn rtpengine")?;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) && pid_alive(child.id() as i32) {
                if port_bound(ng, Transport::Udp) {
                    return Ok(Rtpengine {
                        child,
                        ng,
                        log,
                        _dir: dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = anyhow!(
                "rtpengine on NG port {ng} did not come up: {}",
                tail_lines(&log, 20)
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        Err(last)
    }

    /// Its NG control port (for [`KamailioOpts::rtpengine`]).
    pub fn ng_port(&self) -> u16 {
        self.ng
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_tail(&self) -> String {
        tail_lines(&self.log, 30)
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
