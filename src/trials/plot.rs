//! The trials' figures, in the style of the reference study's figures 6–8: one bar per trial with
//! a least-squares trend line, for data transferred, migration time and downtime (the
//! hypervisor's figure beside STOP→RESUME and the probes' SIP and ICMP gaps, with their error
//! bounds), and a scatter of the hypervisor's downtime against the SIP gap. Drawn with
//! [`crate::chart`].

use super::table::{Status, Trend, TrialRow};
use crate::chart::legend::{self, Entry, Swatch};
use crate::chart::{axis, Doc, Paint, Panel, Scale, Text};

const W: f64 = 1100.0;
const H: f64 = 560.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 96.0;
const BOTTOM: f64 = 70.0;
const PW: f64 = W - LEFT - RIGHT;
const PH: f64 = H - TOP - BOTTOM;
const FAILED: &str = "#c0150f";

/// One bar series.
struct Series<'a> {
    name: &'a str,
    color: &'static str,
    values: Vec<Option<f64>>,
    /// ± per bar (drawn as an error bar).
    bounds: Vec<Option<f64>>,
}

/// The page with its title, and the frame with a y axis from 0 to a round value above `max`
/// (room left over the tallest bar); x is `xs`.
fn page(title: &str, subtitle: &str, max: f64, y_label: &str, xs: Scale) -> (Doc, Panel) {
    let mut doc = Doc::new(W, H);
    let f = Panel {
        x: LEFT,
        y: TOP,
        w: PW,
        h: PH,
        xs,
        ys: Scale::from_zero(max * 1.12, 6.0),
    };
    // Trend lines run to the frame's edges and no further.
    doc.clip(f.x, f.y, f.w, f.h);
    doc.text(Text::at(LEFT, 30.0, 20.0).bold(), title);
    doc.text(Text::at(LEFT, 52.0, 13.0).fill("#444"), subtitle);
    let step = f.ys.step(6.0);
    f.y_grid(
        &mut doc,
        &f.ys.ticks(6.0),
        |v| axis::tick_label(v, step),
        "#e2e2e2",
        12.0,
    );
    f.y_title(&mut doc, 22.0, y_label);
    f.frame(&mut doc, Paint::outline("#888"));
    (doc, f)
}

/// A fitted line's equation, top right in the frame.
fn fit_label(doc: &mut Doc, text: &str) {
    doc.text(
        Text::at(W - RIGHT - 8.0, TOP + 18.0, 12.0)
            .end()
            .fill("#333"),
        text,
    );
}

fn x_title(doc: &mut Doc, text: &str) {
    doc.text(Text::at(LEFT + PW / 2.0, H - 24.0, 13.0).middle(), text);
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
    // One slot per trial, by index: trial i is centred on i + 0.5.
    let xs = Scale::linear(0.0, rows.len().max(1) as f64);
    let (mut doc, f) = page(title, subtitle, max, y_label, xs);
    let slot = PW / rows.len().max(1) as f64;
    let k = series.len().max(1) as f64;
    let bw = (slot * 0.8 / k).min(60.0);
    let x_mid = |i: usize| f.px(i as f64 + 0.5);
    let label_every = (rows.len() / 30).max(1);
    for (i, r) in rows.iter().enumerate() {
        let cx = x_mid(i);
        if i % label_every == 0 {
            doc.text(
                Text::at(cx, TOP + PH + 16.0, 12.0).middle(),
                &r.trial.to_string(),
            );
        }
        if r.status != Status::Ok {
            doc.text(
                Text::at(cx, TOP + PH - 6.0, 11.0).middle().fill(FAILED),
                &r.status.to_string(),
            );
        }
        // Failed or interrupted trials' bars are pale: shown, but not counted.
        let opacity = if r.status == Status::Ok { 1.0 } else { 0.35 };
        for (j, se) in series.iter().enumerate() {
            let Some(v) = se.values.get(i).copied().flatten() else {
                continue;
            };
            let x = cx - bw * k / 2.0 + bw * j as f64;
            let w = (bw - 2.0).max(1.0);
            f.bar(
                &mut doc,
                x,
                w,
                v,
                Paint::fill(se.color).fill_opacity(opacity),
            );
            if let Some(b) = se.bounds.get(i).copied().flatten().filter(|b| *b > 0.0) {
                f.error_bar(&mut doc, x + w / 2.0, v, b, Paint::stroke("#222", 1.0));
            }
        }
    }
    x_title(&mut doc, "trial");
    let mut items: Vec<Entry> = series
        .iter()
        .map(|se| Entry::new(se.name, se.color, Swatch::Box))
        .collect();
    if let Some(se) = series.get(trend) {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .zip(&se.values)
            .filter(|(r, _)| r.status == Status::Ok)
            .filter_map(|(r, v)| v.map(|v| (r.trial as f64, v)))
            .collect();
        if let (Some(t), Some(first), Some(last)) = (Trend::fit(&pts), rows.first(), rows.last()) {
            // Trials are placed by index; the fit is in trial numbers, mapped through them.
            let at = |r: &TrialRow| t.at(r.trial as f64);
            f.segment(
                &mut doc,
                (0.5, at(first)),
                (rows.len() as f64 - 0.5, at(last)),
                Paint::stroke("#111", 2.0).dash(Some("6 4")).clipped(),
            );
            items.push(Entry::new(
                "trend (least squares)",
                "#111",
                Swatch::Line(Some("6 4")),
            ));
            fit_label(
                &mut doc,
                &format!("trend of {}: {:+.3} per trial", se.name, t.slope),
            );
        }
    }
    legend::row(&mut doc, LEFT, 76.0, &items);
    if series.is_empty() {
        f.note(&mut doc, "not reported by the migration command's output");
    }
    doc.finish()
}

/// Hypervisor downtime (x) against the measured SIP gap (y), with y = x and a fitted line.
fn scatter(title: &str, rows: &[TrialRow]) -> String {
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
    let max = pts
        .iter()
        .map(|p| p.1.max(p.2 + p.3))
        .fold(0.0f64, f64::max);
    // Both axes in ms on the same scale, so that y = x is the diagonal.
    let ys = Scale::from_zero(max * 1.12, 6.0);
    let (mut doc, f) = page(
        title,
        "each point is a trial (SIP gap ± one probe interval); the fit is over the ok trials",
        max,
        "SIP reply gap (ms)",
        ys,
    );
    let step = f.xs.step(8.0);
    f.x_labels(
        &mut doc,
        &f.xs.ticks(8.0),
        |v| axis::tick_label(v, step),
        16.0,
        12.0,
    );
    x_title(&mut doc, "hypervisor downtime (ms)");
    let top = f.ys.hi();
    f.segment(
        &mut doc,
        (0.0, 0.0),
        (top, top),
        Paint::stroke("#777", 1.5).dash(Some("4 4")),
    );
    for &(trial, x, y, b, ok) in &pts {
        let color = if ok { "#1f5fbf" } else { FAILED };
        let cx = f.px(x);
        if b > 0.0 {
            doc.line(
                (cx, f.py_clamped(y - b)),
                (cx, f.py_clamped(y + b)),
                Paint::outline(color),
            );
        }
        let cy = f.py_clamped(y);
        doc.circle((cx, cy), 5.0, Paint::fill(color).fill_opacity(0.8));
        doc.text(Text::at(cx + 7.0, cy - 6.0, 11.0), &trial.to_string());
    }
    let fit: Vec<(f64, f64)> = pts.iter().filter(|p| p.4).map(|p| (p.1, p.2)).collect();
    let mut items = vec![
        Entry::new("ok trial", "#1f5fbf", Swatch::Box),
        Entry::new("failed/interrupted", FAILED, Swatch::Box),
        Entry::new("gap = downtime", "#777", Swatch::Line(Some("4 4"))),
    ];
    if let Some(t) = Trend::fit(&fit) {
        f.segment(
            &mut doc,
            (0.0, t.at(0.0)),
            (top, t.at(top)),
            Paint::stroke("#111", 2.0).clipped(),
        );
        fit_label(
            &mut doc,
            &format!("gap = {:.1} ms + {:.3} × downtime", t.intercept, t.slope),
        );
        items.push(Entry::new("least-squares fit", "#111", Swatch::Line(None)));
    }
    legend::row(&mut doc, LEFT, 76.0, &items);
    if pts.is_empty() {
        f.note(
            &mut doc,
            "no trial has both a hypervisor downtime and a SIP gap",
        );
    }
    doc.finish()
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
        "command start to end (imsprobe's monotonic clock), the hypervisor's own total, and the study's (target started → VM running) where reported",
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
            Series {
                name: "target start → resume",
                color: "#2ca02c",
                values: col(|r| r.study_migration_ms.map(|v| v / 1e3)),
                bounds: none.clone(),
            },
        ],
        0,
    );
    let mut downtime_series = vec![
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
    ];
    // What the callers heard, when the load carried media: the longest silence that began in
    // the element's window.
    let media = rows.iter().any(|r| r.media_gap_ms.is_some());
    if media {
        downtime_series.push(Series {
            name: "media gap",
            color: "#17becf",
            values: col(|r| r.media_gap_ms),
            bounds: none.clone(),
        });
    }
    let downtime = bars(
        &format!("{title}: downtime"),
        if media {
            "hypervisor's figure, the VM's STOP→RESUME, the largest SIP and ICMP reply gaps overlapping the migration (± one probe interval), and the longest silence a call leg heard"
        } else {
            "hypervisor's figure, the VM's STOP→RESUME, and the largest SIP and ICMP reply gaps overlapping the migration (± one probe interval)"
        },
        "downtime (ms)",
        rows,
        &downtime_series,
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
        // A load with media adds what the callers heard, and only then.
        assert!(!down.contains("media gap"));
        let mut with_media = rows();
        with_media[1].media_gap_ms = Some(1120.0);
        let down = &all(&with_media, "t")[2].1;
        assert!(down.contains("media gap") && down.contains("call leg heard"));
        resvg::usvg::Tree::from_str(down, &opt).unwrap();
    }
}
