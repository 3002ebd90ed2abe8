//! The `imsload` command: a run, `imsload serve` and `imsload merge`, from parsed arguments to
//! an [`Outcome`]. The binary parses, calls [`main`] and maps the result with
//! [`crate::exit::code`].

use crate::exit::Outcome;
use crate::load::args::{Cli, Command, MergeArgs, ServeArgs};
use crate::load::config::CoreConfig;
use crate::load::population::{self, Identity};
use crate::load::runner::{self, RunSpec};
use crate::load::settings::{Resolved, Settings};
use crate::load::shard::{self, ShardRun};
use crate::shutdown::{self, StopReason};
use crate::sip::transaction::Timers;
use crate::sip::Transport;
use crate::target::core::{TargetAka, TargetConfig};
use crate::ua::answerer::AnswererConfig;
use crate::ua::security::SecurityConfig;
use anyhow::{bail, Context as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Runs what the command line asks for. An error is a usage or setup error (exit 2).
pub fn main(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Some(Command::Serve(s)) => serve(*s),
        Some(Command::Merge(m)) => merge(m),
        None => run(Settings::resolve(cli.run)?),
    }
}

/// A run (or its `--dry-run`): the settings resolved, the users made, the target reached.
pub fn run(r: Resolved) -> anyhow::Result<Outcome> {
    if r.settings.dry_run {
        print!("{}", r.dry_run_text()?);
        return Ok(Outcome::Ok);
    }
    let Resolved {
        settings: mut a,
        profile: prof,
    } = r;
    let shard = a.shard;
    let has_control = prof.control.is_some();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One worker per 4,000 calls/s or 8,000 registrations/s, up to the number of cores: at low
    // rates more workers only add wake-ups and migrations (measured: 0.66 vs 0.43 CPU-s per
    // 10,000 calls at 1,000 calls/s with 2 workers vs 1).
    let peak = if has_control { 0.0 } else { a.cps };
    // And one per 100,000 RTP packets/s sent (1,000 calls of G.711 at 20 ms, both legs ours):
    // the kernel's loopback path costs most of a core at that rate, and one worker carrying
    // 2,000 calls dropped 4.7 % of its packets at its full receive buffers, two none.
    let media_pps = match a.media {
        Some(_) => {
            let calls = (peak * a.hold.as_secs_f64()).min(a.max_calls as f64);
            2.0 * calls / a.media_ptime.as_secs_f64().max(0.005)
        }
        None => 0.0,
    };
    let auto = ((peak / 4000.0)
        .max(a.reg_rate / 8000.0)
        .max(media_pps / 100_000.0)
        .ceil() as usize)
        .clamp(1, cores);
    let workers = a.workers.unwrap_or(auto).max(1);
    let users = load_users(&a)?;
    let ims = a.ims.options()?;
    let register = !(a.no_register || a.ruri.is_some());
    if register && users.len() < 2 && a.cps > 0.0 {
        bail!(
            "calls between registered users need at least 2 users (--users {})",
            users.len()
        );
    }
    if a.t1.is_zero() || a.t2 < a.t1 {
        bail!(
            "timers must satisfy 0 < --t1 ≤ --t2 (got t1 {:?}, t2 {:?})",
            a.t1,
            a.t2
        );
    }
    let stdout_report = a.report.as_deref() == Some(std::path::Path::new("-"));
    if stdout_report {
        a.report = None;
    }
    let late_s = match a.start_at {
        Some(t) => {
            if !a.quiet {
                tracing::info!(
                    "waiting for --start-at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                );
            }
            let late = shard::sleep_until(t)?;
            if late > shard::LATE_S {
                tracing::warn!(
                    "started {late:.1} s after --start-at: this run's seconds lag the other shards'"
                );
            }
            late
        }
        None => 0.0,
    };
    let rt = runtime(workers + 1)?;
    let a = a;
    rt.block_on(async move {
        let (trigger, _sd) = shutdown::channel();
        shutdown::watch_signals(trigger.clone());
        // An error after the embedded target started (a --media-file that cannot be read, a
        // --metrics port in use) stops it too, so the runtime's drop does not wait for it.
        let _stop = trigger.stop_on_drop();
        let embedded = a.target.is_none();
        let (target, served) = match &a.target {
            Some(t) => (resolve(t)?, None),
            None => {
                if a.transport == Transport::Tcp {
                    bail!("the embedded target speaks UDP only: give --target HOST:PORT for TCP");
                }
                // In process and reached by our own callers only: sized like the load side's
                // answerer, not like `serve`, so that no-registration runs at high rates (every
                // call answered here) are never refused.
                let d = CoreConfig::default();
                let cfg = TargetConfig {
                    domain: a.domain.clone(),
                    password_rule: a.password.clone(),
                    aka: target_aka(&users, None),
                    answerer: AnswererConfig {
                        max_calls: d.uas_max_calls,
                        max_bytes: d.uas_max_bytes,
                        ..AnswererConfig::default()
                    },
                    ..TargetConfig::default()
                };
                let s = crate::target::serve::start(
                    cfg,
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    trigger.subscribe(),
                    Duration::from_secs(1),
                    false,
                )
                .await?;
                (s.addr, Some(s))
            }
        };
        // With a plan the controller ends the run; else --duration (10 s on the embedded
        // target, where a forgotten Ctrl-C should not run forever).
        let duration = if has_control {
            None
        } else {
            a.duration.or(embedded.then_some(Duration::from_secs(10)))
        };
        let fixed_ruri = a.ruri.clone().or_else(|| {
            (!register).then(|| format!("sip:service@{}", target))
        });
        if embedded {
            println!(
                "imsload: no --target given: running against the embedded target at {target} \
                 (registrar with digest + proxy + answering UA); give --target HOST:PORT for a real P-CSCF"
            );
        }
        let bind = match a.bind {
            Some(b) => b,
            None => local_ip_for(target)?,
        };
        let core = CoreConfig {
            target,
            transport: a.transport,
            domain: a.domain.clone(),
            timers: Timers { t1: a.t1, t2: a.t2, ..Timers::default() },
            register,
            expires: a.expires,
            reg_rate: a.reg_rate.max(0.001),
            preregistered: a.preregistered,
            reg_retry: a.reg_retry,
            cps: if has_control { 0.0 } else { a.cps },
            mix: a.mix,
            arrival: a.arrival,
            max_calls: a.max_calls.max(1),
            max_total_calls: a.calls,
            hold: a.hold,
            hold_dist: a.hold_dist,
            ring: a.ring,
            ring_dist: a.ring_dist,
            invite_timeout: a.invite_timeout,
            bye_by: a.bye_by,
            fixed_ruri,
            duration,
            drain: a.drain,
            seed: a.seed,
            ims,
            ipsec: a.ipsec.then_some(SecurityConfig {
                alg: a.ipsec_alg,
                ealg: a.ipsec_ealg,
                pcscf: target.ip(),
            }),
            media: media_config(&a)?,
            call_hold: a.call_hold,
            ..CoreConfig::default()
        };
        if a.ipsec && embedded {
            bail!("--ipsec needs --target: a P-CSCF that does sec-agree (the embedded target does not)");
        }
        if a.ipsec && users.iter().all(|u| u.aka.is_none()) {
            bail!("--ipsec needs AKA users: the SAs are keyed from AKA's CK and IK (give --aka-k and --aka-opc, or k/opc columns in --users-file)");
        }
        println!(
            "imsload: {} users @{} → {target} over {}, register {}, {}, hold {:?}, {}",
            users.len(),
            a.domain,
            a.transport.param(),
            if register { "yes" } else { "no" },
            if has_control {
                format!("rates from {}", a.profile.as_deref().unwrap_or(std::path::Path::new("")).display())
            } else {
                format!("{} attempts/s", a.cps)
            },
            a.hold,
            match duration {
                Some(d) => format!("call phase {}", humantime::format_duration(d)),
                None if has_control => "until the plan ends".into(),
                None => "until Ctrl-C".into(),
            }
        );
        let metrics = match a.metrics {
            Some(addr) => {
                let run = a.metrics_run.clone().unwrap_or_else(|| {
                    format!(
                        "imsload-{}",
                        crate::clock::stamp_for_path(chrono::Utc::now())
                    )
                });
                let e = crate::load::metrics::Exporter::bind(addr, &run, &target.to_string())?;
                if !a.quiet {
                    tracing::info!(
                        "metrics at http://{}/metrics (run=\"{run}\")",
                        e.local_addr()
                    );
                }
                Some(std::sync::Arc::new(e))
            }
            None => None,
        };
        let spec = RunSpec {
            metrics: metrics.clone(),
            core,
            workers,
            bind,
            port: a.port,
            ue_ports: a.ue_ports,
            ue_ips: a.ue_ips.max(1),
            progress: !a.quiet,
            report_json: a.report.clone(),
            series: a.series.clone(),
            embedded_target: embedded,
            hep: a.hep.config("imsload"),
            media_log: a.media_log.clone(),
            media_gso: a.media_gso,
            timer_resolution: a.timer_resol,
            control: prof.control,
            monitors: prof.monitors,
            monitor_interval: prof.monitor_interval.unwrap_or(Duration::from_secs(1)),
            shard: shard.map(|shard| ShardRun {
                shard,
                start_at: a.start_at,
                late_s,
            }),
        };
        let report = runner::run(spec, users, trigger.clone()).await?;
        if let Some(s) = served {
            let _ = s.task.await;
        }
        println!("{}", report.to_text());
        if let Some(p) = &a.report {
            println!("report written to {}", p.display());
        }
        if stdout_report {
            // One line, last: `kubectl logs` keeps it whole and `imsload merge` finds it.
            println!("{}", serde_json::to_string(&report)?);
        }
        if let Some(m) = metrics {
            m.linger(a.metrics_linger).await;
        }
        // Like SIPp: exit 1 when anything failed, so scripts can tell.
        Ok(Outcome::failures_if(failures(&report.counters) > 0))
    })
}

/// The run's users; a shard's slice of them (by position: pattern indices and CSV rows alike).
/// A pattern shard makes only its own users: its first index moves to its slice's start.
fn load_users(a: &Settings) -> anyhow::Result<Vec<Identity>> {
    let shard = a.shard;
    let first_index = match (shard, &a.users_file) {
        (Some(sh), None) => a.first_index + sh.range(a.total_users).start as u64,
        _ => a.first_index,
    };
    let aka = a.aka.subscription()?;
    let mut users = match &a.users_file {
        Some(p) => {
            if aka.is_some() || a.impi_pattern.is_some() || a.ims.tel_pattern.is_some() {
                bail!("--aka-*/--impi-pattern/--tel-pattern apply to pattern users; with --users-file give k, opc, amf, sqn, tel columns in the CSV");
            }
            population::from_csv(p)?
        }
        None => population::from_spec(&population::PatternSpec {
            user: &a.user_pattern,
            first: first_index,
            count: a.users,
            domain: &a.domain,
            password: &a.password,
            impi: a.impi_pattern.as_deref(),
            aka,
            tel: a.ims.tel_pattern.as_deref(),
        })?,
    };
    if let Some(p) = &a.ims.sip_instance {
        population::set_instances(&mut users, p, first_index)
            .map_err(|e| anyhow::anyhow!("--sip-instance: {e}"))?;
    }
    if let (Some(sh), Some(f)) = (shard, &a.users_file) {
        let all = users.len();
        users = sh.slice(users);
        if users.is_empty() {
            bail!(
                "shard {}/{}: {} holds {all} users, none left for this shard (give fewer shards)",
                sh.index,
                sh.count,
                f.display()
            );
        }
    }
    Ok(users)
}

/// The embedded target's AKA data: the users that have keys (by IMPI), and `all` for anyone
/// else when given. `None` when nobody uses AKA (the target stays MD5).
fn target_aka(users: &[Identity], all: Option<population::AkaSubscription>) -> Option<TargetAka> {
    let mut t = TargetAka {
        all: all.map(|s| s.keys),
        initial_sqn: all.map_or(0, |s| s.sqn),
        sqn_step: 32,
        ..TargetAka::default()
    };
    for u in users {
        if let Some(s) = u.aka {
            t.users.insert(u.impi.clone(), (s.keys, s.sqn));
        }
    }
    (t.all.is_some() || !t.users.is_empty()).then_some(t)
}

/// `--target`: a name from `profiles/targets.toml` (the file imsprobe reads, so both tools
/// agree on what `pcscf` is), HOST:PORT, or a host (port 5060).
fn resolve(t: &str) -> anyhow::Result<SocketAddr> {
    let file = std::path::Path::new("profiles/targets.toml");
    if let Ok(Some(f)) = crate::probe::targets::TargetsFile::load(file) {
        if let Some(e) = f.targets.get(t) {
            let host = if e.host.contains(':') {
                format!("[{}]", e.host)
            } else {
                e.host.clone()
            };
            return resolve(&format!("{host}:{}", e.sip_port))
                .with_context(|| format!("target {t} in {}", file.display()));
        }
    }
    let with_port = if t.parse::<SocketAddr>().is_ok()
        || t.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        t.to_string()
    } else {
        format!("{t}:5060")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| {
            format!("cannot resolve --target {t:?} (expected HOST:PORT, e.g. 127.0.0.1:5060)")
        })?
        .next()
        .with_context(|| format!("--target {t:?} resolves to no address"))
}

/// The local address the kernel would use to reach `target` (what goes in Via and Contact).
fn local_ip_for(target: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(target)
        .with_context(|| format!("no route to the target {target}"))?;
    Ok(s.local_addr()?.ip())
}

fn serve(s: ServeArgs) -> anyhow::Result<Outcome> {
    let rt = runtime(2)?;
    rt.block_on(async move {
        let (trigger, _sd) = shutdown::channel();
        shutdown::watch_signals(trigger.clone());
        let _stop = trigger.stop_on_drop();
        let users = match &s.users_file {
            Some(p) => population::from_csv(p)?,
            None => Vec::new(),
        };
        let aka = target_aka(&users, s.aka.subscription()?);
        let aka_note = match &aka {
            Some(t) if t.all.is_some() => "AKAv1-MD5 for every user".to_string(),
            Some(t) => format!("AKAv1-MD5 for the {} users with keys, MD5 for others", t.users.len()),
            None => "MD5".to_string(),
        };
        let cfg = TargetConfig {
            aka,
            domain: s.domain.clone(),
            password_rule: s.password.clone(),
            answerer: AnswererConfig {
                ring: s.ring,
                max_calls: s.max_calls.max(1),
                ..AnswererConfig::default()
            },
            ..TargetConfig::default()
        };
        let hep = match s.hep.config("imsload") {
            Some(h) => Some(crate::hep::mirror::Mirror::start(&h, "imsload serve")?),
            None => None,
        };
        let served = crate::target::serve::start_with(
            cfg,
            s.listen,
            trigger.subscribe(),
            Duration::ZERO,
            !s.quiet,
            crate::target::serve::Wiring {
                tap: hep.as_ref().map(|m| m.tap()),
                timer_resolution: s.timer_resol,
            },
        )
        .await?;
        println!(
            "imsload serve: listening on udp:{} for domain {} ({aka_note}; password rule {:?}); Ctrl-C to stop",
            served.addr, s.domain, s.password
        );
        if let Some(d) = s.duration {
            let t = trigger.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                t.stop(StopReason::Duration);
            });
        }
        let stats = served.task.await?;
        println!("{}", serde_json::to_string_pretty(&stats)?);
        if let Some(m) = hep {
            let h = m.finish(Duration::from_secs(2));
            println!("{}", h.line());
            if let Some(w) = h.warning() {
                println!("WARNING: {w}");
            }
        }
        Ok(Outcome::Ok)
    })
}

/// The media plane's settings from `--media*`, or what is wrong with them.
fn media_config(a: &Settings) -> anyhow::Result<Option<crate::media::engine::MediaConfig>> {
    use crate::media::g711::{read_wav, tone, Codec};
    let Some(c) = a.media else { return Ok(None) };
    let ms = a.media_ptime.as_millis();
    if !(10..=200).contains(&ms) || ms % 5 != 0 || a.media_ptime.subsec_nanos() % 1_000_000 != 0 {
        bail!(
            "--media-ptime {:?}: give 10ms to 200ms in 5 ms steps (20ms is G.711's usual)",
            a.media_ptime
        );
    }
    if a.transport == Transport::Tcp {
        bail!("--media needs UDP signalling for now (the worker's media socket shares its UDP event loop): drop --transport tcp");
    }
    let samples = match &a.media_file {
        Some(p) => read_wav(p)?,
        None => tone(400.0),
    };
    if samples.is_empty() {
        bail!("--media-file: the file holds no audio");
    }
    let codec = match c {
        crate::load::args::MediaCodec::Pcma => Codec::Pcma,
        crate::load::args::MediaCodec::G711 | crate::load::args::MediaCodec::Pcmu => Codec::Pcmu,
    };
    Ok(Some(crate::media::engine::MediaConfig::new(
        codec,
        a.media_ptime,
        &samples,
    )))
}

/// `imsload merge`: the library merges; exit 2 on reports that cannot be merged, else as a
/// run: 1 when a registration or call failed in any shard.
fn merge(m: MergeArgs) -> anyhow::Result<Outcome> {
    use crate::load::merge;
    let merged = merge::merge(merge::read_reports(&m.reports)?)?;
    merge::write(&merged, m.report.as_deref(), m.series.as_deref())?;
    if m.quiet {
        for w in &merged.report.warnings {
            tracing::warn!("{w}");
        }
    } else {
        println!("{}", merged.report.to_text());
    }
    if let Some(p) = &m.report {
        println!("merged report written to {}", p.display());
    }
    if let Some(p) = &m.series {
        println!(
            "merged series ({} seconds) written to {}",
            merged.series.len(),
            p.display()
        );
    }
    Ok(Outcome::failures_if(failures(&merged.report.counters) > 0))
}

/// Registrations and calls that failed (what makes the exit code 1, as SIPp's).
fn failures(c: &crate::load::stats::Counters) -> u64 {
    c.reg_failed
        + c.reg_timeouts
        + c.calls_failed
        + c.calls_timeout
        + c.calls_abandoned
        + c.calls_unanswered
        + c.dereg_unanswered
        + c.msg_failed
        + c.msg_timeouts
        + c.opt_failed
        + c.opt_timeouts
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
