//! Monitors: figures about the target's resources, sampled once per interval. CPU is in % of one
//! core (200 % = two cores busy), memory in MiB. Rates (CPU) are computed from the difference of
//! two cumulative readings, so the first sample of a CPU monitor is `None`.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

/// Why a monitor cannot be made (a bad `--monitor` or `[[monitor]]`), or why a sample cannot be
/// read (the caller logs it once and records a gap).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("--monitor {spec:?}: `{kind}` needs {what}, e.g. --monitor '{kind} {example}'")]
    SpecNeeds {
        spec: String,
        kind: String,
        what: &'static str,
        example: &'static str,
    },
    #[error("--monitor-parser is for `command` monitors; {spec:?} is a {kind} monitor")]
    ParserNotForKind { spec: String, kind: String },
    #[error("--monitor {spec:?}: {pid:?} is not a pid")]
    NotPid { spec: String, pid: String },
    #[error("--monitor-parser {0:?}: use number, xentop:DOMAIN or virsh-domstats:DOMAIN")]
    UnknownParser(String),
    #[error("--monitor {0:?}: start with process, pid, cgroup or command (e.g. --monitor 'process kamailio', --monitor 'command xentop -b -i 2 -d 1' --monitor-parser xentop:pcscf)")]
    UnknownKind(String),
    #[error("monitor {monitor:?} needs {what}")]
    ProfileNeeds { monitor: String, what: &'static str },
    #[error("a process monitor needs a pid or a name")]
    NoProcess,
    #[error("no process named {0:?} is running")]
    NotRunning(String),
    #[error("processes {0:?} are gone")]
    Gone(Vec<u32>),
    // `err`, not `source`: the message ends with it, and `{:#}` would print it twice.
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: io::Error },
    #[error("{0} has no usage_usec (is this a cgroup v2 directory?)")]
    NoUsage(String),
    #[error("{0} does not hold a number")]
    NotNumber(String),
    #[error("cannot run {command:?}: {err}")]
    Spawn { command: String, err: io::Error },
    #[error("{command:?} did not finish within {limit:?}")]
    Timeout { command: String, limit: Duration },
    #[error("waiting for {command:?}: {err}")]
    Wait { command: String, err: io::Error },
    #[error("reading {command:?}: {err}")]
    Output { command: String, err: io::Error },
    #[error("no number in the output")]
    NoNumber,
    #[error("no domain {0:?} in xentop's output")]
    NoXentopDomain(String),
    #[error("no cpu.time for {0:?} in virsh domstats")]
    NoCpuTime(String),
}

/// What a monitor reads.
#[derive(Clone, Debug)]
pub enum Source {
    /// Processes by pid (their sum), or every process whose name (`/proc/PID/comm`) matches.
    Process {
        pids: Vec<u32>,
        name: Option<String>,
    },
    /// A cgroup v2 directory (e.g. /sys/fs/cgroup/system.slice/kamailio.service).
    Cgroup { path: String },
    /// A shell command whose output `parser` reads.
    Command { command: String, parser: Parser },
}

/// `--monitor` specs (`imsprobe trials`): `process NAME`, `pid N[,N...]`, `cgroup PATH` or
/// `command CMD...` with a `--monitor-parser` (`number`, `xentop:DOMAIN`,
/// `virsh-domstats:DOMAIN`).
impl Source {
    /// Parses `--monitor`: `process NAME`, `pid N[,N...]`, `cgroup PATH`, or `command CMD...` read by
    /// `parser` (`number`, `xentop:DOMAIN`, `virsh-domstats:DOMAIN`). Same sources as the profiles'
    /// `[[monitor]]` (docs/profiles.md).
    pub fn from_spec(spec: &str, parser: Option<&str>) -> Result<Source, MonitorError> {
        let spec = spec.trim();
        let (kind, rest) = spec.split_once(char::is_whitespace).unwrap_or((spec, ""));
        let rest = rest.trim();
        let need = |what: &'static str| -> Result<(), MonitorError> {
            if rest.is_empty() {
                Err(MonitorError::SpecNeeds {
                    spec: spec.into(),
                    kind: kind.into(),
                    what,
                    example: match kind {
                        "process" => "kamailio",
                        "pid" => "1234",
                        "cgroup" => "/sys/fs/cgroup/system.slice/kamailio.service",
                        _ => "xentop -b -i 2 -d 1",
                    },
                })
            } else {
                Ok(())
            }
        };
        if parser.is_some() && kind != "command" {
            return Err(MonitorError::ParserNotForKind {
                spec: spec.into(),
                kind: kind.into(),
            });
        }
        match kind {
            "process" => {
                need("a process name")?;
                Ok(Source::Process {
                    pids: Vec::new(),
                    name: Some(rest.to_string()),
                })
            }
            "pid" => {
                need("a pid")?;
                // Several pids are summed, as the profiles' monitors do.
                let pids = rest
                    .split([' ', ','])
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.parse::<u32>().map_err(|_| MonitorError::NotPid {
                            spec: spec.into(),
                            pid: p.into(),
                        })
                    })
                    .collect::<Result<Vec<u32>, _>>()?;
                Ok(Source::Process { pids, name: None })
            }
            "cgroup" => {
                need("a cgroup v2 directory")?;
                Ok(Source::Cgroup {
                    path: rest.to_string(),
                })
            }
            "command" => {
                need("a command")?;
                let parser = match parser.unwrap_or("number") {
                    "number" => Parser::Number,
                    p => match p.split_once(':') {
                        Some(("xentop", d)) if !d.is_empty() => Parser::Xentop { domain: d.into() },
                        Some(("virsh-domstats", d)) if !d.is_empty() => {
                            Parser::VirshDomstats { domain: d.into() }
                        }
                        _ => return Err(MonitorError::UnknownParser(p.into())),
                    },
                };
                Ok(Source::Command {
                    command: rest.to_string(),
                    parser,
                })
            }
            _ => Err(MonitorError::UnknownKind(spec.into())),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parser {
    /// The first number in the output.
    Number,
    /// `xentop -b -i 2 -d 1`: the CPU(%) of a domain (last block printed).
    Xentop { domain: String },
    /// `virsh domstats --cpu-total DOMAIN`: CPU % from the growth of cpu.time (ns).
    VirshDomstats { domain: String },
}

/// What a process or cgroup monitor measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// % of one core.
    #[default]
    Cpu,
    /// MiB.
    Memory,
}

/// A monitor with the state it needs to turn cumulative readings into rates.
pub struct Monitor {
    pub name: String,
    pub source: Source,
    pub measure: Measure,
    last: Option<(Instant, f64)>,
}

impl Monitor {
    pub fn new(name: &str, source: Source, measure: Measure) -> Monitor {
        Monitor {
            name: name.to_string(),
            source,
            measure,
            last: None,
        }
    }

    /// One sample at `now`: CPU % since the previous sample, or memory now. `Err` says why the
    /// figure could not be read (the caller logs it once and records a gap in the series).
    pub fn sample(&mut self, now: Instant) -> Result<Option<f64>, MonitorError> {
        let (cumulative, value) = match (&self.source, self.measure) {
            (Source::Process { pids: p, name }, Measure::Cpu) => {
                (true, process_cpu_seconds(&pids(p, name.as_deref())?)?)
            }
            (Source::Process { pids: p, name }, Measure::Memory) => {
                (false, process_rss_mib(&pids(p, name.as_deref())?)?)
            }
            (Source::Cgroup { path }, Measure::Cpu) => (true, cgroup_cpu_seconds(path)?),
            (Source::Cgroup { path }, Measure::Memory) => (false, cgroup_memory_mib(path)?),
            (Source::Command { command, parser }, _) => {
                let out = run_command(command, Duration::from_secs(10))?;
                match parser {
                    Parser::Number => (false, first_number(&out).ok_or(MonitorError::NoNumber)?),
                    Parser::Xentop { domain } => (
                        false,
                        parse_xentop(&out, domain)
                            .ok_or_else(|| MonitorError::NoXentopDomain(domain.clone()))?,
                    ),
                    Parser::VirshDomstats { domain } => {
                        let stats = parse_virsh_domstats(&out);
                        let t = stats
                            .get(domain.as_str())
                            .and_then(|m| m.get("cpu.time"))
                            .ok_or_else(|| MonitorError::NoCpuTime(domain.clone()))?;
                        (true, *t / 1e9)
                    }
                }
            }
        };
        if !cumulative {
            return Ok(Some(value));
        }
        let prev = self.last.replace((now, value));
        Ok(prev.and_then(|(t, v)| {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            (dt > 0.0).then(|| 100.0 * (value - v).max(0.0) / dt)
        }))
    }
}

impl Monitor {
    /// The monitor a profile's `[[monitor]]` describes (profiles are checked when loaded; what
    /// is still wrong here is named).
    pub fn from_profile(m: &super::schema::Monitor) -> Result<Monitor, MonitorError> {
        use super::schema::{MonitorKind, ParserKind};
        let need = |o: &Option<String>, what: &'static str| {
            o.clone().ok_or_else(|| MonitorError::ProfileNeeds {
                monitor: m.name.clone(),
                what,
            })
        };
        let source = match m.kind {
            MonitorKind::Process => {
                // "1234" or "1234,1240" (a process and its children, summed), else a name.
                let p = need(&m.process, "process")?;
                let list: Result<Vec<u32>, _> =
                    p.split(',').map(|x| x.trim().parse::<u32>()).collect();
                match list {
                    Ok(pids) => Source::Process { pids, name: None },
                    Err(_) => Source::Process {
                        pids: Vec::new(),
                        name: Some(p),
                    },
                }
            }
            MonitorKind::Cgroup => Source::Cgroup {
                path: need(&m.cgroup, "cgroup")?,
            },
            MonitorKind::Command => {
                let domain = || need(&m.domain, "domain");
                let parser = match m.parser.unwrap_or_default() {
                    ParserKind::Number => Parser::Number,
                    ParserKind::Xentop => Parser::Xentop { domain: domain()? },
                    ParserKind::VirshDomstats => Parser::VirshDomstats { domain: domain()? },
                };
                Source::Command {
                    command: need(&m.command, "command")?,
                    parser,
                }
            }
        };
        let measure = m.measure.unwrap_or_default();
        Ok(Monitor::new(&m.name, source, measure))
    }
}

/// Samples monitors on a thread of its own (a command such as `xentop` or an SSH call may take
/// seconds, which must not stall the load), keeping the latest reading of each. Stops and
/// joins its thread when dropped.
pub struct Sampler {
    latest: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Option<f64>>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling every `interval`. A monitor that cannot be read is reported on stderr
    /// once (with the reason) and reads as missing until it can be read again.
    pub fn start(mut monitors: Vec<Monitor>, interval: Duration) -> Sampler {
        use std::sync::atomic::Ordering;
        let latest = std::sync::Arc::new(std::sync::Mutex::new(
            monitors
                .iter()
                .map(|m| (m.name.clone(), None))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (l, st) = (latest.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("monitors".into())
            .spawn(move || {
                let mut complained = vec![false; monitors.len()];
                while !st.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    for (i, m) in monitors.iter_mut().enumerate() {
                        let v = match m.sample(Instant::now()) {
                            Ok(v) => {
                                complained[i] = false;
                                v
                            }
                            Err(e) => {
                                if !complained[i] {
                                    tracing::warn!("monitor {:?}: {e}", m.name);
                                    complained[i] = true;
                                }
                                None
                            }
                        };
                        if let Ok(mut map) = l.lock() {
                            map.insert(m.name.clone(), v);
                        }
                    }
                    // Sleep out the interval in short naps, so that stopping is prompt.
                    while !st.load(Ordering::Relaxed) && t0.elapsed() < interval {
                        std::thread::sleep(Duration::from_millis(20).min(interval));
                    }
                }
            })
            .ok();
        Sampler {
            latest,
            stop,
            thread,
        }
    }

    /// The latest reading of every monitor (`None`: not read yet, or unreadable).
    pub fn latest(&self) -> std::collections::BTreeMap<String, Option<f64>> {
        self.latest.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pids(given: &[u32], name: Option<&str>) -> Result<Vec<u32>, MonitorError> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let name = name.ok_or(MonitorError::NoProcess)?;
    // /proc/PID/comm holds at most 15 bytes of the name.
    let short: String = name.chars().take(15).collect();
    let mut out = Vec::new();
    let proc = std::fs::read_dir("/proc").map_err(|err| MonitorError::Read {
        path: "/proc".into(),
        err,
    })?;
    for e in proc {
        let Ok(e) = e else { continue };
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            if comm.trim_end() == short {
                out.push(pid);
            }
        }
    }
    if out.is_empty() {
        return Err(MonitorError::NotRunning(name.into()));
    }
    Ok(out)
}

/// utime + stime of the processes, in seconds (fields 14 and 15 of /proc/PID/stat).
pub fn process_cpu_seconds(pids: &[u32]) -> Result<f64, MonitorError> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    let mut seen = 0;
    for pid in pids {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // exited between listing and reading
        };
        // The command name (field 2) may hold spaces: fields start after the last ')'.
        let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 {
            ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
            seen += 1;
        }
    }
    if seen == 0 {
        return Err(MonitorError::Gone(pids.to_vec()));
    }
    Ok(ticks as f64 / hz)
}

fn process_rss_mib(pids: &[u32]) -> Result<f64, MonitorError> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let mut pages = 0u64;
    for pid in pids {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/statm")) {
            pages += s
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
        }
    }
    Ok(pages as f64 * page / (1024.0 * 1024.0))
}

/// The path back with its text, for the caller's own messages about what the text holds.
fn read(path: String) -> Result<(String, String), MonitorError> {
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok((path, s)),
        Err(err) => Err(MonitorError::Read { path, err }),
    }
}

fn cgroup_cpu_seconds(path: &str) -> Result<f64, MonitorError> {
    let (f, s) = read(format!("{}/cpu.stat", path.trim_end_matches('/')))?;
    s.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|us| us / 1e6)
        .ok_or(MonitorError::NoUsage(f))
}

fn cgroup_memory_mib(path: &str) -> Result<f64, MonitorError> {
    let (f, s) = read(format!("{}/memory.current", path.trim_end_matches('/')))?;
    s.trim()
        .parse::<f64>()
        .map(|b| b / (1024.0 * 1024.0))
        .map_err(|_| MonitorError::NotNumber(f))
}

fn run_command(command: &str, limit: Duration) -> Result<String, MonitorError> {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|err| MonitorError::Spawn {
            command: command.into(),
            err,
        })?;
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if t0.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(MonitorError::Timeout {
                    command: command.into(),
                    limit,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => {
                return Err(MonitorError::Wait {
                    command: command.into(),
                    err,
                })
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|err| MonitorError::Output {
            command: command.into(),
            err,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn first_number(s: &str) -> Option<f64> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .find_map(|w| w.parse::<f64>().ok())
}

/// CPU(%) of `domain` in the last block of `xentop -b` output.
pub fn parse_xentop(out: &str, domain: &str) -> Option<f64> {
    let mut col = None;
    let mut found = None;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"NAME") {
            col = f.iter().position(|h| *h == "CPU(%)");
            continue;
        }
        if f.first() == Some(&domain) {
            if let Some(c) = col {
                if let Some(v) = f.get(c).and_then(|v| v.parse::<f64>().ok()) {
                    found = Some(v);
                }
            }
        }
    }
    found
}

/// `virsh domstats` output → domain → key → value (numeric values only).
pub fn parse_virsh_domstats(out: &str) -> HashMap<String, HashMap<String, f64>> {
    let mut all: HashMap<String, HashMap<String, f64>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Domain:") {
            let name = rest
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string();
            all.entry(name.clone()).or_default();
            current = Some(name);
        } else if let (Some(d), Some((k, v))) = (&current, t.split_once('=')) {
            if let Ok(v) = v.trim().parse::<f64>() {
                all.entry(d.clone())
                    .or_default()
                    .insert(k.trim().to_string(), v);
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_specs_parse_with_clear_errors() {
        assert!(matches!(
            Source::from_spec("process kamailio", None).unwrap(),
            Source::Process { name: Some(n), .. } if n == "kamailio"
        ));
        assert!(matches!(
            Source::from_spec("pid 42", None).unwrap(),
            Source::Process { pids, .. } if pids == [42]
        ));
        assert!(matches!(
            Source::from_spec("cgroup /sys/fs/cgroup/x", None).unwrap(),
            Source::Cgroup { .. }
        ));
        match Source::from_spec("command xentop -b -i 2 -d 1", Some("xentop:pcscf")).unwrap() {
            Source::Command { command, parser } => {
                assert_eq!(command, "xentop -b -i 2 -d 1");
                assert_eq!(
                    parser,
                    Parser::Xentop {
                        domain: "pcscf".into()
                    }
                );
            }
            s => panic!("{s:?}"),
        }
        assert!(Source::from_spec("pid x", None)
            .unwrap_err()
            .to_string()
            .contains("not a pid"));
        assert!(Source::from_spec("process", None)
            .unwrap_err()
            .to_string()
            .contains("needs a process name"));
        assert!(Source::from_spec("disk sda", None)
            .unwrap_err()
            .to_string()
            .contains("process, pid, cgroup or command"));
        assert!(Source::from_spec("command true", Some("xentop"))
            .unwrap_err()
            .to_string()
            .contains("xentop:DOMAIN"));
        assert!(Source::from_spec("pid 1", Some("number")).is_err());
    }

    /// `xentop -b -i 2 -d 1` on a Xen 4.x host: the first block's CPU(%) is meaningless (no
    /// previous sample), the second is the one to read.
    const XENTOP: &str = "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID
  Domain-0 -----r      12345    0.0    4194304   25.0   no limit       n/a     4    0        0        0    0        0        0        0          0          0    0
     pcscf --b---        210    0.0     262144    1.6     262144       1.6     1    1     1234     5678    1        0      100      200       3000       4000    0
      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID
  Domain-0 -----r      12346   12.5    4194304   25.0   no limit       n/a     4    0        0        0    0        0        0        0          0          0    0
     pcscf -----r        211   93.4     262144    1.6     262144       1.6     1    1     1240     5690    1        0      100      201       3000       4010    0
";

    const VIRSH: &str = "Domain: 'pcscf'\n  cpu.time=12345678901\n  cpu.user=1000000000\n  cpu.system=2000000000\n\n\
Domain: 'hss'\n  cpu.time=42\n  state.state=1\n";

    #[test]
    fn parses_xentop_last_block() {
        assert_eq!(parse_xentop(XENTOP, "pcscf"), Some(93.4));
        assert_eq!(parse_xentop(XENTOP, "Domain-0"), Some(12.5));
        assert_eq!(parse_xentop(XENTOP, "scscf"), None);
    }

    #[test]
    fn parses_virsh_domstats() {
        let s = parse_virsh_domstats(VIRSH);
        assert_eq!(s["pcscf"]["cpu.time"], 12345678901.0);
        assert_eq!(s["hss"]["state.state"], 1.0);
        assert_eq!(first_number("load: 0.42 1.0"), Some(0.42));
    }

    #[test]
    fn process_cpu_of_a_busy_child_is_measured() {
        // A child that spins (bounded: a fixed count, and killed after the samples).
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("i=0; while [ $i -lt 20000000 ]; do i=$((i+1)); done")
            .spawn()
            .unwrap();
        let mut m = Monitor::new(
            "cpu",
            Source::Process {
                pids: vec![child.id()],
                name: None,
            },
            Measure::Cpu,
        );
        let t0 = Instant::now();
        assert_eq!(
            m.sample(t0).unwrap(),
            None,
            "the first CPU sample has no rate yet"
        );
        std::thread::sleep(Duration::from_millis(200));
        let v = m.sample(Instant::now()).unwrap().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(v > 10.0 && v < 220.0, "cpu {v} %");
        let mut none = Monitor::new(
            "x",
            Source::Process {
                pids: Vec::new(),
                name: Some("no-such-process-xyz".into()),
            },
            Measure::Cpu,
        );
        assert!(none
            .sample(Instant::now())
            .unwrap_err()
            .to_string()
            .contains("no process named"));
    }
}
