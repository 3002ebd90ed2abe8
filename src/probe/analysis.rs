//! Gap analysis: pure functions over [`ProbeRecord`]s. No clock, no socket, no file: the live
//! probe and `--pcap-only` call exactly these.
//!
//! Definitions (also in `docs/imsprobe.md`):
//! - **reply gap** (receive side, the primary figure): a span of at least `min_gap` in which no
//!   good reply (SIP 2xx, ICMP echo reply) arrived, from the arrival of the last good reply before
//!   it to the arrival of the first good reply after it. Arrivals are sorted by time, so replies
//!   that overtake each other do not matter. Error bound: one probe interval.
//! - **loss window** (send side, RFC 6201 timestamp method): a run of consecutive probes (in send
//!   order) none of which got a good reply within `timeout`, from the send time of the first such
//!   probe to the send time of the first probe after it that succeeded. Error bound: one probe
//!   interval. The loss-based estimate is `probes in the run / rate`.
//! - **late reply**: a reply (good or not) that arrived after its probe's timeout, or with an RTT
//!   above `late_rtt`. Late replies are counted and shown, never merged into "ok".

use super::{Layer, Outcome, ProbeRecord};
use serde::Serialize;

/// Parameters of one analysis, all in nanoseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Params {
    /// Nominal probe interval (1 / rate).
    pub interval_ns: i64,
    /// A probe without a good reply within this long has failed (loss window).
    pub timeout_ns: i64,
    /// Replies with an RTT above this are late even within the timeout.
    pub late_rtt_ns: i64,
    /// Spans shorter than this are not reported as gaps.
    pub min_gap_ns: i64,
    /// Until when replies were awaited (normally last send + timeout). Probes sent later than
    /// `end_ns - timeout_ns` without a reply are *pending*, not lost.
    pub end_ns: i64,
}

/// What kind of outage view a [`Gap`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapKind {
    ReplyGap,
    LossWindow,
}

/// One outage as one of the two views sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gap {
    pub layer: Layer,
    pub kind: GapKind,
    /// Start and end, ns since the time base.
    pub start_ns: i64,
    pub end_ns: i64,
    pub duration_ns: i64,
    /// ± this much on the duration (one probe interval).
    pub error_bound_ns: i64,
    /// The span began before the first reply of the run (the target was down from the start).
    pub open_start: bool,
    /// The span had not ended when the run ended (the target was still down).
    pub open_end: bool,
    /// Probes concerned that never got any final reply (or whose send failed).
    pub probes_lost: u64,
    /// Probes concerned answered with a failure (SIP non-2xx, ICMP error).
    pub failed_replies: u64,
    /// Probes concerned whose reply was late.
    pub late_replies: u64,
    /// Probes sent inside the span that were answered (well) after it: the burst a paused
    /// target sends when it resumes.
    pub answered_after: u64,
    /// Loss windows: probes in the run / rate. Reply gaps: 0.
    pub loss_estimate_ns: i64,
    /// The largest RTT among the probes concerned, if any was answered.
    pub max_rtt_ns: Option<i64>,
    /// Reply gaps: the longest interval between two consecutive probes sent over the span. A
    /// gap about as long as this was the prober's own stall (no probes, so no replies: a
    /// starved CPU, say), not the target's; a paused target leaves it at one interval.
    pub max_send_interval_ns: i64,
}

/// Per-layer totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub sent: u64,
    /// Good replies within the timeout.
    pub ok: u64,
    /// Good replies after the timeout (late, not counted as available).
    pub ok_after_timeout: u64,
    /// Final replies that are failures (SIP non-2xx, ICMP errors).
    pub failed: u64,
    /// No reply at all (send errors included).
    pub lost: u64,
    pub send_errors: u64,
    /// Sent too close to the end of the run to judge.
    pub pending: u64,
    /// Late replies (after timeout or RTT above `late_rtt`), good or not.
    pub late: u64,
    /// ok / (sent - pending), percent.
    pub availability_pct: f64,
    pub reply_gaps: usize,
    pub loss_windows: usize,
    pub longest_reply_gap_ns: i64,
    pub longest_loss_window_ns: i64,
    /// Largest interval between two consecutive good replies, gap or not: the noise floor.
    pub max_reply_interval_ns: i64,
    pub rtt_p50_ns: Option<i64>,
    pub rtt_p99_ns: Option<i64>,
    pub rtt_max_ns: Option<i64>,
    /// p99 of |actual send interval - nominal interval|.
    pub send_interval_jitter_p99_ns: Option<i64>,
    /// Achieved send rate over the run (probes per second).
    pub achieved_rate: f64,
}

/// The analysis of one layer of one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerAnalysis {
    pub layer: Layer,
    pub summary: Summary,
    pub reply_gaps: Vec<Gap>,
    pub loss_windows: Vec<Gap>,
}

/// How one probe is judged under `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Good reply within the timeout.
    pub ok: bool,
    /// Any reply that is late.
    pub late: bool,
    /// Not yet judgeable (no reply, sent within the timeout of the end).
    pub pending: bool,
    /// Never answered (or the send failed) and not pending.
    pub lost: bool,
}

pub fn verdict(r: &ProbeRecord, p: &Params) -> Verdict {
    // A reply with no RTT although it arrived was stamped before its request (a clock anomaly,
    // counted where it was recorded): it was answered, and not late.
    let rtt = r.rtt_ns();
    let answered = matches!(r.outcome, Outcome::Ok | Outcome::Failed) && r.received_ns.is_some();
    let late = rtt.is_some_and(|t| t > p.timeout_ns || t > p.late_rtt_ns) && answered;
    let ok = r.outcome == Outcome::Ok && answered && rtt.is_none_or(|t| t <= p.timeout_ns);
    let unanswered = !answered;
    let pending =
        unanswered && r.outcome != Outcome::SendError && r.sent_ns > p.end_ns - p.timeout_ns;
    Verdict {
        ok,
        late,
        pending,
        lost: unanswered && !pending,
    }
}

/// Analyses one layer. `records` must all be of `layer`; any order (they are sorted by send
/// time here).
pub fn analyze(layer: Layer, records: &[ProbeRecord], p: &Params) -> LayerAnalysis {
    let mut recs: Vec<&ProbeRecord> = records.iter().filter(|r| r.layer == layer).collect();
    recs.sort_by_key(|r| (r.sent_ns, r.seq));
    let verdicts: Vec<Verdict> = recs.iter().map(|r| verdict(r, p)).collect();
    let sent_times: Vec<i64> = recs.iter().map(|r| r.sent_ns).collect();

    // Summary counters.
    let mut s = Summary {
        sent: recs.len() as u64,
        ..Summary::default()
    };
    let mut rtts = Vec::with_capacity(recs.len());
    for (r, v) in recs.iter().zip(&verdicts) {
        match r.outcome {
            Outcome::Ok if r.received_ns.is_some() => {
                if v.ok {
                    s.ok += 1;
                } else {
                    s.ok_after_timeout += 1;
                }
                // RTT statistics only from RTTs that exist (see `ProbeRecord::rtt_ns`).
                rtts.extend(r.rtt_ns());
            }
            Outcome::Failed if r.received_ns.is_some() => s.failed += 1,
            Outcome::SendError => s.send_errors += 1,
            _ => {}
        }
        if v.lost {
            s.lost += 1;
        }
        if v.pending {
            s.pending += 1;
        }
        if v.late {
            s.late += 1;
        }
    }
    let judged = s.sent - s.pending;
    s.availability_pct = if judged > 0 {
        100.0 * s.ok as f64 / judged as f64
    } else {
        0.0
    };
    rtts.sort_unstable();
    s.rtt_p50_ns = percentile(&rtts, 50.0);
    s.rtt_p99_ns = percentile(&rtts, 99.0);
    s.rtt_max_ns = rtts.last().copied();
    let mut jit: Vec<i64> = sent_times
        .windows(2)
        .map(|w| ((w[1] - w[0]) - p.interval_ns).abs())
        .collect();
    jit.sort_unstable();
    s.send_interval_jitter_p99_ns = percentile(&jit, 99.0);
    if let (Some(a), Some(b)) = (sent_times.first(), sent_times.last()) {
        if b > a {
            s.achieved_rate = (sent_times.len() - 1) as f64 * 1e9 / (b - a) as f64;
        }
    }

    // The probes "concerned" by a reply gap: those sent from `from` (the send time of the probe
    // whose reply opened the gap) to the gap's end.
    let concerned = |from: i64, b: i64| -> std::ops::Range<usize> {
        let lo = sent_times.partition_point(|&t| t < from);
        let hi = sent_times.partition_point(|&t| t <= b);
        lo..hi
    };
    let fill = |g: &mut Gap, range: std::ops::Range<usize>| {
        g.max_send_interval_ns = sent_times[range.clone()]
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        for i in range {
            let (r, v) = (recs[i], verdicts[i]);
            if v.lost {
                g.probes_lost += 1;
            }
            if r.outcome == Outcome::Failed && r.received_ns.is_some() {
                g.failed_replies += 1;
            }
            if v.late {
                g.late_replies += 1;
            }
            if r.outcome == Outcome::Ok
                && r.sent_ns >= g.start_ns
                && r.received_ns.is_some_and(|t| t >= g.end_ns)
            {
                g.answered_after += 1;
            }
            if let Some(rtt) = r.rtt_ns() {
                g.max_rtt_ns = Some(g.max_rtt_ns.map_or(rtt, |m| m.max(rtt)));
            }
        }
    };
    let new_gap = |kind: GapKind, a: i64, b: i64| Gap {
        layer,
        kind,
        start_ns: a,
        end_ns: b,
        duration_ns: b - a,
        error_bound_ns: p.interval_ns,
        open_start: false,
        open_end: false,
        probes_lost: 0,
        failed_replies: 0,
        late_replies: 0,
        answered_after: 0,
        loss_estimate_ns: 0,
        max_rtt_ns: None,
        max_send_interval_ns: 0,
    };

    // Reply gaps: sorted arrivals of good replies (late ones included: they prove the service
    // answered at that moment).
    // (arrival, send time of the probe answered, how much earlier it may have arrived), by
    // arrival.
    let mut arrivals: Vec<(i64, i64, u32)> = recs
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter_map(|r| r.received_ns.map(|t| (t, r.sent_ns, r.received_early_ns)))
        .collect();
    arrivals.sort_unstable();
    let mut reply_gaps = Vec::new();
    let first_send = sent_times.first().copied();
    let last_send = sent_times.last().copied();
    if let Some(fs) = first_send {
        match arrivals.first() {
            None => {
                // Never a good reply: one gap over the whole run.
                let end = last_send.unwrap_or(fs);
                if end - fs >= p.min_gap_ns {
                    let mut g = new_gap(GapKind::ReplyGap, fs, end);
                    g.open_start = true;
                    g.open_end = true;
                    fill(&mut g, concerned(fs, end));
                    reply_gaps.push(g);
                }
            }
            Some(&(first, _, first_early)) => {
                // Down from the start: the first good reply came later than the first send plus
                // the smallest RTT seen, by at least min_gap.
                let base_rtt = rtts.first().copied().unwrap_or(0);
                if first - fs - base_rtt >= p.min_gap_ns {
                    let mut g = new_gap(GapKind::ReplyGap, fs, first);
                    g.error_bound_ns += first_early as i64;
                    g.open_start = true;
                    fill(&mut g, concerned(fs, first));
                    reply_gaps.push(g);
                }
            }
        }
    }
    for w in arrivals.windows(2) {
        let ((a, a_sent, a_early), (b, _, b_early)) = (w[0], w[1]);
        s.max_reply_interval_ns = s.max_reply_interval_ns.max(b - a);
        if b - a >= p.min_gap_ns {
            let mut g = new_gap(GapKind::ReplyGap, a, b);
            // Either end may have arrived earlier than recorded (a reader late over TCP).
            g.error_bound_ns += a_early.max(b_early) as i64;
            fill(&mut g, concerned(a_sent, b));
            reply_gaps.push(g);
        }
    }
    if let (Some(&(last, last_sent, last_early)), Some(ls)) = (arrivals.last(), last_send) {
        // Still silent at the end: from the last reply to the last probe sent.
        if ls - last >= p.min_gap_ns {
            let mut g = new_gap(GapKind::ReplyGap, last, ls);
            g.error_bound_ns += last_early as i64;
            g.open_end = true;
            fill(&mut g, concerned(last_sent, ls));
            reply_gaps.push(g);
        }
    }

    // Loss windows: runs of consecutive judged probes without a good reply within the timeout.
    let mut loss_windows = Vec::new();
    let judged_idx: Vec<usize> = (0..recs.len()).filter(|&i| !verdicts[i].pending).collect();
    let mut k = 0;
    while k < judged_idx.len() {
        if verdicts[judged_idx[k]].ok {
            k += 1;
            continue;
        }
        let run_start = k;
        while k < judged_idx.len() && !verdicts[judged_idx[k]].ok {
            k += 1;
        }
        let first = judged_idx[run_start];
        let n = (k - run_start) as i64;
        let a = recs[first].sent_ns;
        let (b, open_end) = match judged_idx.get(k) {
            Some(&next_ok) => (recs[next_ok].sent_ns, false),
            None => (recs[judged_idx[k - 1]].sent_ns + p.interval_ns, true),
        };
        if b - a >= p.min_gap_ns {
            let mut g = new_gap(GapKind::LossWindow, a, b);
            g.open_start = run_start == 0;
            g.open_end = open_end;
            g.loss_estimate_ns = n * p.interval_ns;
            // Concerned: exactly the run (and its RTTs).
            for &i in &judged_idx[run_start..k] {
                let (r, v) = (recs[i], verdicts[i]);
                if v.lost {
                    g.probes_lost += 1;
                }
                if r.outcome == Outcome::Failed && r.received_ns.is_some() {
                    g.failed_replies += 1;
                }
                if v.late {
                    g.late_replies += 1;
                }
                if r.outcome == Outcome::Ok && r.received_ns.is_some_and(|t| t >= b) {
                    g.answered_after += 1;
                }
                if let Some(rtt) = r.rtt_ns() {
                    g.max_rtt_ns = Some(g.max_rtt_ns.map_or(rtt, |m| m.max(rtt)));
                }
            }
            loss_windows.push(g);
        }
    }

    s.reply_gaps = reply_gaps.len();
    s.loss_windows = loss_windows.len();
    s.longest_reply_gap_ns = reply_gaps.iter().map(|g| g.duration_ns).max().unwrap_or(0);
    s.longest_loss_window_ns = loss_windows
        .iter()
        .map(|g| g.duration_ns)
        .max()
        .unwrap_or(0);
    LayerAnalysis {
        layer,
        summary: s,
        reply_gaps,
        loss_windows,
    }
}

/// Nearest-rank percentile of a sorted slice.
pub fn percentile(sorted: &[i64], pct: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median interval between consecutive sends: the probe interval of a capture whose rate
/// nobody told us.
pub fn estimate_interval(records: &[ProbeRecord]) -> Option<i64> {
    let mut t: Vec<i64> = records.iter().map(|r| r.sent_ns).collect();
    t.sort_unstable();
    let mut d: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_unstable();
    percentile(&d, 50.0).filter(|&x| x > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn params(end_ns: i64) -> Params {
        Params {
            interval_ns: MS,
            timeout_ns: 1000 * MS,
            late_rtt_ns: 100 * MS,
            min_gap_ns: 10 * MS,
            end_ns,
        }
    }

    /// `n` probes at 1 ms, each answered after `rtt(i)` (None = lost) with `outcome(i)`.
    fn run(
        n: u64,
        rtt: impl Fn(u64) -> Option<i64>,
        outcome: impl Fn(u64) -> Outcome,
    ) -> Vec<ProbeRecord> {
        (0..n)
            .map(|i| {
                let sent = i as i64 * MS;
                let mut r = ProbeRecord::sent(Layer::Sip, i, sent);
                if let Some(t) = rtt(i) {
                    r.received_ns = Some(sent + t);
                    r.outcome = outcome(i);
                    r.code = if r.outcome == Outcome::Ok { 200 } else { 503 };
                }
                r
            })
            .collect()
    }

    #[test]
    fn steady_run_has_no_gap() {
        let recs = run(5000, |_| Some(MS / 10), |_| Outcome::Ok);
        let a = analyze(Layer::Sip, &recs, &params(5000 * MS + 1000 * MS));
        assert!(a.reply_gaps.is_empty(), "{:?}", a.reply_gaps);
        assert!(a.loss_windows.is_empty());
        assert_eq!(a.summary.ok, 5000);
        assert_eq!(a.summary.availability_pct, 100.0);
        assert_eq!(a.summary.max_reply_interval_ns, MS);
        assert_eq!(a.summary.send_interval_jitter_p99_ns, Some(0));
        assert!((a.summary.achieved_rate - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn pause_gives_reply_gap_and_late_burst() {
        // A 500 ms pause from t=1000 ms: probes sent in [1000, 1500) are queued and all
        // answered at 1500 ms (a paused VM's burst).
        let recs = run(
            3000,
            |i| {
                let s = i as i64 * MS;
                if (1000..1500).contains(&i) {
                    Some(1500 * MS - s + MS / 10)
                } else {
                    Some(MS / 10)
                }
            },
            |_| Outcome::Ok,
        );
        let a = analyze(Layer::Sip, &recs, &params(4000 * MS));
        assert_eq!(a.reply_gaps.len(), 1);
        let g = &a.reply_gaps[0];
        // Last good reply before: probe 999 at 999.1 ms; first after: 1500.1 ms.
        assert_eq!(g.start_ns, 999 * MS + MS / 10);
        assert_eq!(g.end_ns, 1500 * MS + MS / 10);
        assert_eq!(g.duration_ns, 501 * MS);
        assert_eq!(g.error_bound_ns, MS);
        assert_eq!(g.probes_lost, 0);
        // RTT > 100 ms: probes 1000..=1400 (RTT 500.1 .. 100.1 ms).
        assert_eq!(g.late_replies, 401);
        assert_eq!(g.answered_after, 501); // probes 1000..=1500 (1500 is sent before the gap ends)
        assert_eq!(g.max_rtt_ns, Some(500 * MS + MS / 10));
        // The prober kept sending: the target's gap, not its own.
        assert_eq!(g.max_send_interval_ns, MS);
        // Within the 1 s timeout: nothing lost, so no loss window.
        assert!(a.loss_windows.is_empty());
        assert_eq!(a.summary.late, 401);
        assert_eq!(a.summary.ok, 3000);
    }

    #[test]
    fn a_late_reader_widens_the_error_bound_of_the_gaps_it_ends() {
        // Over TCP the first reply after a pause was read 3 ms after its arrival: the gap's
        // bound grows by that much; a gap whose ends were read promptly keeps the interval.
        let mut recs = run(
            3000,
            |i| {
                let s = i as i64 * MS;
                match i {
                    1000..=1499 => Some(1500 * MS - s),
                    2000..=2099 => Some(2100 * MS - s),
                    _ => Some(MS / 10),
                }
            },
            |_| Outcome::Ok,
        );
        recs[1000].received_early_ns = 3 * MS as u32;
        recs[1999].received_early_ns = 20_000;
        let a = analyze(Layer::Sip, &recs, &params(4000 * MS));
        let bounds: Vec<i64> = a.reply_gaps.iter().map(|g| g.error_bound_ns).collect();
        assert_eq!(bounds, vec![MS + 3 * MS, MS + 20_000]);
    }

    #[test]
    fn a_stall_of_the_prober_itself_shows_in_the_gap() {
        // The prober sends nothing from 1000 to 1036 ms (a starved CPU); the target answers
        // every probe at once.
        let recs: Vec<ProbeRecord> = (0..2000i64)
            .filter(|i| !(1001..1036).contains(i))
            .enumerate()
            .map(|(seq, i)| {
                let mut r = ProbeRecord::sent(Layer::Sip, seq as u64, i * MS);
                r.received_ns = Some(i * MS + MS / 10);
                r.outcome = Outcome::Ok;
                r
            })
            .collect();
        let a = analyze(Layer::Sip, &recs, &params(3000 * MS));
        assert_eq!(a.reply_gaps.len(), 1);
        let g = &a.reply_gaps[0];
        assert_eq!(g.duration_ns, 36 * MS);
        assert_eq!(g.max_send_interval_ns, 36 * MS);
    }

    #[test]
    fn cut_link_gives_loss_window_and_reply_gap() {
        // Probes 2000..2300 lost.
        let recs = run(
            5000,
            |i| (!(2000..2300).contains(&i)).then_some(MS / 5),
            |_| Outcome::Ok,
        );
        let a = analyze(Layer::Icmp, &relayer(recs, Layer::Icmp), &params(6000 * MS));
        assert_eq!(a.loss_windows.len(), 1);
        let w = &a.loss_windows[0];
        assert_eq!((w.start_ns, w.end_ns), (2000 * MS, 2300 * MS));
        assert_eq!(w.probes_lost, 300);
        assert_eq!(w.loss_estimate_ns, 300 * MS);
        assert!(!w.open_start && !w.open_end);
        let g = &a.reply_gaps[0];
        assert_eq!(g.duration_ns, 301 * MS);
        assert_eq!(g.probes_lost, 300);
        assert_eq!(a.summary.lost, 300);
        assert!((a.summary.availability_pct - 94.0).abs() < 1e-9);
    }

    fn relayer(mut v: Vec<ProbeRecord>, l: Layer) -> Vec<ProbeRecord> {
        v.iter_mut().for_each(|r| r.layer = l);
        v
    }

    #[test]
    fn status_503_is_a_failure_not_a_reply() {
        // The host answers throughout, but with 503 for probes 100..200.
        let recs = run(
            1000,
            |_| Some(MS / 10),
            |i| {
                if (100..200).contains(&i) {
                    Outcome::Failed
                } else {
                    Outcome::Ok
                }
            },
        );
        let a = analyze(Layer::Sip, &recs, &params(2000 * MS));
        assert_eq!(a.summary.failed, 100);
        assert_eq!(a.summary.lost, 0);
        assert_eq!(a.reply_gaps.len(), 1);
        assert_eq!(a.reply_gaps[0].duration_ns, 101 * MS);
        assert_eq!(a.reply_gaps[0].failed_replies, 100);
        assert_eq!(a.loss_windows.len(), 1);
        assert_eq!(a.loss_windows[0].duration_ns, 100 * MS);
        assert_eq!(a.loss_windows[0].failed_replies, 100);
        assert!((a.summary.availability_pct - 90.0).abs() < 1e-9);
    }

    #[test]
    fn out_of_order_replies_are_matched_not_assumed() {
        // Pairs of replies swap order (odd probe answered before the even one); no gap.
        let recs = run(
            1000,
            |i| Some(if i % 2 == 0 { 3 * MS / 2 } else { MS / 10 }),
            |_| Outcome::Ok,
        );
        let mut shuffled = recs.clone();
        shuffled.reverse();
        let a = analyze(Layer::Sip, &shuffled, &params(2000 * MS));
        assert!(a.reply_gaps.is_empty());
        assert_eq!(a.summary.ok, 1000);
        assert_eq!(a.summary.rtt_max_ns, Some(3 * MS / 2));
        assert!(a.summary.max_reply_interval_ns < 2 * MS);
    }

    #[test]
    fn replies_after_timeout_are_late_and_fail_the_loss_window() {
        // Probes 100..1600 answered 2 s late (beyond the 1 s timeout).
        let recs = run(
            4000,
            |i| {
                if (100..1600).contains(&i) {
                    Some(2000 * MS)
                } else {
                    Some(MS / 10)
                }
            },
            |_| Outcome::Ok,
        );
        let a = analyze(Layer::Sip, &recs, &params(5000 * MS));
        assert_eq!(a.summary.ok_after_timeout, 1500);
        assert_eq!(a.summary.late, 1500);
        assert_eq!(a.loss_windows.len(), 1);
        assert_eq!(a.loss_windows[0].duration_ns, 1500 * MS);
        assert_eq!(a.loss_windows[0].late_replies, 1500);
        assert_eq!(a.loss_windows[0].probes_lost, 0);
    }

    #[test]
    fn pending_at_end_is_not_lost_and_silence_at_end_is_open() {
        // Target dies at 3000 ms; run stops sending at 4000 ms, waits 1 s.
        let recs = run(4000, |i| (i < 3000).then_some(MS / 10), |_| Outcome::Ok);
        let a = analyze(Layer::Sip, &recs, &params(3999 * MS + 1000 * MS));
        assert_eq!(a.summary.lost, 1000);
        assert_eq!(a.summary.pending, 0);
        let g = a.reply_gaps.last().unwrap();
        assert!(g.open_end);
        assert!(a.loss_windows[0].open_end);
        // The same records cut short at 4500 ms: those sent after 3500 ms are pending, not lost.
        let a = analyze(Layer::Sip, &recs, &params(4000 * MS + 500 * MS));
        assert_eq!(a.summary.pending, 499);
        assert_eq!(a.summary.lost, 501);
    }

    #[test]
    fn down_from_start_and_never_up() {
        let recs = run(100, |i| (i >= 50).then_some(MS / 10), |_| Outcome::Ok);
        let a = analyze(Layer::Sip, &recs, &params(1100 * MS));
        assert!(a.reply_gaps[0].open_start);
        assert_eq!(a.reply_gaps[0].duration_ns, 50 * MS + MS / 10);
        assert!(a.loss_windows[0].open_start);
        let none = run(100, |_| None, |_| Outcome::Ok);
        let a = analyze(Layer::Sip, &none, &params(1100 * MS));
        assert_eq!(a.reply_gaps.len(), 1);
        assert!(a.reply_gaps[0].open_start && a.reply_gaps[0].open_end);
        assert_eq!(a.summary.availability_pct, 0.0);
        assert_eq!(a.summary.rtt_p50_ns, None);
        // Nothing at all: no panic, nothing reported.
        let a = analyze(Layer::Sip, &[], &params(0));
        assert_eq!(a.summary.sent, 0);
        assert!(a.reply_gaps.is_empty());
    }

    #[test]
    fn percentiles_and_interval_estimate() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        let recs = run(10, |_| None, |_| Outcome::Ok);
        assert_eq!(estimate_interval(&recs), Some(MS));
    }
}
