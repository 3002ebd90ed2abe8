//! The run's once-a-second aggregation, sans IO and without a clock (the quinn-proto / str0m
//! shape): the runner feeds it the workers' intervals, its ticks, the stop and the readings it
//! took (monitors, the process's CPU seconds), each with the `now` it read, and drains what to
//! do: rows to write and print, rates to hand to the workers, a stop when the plan is over.
//! At the end it gives the totals and what the report needs. Tests drive it with a made-up
//! clock and made-up workers.

use super::control::{attempts_started, Controller, Second};
use super::core::Phase;
use super::report::{PhaseSummary, PlanReport, SeriesRow};
use super::stats::{DelaySummary, EncodedDelays, Gauges, Interval};
use crate::clock::Epoch;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// One worker's interval, handed in at its tick (or once at its end, with `Phase::Done`).
pub struct WorkerMsg {
    pub worker: usize,
    pub interval: Interval,
    pub phase: Phase,
    /// When the worker started and ended calling (`None`: not yet).
    pub calling: (Option<Instant>, Option<Instant>),
    /// `--media`: the streams that ended in the interval, each with its own figures (for
    /// `--media-log`; the aggregation keeps only their distributions).
    pub media: Vec<crate::media::engine::StreamSummary>,
}

/// A second's row, with what to print beside it.
pub struct RowOut {
    /// Row number from the run's start (1 for the first).
    pub second: u64,
    pub row: SeriesRow,
    /// The second's histograms, when asked for ([`Aggregator::keep_row_histograms`]).
    pub histograms: Option<EncodedDelays>,
    /// The live progress line (printed with `--progress`).
    pub progress: String,
    /// The self-check's warning, at most one in 10 s.
    pub warning: Option<String>,
}

/// What the runner has to do.
pub enum Output {
    Row(Box<RowOut>),
    /// The attempt rate of the whole run, for the workers to take at their next tick.
    Rate(f64),
    /// The plan is over and its last second has been seen: stop the run.
    Stop,
}

/// What the report takes from the aggregation.
pub struct Summary {
    pub total: Interval,
    /// The last, partial second (its phase is "done"), for the series.
    pub last: SeriesRow,
    /// Its row number and histograms (when asked for), as for [`RowOut`].
    pub last_second: u64,
    pub last_histograms: Option<EncodedDelays>,
    pub plan: Option<PlanReport>,
    /// From the first worker's start of calling to the last one's end.
    pub call_phase: Duration,
    /// Seconds in which the self-check found the generator saturated or late.
    pub behind_seconds: u64,
}

impl Summary {
    /// The report's warning about a generator that was behind, if it was.
    pub fn behind_warning(&self) -> Option<String> {
        (self.behind_seconds > 0).then(|| {
            format!(
                "the generator itself was saturated or late in {} seconds (its CPU near the limit of \
                 its worker threads, or its schedule over 20 ms late): figures of those seconds say \
                 more about imsload than about the target; use more --workers, a second machine, \
                 or a lower rate",
                self.behind_seconds
            )
        })
    }
}

/// Sums the workers' intervals into seconds (see the module comment).
pub struct Aggregator {
    epoch: Epoch,
    users: usize,
    control: Option<Controller>,
    selfcheck: SelfCheck,
    book: PlanBook,
    total: Interval,
    second: Interval,
    phases: Vec<Phase>,
    spans: Vec<(Option<Instant>, Option<Instant>)>,
    last_gauges: Vec<Gauges>,
    stopped_at: Option<Instant>,
    /// Seconds handed to the workers and not yet seen back: a rate set at a tick takes effect
    /// at the workers' next tick and shows in the row after next (see `Ticks` in the runner).
    pending: VecDeque<(u64, Second)>,
    plan_over: bool,
    stop_asked: bool,
    row_no: u64,
    row_histograms: bool,
    /// Every monitor column a row has had: the last, partial row has them too (unread), so
    /// that a CSV series keeps its header's columns to the end.
    monitor_columns: std::collections::BTreeSet<String>,
    out: VecDeque<Output>,
}

impl Aggregator {
    /// `cpu_limit_pct`: the CPU % the generator can use at most (see [`cpu_limit_pct`]).
    pub fn new(
        epoch: Epoch,
        workers: usize,
        users: usize,
        control: Option<Controller>,
        cpu_limit_pct: f64,
    ) -> Aggregator {
        let workers = workers.max(1);
        Aggregator {
            epoch,
            users,
            plan_over: control.is_none(),
            control,
            selfcheck: SelfCheck::new(cpu_limit_pct),
            book: PlanBook::default(),
            total: Interval::default(),
            second: Interval::default(),
            phases: vec![Phase::Registering; workers],
            spans: vec![(None, None); workers],
            last_gauges: vec![Gauges::default(); workers],
            stopped_at: None,
            pending: VecDeque::new(),
            stop_asked: false,
            row_no: 0,
            row_histograms: false,
            monitor_columns: Default::default(),
            out: VecDeque::new(),
        }
    }

    /// Rows carry their second's histograms from now on (a shard's report keeps them, so that
    /// merged seconds have exact percentiles).
    pub fn keep_row_histograms(&mut self) {
        self.row_histograms = true;
    }

    pub fn handle_interval(&mut self, m: WorkerMsg) {
        self.second.add(&m.interval);
        self.last_gauges[m.worker] = m.interval.gauges;
        self.phases[m.worker] = m.phase;
        self.spans[m.worker] = m.calling;
    }

    /// The stop of the run (for whatever reason), as the runner saw it.
    pub fn handle_stop(&mut self, now: Instant) {
        if self.stopped_at.is_none() {
            self.stopped_at = Some(now);
        }
    }

    /// Closes the second. `cpu_s`: the process's CPU seconds so far (`None`: unreadable);
    /// `monitors`: the monitors' latest readings by name.
    pub fn handle_tick(
        &mut self,
        now: Instant,
        cpu_s: Option<f64>,
        monitors: BTreeMap<String, Option<f64>>,
    ) {
        self.row_no += 1;
        let slowest = *self.phases.iter().min().expect("one worker at least");
        self.second.gauges = sum_gauges(&self.last_gauges);
        let mut row = SeriesRow::new(
            self.epoch.secs(now),
            self.epoch.label(now),
            phase_name(slowest),
            &self.second,
        );
        row.monitors = monitors
            .iter()
            .map(|(k, v)| (format!("mon_{k}"), *v))
            .collect();
        self.monitor_columns.extend(row.monitors.keys().cloned());
        let check = self.selfcheck.second(now, cpu_s, &self.second);
        row.generator_cpu_pct = check.cpu_pct;
        if let Some((_, s)) = self.pending.front().filter(|(r, _)| *r == self.row_no) {
            row.offered_rate = Some(s.rate);
            row.plan_phase = Some(s.phase.clone());
            // Once stopped, the workers offer nothing more: a second that ran (even in part)
            // after the stop would read as the target's shortfall. Rows end 100 ms before the
            // tick (see `Ticks` in the runner).
            let row_end = now.checked_sub(Duration::from_millis(100));
            let cut = matches!((self.stopped_at, row_end), (Some(t), Some(e)) if t < e);
            if !cut {
                self.book.add(&s.phase, s.rate, &self.second);
                if let Some(c) = self.control.as_mut() {
                    c.observe(s, &self.second);
                }
            }
            self.pending.pop_front();
        }
        self.total.add(&self.second);
        let progress = row.progress_line(self.users, &self.total);
        let histograms = self.row_histograms.then(|| self.second.delays.encode());
        self.out.push_back(Output::Row(Box::new(RowOut {
            second: self.row_no,
            histograms,
            row,
            progress,
            warning: check.warning,
        })));
        self.second = Interval::default();
        let Some(c) = self.control.as_mut() else {
            return;
        };
        let stopped = self.stopped_at.is_some();
        // Decide the second after next, once every worker is past pre-registration.
        if !self.plan_over && !stopped && slowest >= Phase::Calling {
            match c.next_second(&monitors) {
                Some(s) => {
                    self.out.push_back(Output::Rate(s.rate));
                    self.pending.push_back((self.row_no + 2, s));
                }
                None => {
                    self.plan_over = true;
                    self.out.push_back(Output::Rate(0.0));
                }
            }
        }
        if self.plan_over && self.pending.is_empty() && !stopped && !self.stop_asked {
            self.stop_asked = true;
            self.out.push_back(Output::Stop);
        }
    }

    /// The run's totals up to the last second closed.
    pub fn total(&self) -> &Interval {
        &self.total
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Adds the last, partial second (what the workers handed in since the last tick, their
    /// final intervals among it) and closes the books at `now`, the run's end.
    pub fn finish(mut self, now: Instant) -> Summary {
        self.second.gauges = sum_gauges(&self.last_gauges);
        self.total.add(&self.second);
        let mut last = SeriesRow::new(
            self.epoch.secs(now),
            self.epoch.label(now),
            "done",
            &self.second,
        );
        last.monitors = self
            .monitor_columns
            .iter()
            .map(|k| (k.clone(), None))
            .collect();
        let plan = self.control.map(|c| PlanReport {
            phases: self.book.phases,
            events: c.events.clone(),
            capacity: c.capacity_result(),
        });
        let start = self.spans.iter().filter_map(|s| s.0).min();
        let end = self.spans.iter().map(|s| s.1.unwrap_or(now)).max();
        let call_phase = match (start, end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        let last_histograms = self.row_histograms.then(|| self.second.delays.encode());
        Summary {
            total: self.total,
            last,
            last_second: self.row_no + 1,
            last_histograms,
            plan,
            call_phase,
            behind_seconds: self.selfcheck.behind_seconds,
        }
    }
}

/// CPU % the generator can use at most: its threads (workers and the aggregating one), or the
/// cores if fewer.
pub fn cpu_limit_pct(workers: usize) -> f64 {
    100.0 * (workers + 1).min(std::thread::available_parallelism().map_or(1, |n| n.get())) as f64
}

fn sum_gauges(g: &[Gauges]) -> Gauges {
    let mut s = Gauges::default();
    for x in g {
        s.add(x);
    }
    s
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Registering => "registering",
        Phase::Calling => "calling",
        Phase::Draining => "ending calls",
        Phase::Deregistering => "de-registering",
        Phase::Done => "done",
    }
}

/// The generator's own health, second by second: its CPU use against the threads it has, and
/// how late its schedule ran. A saturated generator looks like a lossy target (the known
/// SIPp trap); this says which it was.
struct SelfCheck {
    last_cpu: Option<(Instant, f64)>,
    limit_pct: f64,
    behind_seconds: u64,
    last_warned: Option<Instant>,
}

struct CheckedSecond {
    cpu_pct: f64,
    warning: Option<String>,
}

impl SelfCheck {
    fn new(limit_pct: f64) -> SelfCheck {
        SelfCheck {
            last_cpu: None,
            limit_pct,
            behind_seconds: 0,
            last_warned: None,
        }
    }

    fn second(&mut self, now: Instant, cpu: Option<f64>, s: &Interval) -> CheckedSecond {
        let cpu_pct = match (cpu, self.last_cpu) {
            (Some(c), Some((t, prev))) => {
                100.0 * (c - prev).max(0.0) / now.duration_since(t).as_secs_f64().max(1e-3)
            }
            _ => 0.0,
        };
        if let Some(c) = cpu {
            self.last_cpu = Some((now, c));
        }
        let lag_ms = DelaySummary::of(&s.delays.sched_lag).max_ms;
        let limit = self.limit_pct;
        let behind = lag_ms > 20.0 || cpu_pct > 0.9 * limit;
        let mut warning = None;
        if behind {
            self.behind_seconds += 1;
            if self
                .last_warned
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
            {
                self.last_warned = Some(now);
                warning = Some(format!(
                    "!! GENERATOR BEHIND: imsload used {cpu_pct:.0} % CPU (limit ~{limit:.0} %) and its schedule ran up to {lag_ms:.0} ms late: \
                     failures now may be imsload's, not the target's"
                ));
            }
        }
        CheckedSecond { cpu_pct, warning }
    }
}

/// Offered and achieved rates of each plan phase, in the order they ran.
#[derive(Default)]
struct PlanBook {
    phases: Vec<PhaseSummary>,
}

impl PlanBook {
    fn add(&mut self, phase: &str, rate: f64, row: &Interval) {
        if self.phases.last().is_none_or(|p| p.phase != phase) {
            self.phases.push(PhaseSummary {
                phase: phase.to_string(),
                ..PhaseSummary::default()
            });
        }
        let p = self.phases.last_mut().expect("pushed above");
        p.seconds += 1;
        p.offered_attempts += rate;
        p.started_attempts += attempts_started(row);
        p.offered_rate = p.offered_attempts / p.seconds as f64;
        p.achieved_rate = p.started_attempts as f64 / p.seconds as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::control::Objective;
    use crate::load::stats::Delays;
    use crate::profile::plan::{Plan, Segment};

    /// Workers and a tick under a virtual clock, aligned as the runner aligns them: each worker
    /// hands in its second 100 ms before the tick that closes it, and takes the latest rate
    /// right after handing it in.
    struct Sim {
        agg: Aggregator,
        t0: Instant,
        now: Instant,
        workers: usize,
        /// The run's rate the workers apply now, and the latest one broadcast.
        rate: f64,
        broadcast: f64,
        phase: Phase,
        rows: Vec<RowOut>,
        /// (row number of the tick that decided it, rate)
        rates: Vec<(u64, f64)>,
        /// Row numbers of the ticks that asked for a stop.
        stops: Vec<u64>,
        ticks: u64,
    }

    fn epoch(t0: Instant) -> Epoch {
        Epoch {
            mono: t0,
            wall: chrono::Utc::now(),
            mono_ns: 0,
        }
    }

    impl Sim {
        fn new(workers: usize, control: Option<Controller>, rate: f64) -> Sim {
            let t0 = Instant::now();
            Sim {
                agg: Aggregator::new(epoch(t0), workers, 100, control, 100.0 * workers as f64),
                t0,
                now: t0,
                workers,
                rate,
                broadcast: rate,
                phase: Phase::Calling,
                rows: Vec::new(),
                rates: Vec::new(),
                stops: Vec::new(),
                ticks: 0,
            }
        }

        /// Every worker hands in its second: its share of the rate as attempts started.
        fn report(&mut self) {
            self.now += Duration::from_millis(900);
            for w in 0..self.workers {
                let mut i = Interval::default();
                i.counters.scenarios_offered = (self.rate / self.workers as f64) as u64;
                self.agg.handle_interval(WorkerMsg {
                    worker: w,
                    interval: i,
                    phase: self.phase,
                    calling: (Some(self.t0), None),
                    media: Vec::new(),
                });
            }
            self.rate = self.broadcast;
        }

        fn tick(&mut self, cpu: Option<f64>) {
            self.now += Duration::from_millis(100);
            self.ticks += 1;
            self.agg.handle_tick(self.now, cpu, BTreeMap::new());
            while let Some(o) = self.agg.poll_output() {
                match o {
                    Output::Row(r) => self.rows.push(*r),
                    Output::Rate(r) => {
                        self.broadcast = r;
                        self.rates.push((self.ticks, r));
                    }
                    Output::Stop => self.stops.push(self.ticks),
                }
            }
        }

        fn second(&mut self) {
            self.report();
            self.tick(None);
        }
    }

    fn constant(phase: &str, index: usize, start: u64, secs: u64, rate: f64) -> Segment {
        Segment {
            phase: phase.into(),
            start: Duration::from_secs(start),
            duration: Duration::from_secs(secs),
            rate_from: rate,
            rate_to: rate,
            until: None,
            phase_index: index,
            hold: false,
        }
    }

    fn interval(calls: u64, gauges_active: u64) -> Interval {
        let mut i = Interval::default();
        i.counters.calls_attempted = calls;
        i.count_status("INVITE", 200);
        i.gauges.active_calls = gauges_active;
        i
    }

    #[test]
    fn a_row_sums_one_interval_of_every_worker_and_the_slowest_phase() {
        let t0 = Instant::now();
        let mut agg = Aggregator::new(epoch(t0), 3, 10, None, 400.0);
        let mut rows = Vec::new();
        for s in 1..=3u64 {
            for w in 0..3u64 {
                let phase = if w == 1 && s < 3 {
                    Phase::Registering
                } else {
                    Phase::Calling
                };
                agg.handle_interval(WorkerMsg {
                    worker: w as usize,
                    interval: interval(10 * s + w, w + 1),
                    phase,
                    calling: (None, None),
                    media: Vec::new(),
                });
            }
            agg.handle_tick(t0 + Duration::from_secs(s), None, BTreeMap::new());
            while let Some(o) = agg.poll_output() {
                match o {
                    Output::Row(r) => rows.push(r),
                    _ => panic!("a run without a plan decides no rate and no stop"),
                }
            }
        }
        assert_eq!(rows.len(), 3);
        for (k, r) in rows.iter().enumerate() {
            let s = k as u64 + 1;
            assert_eq!(r.row.counters.calls_attempted, 30 * s + 3, "row {s}");
            // Gauges are the workers' latest values summed, not accumulated over seconds.
            assert_eq!(r.row.gauges.active_calls, 1 + 2 + 3);
            assert_eq!(r.row.t_s, s as f64);
        }
        assert_eq!(rows[0].row.phase, "registering");
        assert_eq!(rows[2].row.phase, "calling");
        assert!(rows[2].progress.contains("calls/s offered"));
        // A worker that hands in nothing before the tick leaves an empty row, not a repeat.
        let cpu = BTreeMap::from([("cpu".to_string(), Some(5.0))]);
        agg.handle_tick(t0 + Duration::from_secs(4), None, cpu);
        let Some(Output::Row(r)) = agg.poll_output() else {
            panic!("a row every tick")
        };
        assert_eq!(r.row.counters.calls_attempted, 0);
        assert_eq!(r.row.monitors.get("mon_cpu"), Some(&Some(5.0)));
        let done = agg.finish(t0 + Duration::from_secs(5));
        // The last, partial row has every monitor column, unread: a CSV series keeps its
        // header's columns to the end.
        assert_eq!(
            done.last.monitors,
            BTreeMap::from([("mon_cpu".to_string(), None)])
        );
        assert_eq!(done.total.counters.calls_attempted, 33 + 63 + 93);
        assert_eq!(done.total.status.get("INVITE 200"), Some(&9));
    }

    #[test]
    fn plan_rates_reach_the_workers_two_rows_ahead_and_the_plan_ends_with_one_stop() {
        let plan = Plan {
            segments: vec![
                constant("low", 0, 0, 3, 30.0),
                constant("high", 1, 3, 2, 60.0),
            ],
            ..Plan::default()
        };
        let mut sim = Sim::new(3, Some(Controller::plan(&plan).unwrap()), 0.0);
        // Pre-registration: nothing is decided until every worker calls.
        sim.phase = Phase::Registering;
        sim.second();
        sim.second();
        assert!(sim.rates.is_empty());
        sim.phase = Phase::Calling;
        for _ in 0..10 {
            sim.second();
        }
        assert_eq!(
            sim.rates,
            vec![
                (3, 30.0),
                (4, 30.0),
                (5, 30.0),
                (6, 60.0),
                (7, 60.0),
                (8, 0.0)
            ]
        );
        let offered: Vec<(usize, f64)> = sim
            .rows
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.row.offered_rate.map(|o| (k + 1, o)))
            .collect();
        assert_eq!(
            offered,
            vec![(5, 30.0), (6, 30.0), (7, 30.0), (8, 60.0), (9, 60.0)]
        );
        // Each row's offered rate is what its second started: the alignment holds.
        for r in &sim.rows {
            if let Some(o) = r.row.offered_rate {
                assert_eq!(r.row.attempts_started as f64, o, "row at {}", r.row.t_s);
            }
        }
        // The stop comes once the last planned second (row 9) has been seen, and only once.
        assert_eq!(sim.stops, vec![9]);
        sim.agg.handle_stop(sim.now);
        sim.second();
        assert_eq!(sim.stops, vec![9]);
        let done = sim.agg.finish(sim.now);
        let phases = done.plan.expect("a plan run has a plan report").phases;
        let got: Vec<(&str, u64, f64, f64)> = phases
            .iter()
            .map(|p| (p.phase.as_str(), p.seconds, p.offered_rate, p.achieved_rate))
            .collect();
        assert_eq!(got, vec![("low", 3, 30.0, 30.0), ("high", 2, 60.0, 60.0)]);
    }

    #[test]
    fn a_second_that_ran_after_the_stop_is_neither_booked_nor_observed() {
        let objective = Objective {
            max_delay: Duration::from_secs(1),
            limit_pct: 1.0,
        };
        let c = Controller::capacity(10.0, 10.0, 100.0, Duration::from_secs(2), objective);
        let mut sim = Sim::new(1, Some(c), 0.0);
        for _ in 0..6 {
            sim.second();
        }
        // Rows 3..=8 are pending steps 1,1,2,2,3,3; rows 7 and 8 are still to come. The stop
        // falls 50 ms after the workers handed in row 7's second: row 7 ran wholly before it,
        // row 8 ran after it.
        sim.report();
        sim.agg.handle_stop(sim.now + Duration::from_millis(50));
        sim.tick(None);
        sim.second();
        sim.second();
        // No rate decided after the stop.
        assert_eq!(sim.rates.len(), 6);
        assert_eq!(
            sim.rows[7].row.offered_rate,
            Some(30.0),
            "row 8 still shows its rate"
        );
        let done = sim.agg.finish(sim.now);
        let plan = done.plan.unwrap();
        let booked: Vec<u64> = plan.phases.iter().map(|p| p.seconds).collect();
        assert_eq!(booked, vec![2, 2, 1]);
        let cap = plan.capacity.unwrap();
        // Step 3 had one whole second only: it is not judged.
        assert_eq!(cap.steps.len(), 2);
        assert_eq!(cap.design_objective_capacity, Some(20.0));
        assert!(sim.stops.is_empty(), "a stopped run is not stopped again");
    }

    #[test]
    fn a_run_without_a_plan_never_stops_itself() {
        let mut sim = Sim::new(2, None, 20.0);
        for _ in 0..5 {
            sim.second();
        }
        assert!(sim.stops.is_empty());
        assert!(sim.rates.is_empty());
        assert!(sim.rows.iter().all(|r| r.row.offered_rate.is_none()));
        assert!(sim.agg.finish(sim.now).plan.is_none());
    }

    fn lagging(ms: u64) -> Interval {
        let mut i = Interval::default();
        Delays::record(&mut i.delays.sched_lag, Duration::from_millis(ms));
        i
    }

    #[test]
    fn self_check_marks_late_or_saturated_seconds_and_warns_once_in_ten() {
        let t0 = Instant::now();
        // Limit 200 %: behind above 180 %.
        let mut agg = Aggregator::new(epoch(t0), 1, 2, None, 200.0);
        let mut cpu = 0.0;
        let mut seconds = Vec::new();
        let mut feed = |s: u64, lag: u64, cpu_pct: f64, agg: &mut Aggregator| {
            cpu += cpu_pct / 100.0;
            agg.handle_interval(WorkerMsg {
                worker: 0,
                interval: lagging(lag),
                phase: Phase::Calling,
                calling: (None, None),
                media: Vec::new(),
            });
            agg.handle_tick(t0 + Duration::from_secs(s), Some(cpu), BTreeMap::new());
            let Some(Output::Row(r)) = agg.poll_output() else {
                panic!("a row every tick")
            };
            (r.row.generator_cpu_pct, r.warning.is_some())
        };
        // The first reading has nothing to compare with.
        seconds.push(feed(1, 1, 100.0, &mut agg));
        seconds.push(feed(2, 1, 179.0, &mut agg));
        seconds.push(feed(3, 1, 185.0, &mut agg));
        seconds.push(feed(4, 19, 100.0, &mut agg));
        seconds.push(feed(5, 25, 100.0, &mut agg));
        for (k, (pct, _)) in seconds.iter().enumerate().skip(1) {
            let want = [0.0, 179.0, 185.0, 100.0, 100.0][k];
            assert!((pct - want).abs() < 0.01, "second {}: {pct}", k + 1);
        }
        let warned: Vec<bool> = seconds.iter().map(|s| s.1).collect();
        // Seconds 3 (CPU) and 5 (lag) are behind; 5 is within 10 s of the warning at 3.
        assert_eq!(warned, vec![false, false, true, false, false]);
        // Late every second from 6 to 30: warnings more than 10 s apart.
        let mut warned_at = Vec::new();
        for s in 6..=30 {
            if feed(s, 25, 50.0, &mut agg).1 {
                warned_at.push(s);
            }
        }
        assert_eq!(warned_at, vec![14, 25]);
        let done = agg.finish(t0 + Duration::from_secs(31));
        assert_eq!(done.behind_seconds, 2 + 25);
        assert!(done.behind_warning().unwrap().contains("27 seconds"));
    }

    #[test]
    fn the_last_partial_second_counts_and_the_call_phase_spans_all_workers() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut agg = Aggregator::new(epoch(t0), 2, 4, None, 300.0);
        for w in 0..2 {
            agg.handle_interval(WorkerMsg {
                worker: w,
                interval: interval(5, 1),
                phase: Phase::Calling,
                calling: (Some(at(300 + 200 * w as u64)), None),
                media: Vec::new(),
            });
        }
        agg.handle_tick(at(1000), None, BTreeMap::new());
        while agg.poll_output().is_some() {}
        // Worker 0 ends in the partial second; worker 1 is cut off still calling.
        agg.handle_interval(WorkerMsg {
            worker: 0,
            interval: interval(7, 0),
            phase: Phase::Done,
            calling: (Some(at(300)), Some(at(1200))),
            media: Vec::new(),
        });
        agg.handle_interval(WorkerMsg {
            worker: 1,
            interval: interval(2, 4),
            phase: Phase::Draining,
            calling: (Some(at(500)), None),
            media: Vec::new(),
        });
        let done = agg.finish(at(1400));
        assert_eq!(done.total.counters.calls_attempted, 10 + 7 + 2);
        assert_eq!(done.last.phase, "done");
        assert_eq!(done.last.counters.calls_attempted, 9);
        assert_eq!(done.last.gauges.active_calls, 4);
        // From worker 0's start to the end (worker 1 never said it ended).
        assert_eq!(done.call_phase, Duration::from_millis(1100));
        assert_eq!(done.behind_seconds, 0);
        assert!(done.behind_warning().is_none());
    }
}
