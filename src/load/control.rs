//! What attempt rate to offer, second by second: a profile's plan (constant, ramp and step
//! phases, with `until` thresholds on monitors) or a capacity search (ETSI TS 186 008 / RFC
//! 7501-7502 style). Sans IO and without a clock: the runner asks for the next second's rate,
//! applies it to the workers, and later hands back the second that ran under it, with what the
//! monitors read. Tests drive it with made-up seconds.

use super::stats::Interval;
use crate::profile::condition::{Condition, ConditionError};
use crate::profile::plan::{Plan, Segment};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The rate for one second of the run, and where in the plan that second is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Second {
    /// Seconds since the plan began (0 for its first second).
    pub t: u64,
    /// Scenario attempts per second to offer.
    pub rate: f64,
    pub phase: String,
    /// The capacity step this second belongs to (capacity searches only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
}

/// Something the controller decided that a report should show.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Plan second it happened at.
    pub t: u64,
    pub what: String,
}

/// How a capacity search judges one scenario outcome (TS 186 008's "inadequately handled").
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Objective {
    /// A scenario slower than this is inadequately handled even when it succeeded.
    pub max_delay: Duration,
    /// Share of inadequately handled scenarios (in %) that ends the search.
    pub limit_pct: f64,
}

/// Scenario outcomes of one second (or a step), judged against an [`Objective`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Handled {
    /// Scenario attempts started (sent), as the denominator.
    pub attempts: u64,
    /// Outcomes that failed or timed out.
    pub failed: u64,
    /// Outcomes that succeeded but slower than the objective.
    pub slow: u64,
}

impl Handled {
    /// Judges one second of counts and histograms. Failures and slow outcomes are counted when
    /// they happen, so an attempt made at the very end of a step is judged in the next: steps
    /// many seconds long make that edge small.
    pub fn of(i: &Interval, max_delay: Duration) -> Handled {
        let c = &i.counters;
        let us = max_delay.as_micros() as u64;
        let d = &i.delays;
        let over = |h: &hdrhistogram::Histogram<u64>| {
            if h.is_empty() || h.max() <= us {
                0
            } else {
                h.len() - h.count_between(0, us)
            }
        };
        Handled {
            attempts: attempts_started(i),
            failed: c.calls_failed
                + c.calls_timeout
                + c.calls_bye_failed
                + c.reg_failed
                + c.reg_timeouts
                + c.rereg_failed
                + c.dereg_failed
                + c.msg_failed
                + c.msg_timeouts
                + c.opt_failed
                + c.opt_timeouts,
            // Calls are judged on the caller's wait for the answer (INVITE → 200).
            slow: over(&d.answer) + over(&d.rrd) + over(&d.message) + over(&d.options),
        }
    }

    pub fn add(&mut self, o: &Handled) {
        self.attempts += o.attempts;
        self.failed += o.failed;
        self.slow += o.slow;
    }

    /// Inadequately handled share, in % of attempts (0 when nothing was attempted).
    pub fn inadequate_pct(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            100.0 * (self.failed + self.slow) as f64 / self.attempts as f64
        }
    }
}

/// Scenario attempts actually started in an interval: offered minus those the generator could
/// not place (no suitable user, `--max-calls` reached).
pub fn attempts_started(i: &Interval) -> u64 {
    let c = &i.counters;
    c.scenarios_offered
        .saturating_sub(c.scenarios_unplaced + c.calls_unplaced + c.calls_limited)
}

/// One step of a capacity search, as its table row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapacityStep {
    pub rate: f64,
    pub seconds: u64,
    pub achieved_rate: f64,
    #[serde(flatten)]
    pub handled: Handled,
    pub inadequate_pct: f64,
    pub passed: bool,
    /// Median and 99th percentile of the caller's wait for the answer, ms.
    pub answer_p50_ms: f64,
    pub answer_p99_ms: f64,
    /// The step's INVITE → 200 histogram ([`super::stats::encode_histogram`]), so that shards'
    /// steps merge into exact percentiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_histogram: Option<String>,
}

/// What a capacity search found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityResult {
    /// Design objective capacity: the highest step rate whose inadequately handled share
    /// stayed within the limit. `None` when even the first step failed.
    pub design_objective_capacity: Option<f64>,
    pub limit_pct: f64,
    pub max_delay_ms: f64,
    pub steps: Vec<CapacityStep>,
    /// Why the search stopped.
    pub ended: String,
}

enum Mode {
    Plan(PlanState),
    Capacity(CapacityState),
}

struct PlanState {
    segments: Vec<Segment>,
    conditions: Vec<Option<Condition>>,
    seg: usize,
    /// Seconds spent in the current segment.
    elapsed: u64,
    /// Rate reached when a phase's `until` held (applies to its hold segment).
    held: Option<f64>,
    /// The rate of the last second handed out (what a threshold freezes).
    last_rate: f64,
}

struct CapacityState {
    from: f64,
    step: f64,
    max: f64,
    each: u64,
    objective: Objective,
    /// Index of the step being offered, and seconds offered in it.
    offering: usize,
    elapsed: u64,
    /// Seconds observed per step, with their sums.
    observed: Vec<(u64, Handled, Interval)>,
    result: CapacityResult,
    stop: bool,
}

/// Decides the rate of each second (see the module comment).
pub struct Controller {
    mode: Mode,
    t: u64,
    pub events: Vec<Event>,
}

impl Controller {
    /// Follows a profile's plan. A segment's `until` expression must parse (profiles are
    /// checked when loaded; a bad one here is an error, not a silent ramp to the end).
    pub fn plan(plan: &Plan) -> Result<Controller, ConditionError> {
        let conditions = plan
            .segments
            .iter()
            .map(|s| s.until.as_deref().map(Condition::parse).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Controller {
            mode: Mode::Plan(PlanState {
                segments: plan.segments.clone(),
                conditions,
                seg: 0,
                elapsed: 0,
                held: None,
                last_rate: 0.0,
            }),
            t: 0,
            events: Vec::new(),
        })
    }

    /// Steps the rate from `from` by `step` every `each` up to `max`, until a step's
    /// inadequately handled share passes the objective's limit.
    pub fn capacity(
        from: f64,
        step: f64,
        max: f64,
        each: Duration,
        objective: Objective,
    ) -> Controller {
        Controller {
            mode: Mode::Capacity(CapacityState {
                from,
                step: step.max(1e-9),
                max,
                each: each.as_secs().max(1),
                objective,
                offering: 0,
                elapsed: 0,
                observed: Vec::new(),
                result: CapacityResult {
                    limit_pct: objective.limit_pct,
                    max_delay_ms: objective.max_delay.as_secs_f64() * 1000.0,
                    ..CapacityResult::default()
                },
                stop: false,
            }),
            t: 0,
            events: Vec::new(),
        }
    }

    /// The rate for the next second, given the monitors' latest readings (by name). `None`:
    /// the plan is over (or the search has its answer); the runner ends the run once the
    /// seconds already handed out have run.
    pub fn next_second(&mut self, monitors: &BTreeMap<String, Option<f64>>) -> Option<Second> {
        let t = self.t;
        let out = match &mut self.mode {
            Mode::Plan(p) => p.next(t, monitors, &mut self.events),
            Mode::Capacity(c) => c.next(t, &mut self.events),
        };
        if out.is_some() {
            self.t += 1;
        }
        out
    }

    /// Hands back a second that ran under `second`'s rate (capacity searches judge steps by
    /// them; plans ignore them).
    pub fn observe(&mut self, second: &Second, row: &Interval) {
        if let Mode::Capacity(c) = &mut self.mode {
            c.observe(second, row, &mut self.events);
        }
    }

    /// The capacity search's result so far (`None` for plans).
    pub fn capacity_result(&self) -> Option<CapacityResult> {
        match &self.mode {
            Mode::Capacity(c) => {
                let mut r = c.result.clone();
                if r.ended.is_empty() {
                    r.ended = "the run ended before the search did".into();
                }
                Some(r)
            }
            Mode::Plan(_) => None,
        }
    }
}

impl PlanState {
    fn next(
        &mut self,
        t: u64,
        monitors: &BTreeMap<String, Option<f64>>,
        events: &mut Vec<Event>,
    ) -> Option<Second> {
        // Threshold check first: it decides whether this second still ramps.
        if let Some(Some(cond)) = self.conditions.get(self.seg) {
            if let Some(Some(v)) = monitors.get(&cond.metric) {
                if cond.holds(*v) {
                    let phase = self.segments[self.seg].phase_index;
                    events.push(Event {
                        t,
                        what: format!(
                            "threshold reached: {} = {v:.1} ({}{}) at {:.1} attempts/s; ramping stops",
                            cond.metric,
                            op_str(cond),
                            cond.value,
                            self.last_rate
                        ),
                    });
                    self.held = Some(self.last_rate);
                    // Skip the rest of the phase, up to its hold segment if it has one.
                    let mut i = self.seg + 1;
                    while i < self.segments.len()
                        && self.segments[i].phase_index == phase
                        && !self.segments[i].hold
                    {
                        i += 1;
                    }
                    self.enter(i);
                }
            }
        }
        loop {
            let seg = self.segments.get(self.seg)?;
            let len = seg.duration.as_secs_f64().ceil() as u64;
            if self.elapsed >= len {
                if seg.until.is_some() && self.is_phase_end(self.seg) {
                    events.push(Event {
                        t,
                        what: format!(
                            "phase {:?} ended without reaching its threshold ({})",
                            seg.phase,
                            seg.until.as_deref().unwrap_or("")
                        ),
                    });
                }
                self.enter(self.seg + 1);
                continue;
            }
            if seg.hold && self.held.is_none() {
                // The threshold was never reached: there is nothing to hold.
                self.enter(self.seg + 1);
                continue;
            }
            let rate = if seg.hold {
                self.held.unwrap_or(seg.rate_from)
            } else {
                // A ramp takes the rate of the middle of each second.
                let f =
                    ((self.elapsed as f64 + 0.5) / seg.duration.as_secs_f64().max(1e-9)).min(1.0);
                seg.rate_from + (seg.rate_to - seg.rate_from) * f
            };
            self.elapsed += 1;
            self.last_rate = rate;
            return Some(Second {
                t,
                rate,
                phase: seg.phase.clone(),
                step: None,
            });
        }
    }

    fn is_phase_end(&self, i: usize) -> bool {
        let phase = self.segments[i].phase_index;
        self.segments
            .get(i + 1)
            .is_none_or(|n| n.phase_index != phase || n.hold)
    }

    fn enter(&mut self, i: usize) {
        let leaving_phase = self.segments.get(self.seg).map(|s| s.phase_index);
        self.seg = i;
        self.elapsed = 0;
        if self.segments.get(i).map(|s| s.phase_index) != leaving_phase {
            self.held = None;
        }
    }
}

fn op_str(c: &Condition) -> &'static str {
    use crate::profile::condition::Op;
    match c.op {
        Op::Gt => "> ",
        Op::Ge => ">= ",
        Op::Lt => "< ",
        Op::Le => "<= ",
    }
}

impl CapacityState {
    fn rate_of(&self, step: usize) -> f64 {
        self.from + self.step * step as f64
    }

    fn next(&mut self, t: u64, events: &mut Vec<Event>) -> Option<Second> {
        if self.stop {
            return None;
        }
        if self.elapsed >= self.each {
            self.offering += 1;
            self.elapsed = 0;
        }
        let rate = self.rate_of(self.offering);
        if rate > self.max + 1e-9 {
            self.stop = true;
            if self.result.ended.is_empty() {
                self.result.ended = format!(
                    "reached the search's maximum ({}/s) within the objective",
                    self.max
                );
                events.push(Event {
                    t,
                    what: self.result.ended.clone(),
                });
            }
            return None;
        }
        self.elapsed += 1;
        Some(Second {
            t,
            rate,
            phase: format!("capacity step {} ({rate}/s)", self.offering + 1),
            step: Some(self.offering),
        })
    }

    fn observe(&mut self, s: &Second, row: &Interval, events: &mut Vec<Event>) {
        let Some(step) = s.step else { return };
        while self.observed.len() <= step {
            self.observed
                .push((0, Handled::default(), Interval::default()));
        }
        let h = Handled::of(row, self.objective.max_delay);
        let entry = &mut self.observed[step];
        entry.0 += 1;
        entry.1.add(&h);
        entry.2.add(row);
        if entry.0 < self.each || self.result.steps.len() > step {
            return;
        }
        // The step has run in full: judge it.
        let (secs, handled, sum) = &self.observed[step];
        let pct = handled.inadequate_pct();
        let passed = pct <= self.objective.limit_pct && handled.attempts > 0;
        let answer = super::stats::DelaySummary::of(&sum.delays.answer);
        let rate = self.rate_of(step);
        self.result.steps.push(CapacityStep {
            rate,
            seconds: *secs,
            achieved_rate: handled.attempts as f64 / *secs as f64,
            handled: *handled,
            inadequate_pct: pct,
            passed,
            answer_p50_ms: answer.p50_ms,
            answer_p99_ms: answer.p99_ms,
            answer_histogram: (!sum.delays.answer.is_empty())
                .then(|| super::stats::encode_histogram(&sum.delays.answer)),
        });
        if passed {
            self.result.design_objective_capacity = Some(rate);
        } else if !self.stop {
            self.stop = true;
            self.result.ended = format!(
                "step {} ({rate}/s): {pct:.3} % inadequately handled > limit {} %",
                step + 1,
                self.objective.limit_pct
            );
            events.push(Event {
                t: s.t,
                what: self.result.ended.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::Delays;
    use crate::profile::schema::parse;

    fn plan(text: &str) -> Plan {
        Plan::of(&parse(text, "p").unwrap())
    }

    fn mon(v: Option<f64>) -> BTreeMap<String, Option<f64>> {
        BTreeMap::from([("cpu".to_string(), v)])
    }

    #[test]
    fn plan_seconds_follow_rates_ramps_and_steps() {
        let p = plan(
            "[[phase]]\nname = \"a\"\nrate = 10\nduration = \"3s\"\n\
             [[phase]]\nname = \"b\"\nramp = { from = 0, to = 40, over = \"4s\" }\n\
             [[phase]]\nname = \"c\"\nsteps = { from = 100, to = 200, step = 100, each = \"2s\" }\n",
        );
        let mut c = Controller::plan(&p).unwrap();
        let rates: Vec<f64> = std::iter::from_fn(|| c.next_second(&mon(None)))
            .map(|s| s.rate)
            .collect();
        assert_eq!(
            rates,
            [10.0, 10.0, 10.0, 5.0, 15.0, 25.0, 35.0, 100.0, 100.0, 200.0, 200.0]
        );
        assert!(c.events.is_empty());
    }

    #[test]
    fn until_freezes_the_rate_and_holds_then_goes_on() {
        let p = plan(
            "[[phase]]\nname = \"up\"\nsteps = { from = 10, to = 100, step = 10, each = \"2s\" }\n\
             until = \"cpu > 90%\"\nhold_after = \"3s\"\n\
             [[phase]]\nname = \"after\"\nrate = 1\nduration = \"2s\"\n\
             [[monitor]]\nname = \"cpu\"\nkind = \"process\"\nprocess = \"x\"\n",
        );
        let mut c = Controller::plan(&p).unwrap();
        let mut out = Vec::new();
        for i in 0..30 {
            // The monitor passes 90 % once the rate reached 30 (seconds 4 and on).
            let v = if i >= 6 { 95.0 } else { 50.0 };
            match c.next_second(&mon(Some(v))) {
                Some(s) => out.push((s.rate, s.phase)),
                None => break,
            }
        }
        let rates: Vec<f64> = out.iter().map(|x| x.0).collect();
        assert_eq!(
            rates,
            [10.0, 10.0, 20.0, 20.0, 30.0, 30.0, 30.0, 30.0, 30.0, 1.0, 1.0]
        );
        assert_eq!(out[6].1, "hold at threshold");
        assert_eq!(c.events.len(), 1);
        assert!(c.events[0].what.contains("cpu = 95.0"), "{:?}", c.events);
        assert_eq!(c.events[0].t, 6);
    }

    #[test]
    fn a_threshold_never_reached_skips_the_hold_and_says_so() {
        let p = plan(
            "[[phase]]\nname = \"up\"\nramp = { from = 1, to = 3, over = \"2s\" }\n\
             until = \"cpu > 90%\"\nhold_after = \"5s\"\n\
             [[monitor]]\nname = \"cpu\"\nkind = \"process\"\nprocess = \"x\"\n",
        );
        let mut c = Controller::plan(&p).unwrap();
        let n = std::iter::from_fn(|| c.next_second(&mon(Some(1.0)))).count();
        assert_eq!(n, 2);
        assert!(
            c.events[0].what.contains("without reaching"),
            "{:?}",
            c.events
        );
    }

    fn second(attempts: u64, failed: u64, answers_ms: &[u64]) -> Interval {
        let mut i = Interval::default();
        i.counters.scenarios_offered = attempts;
        i.counters.calls_failed = failed;
        for ms in answers_ms {
            Delays::record(&mut i.delays.answer, Duration::from_millis(*ms));
        }
        i
    }

    #[test]
    fn capacity_search_stops_at_the_first_step_over_the_limit() {
        let obj = Objective {
            max_delay: Duration::from_millis(100),
            limit_pct: 1.0,
        };
        let mut c = Controller::capacity(10.0, 10.0, 1000.0, Duration::from_secs(2), obj);
        let mut given = Vec::new();
        for _ in 0..100 {
            let Some(s) = c.next_second(&BTreeMap::new()) else {
                break;
            };
            // The "target" copes up to 30/s; at 40/s 5 % of answers come late.
            let n = s.rate as u64;
            let late = if s.rate > 35.0 { n / 20 } else { 0 };
            let mut answers = vec![20; (n - late) as usize];
            answers.extend(std::iter::repeat_n(500, late as usize));
            let row = second(n, 0, &answers);
            // Rows come back two seconds later in a real run; order does not matter here.
            c.observe(&s, &row);
            given.push(s);
        }
        let r = c.capacity_result().unwrap();
        assert_eq!(r.design_objective_capacity, Some(30.0));
        assert_eq!(r.steps.len(), 4);
        assert!(r.steps[3].inadequate_pct > 4.9 && !r.steps[3].passed);
        assert!(r.ended.contains("step 4"), "{}", r.ended);
        assert_eq!(given.len(), 8, "no second offered after the failing step");
        assert_eq!(r.steps[0].handled.attempts, 20);
        assert!((r.steps[2].achieved_rate - 30.0).abs() < 1e-9);
    }

    #[test]
    fn handled_counts_failures_and_slow_outcomes() {
        let row = second(100, 2, &[10, 10, 150, 300]);
        let h = Handled::of(&row, Duration::from_millis(100));
        assert_eq!((h.attempts, h.failed, h.slow), (100, 2, 2));
        assert!((h.inadequate_pct() - 4.0).abs() < 1e-9);
    }
}
