//! `imsload`'s settings, resolved once from the command line ([`RunArgs`]) and a profile:
//! a value the user gave on the command line wins, then the profile's, then the default shown in
//! `--help`; a shard then takes its share of every rate and count. Everything after this reads
//! [`Settings`] only (typed, every choice an enum), and `--dry-run` prints them.

use crate::hep::mirror::HepArgs;
use crate::load::args::{AkaArgs, ImsArgs, MediaCodec, RunArgs};
use crate::load::config::{Arrival, ByeBy, DurationDist, Mix};
use crate::load::control::{Controller, Objective};
use crate::load::shard::{self, Shard};
use crate::profile::monitor::Monitor;
use crate::profile::plan::Plan;
use crate::profile::schema::{self, parse_duration, Profile};
use crate::sip::secagree::{AuthAlg, EncAlg};
use crate::sip::Transport;
use anyhow::{bail, Context as _};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The defaults of the flags a profile can also set (the `[default: …]` of `--help`).
pub mod defaults {
    use std::time::Duration;

    pub const DOMAIN: &str = "ims.local";
    pub const USERS: usize = 10;
    pub const USER_PATTERN: &str = "user%04d";
    pub const FIRST_INDEX: u64 = 1;
    pub const PASSWORD: &str = "pw_%u";
    pub const REG_RATE: f64 = 100.0;
    pub const EXPIRES: u32 = 600;
    pub const CPS: f64 = 10.0;
    pub const HOLD: Duration = Duration::from_secs(5);
    pub const RING: Duration = Duration::ZERO;
    pub const UE_PORTS: usize = 1;
    pub const TIMER_RESOL: Duration = Duration::from_millis(1);
    /// With --media: a quarter of a millisecond keeps RTP's send-time jitter p99 at 0.37 ms
    /// at 200 calls (1 ms: 1.13 ms; 0: 0.24 ms at a third more wake-ups; docs/media.md).
    pub const MEDIA_TIMER_RESOL: Duration = Duration::from_micros(250);
}

/// One run's settings, every source merged. Rates and counts are this shard's share when
/// sharded (`total_users` keeps the whole run's population).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub profile: Option<PathBuf>,
    /// HOST:PORT, or a name from profiles/targets.toml; `None`: the embedded target.
    pub target: Option<String>,
    pub domain: String,
    pub transport: Transport,
    /// This shard's users (all of them unsharded).
    pub users: usize,
    pub total_users: usize,
    pub user_pattern: String,
    pub first_index: u64,
    pub password: String,
    pub impi_pattern: Option<String>,
    pub users_file: Option<PathBuf>,
    /// AKA keys are secrets: not printed.
    #[serde(skip)]
    pub aka: AkaArgs,
    pub ims: ImsArgs,
    pub reg_rate: f64,
    pub expires: u32,
    #[serde(serialize_with = "ser::opt_duration")]
    pub reg_retry: Option<Duration>,
    pub no_register: bool,
    pub ruri: Option<String>,
    /// Attempts/s; a profile's plan or capacity search replaces it unless --cps was given.
    pub cps: f64,
    pub arrival: Arrival,
    pub max_calls: usize,
    #[serde(serialize_with = "ser::duration")]
    pub timer_resol: Duration,
    pub calls: Option<u64>,
    #[serde(serialize_with = "ser::duration")]
    pub hold: Duration,
    pub hold_dist: DurationDist,
    #[serde(serialize_with = "ser::duration")]
    pub ring: Duration,
    /// Only a profile sets it (`scenario.ring.dist`); fixed otherwise.
    pub ring_dist: DurationDist,
    #[serde(serialize_with = "ser::duration")]
    pub invite_timeout: Duration,
    pub bye_by: ByeBy,
    #[serde(serialize_with = "ser::opt_duration")]
    pub duration: Option<Duration>,
    #[serde(serialize_with = "ser::duration")]
    pub drain: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub t1: Duration,
    #[serde(serialize_with = "ser::duration")]
    pub t2: Duration,
    pub workers: Option<usize>,
    pub bind: Option<IpAddr>,
    pub port: u16,
    /// Sockets per worker; 0: one per user.
    pub ue_ports: usize,
    pub ue_ips: u32,
    pub ipsec: bool,
    pub ipsec_alg: AuthAlg,
    pub ipsec_ealg: EncAlg,
    pub media: Option<MediaCodec>,
    #[serde(serialize_with = "ser::duration")]
    pub media_ptime: Duration,
    pub media_file: Option<PathBuf>,
    pub media_gso: bool,
    pub media_log: Option<PathBuf>,
    #[serde(skip)]
    pub call_hold: Option<crate::ua::caller::HoldPlan>,
    /// Scenario shares (a profile's `[scenario.mix]`; calls only otherwise).
    pub mix: Mix,
    /// Share of the users registered before the first phase.
    pub preregistered: f64,
    pub report: Option<PathBuf>,
    pub series: Option<PathBuf>,
    pub shard: Option<Shard>,
    #[serde(serialize_with = "ser::opt_time")]
    pub start_at: Option<chrono::DateTime<chrono::Utc>>,
    pub metrics: Option<SocketAddr>,
    pub metrics_run: Option<String>,
    #[serde(serialize_with = "ser::duration")]
    pub metrics_linger: Duration,
    pub quiet: bool,
    /// This shard's seed (each shard draws from its own).
    pub seed: u64,
    #[serde(skip)]
    pub hep: HepArgs,
    #[serde(skip)]
    pub dry_run: bool,
}

/// What a profile adds to a run beyond its settings.
#[derive(Default)]
pub struct ProfileRun {
    /// The rates of each second: a plan's phases or a capacity search (none with --cps).
    pub control: Option<Controller>,
    pub monitors: Vec<Monitor>,
    /// The shortest interval a monitor asked for.
    pub monitor_interval: Option<Duration>,
    /// The `--dry-run` text of the plan.
    pub plan_text: String,
}

/// Settings and what the profile adds: all a run needs from its arguments.
pub struct Resolved {
    pub settings: Settings,
    pub profile: ProfileRun,
}

impl Settings {
    /// Resolves the command line and its profile (read here) into one run's settings.
    pub fn resolve(a: RunArgs) -> anyhow::Result<Resolved> {
        let shard = shard_of(&a)?;
        let profile = match &a.profile {
            Some(path) => Some(schema::load(path)?),
            None if a.dry_run => bail!("--dry-run prints a profile's plan: give --profile FILE"),
            None => None,
        };
        Settings::resolve_with(a, profile.as_ref(), shard)
    }

    /// [`Settings::resolve`] with the profile already read and the shard known.
    pub fn resolve_with(
        a: RunArgs,
        p: Option<&Profile>,
        shard: Option<Shard>,
    ) -> anyhow::Result<Resolved> {
        let pop = p.map(|p| &p.population);
        let target = p.map(|p| &p.target);
        let scenario = p.map(|p| &p.scenario);
        // Hold time and its distribution go together: either given on the command line keeps
        // the profile's pair out (a profile's exp mean with a fixed --hold would be neither).
        let profile_hold = match scenario {
            Some(sc) if a.hold.is_none() && a.hold_dist.is_none() => Some(dist(&sc.hold)?),
            _ => None,
        };
        let profile_ring = match scenario {
            Some(sc) if a.ring.is_none() => Some(dist(&sc.ring)?),
            _ => None,
        };
        let mut s = Settings {
            profile: a.profile,
            target: a.target.or_else(|| target.and_then(|t| t.address.clone())),
            domain: a
                .domain
                .or_else(|| target.and_then(|t| t.domain.clone()))
                .unwrap_or_else(|| defaults::DOMAIN.into()),
            transport: a
                .transport
                .or_else(|| target.and_then(|t| t.transport))
                .unwrap_or(Transport::Udp),
            users: a
                .users
                .or(pop.map(|p| (*p.count.get_ref()).max(0) as usize))
                .unwrap_or(defaults::USERS),
            total_users: 0,
            user_pattern: a
                .user_pattern
                .or_else(|| pop.map(|p| p.pattern.clone()))
                .unwrap_or_else(|| defaults::USER_PATTERN.into()),
            first_index: a
                .first_index
                .or(pop.map(|p| p.first_index))
                .unwrap_or(defaults::FIRST_INDEX),
            password: a
                .password
                .or_else(|| pop.map(|p| p.password.clone()))
                .unwrap_or_else(|| defaults::PASSWORD.into()),
            impi_pattern: a.impi_pattern,
            users_file: a
                .users_file
                .or_else(|| pop.and_then(|p| p.file.as_ref().map(PathBuf::from))),
            aka: a.aka,
            ims: a.ims,
            reg_rate: a
                .reg_rate
                .or(pop.map(|p| *p.reg_rate.get_ref()))
                .unwrap_or(defaults::REG_RATE),
            expires: a
                .expires
                .or(pop.map(|p| p.expires))
                .unwrap_or(defaults::EXPIRES),
            reg_retry: a.reg_retry,
            no_register: a.no_register,
            ruri: a.ruri,
            cps: a.cps.unwrap_or(defaults::CPS),
            arrival: a
                .arrival
                .or(scenario.map(|sc| sc.arrival))
                .unwrap_or_default(),
            max_calls: a.max_calls,
            timer_resol: a.timer_resol.unwrap_or(if a.media.is_some() {
                defaults::MEDIA_TIMER_RESOL
            } else {
                defaults::TIMER_RESOL
            }),
            calls: a.calls,
            hold: a
                .hold
                .or(profile_hold.map(|h| h.0))
                .unwrap_or(defaults::HOLD),
            hold_dist: a
                .hold_dist
                .or(profile_hold.map(|h| h.1))
                .unwrap_or(DurationDist::Fixed),
            ring: a
                .ring
                .or(profile_ring.map(|r| r.0))
                .unwrap_or(defaults::RING),
            ring_dist: profile_ring.map_or(DurationDist::Fixed, |r| r.1),
            invite_timeout: a.invite_timeout,
            bye_by: a.bye_by,
            duration: a.duration,
            drain: a.drain,
            t1: a.t1,
            t2: a.t2,
            workers: a.workers,
            bind: a.bind,
            port: a.port,
            ue_ports: a
                .ue_ports
                .or(pop.and_then(|p| p.ue_ports.as_ref()).map(|u| {
                    // Checked when the profile was loaded: a count, or "users" (0: one per user).
                    match u.get_ref() {
                        schema::UePorts::Count(n) => *n as usize,
                        schema::UePorts::Named(_) => 0,
                    }
                }))
                .unwrap_or(defaults::UE_PORTS),
            ue_ips: a.ue_ips,
            ipsec: a.ipsec,
            ipsec_alg: a.ipsec_alg,
            ipsec_ealg: a.ipsec_ealg,
            media: a.media,
            media_ptime: a.media_ptime,
            media_file: a.media_file,
            media_gso: a.media_gso,
            media_log: a.media_log,
            call_hold: a.call_hold,
            mix: scenario.map_or_else(Mix::default, |sc| mix(&sc.mix)),
            preregistered: pop.map_or(1.0, |p| *p.preregistered.get_ref()),
            report: a.report,
            series: a.series,
            shard,
            start_at: a.start_at,
            metrics: a.metrics,
            metrics_run: a.metrics_run,
            metrics_linger: a.metrics_linger,
            quiet: a.quiet,
            seed: a.seed,
            hep: a.hep,
            dry_run: a.dry_run,
        };
        let profile = match p {
            Some(p) => profile_run(&s, a.cps.is_some(), p)?,
            None => ProfileRun::default(),
        };
        s.total_users = s.users;
        if let Some(sh) = shard {
            // Counts and rates of the whole run become this shard's share (a profile's phases
            // were divided above); each shard draws from a seed of its own.
            s.cps = sh.rate(s.cps);
            s.reg_rate = sh.rate(s.reg_rate);
            s.max_calls = sh.count_share(s.max_calls as u64).max(1) as usize;
            s.calls = s.calls.map(|c| sh.count_share(c));
            s.seed = sh.seed(s.seed);
            if s.users_file.is_none() {
                s.users = sh.range(s.users).len();
            }
        }
        Ok(Resolved {
            settings: s,
            profile,
        })
    }
}

impl Resolved {
    /// What `--dry-run` prints: this shard's slice, the plan, a summary line, the monitors, and
    /// every resolved setting (JSON).
    pub fn dry_run_text(&self) -> anyhow::Result<String> {
        use std::fmt::Write as _;
        let (a, prof) = (&self.settings, &self.profile);
        let mut out = String::new();
        if let Some(sh) = a.shard {
            writeln!(
                out,
                "shard {}/{}: users {:?} of {}, 1/{} of every rate (the plan below is this shard's)",
                sh.index,
                sh.count,
                sh.range(a.total_users),
                a.total_users,
                sh.count
            )?;
        }
        out.push_str(&prof.plan_text);
        writeln!(
            out,
            "settings: {} users ({}), target {}, domain {}, {}, {}, reg {}/s, expires {} s, {:?} arrivals, hold {} {:?}, ring {}",
            a.users,
            match &a.users_file {
                Some(f) => format!("from {}", f.display()),
                None => format!("pattern {}", a.user_pattern),
            },
            a.target.as_deref().unwrap_or("embedded"),
            a.domain,
            a.transport.param(),
            match a.ue_ports {
                0 => "one UDP socket per user".to_string(),
                1 => "one socket per worker".to_string(),
                n => format!("{n} sockets per worker"),
            },
            a.reg_rate,
            a.expires,
            a.arrival,
            humantime::format_duration(a.hold),
            a.hold_dist,
            humantime::format_duration(a.ring),
        )?;
        if !prof.monitors.is_empty() {
            let names: Vec<&str> = prof.monitors.iter().map(|m| m.name.as_str()).collect();
            writeln!(out, "monitors: {}", names.join(", "))?;
        }
        writeln!(
            out,
            "resolved settings (command line, then profile, then defaults):\n{}",
            serde_json::to_string_pretty(a)?
        )?;
        Ok(out)
    }
}

/// `--shard I/N`, or `--shards N` with the index from the environment.
fn shard_of(a: &RunArgs) -> anyhow::Result<Option<Shard>> {
    Ok(match (a.shard, a.shards) {
        (Some(s), _) => Some(s),
        (None, Some(n)) => Some(
            Shard::from_env(n, std::env::var(shard::INDEX_ENV).ok().as_deref())
                .context("--shards")?,
        ),
        (None, None) => None,
    })
}

fn dist(d: &schema::Dist) -> anyhow::Result<(Duration, DurationDist)> {
    let mean =
        parse_duration(&d.mean).with_context(|| format!("{:?} is not a duration", d.mean))?;
    Ok((mean, d.dist))
}

fn mix(mx: &schema::Mix) -> Mix {
    Mix {
        call: *mx.call.get_ref(),
        register: *mx.register.get_ref(),
        reregister: *mx.reregister.get_ref(),
        deregister: *mx.deregister.get_ref(),
        message: *mx.message.get_ref(),
        options: *mx.options.get_ref(),
    }
}

/// The rate controller, monitors and plan text of profile `p` for settings `s` (before the
/// shard's share is taken of the settings; the plan's rates are divided here). `cps_given`:
/// --cps replaces the profile's phases with a constant rate.
fn profile_run(s: &Settings, cps_given: bool, p: &Profile) -> anyhow::Result<ProfileRun> {
    let pop = &p.population;
    let sc = &p.scenario;
    let shard = s.shard;
    let mut out = ProfileRun::default();
    for mon in &p.monitors {
        out.monitors
            .push(Monitor::from_profile(mon).context("profile")?);
        if let Some(iv) = mon.interval.as_deref().and_then(parse_duration) {
            out.monitor_interval = Some(out.monitor_interval.map_or(iv, |x: Duration| x.min(iv)));
        }
    }
    let mut plan = Plan::of(p);
    // --users (or a CSV) may have changed how many are pre-registered.
    plan.preregister = (s.users as f64 * pop.preregistered.get_ref()).round() as usize;
    plan.preregister_time =
        Duration::from_secs_f64(plan.preregister as f64 / pop.reg_rate.get_ref().max(0.001));
    if let Some(sh) = shard {
        // Every rate of the plan divided, its times kept: the shards' plans add up to the
        // profile's, second by second. The pre-registration takes as long (1/N of the users
        // at 1/N of the rate), so all shards begin the plan together.
        for seg in &mut plan.segments {
            seg.rate_from = sh.rate(seg.rate_from);
            seg.rate_to = sh.rate(seg.rate_to);
        }
        plan.preregister = sh.range(plan.preregister).len();
        plan.reg_rate = sh.rate(plan.reg_rate);
    }
    if let Some(d) = s.duration {
        // --duration caps the plan: segments past it are cut.
        plan.segments.retain(|s| s.start < d);
        if let Some(last) = plan.segments.last_mut() {
            last.duration = last.duration.min(d - last.start);
        }
    }
    if cps_given {
        out.plan_text = format!(
            "--cps {} given: a constant {} attempts/s replaces the profile's phases{}\n",
            s.cps,
            s.cps,
            match s.duration {
                Some(d) => format!(" for {}", humantime::format_duration(d)),
                None => " until Ctrl-C".into(),
            }
        );
        return Ok(out);
    }
    match (&p.capacity, p.phases.is_empty()) {
        (Some(_), false) => bail!(
            "profile: give [[phase]]s or [capacity], not both (a capacity search sets its own rates)"
        ),
        (Some(c), true) => {
            let each = parse_duration(&c.each).context("profile: capacity.each")?;
            let max_delay = sc
                .objective
                .as_deref()
                .and_then(parse_duration)
                .unwrap_or(Duration::from_secs(2));
            let limit_pct = c.limit_pct.as_ref().map_or(0.1, |l| *l.get_ref());
            // A shard searches with its share of each step: the merge judges the steps again
            // on the shards' summed outcomes (docs/sharding.md).
            let div = |r: f64| shard.map_or(r, |s| s.rate(r));
            out.plan_text = format!(
                "capacity search: attempts/s from {} in steps of {} every {} up to {}; a step fails when over {limit_pct} % \
                 of its scenarios fail or take longer than {} (TS 186 008 \"inadequately handled\"); the design objective \
                 capacity is the last step that passed\n",
                div(*c.from.get_ref()),
                div(*c.step.get_ref()),
                humantime::format_duration(each),
                div(*c.max.get_ref()),
                humantime::format_duration(max_delay),
            );
            out.control = Some(Controller::capacity(
                div(*c.from.get_ref()),
                div(*c.step.get_ref()),
                div(*c.max.get_ref()),
                each,
                Objective {
                    max_delay,
                    limit_pct,
                },
            ));
        }
        (None, true) => {
            out.plan_text = "the profile has no [[phase]]: --cps and --duration apply\n".into();
        }
        (None, false) => {
            out.plan_text = plan.to_text(p);
            out.control =
                Some(Controller::plan(&plan).context("profile")?);
        }
    }
    Ok(out)
}

/// Durations and instants as a person writes them on the command line.
mod ser {
    use serde::Serializer;
    use std::time::Duration;

    pub fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn opt_time<S: Serializer>(
        t: &Option<chrono::DateTime<chrono::Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::args::Cli;
    use clap::Parser;

    /// The run arguments as the user would type them.
    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["imsload"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .run
    }

    fn resolve(flags: &[&str], profile: Option<&str>) -> Settings {
        let p = profile.map(|t| schema::parse(t, "p.toml").unwrap());
        Settings::resolve_with(args(flags), p.as_ref(), None)
            .unwrap()
            .settings
    }

    const PROFILE: &str = r#"
[target]
address = "10.0.0.1:5060"
transport = "tcp"
domain = "ims.example"

[population]
count = 50
pattern = "ue%03d"
first_index = 7
password = "secret"
reg_rate = 20
expires = 300
ue_ports = "users"
preregistered = 0.5

[scenario]
arrival = "poisson"
hold = { dist = "exp", mean = "3s" }
ring = { dist = "exp", mean = "2s" }
mix = { call = 0.5, message = 0.5 }
"#;

    #[test]
    fn defaults_without_a_profile() {
        let s = resolve(&[], None);
        assert_eq!(s.target, None);
        assert_eq!(s.domain, "ims.local");
        assert_eq!(s.transport, Transport::Udp);
        assert_eq!((s.users, s.total_users), (10, 10));
        assert_eq!(s.user_pattern, "user%04d");
        assert_eq!(s.first_index, 1);
        assert_eq!(s.password, "pw_%u");
        assert_eq!((s.reg_rate, s.expires, s.cps), (100.0, 600, 10.0));
        assert_eq!(s.arrival, Arrival::Constant);
        assert_eq!(
            (s.hold, s.hold_dist),
            (Duration::from_secs(5), DurationDist::Fixed)
        );
        assert_eq!((s.ring, s.ring_dist), (Duration::ZERO, DurationDist::Fixed));
        assert_eq!(s.ue_ports, 1);
        assert_eq!(s.mix, Mix::default());
        assert_eq!(s.preregistered, 1.0);
    }

    #[test]
    fn the_profile_overrides_the_defaults() {
        let s = resolve(&[], Some(PROFILE));
        assert_eq!(s.target.as_deref(), Some("10.0.0.1:5060"));
        assert_eq!(s.domain, "ims.example");
        assert_eq!(s.transport, Transport::Tcp);
        assert_eq!(s.users, 50);
        assert_eq!(s.user_pattern, "ue%03d");
        assert_eq!(s.first_index, 7);
        assert_eq!(s.password, "secret");
        assert_eq!((s.reg_rate, s.expires), (20.0, 300));
        assert_eq!(s.ue_ports, 0, "\"users\": one socket per user");
        assert_eq!(s.arrival, Arrival::Poisson);
        assert_eq!(
            (s.hold, s.hold_dist),
            (Duration::from_secs(3), DurationDist::Exp)
        );
        assert_eq!(
            (s.ring, s.ring_dist),
            (Duration::from_secs(2), DurationDist::Exp)
        );
        assert_eq!((s.mix.call, s.mix.message), (0.5, 0.5));
        assert_eq!(s.preregistered, 0.5);
        // No rate in a profile's settings: its phases (none here) are the plan.
        assert_eq!(s.cps, 10.0);
    }

    #[test]
    fn flags_given_override_the_profile() {
        let s = resolve(
            &[
                "--target",
                "pcscf",
                "--domain",
                "d.example",
                "--transport",
                "udp",
                "--users",
                "7",
                "--user-pattern",
                "x%d",
                "--first-index",
                "0",
                "--password",
                "pw",
                "--reg-rate",
                "5",
                "--expires",
                "60",
                "--ue-ports",
                "3",
                "--arrival",
                "constant",
                "--ring",
                "1s",
            ],
            Some(PROFILE),
        );
        assert_eq!(s.target.as_deref(), Some("pcscf"));
        assert_eq!(s.domain, "d.example");
        assert_eq!(s.transport, Transport::Udp);
        assert_eq!((s.users, s.first_index), (7, 0));
        assert_eq!(
            (s.user_pattern.as_str(), s.password.as_str()),
            ("x%d", "pw")
        );
        assert_eq!((s.reg_rate, s.expires, s.ue_ports), (5.0, 60, 3));
        assert_eq!(s.arrival, Arrival::Constant);
        // --ring takes the ring time and leaves it fixed, not the profile's exp.
        assert_eq!(
            (s.ring, s.ring_dist),
            (Duration::from_secs(1), DurationDist::Fixed)
        );
        // Untouched by flags: still the profile's.
        assert_eq!(
            (s.hold, s.hold_dist),
            (Duration::from_secs(3), DurationDist::Exp)
        );
        // A flag that happens to equal the default still wins over the profile.
        let s = resolve(&["--users", "10", "--domain", "ims.local"], Some(PROFILE));
        assert_eq!((s.users, s.domain.as_str()), (10, "ims.local"));
    }

    #[test]
    fn hold_and_its_distribution_come_from_one_source() {
        // Either flag keeps the profile's pair out: the other takes its default.
        let s = resolve(&["--hold", "9s"], Some(PROFILE));
        assert_eq!(
            (s.hold, s.hold_dist),
            (Duration::from_secs(9), DurationDist::Fixed)
        );
        let s = resolve(&["--hold-dist", "exp"], Some(PROFILE));
        assert_eq!(
            (s.hold, s.hold_dist),
            (Duration::from_secs(5), DurationDist::Exp)
        );
    }

    #[test]
    fn a_profile_without_a_section_keeps_the_defaults() {
        let s = resolve(&[], Some("[population]\ncount = 3\n"));
        assert_eq!(s.users, 3);
        assert_eq!((s.target, s.transport), (None, Transport::Udp));
        assert_eq!(s.domain, "ims.local");
        assert_eq!(s.ue_ports, 1);
    }

    #[test]
    fn a_shard_takes_its_share_after_the_profile() {
        let p = schema::parse(PROFILE, "p.toml").unwrap();
        let a = args(&["--shard", "1/4", "--cps", "40", "--calls", "100"]);
        let r = Settings::resolve_with(a, Some(&p), Some(Shard { index: 1, count: 4 })).unwrap();
        let s = r.settings;
        assert_eq!((s.users, s.total_users), (13, 50));
        assert_eq!((s.cps, s.reg_rate), (10.0, 5.0));
        assert_eq!(s.calls, Some(25));
        assert!(
            r.profile.plan_text.starts_with("--cps 40 given"),
            "{}",
            r.profile.plan_text
        );
    }

    #[test]
    fn a_bad_choice_names_the_value_and_the_choices() {
        for (flag, bad, choices) in [
            ("--transport", "sctp", &["udp", "tcp"][..]),
            ("--arrival", "burst", &["constant", "poisson"]),
            ("--hold-dist", "normal", &["fixed", "exp"]),
            ("--bye-by", "nobody", &["caller", "callee"]),
            ("--media", "opus", &["g711", "pcmu", "pcma"]),
            ("--ipsec-alg", "sha256", &["hmac-sha-1-96", "hmac-md5-96"]),
        ] {
            let e = Cli::try_parse_from(["imsload", flag, bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains(bad) && e.contains(flag), "{e}");
            for c in choices {
                assert!(e.contains(c), "{c:?} not in {e}");
            }
        }
    }

    #[test]
    fn dry_run_needs_a_profile_and_prints_every_setting() {
        let e = Settings::resolve(args(&["--dry-run"]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("give --profile FILE"), "{e}");
        let p = schema::parse(PROFILE, "p.toml").unwrap();
        let r =
            Settings::resolve_with(args(&["--dry-run", "--users", "4"]), Some(&p), None).unwrap();
        let text = r.dry_run_text().unwrap();
        assert!(
            text.contains("settings: 4 users (pattern ue%03d)"),
            "{text}"
        );
        let json = text.split_once("resolved settings").unwrap().1;
        let json: serde_json::Value =
            serde_json::from_str(json.split_once('\n').unwrap().1).unwrap();
        assert_eq!(json["users"], 4);
        assert_eq!(json["transport"], "tcp");
        assert_eq!(json["arrival"], "poisson");
        assert_eq!(json["hold"], "3s");
        assert_eq!(json["hold_dist"], "exp");
        assert!(json.get("aka").is_none(), "AKA keys are not printed");
    }
}
