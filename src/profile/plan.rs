//! A profile's phases expanded into a timeline of rate segments: what `--dry-run` prints and what
//! the runner will follow.

use super::schema::{parse_duration, Profile};
use std::fmt::Write as _;
use std::time::Duration;

/// One stretch of the run with a linear rate from `rate_from` to `rate_to`.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub phase: String,
    pub start: Duration,
    pub duration: Duration,
    pub rate_from: f64,
    pub rate_to: f64,
    /// The phase stops early when this holds (then stays `hold_after` at the rate reached).
    pub until: Option<String>,
    /// Which `[[phase]]` of the profile this segment belongs to (0-based).
    pub phase_index: usize,
    /// The `hold_after` stretch of a phase with `until`: run only when the threshold was
    /// reached, at the rate reached (its `rate_from`/`rate_to` are the plan's guess).
    pub hold: bool,
}

impl Segment {
    /// Attempts expected in this segment if it runs to its end.
    pub fn attempts(&self) -> f64 {
        (self.rate_from + self.rate_to) / 2.0 * self.duration.as_secs_f64()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub preregister: usize,
    /// Registrations per second of the pre-registration (a shard's share when sharded).
    pub reg_rate: f64,
    pub preregister_time: Duration,
    pub segments: Vec<Segment>,
}

impl Plan {
    pub fn of(p: &Profile) -> Plan {
        let pop = &p.population;
        let count = (*pop.count.get_ref()).max(0) as usize;
        let pre = (count as f64 * pop.preregistered.get_ref()).round() as usize;
        let reg_rate = pop.reg_rate.get_ref().max(0.001);
        let mut t = Duration::ZERO;
        let mut segments = Vec::new();
        for (i, ph) in p.phases.iter().enumerate() {
            let name = ph
                .name
                .clone()
                .unwrap_or_else(|| format!("phase {}", i + 1));
            let until = ph.until.as_ref().map(|u| u.get_ref().clone());
            let mut push = |from: f64, to: f64, d: Duration, label: String| {
                segments.push(Segment {
                    phase: label,
                    start: t,
                    duration: d,
                    rate_from: from,
                    rate_to: to,
                    until: until.clone(),
                    phase_index: i,
                    hold: false,
                });
                t += d;
            };
            if let Some(r) = &ph.rate {
                let d = ph
                    .duration
                    .as_deref()
                    .and_then(parse_duration)
                    .unwrap_or_default();
                push(*r.get_ref(), *r.get_ref(), d, name);
            } else if let Some(r) = &ph.ramp {
                let d = parse_duration(&r.over).unwrap_or_default();
                push(*r.from.get_ref(), *r.to.get_ref(), d, name);
            } else if let Some(s) = &ph.steps {
                let each = parse_duration(&s.each).unwrap_or_default();
                let (from, to, step) = (*s.from.get_ref(), *s.to.get_ref(), *s.step.get_ref());
                let up = to >= from;
                let mut rate = from;
                let mut k = 0;
                // Bounded: at most 10,000 steps, whatever the numbers say.
                while k < 10_000
                    && if up {
                        rate <= to + 1e-9
                    } else {
                        rate >= to - 1e-9
                    }
                {
                    push(rate, rate, each, format!("{name} step {}", k + 1));
                    rate = if up { rate + step } else { rate - step };
                    k += 1;
                }
            }
            if let (Some(_), Some(h)) =
                (&ph.until, ph.hold_after.as_deref().and_then(parse_duration))
            {
                let last = segments.last().map(|s| s.rate_to).unwrap_or(0.0);
                segments.push(Segment {
                    phase: "hold at threshold".into(),
                    start: t,
                    duration: h,
                    rate_from: last,
                    rate_to: last,
                    until: None,
                    phase_index: i,
                    hold: true,
                });
                t += h;
            }
        }
        Plan {
            preregister: pre,
            reg_rate,
            preregister_time: Duration::from_secs_f64(pre as f64 / reg_rate),
            segments,
        }
    }

    pub fn total_time(&self) -> Duration {
        self.preregister_time + self.segments.iter().map(|s| s.duration).sum::<Duration>()
    }

    pub fn total_attempts(&self) -> f64 {
        self.segments.iter().map(Segment::attempts).sum()
    }

    /// The `--dry-run` table.
    pub fn to_text(&self, p: &Profile) -> String {
        let mut s = String::new();
        if !p.description.is_empty() {
            let _ = writeln!(s, "{}\n", p.description.trim());
        }
        let _ = writeln!(
            s,
            "pre-registration: {} users at {}/s (~{:.0} s)",
            self.preregister,
            self.reg_rate,
            self.preregister_time.as_secs_f64()
        );
        let mix: Vec<String> = p
            .scenario
            .mix
            .shares()
            .iter()
            .filter(|(_, v)| *v.get_ref() > 0.0)
            .map(|(n, v)| format!("{n} {:.0} %", v.get_ref() * 100.0))
            .collect();
        let _ = writeln!(
            s,
            "scenario mix: {} ({} arrivals)",
            mix.join(", "),
            p.scenario.arrival.name()
        );
        let _ = writeln!(
            s,
            "{:>8} {:>8}  {:>9} {:>9} {:>10}  phase",
            "start", "length", "rate from", "rate to", "attempts"
        );
        for seg in &self.segments {
            let _ = writeln!(
                s,
                "{:>7.0}s {:>7.0}s  {:>9.1} {:>9.1} {:>10.0}  {}{}",
                seg.start.as_secs_f64(),
                seg.duration.as_secs_f64(),
                seg.rate_from,
                seg.rate_to,
                seg.attempts(),
                seg.phase,
                seg.until
                    .as_ref()
                    .map(|u| format!(" (until {u})"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            s,
            "total: {:.0} s, {:.0} scenario attempts (phases with `until` may end earlier)",
            self.total_time().as_secs_f64(),
            self.total_attempts()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::schema::parse;

    #[test]
    fn steps_and_ramps_expand() {
        let p = parse(
            "[population]\ncount = 100\npattern = \"u%d\"\nfirst_index = 1\npassword = \"x\"\npreregistered = 0.5\nreg_rate = 50\nexpires = 600\n\
[[phase]]\nname = \"warm\"\nrate = 10\nduration = \"30s\"\n\
[[phase]]\nname = \"up\"\nsteps = { from = 20, to = 40, step = 10, each = \"10s\" }\n\
[[phase]]\nramp = { from = 40, to = 80, over = \"20s\" }\n",
            "p",
        )
        .unwrap();
        let plan = Plan::of(&p);
        assert_eq!(plan.preregister, 50);
        assert_eq!(plan.preregister_time, Duration::from_secs(1));
        let rates: Vec<(f64, f64)> = plan
            .segments
            .iter()
            .map(|s| (s.rate_from, s.rate_to))
            .collect();
        assert_eq!(
            rates,
            [
                (10.0, 10.0),
                (20.0, 20.0),
                (30.0, 30.0),
                (40.0, 40.0),
                (40.0, 80.0)
            ]
        );
        assert_eq!(plan.segments[4].start, Duration::from_secs(60));
        // 300 + 200 + 300 + 400 + 1200
        assert!((plan.total_attempts() - 2400.0).abs() < 1e-6);
        let text = plan.to_text(&p);
        assert!(
            text.contains("up step 3") && text.contains("2400 scenario attempts"),
            "{text}"
        );
    }
}
