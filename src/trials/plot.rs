//! The trials' figures, in the style of the reference study's figures 6–8: one bar per trial with
//! a least-squares trend line, for data transferred, migration time and downtime (the
//! hypervisor's figure beside STOP→RESUME and the probes' SIP and ICMP gaps, with their error
//! bounds), and a scatter of the hypervisor's downtime against the SIP gap. Hand-written SVG with
//! the probe timeline's primitives ([`crate::probe::plot`]); PNG through the same resvg path.

use super::table::{Status, Trend, TrialRow};
use crate::probe::plot::{esc, nice_step, tick_label, FONT};
use std::fmt::Write as _;

const W: f64 = 1100.0;
const H: f64 = 560.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 96.0;
const BOTTOM: f64 = 70.0;
const PW: f64 = W - LEFT - RIGHT;
const PH: f64 = H - TOP - BOTTOM;

/// One bar series.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    values: Vec<Option<f64>>,
    /// ± per bar (drawn as an error bar).
    bounds: Vec<Option<f64>>,
}

fn header(s: &mut String, title: &str, subtitle: &str) {
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="{FONT}">
<rect width="100%" height="100%" fill="white"/>
<defs><clipPath id="frame"><rect x="{LEFT}" y="{TOP}" width="{PW}" height="{PH}"/></clipPath></defs>
<text x="{LEFT}" y="30" font-size="20" font-weight="bold">{}</text>
<text x="{LEFT}" y="52" font-size="13" fill="#444">{}</text>
"##,
        esc(title),
        esc(subtitle)
    );
}

/// Y axis from 0 to a nice maximum; returns the maximum.
fn y_axis(s: &mut String, max: f64, label: &str) -> f64 {
    let ph = H - TOP - BOTTOM;
    let top = if max > 0.0 { max * 1.12 } else { 1.0 };
    let step = nice_step(top, 6.0);
    let top = (top / step).ceil() * step;
    let mut v = 0.0;
    // Bounded: at most ~8 grid lines by nice_step's choice.
    while v <= top + step * 1e-6 {
        let y = TOP + ph - v / top * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e2e2e2"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            tick_label(v, step)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r##"<text transform="translate(22,{:.1}) rotate(-90)" font-size="13" text-anchor="middle">{}</text><rect x="{LEFT}" y="{TOP}" width="{}" height="{ph}" fill="none" stroke="#888"/>"##,
        TOP + ph / 2.0,
        esc(label),
        W - LEFT - RIGHT
    );
    top
}

/// How a legend entry is drawn.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Box,
    Line,
    Dashed,
}

fn legend(s: &mut String, items: &[(&str, &str, Mark)]) {
    let mut x = LEFT;
    let y = 76.0;
    for &(name, color, mark) in items {
        if mark != Mark::Box {
            let dash = if mark == Mark::Dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<line x1="{x}" x2="{}" y1="{}" y2="{}" stroke="{color}" stroke-width="2"{dash}/>"#,
                x + 22.0,
                y - 4.0,
                y - 4.0
            );
        } else {
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{}" width="18" height="11" fill="{color}"/>"#,
                y - 10.0
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{y}" font-size="13">{}</text>"#,
            x + 26.0,
            esc(name)
        );
        x += 44.0 + name.chars().count() as f64 * 7.9;
    }
    s.push('\n');
}

/// Grouped bars per trial; the trend line is fitted to `series[trend]` over the ok trials.
fn bars(
    title: &str,
    subtitle: &str,
    y_label: &str,
    rows: &[TrialRow],
    series: &[Series],
    trend: usize,
) -> String {
    let mut s = String::new();
    header(&mut s, title, subtitle);
    let trend_name = series.get(trend).map(|se| se.name);
    let series: Vec<&Series> = series
        .iter()
        .filter(|se| se.values.iter().any(Option::is_some))
        .collect();
    let trend = series
        .iter()
        .position(|se| Some(se.name) == trend_name)
        .unwrap_or(usize::MAX);
    let max = series
        .iter()
        .flat_map(|se| {
            se.values
                .iter()
                .zip(&se.bounds)
                .filter_map(|(v, b)| v.map(|v| v + b.unwrap_or(0.0)))
        })
        .fold(0.0f64, f64::max);
    let top = y_axis(&mut s, max, y_label);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let n = rows.len().max(1) as f64;
    let slot = pw / n;
    let k = series.len().max(1) as f64;
    let bw = (slot * 0.8 / k).min(60.0);
    let y_of = |v: f64| TOP + ph - (v / top).clamp(0.0, 1.0) * ph;
    let x_mid = |i: usize| LEFT + slot * (i as f64 + 0.5);
    let label_every = (rows.len() / 30).max(1);
    for (i, r) in rows.iter().enumerate() {
        let cx = x_mid(i);
        if i % label_every == 0 {
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
                TOP + ph + 16.0,
                r.trial
            );
        }
        if r.status != Status::Ok {
            let _ = write!(
                s,
                r##"<text x="{cx:.1}" y="{:.1}" font-size="11" fill="#c0150f" text-anchor="middle">{}</text>"##,
                TOP + ph - 6.0,
                r.status
            );
        }
        for (j, se) in series.iter().enumerate() {
            let Some(v) = se.values.get(i).copied().flatten() else {
                continue;
            };
            let x = cx - bw * k / 2.0 + bw * j as f64;
            let y = y_of(v);
            let opacity = if r.status == Status::Ok { 1.0 } else { 0.35 };
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="{opacity}"/>"#,
                (bw - 2.0).max(1.0),
                (TOP + ph - y).max(0.0),
                se.color
            );
            if let Some(b) = se.bounds.get(i).copied().flatten() {
                if b > 0.0 {
                    let xm = x + (bw - 2.0).max(1.0) / 2.0;
                    let (y1, y2) = (y_of(v - b), y_of(v + b));
                    let _ = write!(
                        s,
                        r##"<path d="M{xm:.1} {y1:.1}V{y2:.1}M{:.1} {y1:.1}h6M{:.1} {y2:.1}h6" stroke="#222" stroke-width="1"/>"##,
                        xm - 3.0,
                        xm - 3.0
                    );
                }
            }
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">trial</text>"#,
        LEFT + pw / 2.0,
        H - 24.0
    );
    let mut items: Vec<(&str, &str, Mark)> = series
        .iter()
        .map(|se| (se.name, se.color, Mark::Box))
        .collect();
    if let Some(se) = series.get(trend) {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .zip(&se.values)
            .filter(|(r, _)| r.status == Status::Ok)
            .filter_map(|(r, v)| v.map(|v| (r.trial as f64, v)))
            .collect();
        if let Some(t) = Trend::fit(&pts) {
            // Trials are placed by index; the fit is in trial numbers, mapped through them.
            let xy: Vec<(f64, f64)> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (x_mid(i), TOP + ph - t.at(r.trial as f64) / top * ph))
                .collect();
            if let (Some(a), Some(b)) = (xy.first(), xy.last()) {
                let _ = writeln!(
                    s,
                    r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#111" stroke-width="2" stroke-dasharray="6 4" clip-path="url(#frame)"/>"##,
                    a.0, a.1, b.0, b.1
                );
            }
            items.push(("trend (least squares)", "#111", Mark::Dashed));
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{}" font-size="12" text-anchor="end" fill="#333">trend of {}: {:+.3} per trial</text>"##,
                W - RIGHT - 8.0,
                TOP + 18.0,
                esc(se.name),
                t.slope
            );
        }
    }
    legend(&mut s, &items);
    if series
        .iter()
        .all(|se| se.values.iter().all(Option::is_none))
    {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="16" fill="#888" text-anchor="middle">not reported by the migration command's output</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Hypervisor downtime (x) against the measured SIP gap (y), with y = x and a fitted line.
fn scatter(title: &str, rows: &[TrialRow]) -> String {
    let mut s = String::new();
    let pts: Vec<(u32, f64, f64, f64, bool)> = rows
        .iter()
        .filter_map(|r| {
            Some((
                r.trial,
                r.hv_downtime_ms?,
                r.sip_gap_ms?,
                r.sip_gap_bound_ms.unwrap_or(0.0),
                r.status == Status::Ok,
            ))
        })
        .collect();
    header(
        &mut s,
        title,
        "each point is a trial (SIP gap ± one probe interval); the fit is over the ok trials",
    );
    let max = pts
        .iter()
        .map(|p| p.1.max(p.2 + p.3))
        .fold(0.0f64, f64::max);
    let top = y_axis(&mut s, max, "SIP reply gap (ms)");
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x_of = |v: f64| LEFT + (v / top).clamp(0.0, 1.0) * pw;
    let y_of = |v: f64| TOP + ph - (v / top).clamp(0.0, 1.0) * ph;
    let step = nice_step(top, 8.0);
    let mut v = 0.0;
    while v <= top + step * 1e-6 {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            x_of(v),
            TOP + ph + 16.0,
            tick_label(v, step)
        );
        v += step;
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">hypervisor downtime (ms)</text><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#777" stroke-width="1.5" stroke-dasharray="4 4"/>"##,
        LEFT + pw / 2.0,
        H - 24.0,
        x_of(0.0),
        y_of(0.0),
        x_of(top),
        y_of(top)
    );
    for &(trial, x, y, b, ok) in &pts {
        let (cx, cy) = (x_of(x), y_of(y));
        let color = if ok { "#1f5fbf" } else { "#c0150f" };
        if b > 0.0 {
            let _ = write!(
                s,
                r#"<path d="M{cx:.1} {:.1}V{:.1}" stroke="{color}"/>"#,
                y_of(y - b),
                y_of(y + b)
            );
        }
        let _ = writeln!(
            s,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="{color}" fill-opacity="0.8"/><text x="{:.1}" y="{:.1}" font-size="11">{trial}</text>"#,
            cx + 7.0,
            cy - 6.0
        );
    }
    let fit: Vec<(f64, f64)> = pts.iter().filter(|p| p.4).map(|p| (p.1, p.2)).collect();
    let mut items = vec![
        ("ok trial", "#1f5fbf", Mark::Box),
        ("failed/interrupted", "#c0150f", Mark::Box),
        ("gap = downtime", "#777", Mark::Dashed),
    ];
    if let Some(t) = Trend::fit(&fit) {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#111" stroke-width="2" clip-path="url(#frame)"/><text x="{}" y="{}" font-size="12" text-anchor="end" fill="#333">gap = {:.1} ms + {:.3} × downtime</text>"##,
            x_of(0.0),
            TOP + ph - t.at(0.0) / top * ph,
            x_of(top),
            TOP + ph - t.at(top) / top * ph,
            W - RIGHT - 8.0,
            TOP + 18.0,
            t.intercept,
            t.slope
        );
        items.push(("least-squares fit", "#111", Mark::Line));
    }
    legend(&mut s, &items);
    if pts.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="16" fill="#888" text-anchor="middle">no trial has both a hypervisor downtime and a SIP gap</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Every figure: `(file stem, SVG)`.
pub fn all(rows: &[TrialRow], title: &str) -> Vec<(&'static str, String)> {
    let col = |f: fn(&TrialRow) -> Option<f64>| rows.iter().map(f).collect::<Vec<_>>();
    let none = vec![None; rows.len()];
    let data = bars(
        &format!("{title}: data transferred"),
        "per trial, from the hypervisor's output (MB = 10^6 bytes); pale bars: failed or interrupted trials",
        "data transferred (MB)",
        rows,
        &[Series {
            name: "data transferred",
            color: "#1f5fbf",
            values: col(|r| r.data_mb),
            bounds: none.clone(),
        }],
        0,
    );
    let time = bars(
        &format!("{title}: migration time"),
        "command start to end (imsprobe's monotonic clock), and the hypervisor's own total where reported",
        "migration time (s)",
        rows,
        &[
            Series {
                name: "command",
                color: "#1f5fbf",
                values: col(|r| r.migration_ms.map(|v| v / 1e3)),
                bounds: none.clone(),
            },
            Series {
                name: "hypervisor total",
                color: "#7fa7e0",
                values: col(|r| r.hv_total_ms.map(|v| v / 1e3)),
                bounds: none.clone(),
            },
        ],
        0,
    );
    let downtime = bars(
        &format!("{title}: downtime"),
        "hypervisor's figure, the VM's STOP→RESUME, and the largest SIP and ICMP reply gaps overlapping the migration (± one probe interval)",
        "downtime (ms)",
        rows,
        &[
            Series {
                name: "hypervisor downtime",
                color: "#444",
                values: col(|r| r.hv_downtime_ms),
                bounds: none.clone(),
            },
            Series {
                name: "STOP→RESUME",
                color: "#8c6bb1",
                values: col(|r| r.vm_pause_ms),
                bounds: none.clone(),
            },
            Series {
                name: "SIP gap",
                color: "#e8231f",
                values: col(|r| r.sip_gap_ms),
                bounds: col(|r| r.sip_gap_bound_ms),
            },
            Series {
                name: "ICMP gap",
                color: "#f28c00",
                values: col(|r| r.icmp_gap_ms),
                bounds: col(|r| r.icmp_gap_bound_ms),
            },
        ],
        if rows.iter().any(|r| r.hv_downtime_ms.is_some()) {
            0
        } else {
            2
        },
    );
    let sc = scatter(&format!("{title}: hypervisor downtime vs SIP gap"), rows);
    vec![
        ("data", data),
        ("migration_time", time),
        ("downtime", downtime),
        ("downtime_vs_sip_gap", sc),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trials::table::Direction;

    fn rows() -> Vec<TrialRow> {
        (1..=4)
            .map(|i| TrialRow {
                trial: i,
                direction: Direction::Migrate,
                status: if i == 3 { Status::Failed } else { Status::Ok },
                migration_ms: Some(28000.0 + i as f64 * 50.0),
                hv_total_ms: Some(27900.0),
                data_mb: Some(297.0 + i as f64),
                hv_downtime_ms: Some(900.0 + 300.0 * i as f64),
                vm_pause_ms: Some(930.0 + 300.0 * i as f64),
                sip_gap_ms: Some(1000.0 + 300.0 * i as f64),
                sip_gap_bound_ms: Some(1.0),
                icmp_gap_ms: Some(950.0),
                icmp_gap_bound_ms: Some(1.0),
                ..TrialRow::default()
            })
            .collect()
    }

    #[test]
    fn figures_are_valid_svg_and_rasterise() {
        let r = rows();
        let figs = all(&r, "pcscf <test> & co");
        assert_eq!(figs.len(), 4);
        let mut opt = resvg::usvg::Options::default();
        opt.fontdb_mut().load_system_fonts();
        for (name, svg) in &figs {
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{name}"
            );
            assert!(
                svg.contains("&lt;test&gt; &amp; co"),
                "{name}: title escaped"
            );
            resvg::usvg::Tree::from_str(svg, &opt).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let (_, down) = &figs[2];
        assert!(down.contains("trend (least squares)"));
        assert!(down.contains("failed"), "the failed trial is marked");
        // Empty: a message instead of bars, still valid.
        let empty = vec![TrialRow {
            trial: 1,
            status: Status::Ok,
            ..TrialRow::default()
        }];
        for (name, svg) in all(&empty, "t") {
            resvg::usvg::Tree::from_str(&svg, &opt).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let sc = &all(&empty, "t")[3].1;
        assert!(sc.contains("no trial has both"));
    }
}
