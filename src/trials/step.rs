//! One element's migration, judged: the hypervisor's report read from the command's output,
//! its STOP/RESUME events placed on the probe timeline, the window the gaps must overlap, the
//! largest reply gap and loss window per target and layer within it, the verdict and the table
//! row. Pure functions of what the runner collected (unit-tested).

use super::hypervisor::{self, HvReport};
use super::record::{
    label, ClockOut, CounterOut, Direction, EventOut, LayerPick, LoadOut, MigrationOut, PauseOut,
    Status, StepRecord, TargetPick,
};
use super::table::TrialRow;
use crate::probe::report::GapOut;
use crate::probe::run::TargetResult;
use crate::probe::Layer;
use chrono::{DateTime, Utc};

/// What one element's migration command left, before the probes' results are in.
#[derive(Clone, Debug, Default)]
pub struct StepRun {
    pub migration: Option<MigrationOut>,
    pub data_counter: Option<CounterOut>,
}

/// What every step of a trial shares.
pub struct TrialView<'a> {
    pub trial: u32,
    pub direction: Direction,
    pub started_utc: &'a str,
    /// Every probed target's results, in the probe's target order.
    pub results: &'a [TargetResult],
    pub clock: &'a ClockOut,
    /// The probe timeline's wall-clock origin.
    pub wall0: DateTime<Utc>,
    pub interrupted: bool,
    pub load: Option<&'a LoadOut>,
    /// The load's per-second series, when it wrote one.
    pub series: Option<&'a [super::users::Second]>,
    /// The load's `--media-log` streams, when it wrote any.
    pub media: Option<&'a [super::users::Stream]>,
    /// Probing after each migration: a step's users window ends this long after its command.
    pub after_s: f64,
    /// More than one element: warnings name the element.
    pub sequence: bool,
}

/// Judges step `step` (1-based), the migration of `results[element]`; `run` is `None` when the
/// step never ran (Ctrl-C, or the probes ended). Warnings go to the trial's list.
pub fn analyse(
    t: &TrialView,
    step: u32,
    element: usize,
    run: Option<&StepRun>,
    warnings: &mut Vec<String>,
) -> StepRecord {
    let name = t.results[element].target.name.clone();
    let who = if t.sequence {
        format!("{name}: ")
    } else {
        String::new()
    };
    let migration = run.and_then(|r| r.migration.clone());
    let data_counter = run.and_then(|r| r.data_counter.clone());
    let hv = migration.as_ref().and_then(|m| {
        let so = std::fs::read_to_string(&m.stdout).unwrap_or_default();
        let se = std::fs::read_to_string(&m.stderr).unwrap_or_default();
        hypervisor::detect(&so, &se)
    });
    if migration.is_some() && hv.is_none() {
        warnings.push(format!("{who}the migration command printed no hypervisor report this tool reads (lab JSON, QMP query-migrate, virsh domjobinfo --completed, xl migrate): no hypervisor downtime, and no data transferred unless --data-cmd counts it"));
    }
    let mut events = Vec::new();
    let mut vm_pause = None;
    if let Some(h) = &hv {
        for e in &h.events {
            events.push(EventOut {
                host: e.host.clone(),
                event: e.event.clone(),
                utc: DateTime::<Utc>::from_timestamp_micros(e.wall_us)
                    .map(label)
                    .unwrap_or_default(),
                t_s: wall_us_to_probe_s(t.wall0, e.wall_us),
                bound_ms: t.clock.bound_ms,
            });
        }
        if let Some((stop, resume)) = stop_resume(&h.events, h.from.as_deref(), h.to.as_deref()) {
            vm_pause = Some(PauseOut {
                stop_s: wall_us_to_probe_s(t.wall0, stop),
                resume_s: wall_us_to_probe_s(t.wall0, resume),
                ms: (resume - stop) as f64 / 1e3,
                bound_ms: t.clock.bound_ms,
                reported_ms: h.stop_to_resume_ms,
            });
        }
    }
    // The window the gaps must overlap: the migration command, widened to the VM's pause
    // where the events put it outside (a command that returns before the guest runs again).
    let window = migration.as_ref().map(|m| {
        let (mut a, mut b) = (m.start_s, m.end_s);
        if let Some(p) = &vm_pause {
            a = a.min(p.stop_s - p.bound_ms / 1e3);
            b = b.max(p.resume_s + p.bound_ms / 1e3);
        }
        (a, b)
    });
    let order = std::iter::once(element).chain((0..t.results.len()).filter(|&i| i != element));
    let targets: Vec<TargetPick> = order
        .map(|i| &t.results[i])
        .map(|r| TargetPick {
            target: r.target.name.clone(),
            dir: r.dir.display().to_string(),
            layers: layer_pick(r, window),
        })
        .collect();
    let (status, failure) = verdict(t.interrupted, migration.as_ref(), hv.as_ref());
    let main = &targets[0];
    let interval_ms = t.results[element].report.params.interval_ms;
    let gap = |layer: Layer| -> (Option<f64>, Option<f64>) {
        let Some(lp) = main.layers.iter().find(|l| l.layer == layer) else {
            return (None, None);
        };
        if migration.is_none() {
            return (None, None);
        }
        match &lp.reply_gap {
            Some(g) => (Some(g.duration_ms), Some(g.error_bound_ms)),
            None => (Some(0.0), Some(interval_ms)),
        }
    };
    let (sip_gap_ms, sip_gap_bound_ms) = gap(Layer::Sip);
    let (icmp_gap_ms, icmp_gap_bound_ms) = gap(Layer::Icmp);
    let (diameter_gap_ms, diameter_gap_bound_ms) = gap(Layer::Diameter);
    let loss = |layer: Layer| -> Option<f64> {
        let lp = main.layers.iter().find(|l| l.layer == layer)?;
        migration.as_ref()?;
        Some(lp.loss_window.as_ref().map_or(0.0, |g| g.duration_ms))
    };
    // The users' window: this migration's start to where the next one starts.
    let users = match (&migration, t.series) {
        (Some(m), Some(series)) => {
            let (from, to) = (m.start_s, m.end_s + t.after_s);
            let mut u = super::users::in_window(
                series,
                from,
                to,
                t.load
                    .and_then(|l| l.transaction_timeout_s)
                    // A report without timers (an older imsload): RFC 3261's default T1.
                    .unwrap_or(64.0 * crate::sip::transaction::Timers::default().t1.as_secs_f64()),
            );
            u.media = t.media.map(|s| super::users::media_in_window(s, from, to));
            Some(u)
        }
        _ => None,
    };
    // The users' longest silence in this step's window where the media log places it (none
    // began there: 0), else the load's longest over the whole trial.
    let media_gap_ms = match users.as_ref().and_then(|u| u.media.as_ref()) {
        Some(m) if m.streams_up > 0 || m.streams_hit > 0 => Some(m.gap_max_ms),
        _ => t.load.and_then(|l| l.media_gap_max_ms),
    };
    let hv_bytes = hv
        .as_ref()
        .and_then(|h| h.transferred_bytes)
        .map(|b| b as f64);
    let counter_bytes = data_counter.as_ref().and_then(|c| c.bytes);
    let row = TrialRow {
        trial: t.trial,
        element: name.clone(),
        direction: t.direction,
        status,
        failure: failure.clone(),
        started_utc: t.started_utc.into(),
        exit_code: migration.as_ref().and_then(|m| m.exit_code),
        hv_format: hv.as_ref().map(|h| h.format.to_string()),
        migration_ms: migration.as_ref().map(|m| m.duration_ms),
        hv_total_ms: hv.as_ref().and_then(|h| h.total_time_ms),
        study_migration_ms: hv.as_ref().and_then(|h| h.target_start_to_resume_ms),
        data_mb: hv_bytes.or(counter_bytes).map(|b| b / 1e6),
        data_source: if hv_bytes.is_some() {
            Some("hypervisor".into())
        } else {
            counter_bytes.map(|_| "counter".into())
        },
        hv_downtime_ms: hv.as_ref().and_then(|h| h.downtime_ms),
        vm_pause_ms: vm_pause.as_ref().map(|p| p.ms),
        sip_gap_ms,
        sip_gap_bound_ms,
        icmp_gap_ms,
        icmp_gap_bound_ms,
        sip_loss_ms: loss(Layer::Sip),
        icmp_loss_ms: loss(Layer::Icmp),
        diameter_gap_ms,
        diameter_gap_bound_ms,
        diameter_loss_ms: loss(Layer::Diameter),
        reg_failed: users.as_ref().map(|u| u.reg_failed),
        calls_failed: users.as_ref().map(|u| u.calls_failed),
        late_requests: users.as_ref().map(|u| u.late_requests),
        media_gap_ms,
        media_mos_min: t.load.and_then(|l| l.media_mos_min),
    };
    StepRecord {
        step,
        element: name,
        status,
        failure,
        migration,
        hypervisor: hv,
        data_counter,
        events,
        vm_pause,
        targets,
        users,
        row,
    }
}

/// The largest gap that overlaps `[a, b]` (seconds), widened by `slack` on both sides.
pub fn pick_gap(gaps: &[GapOut], a: f64, b: f64, slack: f64) -> Option<&GapOut> {
    gaps.iter()
        .filter(|g| g.start_s <= b + slack && g.end_s >= a - slack)
        .max_by(|x, y| x.duration_ms.total_cmp(&y.duration_ms))
}

/// Seconds on the probe timeline of a wall-clock time in µs since the Unix epoch.
pub fn wall_us_to_probe_s(wall0: DateTime<Utc>, wall_us: i64) -> f64 {
    let w0 = wall0.timestamp() as i128 * 1_000_000_000 + wall0.timestamp_subsec_nanos() as i128;
    ((wall_us as i128 * 1000 - w0) as f64) / 1e9
}

/// The first STOP on the host the guest left and the first RESUME after it on the host it
/// reached (any host when the output does not say which).
pub fn stop_resume(
    events: &[hypervisor::HvEvent],
    from: Option<&str>,
    to: Option<&str>,
) -> Option<(i64, i64)> {
    let on = |e: &hypervisor::HvEvent, host: Option<&str>, ev: &str| {
        e.event.eq_ignore_ascii_case(ev) && host.is_none_or(|h| e.host == h)
    };
    let stop = events
        .iter()
        .filter(|e| on(e, from, "STOP"))
        .map(|e| e.wall_us)
        .min()?;
    let resume = events
        .iter()
        .filter(|e| on(e, to, "RESUME") && e.wall_us >= stop)
        .map(|e| e.wall_us)
        .min()?;
    Some((stop, resume))
}

/// A migration's verdict, and why it failed.
pub fn verdict(
    interrupted: bool,
    mig: Option<&MigrationOut>,
    hv: Option<&HvReport>,
) -> (Status, Option<String>) {
    let mut why = Vec::new();
    match mig {
        None => why.push("the migration command did not run".to_string()),
        Some(m) => {
            if m.timed_out {
                why.push(format!(
                    "the migration command did not end within the timeout ({:.0} s) and was killed",
                    m.duration_ms / 1000.0
                ));
            } else if let Some(s) = m.signal {
                why.push(format!("the migration command was killed by signal {s}"));
            } else if m.exit_code != Some(0) {
                why.push(format!(
                    "the migration command exited with code {} (see {})",
                    m.exit_code.map_or("?".into(), |c| c.to_string()),
                    m.stderr
                ));
            }
        }
    }
    if let Some(h) = hv {
        if h.succeeded == Some(false) {
            why.push(format!(
                "{} reports status {}{}",
                h.format,
                h.status.as_deref().unwrap_or("?"),
                h.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    if interrupted {
        // The first Ctrl-C lets a running migration finish, so a command that then failed by
        // itself (an exit code, its timeout) or a hypervisor that reports a failure is the
        // step's own failure, whatever came after. A command that never ran, or that the
        // second Ctrl-C killed, is what the interruption did.
        let stopped_by_us = mig.is_none_or(|m| m.signal.is_some() && !m.timed_out);
        if stopped_by_us || why.is_empty() {
            let w = if why.is_empty() {
                "interrupted (Ctrl-C)".to_string()
            } else {
                format!("interrupted (Ctrl-C); {}", why.join("; "))
            };
            return (Status::Interrupted, Some(w));
        }
        why.push("then the trial was interrupted (Ctrl-C)".to_string());
    }
    if why.is_empty() {
        (Status::Ok, None)
    } else {
        (Status::Failed, Some(why.join("; ")))
    }
}

pub fn layer_pick(r: &TargetResult, window: Option<(f64, f64)>) -> Vec<LayerPick> {
    r.report
        .layers
        .iter()
        .map(|l| {
            let slack = r.report.params.interval_ms / 1e3;
            let (rg, lw) = match window {
                Some((a, b)) => (
                    pick_gap(&l.reply_gaps, a, b, slack).cloned(),
                    pick_gap(&l.loss_windows, a, b, slack).cloned(),
                ),
                None => (None, None),
            };
            LayerPick {
                layer: l.layer,
                other_reply_gaps: l.reply_gaps.len() - usize::from(rg.is_some()),
                reply_gap: rg,
                loss_window: lw,
                availability_pct: l.summary.availability_pct,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::analysis::GapKind;

    fn gap(a: f64, b: f64) -> GapOut {
        GapOut {
            layer: Layer::Sip,
            kind: GapKind::ReplyGap,
            start_utc: String::new(),
            end_utc: String::new(),
            start_s: a,
            end_s: b,
            duration_ms: (b - a) * 1e3,
            error_bound_ms: 1.0,
            open_start: false,
            open_end: false,
            probes_lost: 0,
            failed_replies: 0,
            late_replies: 0,
            answered_after: 0,
            loss_estimate_ms: None,
            max_rtt_ms: None,
            max_send_interval_ms: 1.0,
        }
    }

    #[test]
    fn the_largest_gap_overlapping_the_window_is_picked() {
        let gaps = vec![gap(1.0, 1.05), gap(5.0, 5.4), gap(5.5, 5.6), gap(9.0, 10.0)];
        // Window 4.9..5.7: the 400 ms gap, not the 1 s one outside it.
        let g = pick_gap(&gaps, 4.9, 5.7, 0.001).unwrap();
        assert_eq!(g.start_s, 5.0);
        // A gap starting just after the command ended still counts within the slack.
        assert_eq!(pick_gap(&gaps, 8.0, 8.9995, 0.001).unwrap().start_s, 9.0);
        assert!(pick_gap(&gaps, 2.0, 4.0, 0.001).is_none());
    }

    #[test]
    fn stop_resume_and_wall_clock_placement() {
        use hypervisor::HvEvent;
        let ev = |h: &str, e: &str, t: i64| HvEvent {
            host: h.into(),
            event: e.into(),
            wall_us: t,
        };
        let evs = vec![
            ev("dst", "RESUME", 100),
            ev("src", "MIGRATION", 500),
            ev("src", "STOP", 1_000),
            ev("dst", "RESUME", 1_308),
        ];
        assert_eq!(
            stop_resume(&evs, Some("src"), Some("dst")),
            Some((1_000, 1_308))
        );
        assert_eq!(stop_resume(&evs[..2], Some("src"), Some("dst")), None);
        // The way back: the guest leaves dst.
        let back = vec![
            ev("src", "RESUME", 50),
            ev("dst", "STOP", 2_000),
            ev("src", "RESUME", 2_250),
        ];
        assert_eq!(
            stop_resume(&back, Some("dst"), Some("src")),
            Some((2_000, 2_250))
        );
        assert_eq!(stop_resume(&back, None, None), Some((2_000, 2_250)));
        let w0 = DateTime::<Utc>::from_timestamp(1_764_052_800, 500_000_000).unwrap();
        let s = wall_us_to_probe_s(w0, 1_764_052_801_250_000);
        assert!((s - 0.75).abs() < 1e-9, "{s}");
        let s = wall_us_to_probe_s(w0, 1_764_052_800_000_000);
        assert!((s + 0.5).abs() < 1e-9, "{s}");
    }

    #[test]
    fn verdicts() {
        let ok = MigrationOut {
            exit_code: Some(0),
            stderr: "e".into(),
            ..MigrationOut::default()
        };
        assert_eq!(verdict(false, Some(&ok), None), (Status::Ok, None));
        let bad = MigrationOut {
            exit_code: Some(1),
            ..ok.clone()
        };
        let (s, f) = verdict(false, Some(&bad), None);
        assert_eq!(s, Status::Failed);
        assert!(f.unwrap().contains("exited with code 1"));
        let hv = HvReport {
            format: "qmp",
            status: Some("failed".into()),
            succeeded: Some(false),
            error: Some("socket closed".into()),
            ..HvReport::default()
        };
        let (s, f) = verdict(false, Some(&ok), Some(&hv));
        assert_eq!(s, Status::Failed);
        assert!(f.unwrap().contains("socket closed"));
        let (s, f) = verdict(true, None, None);
        assert_eq!(s, Status::Interrupted);
        assert!(f.unwrap().contains("did not run"));
        // Interrupted while the migration ran: it finished and failed by itself, the
        // hypervisor says it failed, or it went well; or the second Ctrl-C killed it.
        let (s, f) = verdict(true, Some(&bad), None);
        assert_eq!(s, Status::Failed);
        let f = f.unwrap();
        assert!(
            f.contains("exited with code 1") && f.contains("interrupted"),
            "{f}"
        );
        assert_eq!(verdict(true, Some(&ok), Some(&hv)).0, Status::Failed);
        assert_eq!(verdict(true, Some(&ok), None).0, Status::Interrupted);
        let killed = MigrationOut {
            exit_code: None,
            signal: Some(15),
            ..ok.clone()
        };
        let (s, f) = verdict(true, Some(&killed), Some(&hv));
        assert_eq!(s, Status::Interrupted);
        assert!(f.unwrap().contains("signal 15"));
        let timed_out = MigrationOut {
            timed_out: true,
            ..killed.clone()
        };
        assert_eq!(verdict(true, Some(&timed_out), None).0, Status::Failed);
    }
}
