//! The load profile file (TOML): population, scenario mix, arrival process, durations, phases
//! and monitors. Every field is documented in `docs/profiles.md`; unknown fields are errors, and
//! every error names the field and the line, because a typo in a profile silently ignored would
//! run a different experiment than the one written down.

use crate::load::config::{Arrival, DurationDist};
use crate::sip::Transport;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile is for (shown by --dry-run).
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub target: TargetSection,
    #[serde(default)]
    pub population: Population,
    #[serde(default)]
    pub scenario: Scenario,
    #[serde(default, rename = "phase")]
    pub phases: Vec<Phase>,
    #[serde(default, rename = "monitor")]
    pub monitors: Vec<Monitor>,
    pub capacity: Option<Capacity>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    pub address: Option<String>,
    pub transport: Option<Transport>,
    pub domain: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Population {
    pub count: Spanned<i64>,
    pub pattern: String,
    pub first_index: u64,
    pub password: String,
    /// CSV of impu,impi,password instead of the pattern.
    pub file: Option<String>,
    /// Share of the population registered before the first phase (0..=1).
    pub preregistered: Spanned<f64>,
    /// Registrations per second during pre-registration.
    pub reg_rate: Spanned<f64>,
    pub expires: u32,
    /// UDP sockets per worker the users are spread over (`imsload --ue-ports`): a number, or
    /// "users" for one socket (one address:port, one UE to the P-CSCF) per user.
    pub ue_ports: Option<Spanned<UePorts>>,
}

/// `ue_ports = 4` or `ue_ports = "users"`.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum UePorts {
    Count(u32),
    Named(String),
}

impl Default for Population {
    fn default() -> Self {
        Population {
            count: Spanned::new(0..0, 10),
            pattern: "user%04d".into(),
            first_index: 1,
            password: "pw_%u".into(),
            file: None,
            preregistered: Spanned::new(0..0, 1.0),
            reg_rate: Spanned::new(0..0, 100.0),
            expires: 600,
            ue_ports: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Shares of each scenario among attempts; they must add up to 1.
    #[serde(default)]
    pub mix: Mix,
    #[serde(default)]
    pub arrival: Arrival,
    #[serde(default = "default_hold")]
    pub hold: Dist,
    #[serde(default = "default_ring")]
    pub ring: Dist,
    /// Per-scenario time objective: slower counts as inadequately handled (TS 186 008).
    #[serde(default)]
    pub objective: Option<String>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            mix: Mix::default(),
            arrival: Arrival::Constant,
            hold: default_hold(),
            ring: default_ring(),
            objective: None,
        }
    }
}

fn default_hold() -> Dist {
    Dist {
        dist: DurationDist::Fixed,
        mean: "5s".into(),
    }
}
fn default_ring() -> Dist {
    Dist {
        dist: DurationDist::Fixed,
        mean: "0s".into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default = "zero")]
    pub call: Spanned<f64>,
    #[serde(default = "zero")]
    pub register: Spanned<f64>,
    #[serde(default = "zero")]
    pub reregister: Spanned<f64>,
    #[serde(default = "zero")]
    pub deregister: Spanned<f64>,
    #[serde(default = "zero")]
    pub message: Spanned<f64>,
    #[serde(default = "zero")]
    pub options: Spanned<f64>,
}

fn zero() -> Spanned<f64> {
    Spanned::new(0..0, 0.0)
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            call: Spanned::new(0..0, 1.0),
            register: Spanned::new(0..0, 0.0),
            reregister: Spanned::new(0..0, 0.0),
            deregister: Spanned::new(0..0, 0.0),
            message: Spanned::new(0..0, 0.0),
            options: Spanned::new(0..0, 0.0),
        }
    }
}

impl Mix {
    pub fn shares(&self) -> [(&'static str, &Spanned<f64>); 6] {
        [
            ("call", &self.call),
            ("register", &self.register),
            ("reregister", &self.reregister),
            ("deregister", &self.deregister),
            ("message", &self.message),
            ("options", &self.options),
        ]
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Dist {
    pub dist: DurationDist,
    pub mean: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: Option<String>,
    /// Constant attempt rate (per second) for `duration`.
    pub rate: Option<Spanned<f64>>,
    pub duration: Option<String>,
    /// Linear ramp of the attempt rate.
    pub ramp: Option<Ramp>,
    /// Steps of the attempt rate.
    pub steps: Option<Steps>,
    /// Stop ramping/stepping once this holds (e.g. "cpu > 90%"), then stay at the rate reached.
    pub until: Option<Spanned<String>>,
    /// How long to stay at the reached rate once `until` held.
    pub hold_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub from: Spanned<f64>,
    pub to: Spanned<f64>,
    pub over: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    pub from: Spanned<f64>,
    pub to: Spanned<f64>,
    pub step: Spanned<f64>,
    /// Time spent at each step.
    pub each: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    /// The name used in `until` expressions and in the time series (e.g. "cpu").
    pub name: String,
    pub kind: MonitorKind,
    /// process: a pid, pids separated by commas, or a process name (all processes with that
    /// name are summed).
    pub process: Option<String>,
    /// cgroup: path under /sys/fs/cgroup.
    pub cgroup: Option<String>,
    /// command: run every `interval`; its output is parsed by `parser`.
    pub command: Option<String>,
    /// How a command's output is read (`number` when not given).
    pub parser: Option<ParserKind>,
    /// For `xentop`/`virsh-domstats`: which domain.
    pub domain: Option<String>,
    /// For process and cgroup monitors (`cpu` when not given).
    pub measure: Option<super::monitor::Measure>,
    pub interval: Option<String>,
}

/// What a `[[monitor]]` reads.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MonitorKind {
    /// Processes: `process` holds a pid, pids separated by commas, or a name.
    Process,
    /// A cgroup v2 directory: `cgroup`.
    Cgroup,
    /// A shell command run every `interval`, its output read by `parser`.
    Command,
}

impl MonitorKind {
    /// As a profile spells it.
    pub fn name(self) -> &'static str {
        match self {
            MonitorKind::Process => "process",
            MonitorKind::Cgroup => "cgroup",
            MonitorKind::Command => "command",
        }
    }
}

/// How a command monitor's output is read.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ParserKind {
    /// The first number printed.
    #[default]
    Number,
    /// `xentop -b`: the CPU % of `domain`.
    Xentop,
    /// `virsh domstats`: the CPU of `domain`.
    VirshDomstats,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    pub from: Spanned<f64>,
    pub step: Spanned<f64>,
    pub max: Spanned<f64>,
    pub each: String,
    /// Share of inadequately handled scenarios that ends the search, % (default 0.1).
    pub limit_pct: Option<Spanned<f64>>,
}

/// A profile problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    // `err`, not `source`: the message already ends with it, and `{:#}` would print it twice.
    #[error("cannot read profile {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}:{line}: {field}: {why}")]
    Invalid {
        path: String,
        line: usize,
        field: String,
        why: String,
    },
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

/// Reads and checks a profile.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ProfileError::Read {
        path: p.clone(),
        err,
    })?;
    parse(&text, &p)
}

pub fn parse(text: &str, path: &str) -> Result<Profile, ProfileError> {
    let profile: Profile = toml::from_str(text).map_err(|e| {
        // toml's message names the unknown or mistyped field; add the line.
        let line = e.span().map(|s| line_of(text, s.start));
        ProfileError::Syntax {
            path: path.to_string(),
            message: match line {
                // toml names an unknown variant and the choices but not the key: the line's
                // text shows which key it was.
                Some(l) => format!(
                    "line {l}: {} (`{}`)",
                    e.message().trim_end(),
                    text.lines().nth(l - 1).unwrap_or("").trim()
                ),
                None => e.message().to_string(),
            },
        }
    })?;
    validate(&profile, text, path)?;
    Ok(profile)
}

fn validate(p: &Profile, text: &str, path: &str) -> Result<(), ProfileError> {
    let bad = |span: std::ops::Range<usize>, field: &str, why: String| ProfileError::Invalid {
        path: path.to_string(),
        line: if span.is_empty() {
            0
        } else {
            line_of(text, span.start)
        },
        field: field.to_string(),
        why,
    };
    let non_negative = |v: &Spanned<f64>, field: &str| {
        let x = *v.get_ref();
        if !x.is_finite() || x < 0.0 {
            Err(bad(
                v.span(),
                field,
                format!("{x} is negative; rates and shares are ≥ 0"),
            ))
        } else {
            Ok(())
        }
    };
    let duration = |s: &str, field: &str| {
        parse_duration(s).map(|_| ()).ok_or_else(|| {
            bad(
                0..0,
                field,
                format!("{s:?} is not a duration (examples: 500ms, 30s, 5m)"),
            )
        })
    };
    let pop = &p.population;
    if *pop.count.get_ref() < 0 {
        return Err(bad(
            pop.count.span(),
            "population.count",
            "must be ≥ 0".into(),
        ));
    }
    non_negative(&pop.reg_rate, "population.reg_rate")?;
    let share = *pop.preregistered.get_ref();
    if !(0.0..=1.0).contains(&share) {
        return Err(bad(
            pop.preregistered.span(),
            "population.preregistered",
            format!("{share} is not a share between 0 and 1"),
        ));
    }
    if let Some(u) = &pop.ue_ports {
        if let UePorts::Named(v) = u.get_ref() {
            if v != "users" {
                return Err(bad(
                    u.span(),
                    "population.ue_ports",
                    format!("{v:?}: give a number of sockets per worker, or \"users\""),
                ));
            }
        }
    }
    let mut sum = 0.0;
    for (name, v) in p.scenario.mix.shares() {
        non_negative(v, &format!("scenario.mix.{name}"))?;
        sum += v.get_ref();
    }
    if (sum - 1.0).abs() > 1e-6 {
        return Err(bad(
            p.scenario.mix.call.span(),
            "scenario.mix",
            format!("shares add up to {sum}, not 1"),
        ));
    }
    for (d, f) in [
        (&p.scenario.hold, "scenario.hold"),
        (&p.scenario.ring, "scenario.ring"),
    ] {
        duration(&d.mean, &format!("{f}.mean"))?;
    }
    if let Some(o) = &p.scenario.objective {
        duration(o, "scenario.objective")?;
    }
    for (i, ph) in p.phases.iter().enumerate() {
        let f = |x: &str| format!("phase[{i}].{x}");
        let shapes = [ph.rate.is_some(), ph.ramp.is_some(), ph.steps.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if shapes != 1 {
            return Err(bad(
                0..0,
                &format!("phase[{i}]"),
                "give exactly one of rate (+ duration), ramp or steps".into(),
            ));
        }
        if let Some(r) = &ph.rate {
            non_negative(r, &f("rate"))?;
            let Some(d) = &ph.duration else {
                return Err(bad(
                    r.span(),
                    &f("duration"),
                    "a constant rate needs a duration".into(),
                ));
            };
            duration(d, &f("duration"))?;
        }
        if let Some(r) = &ph.ramp {
            non_negative(&r.from, &f("ramp.from"))?;
            non_negative(&r.to, &f("ramp.to"))?;
            duration(&r.over, &f("ramp.over"))?;
        }
        if let Some(s) = &ph.steps {
            non_negative(&s.from, &f("steps.from"))?;
            non_negative(&s.to, &f("steps.to"))?;
            non_negative(&s.step, &f("steps.step"))?;
            if *s.step.get_ref() <= 0.0 {
                return Err(bad(s.step.span(), &f("steps.step"), "must be > 0".into()));
            }
            duration(&s.each, &f("steps.each"))?;
        }
        if let Some(u) = &ph.until {
            let c = super::condition::Condition::parse(u.get_ref())
                .map_err(|why| bad(u.span(), &f("until"), why.to_string()))?;
            if !p.monitors.iter().any(|m| m.name == c.metric) {
                return Err(bad(
                    u.span(),
                    &f("until"),
                    format!("no [[monitor]] named {:?}", c.metric),
                ));
            }
        }
        if let Some(h) = &ph.hold_after {
            duration(h, &f("hold_after"))?;
        }
    }
    for (i, m) in p.monitors.iter().enumerate() {
        let f = |x: &str| format!("monitor[{i}].{x}");
        let need = |o: &Option<String>, what: &str| {
            o.as_ref().map(|_| ()).ok_or_else(|| {
                bad(
                    0..0,
                    &f(what),
                    format!("a {} monitor needs {what}", m.kind.name()),
                )
            })
        };
        match m.kind {
            MonitorKind::Process => need(&m.process, "process")?,
            MonitorKind::Cgroup => need(&m.cgroup, "cgroup")?,
            MonitorKind::Command => {
                need(&m.command, "command")?;
                if m.parser.unwrap_or_default() != ParserKind::Number {
                    need(&m.domain, "domain")?;
                }
            }
        }
        if let Some(iv) = &m.interval {
            duration(iv, &f("interval"))?;
        }
    }
    if let Some(c) = &p.capacity {
        non_negative(&c.from, "capacity.from")?;
        non_negative(&c.step, "capacity.step")?;
        non_negative(&c.max, "capacity.max")?;
        duration(&c.each, "capacity.each")?;
        if let Some(l) = &c.limit_pct {
            non_negative(l, "capacity.limit_pct")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let e = parse("[population]\ncount = 10\nnumber_of_users = 5\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("number_of_users"), "{e}");
    }

    #[test]
    fn negative_rate_is_named_with_its_line() {
        let e = parse(
            "[[phase]]\nname = \"a\"\nrate = -5\nduration = \"10s\"\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.toml:3") && e.contains("phase[0].rate"), "{e}");
        let e = parse("[scenario.mix]\ncall = 0.5\nmessage = 0.2\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("add up to 0.7"), "{e}");
    }

    #[test]
    fn ue_ports_is_a_count_or_users() {
        let p = parse("[population]\nue_ports = 4\n", "p").unwrap();
        assert_eq!(
            p.population.ue_ports.unwrap().into_inner(),
            UePorts::Count(4)
        );
        let p = parse("[population]\nue_ports = \"users\"\n", "p").unwrap();
        assert_eq!(
            p.population.ue_ports.unwrap().into_inner(),
            UePorts::Named("users".into())
        );
        let e = parse("[population]\nue_ports = \"many\"\n", "p")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p:2") && e.contains("population.ue_ports"),
            "{e}"
        );
    }

    #[test]
    fn choices_are_enums_and_a_bad_one_names_value_key_and_choices() {
        let p = parse(
            "[target]\ntransport = \"tcp\"\n[scenario]\narrival = \"poisson\"\nhold = { dist = \"exp\", mean = \"3s\" }\n",
            "p",
        )
        .unwrap();
        assert_eq!(p.target.transport, Some(Transport::Tcp));
        assert_eq!(p.scenario.arrival, Arrival::Poisson);
        assert_eq!(p.scenario.hold.dist, DurationDist::Exp);
        assert_eq!(p.scenario.ring.dist, DurationDist::Fixed);
        for (text, line, want) in [
            (
                "[target]\ntransport = \"sctp\"\n",
                2,
                ["sctp", "udp", "tcp", "transport"],
            ),
            (
                "[scenario]\narrival = \"burst\"\n",
                2,
                ["burst", "constant", "poisson", "arrival"],
            ),
            (
                "[scenario]\n\nring = { dist = \"normal\", mean = \"1s\" }\n",
                3,
                ["normal", "fixed", "exp", "ring"],
            ),
            (
                "[[monitor]]\nname = \"cpu\"\nkind = \"proces\"\nprocess = \"x\"\n",
                3,
                ["proces", "process", "cgroup", "command"],
            ),
            (
                "[[monitor]]\nname = \"cpu\"\nkind = \"command\"\ncommand = \"true\"\nparser = \"xen\"\n",
                5,
                ["xen", "number", "xentop", "virsh-domstats"],
            ),
            (
                "[[monitor]]\nname = \"m\"\nkind = \"cgroup\"\ncgroup = \"/x\"\nmeasure = \"io\"\n",
                5,
                ["io", "cpu", "memory", "measure"],
            ),
        ] {
            let e = parse(text, "p.toml").unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}")), "{e}");
            for w in want {
                assert!(e.contains(w), "{w:?} not in {e}");
            }
        }
    }

    #[test]
    fn until_needs_a_monitor_and_a_valid_expression() {
        let base = "[[phase]]\nramp = { from = 1, to = 10, over = \"1m\" }\n";
        let e = parse(&format!("{base}until = \"cpu > 90%\"\n"), "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no [[monitor]] named \"cpu\""), "{e}");
        let e = parse(&format!("{base}until = \"cpu >> 90\"\n"), "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("phase[0].until"), "{e}");
        let ok = format!(
            "{base}until = \"cpu > 90%\"\n[[monitor]]\nname = \"cpu\"\nkind = \"process\"\nprocess = \"kamailio\"\n"
        );
        parse(&ok, "p").unwrap();
    }
}

#[cfg(test)]
mod shipped {
    /// Every profile shipped in profiles/ must load and plan.
    #[test]
    fn shipped_profiles_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".toml") || name == "targets.toml" {
                continue;
            }
            let prof = super::load(&p).unwrap_or_else(|e| panic!("{e}"));
            let plan = crate::profile::plan::Plan::of(&prof);
            assert!(
                !plan.segments.is_empty() || prof.capacity.is_some(),
                "{name} plans nothing"
            );
            n += 1;
        }
        assert!(n >= 4, "smoke, paper-2019, overload, capacity");
    }
}
