//! Plots of a load run, written beside its JSON report: the run over time (attempt rates offered
//! and achieved, failures, delays, monitored figures, one panel each, with the plan's phase
//! changes as vertical lines) and a capacity search (inadequately handled share and delays per
//! step, the limit, and the capacity found). SVG by hand, PNG through the probe's rasteriser.

use super::control::CapacityResult;
use super::report::SeriesRow;
// The SVG basics (escaping, round tick steps, the font) are the probe timeline's.
use crate::probe::plot::{esc, nice_step, FONT};
use std::fmt::Write as _;

const W: f64 = 1400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 70.0;
const PANEL_H: f64 = 200.0;
const GAP: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

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

fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
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
    let h = TOP + n * PANEL_H + (n - 1.0) * GAP + 50.0;
    let pw = W - LEFT - RIGHT;
    let xs = panels
        .iter()
        .flat_map(|p| p.lines.iter().flat_map(|l| l.pts.iter().map(|p| p.0)));
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (x0, x1) = if x0 > x1 {
        (0.0, 1.0)
    } else if x1 - x0 < 1e-9 {
        (x0 - 1.0, x1 + 1.0)
    } else {
        (x0, x1)
    };
    let x_of = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="{FONT}">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="30" font-size="20" font-weight="bold">{}</text>"#,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="52" font-size="13" fill="#444">{}</text>"##,
        esc(subtitle)
    );
    for (pi, p) in panels.iter().enumerate() {
        let top = TOP + pi as f64 * (PANEL_H + GAP) + 20.0;
        let bot = top + PANEL_H - 20.0;
        let ymax = p
            .lines
            .iter()
            .flat_map(|l| l.pts.iter().filter_map(|p| p.1))
            .fold(0.0f64, f64::max);
        let step = nice_step(if ymax > 0.0 { ymax } else { 1.0 }, 4.0);
        let ytop = (ymax / step).ceil().max(1.0) * step;
        let y_of = |y: f64| bot - y / ytop * (bot - top);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
            top - 6.0,
            esc(&p.title)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{pw}" height="{}" fill="none" stroke="#999"/>"##,
            bot - top
        );
        let mut y = 0.0;
        while y <= ytop + 1e-9 {
            let py = y_of(y);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{py:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                py + 4.0,
                num(y)
            );
            y += step;
        }
        for (mx, label) in marks {
            let px = x_of(*mx);
            let _ = writeln!(
                s,
                r##"<line x1="{px:.1}" x2="{px:.1}" y1="{top}" y2="{bot}" stroke="#888" stroke-dasharray="3,3"/>"##
            );
            if pi == 0 && !label.is_empty() {
                // Near the right edge the label goes left of its line, clear of the legend.
                let (x, anchor) = if px > LEFT + 0.85 * pw {
                    (px - 3.0, "end")
                } else {
                    (px + 3.0, "start")
                };
                let _ = writeln!(
                    s,
                    r##"<text x="{x:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="{anchor}">{}</text>"##,
                    top + 12.0,
                    esc(label)
                );
            }
        }
        for (li, l) in p.lines.iter().enumerate() {
            let color = COLORS[li % COLORS.len()];
            let dash = if l.dashed {
                r#" stroke-dasharray="8,4""#
            } else {
                ""
            };
            // Gaps (None) split the line into runs.
            let mut run = String::new();
            let flush = |s: &mut String, run: &mut String| {
                if !run.is_empty() {
                    let _ = writeln!(
                        s,
                        r#"<polyline points="{run}" fill="none" stroke="{color}" stroke-width="1.6"{dash}/>"#
                    );
                    run.clear();
                }
            };
            for (x, v) in &l.pts {
                match v {
                    Some(v) => {
                        let _ = write!(run, "{:.1},{:.1} ", x_of(*x), y_of(*v));
                        if markers && !l.dashed {
                            let _ = writeln!(
                                s,
                                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#,
                                x_of(*x),
                                y_of(*v)
                            );
                        }
                    }
                    None => flush(&mut s, &mut run),
                }
            }
            flush(&mut s, &mut run);
            let ly = top + 14.0 + li as f64 * 17.0;
            let _ = writeln!(
                s,
                r#"<line x1="{}" x2="{}" y1="{ly:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"{dash}/><text x="{}" y="{:.1}" font-size="12">{}</text>"#,
                LEFT + pw + 10.0,
                LEFT + pw + 30.0,
                LEFT + pw + 35.0,
                ly + 4.0,
                esc(&l.name)
            );
        }
        // x ticks under every panel.
        let xstep = nice_step(x1 - x0, 10.0);
        let mut x = (x0 / xstep).ceil() * xstep;
        while x <= x1 + 1e-9 {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                x_of(x),
                bot + 14.0,
                num(x)
            );
            x += xstep;
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        h - 12.0,
        esc(x_label)
    );
    s.push_str("</svg>\n");
    s
}

/// The run over time, from its per-second series.
pub fn run_svg(title: &str, rows: &[SeriesRow]) -> String {
    let line = |name: &str, f: &dyn Fn(&SeriesRow) -> Option<f64>| Line {
        name: name.to_string(),
        pts: rows.iter().map(|r| (r.t_s, f(r))).collect(),
        dashed: false,
    };
    fn c(r: &SeriesRow) -> &super::stats::Counters {
        &r.counters
    }
    let mut panels = vec![
        Panel {
            title: "Scenario attempts per second".into(),
            lines: vec![
                line("offered (plan)", &|r| r.offered_rate),
                line("started", &|r| Some(r.attempts_started as f64)),
                line("calls answered", &|r| Some(c(r).calls_answered as f64)),
                line("registrations ok", &|r| Some(c(r).reg_ok as f64)),
            ],
        },
        Panel {
            title: "Failures and retransmissions per second".into(),
            lines: vec![
                line("calls failed/timed out", &|r| {
                    Some((c(r).calls_failed + c(r).calls_timeout) as f64)
                }),
                line("registrations failed", &|r| {
                    Some((c(r).reg_failed + c(r).reg_timeouts + c(r).rereg_failed) as f64)
                }),
                line("MESSAGE/OPTIONS failed", &|r| {
                    let c = c(r);
                    Some((c.msg_failed + c.msg_timeouts + c.opt_failed + c.opt_timeouts) as f64)
                }),
                line("our retransmissions", &|r| Some(c(r).retransmits as f64)),
            ],
        },
        Panel {
            title: "Delays, ms (per second)".into(),
            lines: vec![
                line("SRD p50", &|r| {
                    (r.counters.calls_attempted > 0).then_some(r.srd_p50_ms)
                }),
                line("SRD p99", &|r| {
                    (r.counters.calls_attempted > 0).then_some(r.srd_p99_ms)
                }),
                line("RRD p99", &|r| {
                    (r.counters.reg_ok > 0).then_some(r.rrd_p99_ms)
                }),
                line("MESSAGE p50", &|r| {
                    (r.counters.msg_ok > 0).then_some(r.message_p50_ms)
                }),
            ],
        },
    ];
    let mut mon = vec![line("imsload CPU %", &|r| Some(r.generator_cpu_pct))];
    let names: Vec<String> = rows
        .iter()
        .flat_map(|r| r.monitors.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for n in names {
        let label = n.trim_start_matches("mon_").to_string();
        mon.push(line(&label, &|r| r.monitors.get(&n).copied().flatten()));
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
pub fn write(base: &std::path::Path, svg: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let svg_path = base.with_extension("svg");
    std::fs::write(&svg_path, svg)
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    let png_path = base.with_extension("png");
    crate::probe::plot::png(svg, &png_path)?;
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
        let svg = run_svg("test <run>", &rows);
        assert!(svg.contains("test &lt;run&gt;"));
        assert!(svg.contains("offered (plan)") && svg.contains(">cpu<"));
        assert_eq!(svg.matches("stroke-dasharray=\"3,3\"").count(), 4 * 4);
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
