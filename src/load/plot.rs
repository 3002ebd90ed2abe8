//! Plots of a load run, written beside its JSON report: the run over time (attempt rates offered
//! and achieved, failures, delays, monitored figures, one panel each, with the plan's phase
//! changes as vertical lines) and a capacity search (inadequately handled share and delays per
//! step, the limit, and the capacity found). Drawn with [`crate::chart`].

use super::control::CapacityResult;
use super::report::SeriesRow;
use crate::chart::legend::{self, Entry, Swatch};
use crate::chart::{axis, Doc, Paint, Panel as Frame, Scale, Text};

const W: f64 = 1400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 70.0;
const PANEL_H: f64 = 200.0;
const GAP: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Reference lines (a plan, a limit) are dashed.
const DASH: &str = "8,4";

/// What the run plot draws of one second of the series: a tenth of a [`SeriesRow`]'s 1,000
/// bytes, so a long run keeps ~100 bytes a second for its plot (a 24-hour run, 9 MB rather
/// than 86 MB; docs/soak.md). Values are `f32`, plenty for a line on a chart; a phase name and
/// the monitors' names are shared with the row before when they are the same.
#[derive(Clone, Debug, Default)]
pub struct PlotRow {
    t_s: f64,
    offered: Option<f32>,
    started: f32,
    answered: f32,
    reg_ok: f32,
    calls_failed: f32,
    reg_failed: f32,
    nit_failed: f32,
    retransmits: f32,
    srd_p50: Option<f32>,
    srd_p99: Option<f32>,
    rrd_p99: Option<f32>,
    message_p50: Option<f32>,
    cpu_pct: f32,
    plan_phase: Option<std::sync::Arc<str>>,
    monitors: Vec<(std::sync::Arc<str>, Option<f32>)>,
    /// `--media` runs only.
    media: Option<MediaPoint>,
}

/// A second of the media plane: streams running and silent (at its end), and what went wrong
/// in it.
#[derive(Clone, Copy, Debug)]
struct MediaPoint {
    streams: f32,
    silent: f32,
    gaps: f32,
    lost: f32,
    late_sends: f32,
}

impl PlotRow {
    /// The plotted part of `r`; `prev` (the row before) lends its shared names.
    pub fn of(r: &SeriesRow, prev: Option<&PlotRow>) -> PlotRow {
        use std::sync::Arc;
        let c = &r.counters;
        let calls = c.calls_attempted > 0;
        let plan_phase =
            r.plan_phase
                .as_deref()
                .map(|p| match prev.and_then(|x| x.plan_phase.as_ref()) {
                    Some(same) if **same == *p => same.clone(),
                    _ => Arc::from(p),
                });
        let monitors = r
            .monitors
            .iter()
            .enumerate()
            .map(|(i, (name, v))| {
                let shared = prev
                    .and_then(|x| x.monitors.get(i))
                    .filter(|(n, _)| **n == **name)
                    .map(|(n, _)| n.clone());
                (
                    shared.unwrap_or_else(|| Arc::from(name.as_str())),
                    v.map(|v| v as f32),
                )
            })
            .collect();
        PlotRow {
            t_s: r.t_s,
            offered: r.offered_rate.map(|v| v as f32),
            started: r.attempts_started as f32,
            answered: c.calls_answered as f32,
            reg_ok: c.reg_ok as f32,
            calls_failed: (c.calls_failed + c.calls_timeout) as f32,
            reg_failed: (c.reg_failed + c.reg_timeouts + c.rereg_failed) as f32,
            nit_failed: (c.msg_failed + c.msg_timeouts + c.opt_failed + c.opt_timeouts) as f32,
            retransmits: c.retransmits as f32,
            srd_p50: calls.then_some(r.srd_p50_ms as f32),
            srd_p99: calls.then_some(r.srd_p99_ms as f32),
            rrd_p99: (c.reg_ok > 0).then_some(r.rrd_p99_ms as f32),
            message_p50: (c.msg_ok > 0).then_some(r.message_p50_ms as f32),
            cpu_pct: r.generator_cpu_pct as f32,
            plan_phase,
            monitors,
            media: (r.gauges.media_streams > 0 || c.media_packets_sent > 0).then_some(MediaPoint {
                streams: r.gauges.media_streams as f32,
                silent: r.gauges.media_silent as f32,
                gaps: c.media_gaps as f32,
                lost: c.media_packets_lost as f32,
                late_sends: c.media_late_sends as f32,
            }),
        }
    }
}

/// One line of a panel; `None` values leave a gap.
struct Line {
    name: String,
    pts: Vec<(f64, Option<f64>)>,
    /// Drawn as a dashed reference line (a limit), without markers.
    dashed: bool,
}

struct Panel {
    title: String,
    lines: Vec<Line>,
}

/// Panels stacked over one shared x axis; `marks` are vertical lines (x, label).
fn chart(
    title: &str,
    subtitle: &str,
    x_label: &str,
    panels: &[Panel],
    marks: &[(f64, String)],
    markers: bool,
) -> String {
    let n = panels.len().max(1) as f64;
    let mut doc = Doc::new(W, TOP + n * PANEL_H + (n - 1.0) * GAP + 50.0);
    let xs = panels
        .iter()
        .flat_map(|p| p.lines.iter().flat_map(|l| l.pts.iter().map(|p| p.0)));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let xs = Scale::linear(x0, x1);
    doc.text(Text::at(LEFT, 30.0, 20.0).bold(), title);
    doc.text(Text::at(LEFT, 52.0, 13.0).fill("#444"), subtitle);
    for (pi, p) in panels.iter().enumerate() {
        let top = TOP + pi as f64 * (PANEL_H + GAP) + 20.0;
        let ymax = p
            .lines
            .iter()
            .flat_map(|l| l.pts.iter().filter_map(|p| p.1))
            .fold(0.0f64, f64::max);
        let f = Frame {
            x: LEFT,
            y: top,
            w: W - LEFT - RIGHT,
            h: PANEL_H - 20.0,
            xs,
            ys: Scale::from_zero(ymax, 4.0),
        };
        doc.text(Text::at(LEFT, top - 6.0, 14.0).bold(), &p.title);
        f.frame(&mut doc, Paint::outline("#999"));
        f.y_grid(&mut doc, &f.ys.ticks(4.0), axis::num, "#e5e5e5", 11.0);
        for (mx, label) in marks {
            // Labelled once, in the top panel.
            let label = if pi == 0 { label.as_str() } else { "" };
            f.mark(
                &mut doc,
                *mx,
                label,
                Paint::outline("#888").dash(Some("3,3")),
            );
        }
        let mut entries = Vec::new();
        for (li, l) in p.lines.iter().enumerate() {
            let color = COLORS[li % COLORS.len()];
            let dash = l.dashed.then_some(DASH);
            f.line(&mut doc, &l.pts, Paint::stroke(color, 1.6).dash(dash));
            if markers && !l.dashed {
                f.markers(&mut doc, &l.pts, 3.5, Paint::fill(color));
            }
            entries.push(Entry::new(l.name.as_str(), color, Swatch::Line(dash)));
        }
        legend::column(&mut doc, f.right() + 10.0, top + 14.0, &entries);
        // x ticks under every panel.
        f.x_labels(&mut doc, &xs.ticks(10.0), axis::num, 14.0, 11.0);
    }
    doc.text(
        Text::at(LEFT + (W - LEFT - RIGHT) / 2.0, doc.height() - 12.0, 13.0).middle(),
        x_label,
    );
    doc.finish()
}

/// The run over time, from the plotted part of its per-second series.
pub fn run_svg(title: &str, rows: &[PlotRow]) -> String {
    let line = |name: &str, f: &dyn Fn(&PlotRow) -> Option<f32>| Line {
        name: name.to_string(),
        pts: rows.iter().map(|r| (r.t_s, f(r).map(f64::from))).collect(),
        dashed: false,
    };
    let mut panels = vec![
        Panel {
            title: "Scenario attempts per second".into(),
            lines: vec![
                line("offered (plan)", &|r| r.offered),
                line("started", &|r| Some(r.started)),
                line("calls answered", &|r| Some(r.answered)),
                line("registrations ok", &|r| Some(r.reg_ok)),
            ],
        },
        Panel {
            title: "Failures and retransmissions per second".into(),
            lines: vec![
                line("calls failed/timed out", &|r| Some(r.calls_failed)),
                line("registrations failed", &|r| Some(r.reg_failed)),
                line("MESSAGE/OPTIONS failed", &|r| Some(r.nit_failed)),
                line("our retransmissions", &|r| Some(r.retransmits)),
            ],
        },
        Panel {
            title: "Delays, ms (per second)".into(),
            lines: vec![
                line("SRD p50", &|r| r.srd_p50),
                line("SRD p99", &|r| r.srd_p99),
                line("RRD p99", &|r| r.rrd_p99),
                line("MESSAGE p50", &|r| r.message_p50),
            ],
        },
    ];
    // The media plane, when the run carried it: what callers hear (silent streams: a
    // migration's outage shows here while it lasts), and the trouble counted per second.
    if rows.iter().any(|r| r.media.is_some()) {
        let m = |f: fn(&MediaPoint) -> f32| move |r: &PlotRow| r.media.as_ref().map(f);
        panels.push(Panel {
            title: "Media streams (at the end of each second)".into(),
            lines: vec![
                line("running", &m(|p| p.streams)),
                line("silent (no packet for 3 ptimes)", &m(|p| p.silent)),
            ],
        });
        panels.push(Panel {
            title: "Media trouble per second".into(),
            lines: vec![
                line("silences ended", &m(|p| p.gaps)),
                line("packets lost", &m(|p| p.lost)),
                line("sends over a ptime late", &m(|p| p.late_sends)),
            ],
        });
    }
    let mut mon = vec![line("imsload CPU %", &|r| Some(r.cpu_pct))];
    let names: Vec<&str> = rows
        .iter()
        .flat_map(|r| r.monitors.iter().map(|(n, _)| &**n))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for n in names {
        let label = n.trim_start_matches("mon_").to_string();
        mon.push(line(&label, &|r| {
            r.monitors
                .iter()
                .find(|(m, _)| &**m == n)
                .and_then(|(_, v)| *v)
        }));
    }
    panels.push(Panel {
        title: "Monitors and the generator's own CPU".into(),
        lines: mon,
    });
    // The plan's rate is the reference the others are read against.
    panels[0].lines[0].dashed = true;
    // Drop lines that stay at zero, so legends list what is drawn (but keep one per panel: an
    // empty failures panel is news too).
    for p in &mut panels {
        let first = p.lines.remove(0);
        p.lines
            .retain(|l| l.pts.iter().any(|x| x.1.is_some_and(|v| v > 0.0)));
        if p.lines.is_empty() || first.pts.iter().any(|x| x.1.is_some_and(|v| v > 0.0)) {
            p.lines.insert(0, first);
        }
    }
    let mut marks = Vec::new();
    let mut last: Option<&str> = None;
    for r in rows {
        let ph = r.plan_phase.as_deref();
        if ph.is_some() && ph != last {
            marks.push((r.t_s, ph.unwrap_or("").to_string()));
        }
        last = ph;
    }
    if marks.len() > 12 {
        // Many steps: keep the lines, label only every few.
        let every = marks.len().div_ceil(12);
        for (i, m) in marks.iter_mut().enumerate() {
            if i % every != 0 {
                m.1.clear();
            }
        }
    }
    let end = rows.last().map_or(0.0, |r| r.t_s);
    chart(
        title,
        &format!("{} seconds; dashed lines: plan phase changes", end.round()),
        "seconds since start",
        &panels,
        &marks,
        false,
    )
}

/// A capacity search's steps: inadequately handled share against the limit, and delays.
pub fn capacity_svg(title: &str, c: &CapacityResult) -> String {
    let pts = |f: &dyn Fn(&super::control::CapacityStep) -> f64| {
        c.steps.iter().map(|s| (s.rate, Some(f(s)))).collect()
    };
    let panels = [
        Panel {
            title: "Inadequately handled scenarios, % (failed or slower than the objective)".into(),
            lines: vec![
                Line {
                    name: "inadequate %".into(),
                    pts: pts(&|s| s.inadequate_pct),
                    dashed: false,
                },
                Line {
                    name: format!("limit {} %", c.limit_pct),
                    pts: c
                        .steps
                        .iter()
                        .map(|s| (s.rate, Some(c.limit_pct)))
                        .collect(),
                    dashed: true,
                },
            ],
        },
        Panel {
            title: "INVITE → 200, ms".into(),
            lines: vec![
                Line {
                    name: "p50".into(),
                    pts: pts(&|s| s.answer_p50_ms),
                    dashed: false,
                },
                Line {
                    name: "p99".into(),
                    pts: pts(&|s| s.answer_p99_ms),
                    dashed: false,
                },
                Line {
                    name: format!("objective {} ms", c.max_delay_ms),
                    pts: c
                        .steps
                        .iter()
                        .map(|s| (s.rate, Some(c.max_delay_ms)))
                        .collect(),
                    dashed: true,
                },
            ],
        },
        Panel {
            title: "Achieved attempts per second".into(),
            lines: vec![Line {
                name: "achieved".into(),
                pts: pts(&|s| s.achieved_rate),
                dashed: false,
            }],
        },
    ];
    let marks: Vec<(f64, String)> = c
        .design_objective_capacity
        .map(|d| (d, format!("capacity {d}/s")))
        .into_iter()
        .collect();
    chart(
        title,
        &format!(
            "design objective capacity: {}; {}",
            c.design_objective_capacity
                .map_or("none".to_string(), |d| format!("{d} attempts/s")),
            c.ended
        ),
        "offered scenario attempts per second (step)",
        &panels,
        &marks,
        true,
    )
}

/// Writes `svg` to `<base>.svg` and `<base>.png`; returns the paths written.
pub fn write(base: &std::path::Path, svg: &str) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use anyhow::Context as _;
    let svg_path = base.with_extension("svg");
    std::fs::write(&svg_path, svg)
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    let png_path = base.with_extension("png");
    crate::chart::png(svg, &png_path)?;
    Ok(vec![svg_path, png_path])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::control::{CapacityStep, Handled};
    use crate::load::stats::Interval;

    #[test]
    fn run_plot_draws_every_panel_and_phase_marks() {
        let rows: Vec<SeriesRow> = (0..20)
            .map(|i| {
                let mut iv = Interval::default();
                iv.counters.scenarios_offered = 10 * (i / 5 + 1);
                iv.counters.calls_answered = 10 * (i / 5 + 1);
                let mut r = SeriesRow::new(i as f64, String::new(), "calling", &iv);
                r.offered_rate = Some(10.0 * (i / 5 + 1) as f64);
                r.plan_phase = Some(format!("step {}", i / 5 + 1));
                r.monitors.insert("mon_cpu".into(), Some(i as f64 * 4.0));
                r
            })
            .collect();
        let mut plotted: Vec<PlotRow> = Vec::new();
        for r in &rows {
            let p = PlotRow::of(r, plotted.last());
            plotted.push(p);
        }
        // Names are shared between rows, not copied per second.
        assert!(std::sync::Arc::ptr_eq(
            &plotted[1].monitors[0].0,
            &plotted[0].monitors[0].0
        ));
        let svg = run_svg("test <run>", &plotted);
        assert!(svg.contains("test &lt;run&gt;"));
        assert!(svg.contains("offered (plan)") && svg.contains(">cpu<"));
        assert_eq!(svg.matches("stroke-dasharray=\"3,3\"").count(), 4 * 4);
        assert!(!svg.contains("Media"), "no media panels without media");
        // With media: two more panels, and the silence that lasted three seconds is drawn.
        let media: Vec<PlotRow> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.gauges.media_streams = 40;
                r.gauges.media_silent = if (8.0..11.0).contains(&r.t_s) { 40 } else { 0 };
                r.counters.media_packets_sent = 2000;
                r.counters.media_gaps = if r.t_s == 11.0 { 40 } else { 0 };
                PlotRow::of(&r, None)
            })
            .collect();
        let svg = run_svg("media", &media);
        assert!(svg.contains("Media streams") && svg.contains("Media trouble per second"));
        assert!(svg.contains("silent (no packet for 3 ptimes)") && svg.contains("silences ended"));
        // Lines that stay at zero are left out of a panel's legend.
        assert!(!svg.contains("packets lost"));
        assert_eq!(svg.matches("stroke-dasharray=\"3,3\"").count(), 4 * 6);
        assert!(svg.contains(">step 4<"));
        let opt = resvg::usvg::Options::default();
        resvg::usvg::Tree::from_str(&svg, &opt).expect("valid SVG");
    }

    #[test]
    fn capacity_plot_marks_the_capacity() {
        let step = |rate: f64, pct: f64| CapacityStep {
            rate,
            seconds: 4,
            achieved_rate: rate,
            handled: Handled::default(),
            inadequate_pct: pct,
            passed: pct <= 1.0,
            answer_p50_ms: 2.0,
            answer_p99_ms: 5.0,
            answer_histogram: None,
        };
        let c = CapacityResult {
            design_objective_capacity: Some(80.0),
            limit_pct: 1.0,
            max_delay_ms: 300.0,
            steps: vec![step(40.0, 0.0), step(80.0, 0.5), step(120.0, 30.0)],
            ended: "step 3".into(),
        };
        let svg = capacity_svg("cap", &c);
        assert!(svg.contains("capacity 80/s") && svg.contains("limit 1 %"));
        assert_eq!(svg.matches("<circle").count(), 3 * 4);
        let opt = resvg::usvg::Options::default();
        resvg::usvg::Tree::from_str(&svg, &opt).expect("valid SVG");
    }
}
