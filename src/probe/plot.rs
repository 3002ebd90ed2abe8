//! Timeline plot: one panel per layer, RTT over send time on a log scale (min..max per pixel
//! column, so a million probes still draw as a few thousand lines), lost and failed probes as
//! ticks in a lane under the axis, reply gaps shaded red and loss windows as orange bars, each
//! labelled with its duration. Written as SVG by hand and rasterised to PNG with resvg.

use super::analysis::{verdict, GapKind, LayerAnalysis, Params};
use super::report::Report;
use super::{Layer, Outcome, ProbeRecord};
use std::fmt::Write as _;
use std::path::Path;

const W: f64 = 1600.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 92.0;
const PANEL_H: f64 = 330.0;
const PANEL_GAP: f64 = 70.0;
const LANE_H: f64 = 14.0;
pub(crate) const FONT: &str = "DejaVu Sans, Verdana, sans-serif";

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_dur(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.3} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

pub(crate) fn tick_label(t: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{t:.0}")
    } else {
        let s = format!("{t:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

pub(crate) fn nice_step(span: f64, target_ticks: f64) -> f64 {
    let raw = span / target_ticks;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The SVG document for `rep`.
pub fn svg(
    rep: &Report,
    records: &[(&[ProbeRecord], Params)],
    analyses: &[LayerAnalysis],
) -> String {
    let n = analyses.len().max(1) as f64;
    let h = TOP + n * PANEL_H + (n - 1.0) * PANEL_GAP + 60.0;
    let pw = W - LEFT - RIGHT;
    // The x range: 0 .. last send (or the run's duration).
    let t_end_ns = records
        .iter()
        .flat_map(|(r, _)| {
            r.iter()
                .map(|x| x.received_ns.unwrap_or(x.sent_ns).max(x.sent_ns))
        })
        .max()
        .unwrap_or(0)
        .max(1);
    let t_start_ns = records
        .iter()
        .flat_map(|(r, _)| r.iter().map(|x| x.sent_ns))
        .min()
        .unwrap_or(0)
        .min(t_end_ns - 1);
    let span = (t_end_ns - t_start_ns) as f64;
    let x_of = |ns: i64| LEFT + ((ns - t_start_ns) as f64 / span).clamp(0.0, 1.0) * pw;

    let mut s = String::with_capacity(1 << 20);
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="{FONT}">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    let addr = format!(
        "{}{}",
        rep.target.host,
        rep.target
            .sip_port
            .map(|p| format!(":{p}"))
            .unwrap_or_default()
    );
    let name = if rep.target.name == addr || rep.target.name == rep.target.host {
        addr
    } else {
        format!("{} ({addr})", rep.target.name)
    };
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="30" font-size="22" font-weight="bold">imsprobe · {} · {}</text>"#,
        esc(&name),
        esc(&rep.started_utc)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="54" font-size="14" fill="#444">{} probes/s per layer · timeout {} · late above {} · gaps ≥ {} · {} · {:.1} s</text>"##,
        rep.params.rate.round(),
        fmt_dur(rep.params.timeout_ms),
        fmt_dur(rep.params.late_rtt_ms),
        fmt_dur(rep.params.min_gap_ms),
        if rep.mode == "pcap" {
            "from capture"
        } else {
            "live"
        },
        rep.duration_s
    );
    // Legend.
    let mut lx = LEFT;
    let ly = 74.0;
    for (kind, label) in [
        ("rtt", "RTT (min–max per pixel)"),
        ("late", "late reply"),
        ("lost", "lost"),
        ("failed", "failed (non-2xx / ICMP error)"),
        ("gap", "reply gap"),
        ("loss", "loss window"),
    ] {
        match kind {
            "rtt" => {
                let _ = write!(
                    s,
                    r##"<rect x="{lx}" y="{}" width="18" height="4" fill="#1f5fbf"/>"##,
                    ly - 6.0
                );
            }
            "late" => {
                let _ = write!(
                    s,
                    r##"<rect x="{lx}" y="{}" width="18" height="4" fill="#9b30c8"/>"##,
                    ly - 6.0
                );
            }
            "lost" => {
                let _ = write!(
                    s,
                    r##"<rect x="{}" y="{}" width="3" height="12" fill="#222"/>"##,
                    lx + 7.0,
                    ly - 10.0
                );
            }
            "failed" => {
                let _ = write!(
                    s,
                    r##"<rect x="{}" y="{}" width="3" height="12" fill="#e8231f"/>"##,
                    lx + 7.0,
                    ly - 10.0
                );
            }
            "gap" => {
                let _ = write!(
                    s,
                    r##"<rect x="{lx}" y="{}" width="18" height="12" fill="#e8231f" fill-opacity="0.18" stroke="#e8231f"/>"##,
                    ly - 10.0
                );
            }
            _ => {
                let _ = write!(
                    s,
                    r##"<rect x="{lx}" y="{}" width="18" height="8" fill="#f28c00"/>"##,
                    ly - 9.0
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{ly}" font-size="13">{label}</text>"#,
            lx + 24.0
        );
        lx += 34.0 + label.chars().count() as f64 * 7.4;
    }
    s.push('\n');

    for (i, a) in analyses.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + PANEL_GAP);
        let recs: Vec<&ProbeRecord> = records
            .iter()
            .flat_map(|(r, _)| r.iter())
            .filter(|r| r.layer == a.layer)
            .collect();
        let p = records.first().map(|(_, p)| *p);
        panel(&mut s, rep, a, &recs, p, y0, &x_of, pw, t_start_ns, span);
    }
    s.push_str("</svg>\n");
    s
}

#[allow(clippy::too_many_arguments)]
fn panel(
    s: &mut String,
    rep: &Report,
    a: &LayerAnalysis,
    recs: &[&ProbeRecord],
    p: Option<Params>,
    y0: f64,
    x_of: &dyn Fn(i64) -> f64,
    pw: f64,
    t_start_ns: i64,
    span: f64,
) {
    let plot_top = y0 + 26.0;
    let plot_bot = y0 + PANEL_H - 2.0 * LANE_H - 34.0;
    let lane_y = plot_bot + 6.0;
    let ph = plot_bot - plot_top;
    let name = match a.layer {
        Layer::Sip => "SIP OPTIONS",
        Layer::Icmp => "ICMP echo",
        Layer::Diameter => "Diameter DWR",
    };
    let m = rep
        .layers
        .iter()
        .find(|l| l.layer == a.layer)
        .map(|l| &l.summary);
    let sub = m
        .map(|m| {
            format!(
                "sent {} · ok {} · late {} · failed {} · lost {} · availability {:.3} % · {} · RTT p50 {} p99 {} max {}",
                m.sent,
                m.ok,
                m.late,
                m.failed,
                m.lost,
                m.availability_pct,
                match m.reply_gaps {
                    0 => "no reply gap".to_string(),
                    1 => format!("1 reply gap ({})", fmt_dur(m.longest_reply_gap_ms)),
                    n => format!("{n} reply gaps (longest {})", fmt_dur(m.longest_reply_gap_ms)),
                },
                m.rtt_p50_ms.map_or("-".into(), fmt_dur),
                m.rtt_p99_ms.map_or("-".into(), fmt_dur),
                m.rtt_max_ms.map_or("-".into(), fmt_dur),
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="{}" font-size="17" font-weight="bold">{name}</text><text x="{}" y="{}" font-size="13" fill="#333">{}</text>"##,
        y0 + 14.0,
        LEFT + 130.0,
        y0 + 14.0,
        esc(&sub)
    );

    // Y: log10 RTT in ms.
    let rtts: Vec<f64> = recs
        .iter()
        .filter_map(|r| r.rtt_ns())
        .map(|n| (n as f64 / 1e6).max(0.001))
        .collect();
    let lo = rtts.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = rtts.iter().cloned().fold(0.0f64, f64::max);
    let (dlo, dhi) = if rtts.is_empty() {
        (-1.0, 1.0)
    } else {
        let dlo = lo.log10().floor();
        let dhi = hi.log10().ceil().max(dlo + 1.0);
        (dlo, dhi)
    };
    let y_of =
        |ms: f64| plot_bot - ((ms.max(1e-3).log10() - dlo) / (dhi - dlo)).clamp(0.0, 1.0) * ph;

    // Frame and grid.
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{plot_top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#888"/>"##
    );
    let mut d = dlo;
    while d <= dhi + 1e-9 {
        let v = 10f64.powf(d);
        let y = y_of(v);
        let label = if v >= 1000.0 {
            format!("{} s", v / 1000.0)
        } else if v >= 1.0 {
            format!("{v} ms")
        } else {
            format!("{} µs", (v * 1000.0).round())
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="12" text-anchor="end">{label}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r##"<text transform="translate({},{}) rotate(-90)" font-size="13" text-anchor="middle">RTT (log)</text>"##,
        22.0,
        (plot_top + plot_bot) / 2.0
    );
    let step = nice_step(span / 1e9, 12.0);
    let mut t = 0.0;
    while t <= span / 1e9 + 1e-9 {
        let x = x_of(t_start_ns + (t * 1e9) as i64);
        let _ = writeln!(
            s,
            r##"<line x1="{x}" x2="{x}" y1="{plot_top}" y2="{}" stroke="#e4e4e4"/><text x="{x}" y="{}" font-size="12" text-anchor="middle">{}</text>"##,
            lane_y + 2.0 * LANE_H,
            lane_y + 2.0 * LANE_H + 16.0,
            tick_label(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" font-size="13" text-anchor="end">time since start (s, by send time)</text>"##,
        LEFT + pw,
        lane_y + 2.0 * LANE_H + 32.0
    );
    // Lanes for lost and failed.
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="end">lost</text><text x="{}" y="{}" font-size="11" text-anchor="end">failed</text>"##,
        LEFT - 6.0,
        lane_y + LANE_H - 3.0,
        LEFT - 6.0,
        lane_y + 2.0 * LANE_H - 3.0
    );

    // Gaps first (under the data).
    let mut labels: Vec<(f64, f64, String, &str)> = Vec::new();
    for g in &a.reply_gaps {
        let (x1, x2) = (x_of(g.start_ns), x_of(g.end_ns));
        let _ = writeln!(
            s,
            r##"<rect x="{x1}" y="{plot_top}" width="{}" height="{ph}" fill="#e8231f" fill-opacity="0.16" stroke="#e8231f" stroke-opacity="0.7"/>"##,
            (x2 - x1).max(1.5)
        );
        labels.push((
            x1,
            x2,
            format!("reply gap {}", fmt_dur(g.duration_ns as f64 / 1e6)),
            "#b3140f",
        ));
    }
    for g in &a.loss_windows {
        let (x1, x2) = (x_of(g.start_ns), x_of(g.end_ns));
        let _ = writeln!(
            s,
            r##"<rect x="{x1}" y="{}" width="{}" height="7" fill="#f28c00"/>"##,
            plot_top + 2.0,
            (x2 - x1).max(1.5)
        );
        labels.push((
            x1,
            x2,
            format!("loss window {}", fmt_dur(g.duration_ns as f64 / 1e6)),
            "#a85f00",
        ));
    }

    // Data: per pixel column, min..max RTT of ok and of late replies; lost / failed ticks.
    let cols = pw.ceil() as usize + 1;
    let mut ok_mm = vec![(f64::INFINITY, 0.0f64); cols];
    let mut late_mm = vec![(f64::INFINITY, 0.0f64); cols];
    let mut lost = vec![false; cols];
    let mut failed = vec![false; cols];
    for r in recs {
        let c = ((x_of(r.sent_ns) - LEFT).round() as usize).min(cols - 1);
        let v = p.map(|p| verdict(r, &p));
        match (r.outcome, r.rtt_ns()) {
            (Outcome::Ok, Some(rtt)) => {
                let ms = rtt as f64 / 1e6;
                let mm = if v.is_some_and(|v| v.late) {
                    &mut late_mm[c]
                } else {
                    &mut ok_mm[c]
                };
                mm.0 = mm.0.min(ms);
                mm.1 = mm.1.max(ms);
            }
            (Outcome::Failed, _) => failed[c] = true,
            _ => {
                if v.is_none_or(|v| v.lost) {
                    lost[c] = true;
                }
            }
        }
    }
    for (mm, color) in [(&ok_mm, "#1f5fbf"), (&late_mm, "#9b30c8")] {
        let mut path = String::new();
        for (c, &(lo, hi)) in mm.iter().enumerate() {
            if lo.is_finite() {
                let x = LEFT + c as f64;
                let (y1, y2) = (y_of(lo) + 1.2, y_of(hi) - 1.2);
                let _ = write!(path, "M{x:.1} {y1:.1}V{y2:.1}");
            }
        }
        if !path.is_empty() {
            let _ = writeln!(
                s,
                r#"<path d="{path}" stroke="{color}" stroke-width="1.6" fill="none"/>"#
            );
        }
    }
    for (flags, y, color) in [
        (&lost, lane_y, "#222"),
        (&failed, lane_y + LANE_H, "#e8231f"),
    ] {
        let mut path = String::new();
        for (c, &f) in flags.iter().enumerate() {
            if f {
                let _ = write!(
                    path,
                    "M{:.1} {:.1}v{}",
                    LEFT + c as f64,
                    y + 1.0,
                    LANE_H - 3.0
                );
            }
        }
        if !path.is_empty() {
            let _ = writeln!(
                s,
                r#"<path d="{path}" stroke="{color}" stroke-width="1.2"/>"#
            );
        }
    }

    // Labels over the data, largest gaps first, stacked when they would overlap.
    labels.sort_by(|a, b| (b.1 - b.0).total_cmp(&(a.1 - a.0)));
    let mut placed: Vec<(f64, f64, usize)> = Vec::new();
    for (x1, x2, text, color) in labels.into_iter().take(40) {
        let w = text.chars().count() as f64 * 7.6 + 10.0;
        let cx = ((x1 + x2) / 2.0).clamp(LEFT + w / 2.0, LEFT + pw - w / 2.0);
        let mut row = 0;
        while placed
            .iter()
            .any(|&(a, b, r)| r == row && cx - w / 2.0 < b && cx + w / 2.0 > a)
        {
            row += 1;
        }
        if row > 6 {
            continue;
        }
        placed.push((cx - w / 2.0, cx + w / 2.0, row));
        let y = plot_top + 26.0 + row as f64 * 20.0;
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{}" width="{w}" height="18" rx="3" fill="white" fill-opacity="0.9" stroke="{color}"/><text x="{cx}" y="{}" font-size="13" font-weight="bold" fill="{color}" text-anchor="middle">{}</text>"##,
            cx - w / 2.0,
            y - 13.0,
            y,
            esc(&text)
        );
    }
    let _ = (GapKind::ReplyGap, rep);
}

/// Rasterises `svg` to a PNG at `path` with the system fonts.
pub fn png(svg: &str, path: &Path) -> Result<(), String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    if opt.fontdb.is_empty() {
        return Err("no system fonts found for the PNG labels (install fonts-dejavu-core)".into());
    }
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("SVG not understood: {e}"))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| "empty plot".to_string())?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .save_png(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
