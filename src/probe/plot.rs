//! Timeline plot: one panel per layer, RTT over send time on a log scale (min..max per pixel
//! column, so a million probes still draw as a few thousand lines), lost and failed probes as
//! ticks in a lane under the axis, reply gaps shaded red and loss windows as orange bars, each
//! labelled with its duration. Drawn with [`crate::chart`].

use super::analysis::{verdict, Gap, LayerAnalysis, Params};
use super::report::{Report, SummaryOut};
use super::{Layer, Outcome, ProbeRecord};
use crate::chart::legend::{self, Entry, Swatch};
use crate::chart::{axis, Callout, Doc, Paint, Panel, Scale, Text};

const W: f64 = 1600.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 92.0;
const PANEL_H: f64 = 330.0;
const PANEL_GAP: f64 = 70.0;
const LANE_H: f64 = 14.0;

const RTT: &str = "#1f5fbf";
const LATE: &str = "#9b30c8";
const LOST: &str = "#222";
const RED: &str = "#e8231f";
const ORANGE: &str = "#f28c00";

fn fmt_dur(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.3} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn rtt_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms} ms")
    } else {
        format!("{} µs", (ms * 1000.0).round())
    }
}

/// The SVG document for `rep`.
pub fn svg(
    rep: &Report,
    records: &[(&[ProbeRecord], Params)],
    analyses: &[LayerAnalysis],
) -> String {
    let n = analyses.len().max(1) as f64;
    let mut doc = Doc::new(W, TOP + n * PANEL_H + (n - 1.0) * PANEL_GAP + 60.0);
    // The x range: first send .. last send or reply.
    let all = || records.iter().flat_map(|(r, _)| r.iter());
    let t_end_ns = all()
        .map(|x| x.received_ns.unwrap_or(x.sent_ns).max(x.sent_ns))
        .max()
        .unwrap_or(0)
        .max(1);
    let t_start_ns = all()
        .map(|x| x.sent_ns)
        .min()
        .unwrap_or(0)
        .min(t_end_ns - 1);
    header(&mut doc, rep);
    for (i, a) in analyses.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + PANEL_GAP);
        let recs: Vec<&ProbeRecord> = all().filter(|r| r.layer == a.layer).collect();
        let p = records.first().map(|(_, p)| *p);
        let summary = rep
            .layers
            .iter()
            .find(|l| l.layer == a.layer)
            .map(|l| &l.summary);
        layer_panel(&mut doc, a, summary, &recs, p, y0, (t_start_ns, t_end_ns));
    }
    doc.finish()
}

fn header(doc: &mut Doc, rep: &Report) {
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
    doc.text(
        Text::at(LEFT, 30.0, 22.0).bold(),
        &format!("imsprobe · {name} · {}", rep.started_utc),
    );
    doc.text(
        Text::at(LEFT, 54.0, 14.0).fill("#444"),
        &format!(
            "{} probes/s per layer · timeout {} · late above {} · gaps ≥ {} · {} · {:.1} s",
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
        ),
    );
    legend::row(
        doc,
        LEFT,
        74.0,
        &[
            Entry::new("RTT (min–max per pixel)", RTT, Swatch::Band),
            Entry::new("late reply", LATE, Swatch::Band),
            Entry::new("lost", LOST, Swatch::Tick),
            Entry::new("failed (non-2xx / ICMP error)", RED, Swatch::Tick),
            Entry::new("reply gap", RED, Swatch::Shade),
            Entry::new("loss window", ORANGE, Swatch::Bar),
        ],
    );
}

fn summary_line(m: &SummaryOut) -> String {
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
}

/// One layer's panel at page y `y0`; x is ns since the time base over `span`.
fn layer_panel(
    doc: &mut Doc,
    a: &LayerAnalysis,
    summary: Option<&SummaryOut>,
    recs: &[&ProbeRecord],
    p: Option<Params>,
    y0: f64,
    (t0, t1): (i64, i64),
) {
    let name = match a.layer {
        Layer::Sip => "SIP OPTIONS",
        Layer::Icmp => "ICMP echo",
        Layer::Diameter => "Diameter DWR",
    };
    doc.text(Text::at(LEFT, y0 + 14.0, 17.0).bold(), name);
    doc.text(
        Text::at(LEFT + 130.0, y0 + 14.0, 13.0).fill("#333"),
        &summary.map(summary_line).unwrap_or_default(),
    );
    let top = y0 + 26.0;
    let bottom = y0 + PANEL_H - 2.0 * LANE_H - 34.0;
    let panel = Panel {
        x: LEFT,
        y: top,
        w: W - LEFT - RIGHT,
        h: bottom - top,
        // Seconds since the first send; ms on the y axis.
        xs: Scale::linear(0.0, (t1 - t0) as f64 / 1e9),
        ys: Scale::log_covering(
            recs.iter()
                .filter_map(|r| r.rtt_ns())
                .map(|n| (n as f64 / 1e6).max(0.001)),
        ),
    };
    // Spans open at either end of the run stop at the frame.
    let secs = |ns: i64| ((ns - t0) as f64 / 1e9).clamp(0.0, (t1 - t0) as f64 / 1e9);
    let lane_y = bottom + 6.0;
    let lanes_h = 2.0 * LANE_H;

    // Frame, grid, axes.
    panel.frame(doc, Paint::outline("#888").with_fill("#fafafa"));
    panel.y_grid(doc, &panel.ys.ticks(0.0), rtt_label, "#ddd", 12.0);
    panel.y_title(doc, 22.0, "RTT (log)");
    let step = panel.xs.step(12.0);
    let ticks = panel.xs.ticks(12.0);
    panel.x_grid(doc, &ticks, "#e4e4e4", 6.0 + lanes_h);
    panel.x_labels(
        doc,
        &ticks,
        |t| axis::tick_label(t, step),
        6.0 + lanes_h + 16.0,
        12.0,
    );
    doc.text(
        Text::at(panel.right(), lane_y + lanes_h + 32.0, 13.0).end(),
        "time since start (s, by send time)",
    );
    doc.text(
        Text::at(LEFT - 6.0, lane_y + LANE_H - 3.0, 11.0).end(),
        "lost",
    );
    doc.text(
        Text::at(LEFT - 6.0, lane_y + lanes_h - 3.0, 11.0).end(),
        "failed",
    );

    // Gaps first (under the data), their labels last (over it).
    let callouts = spans(doc, &panel, a, &secs);
    let c = Columns::of(&panel, recs, p, &secs);
    panel.ranges(doc, &c.ok, 1.2, Paint::stroke(RTT, 1.6));
    panel.ranges(doc, &c.late, 1.2, Paint::stroke(LATE, 1.6));
    let tick = LANE_H - 3.0;
    panel.lane(doc, &c.lost, lane_y + 1.0, tick, Paint::stroke(LOST, 1.2));
    panel.lane(
        doc,
        &c.failed,
        lane_y + LANE_H + 1.0,
        tick,
        Paint::stroke(RED, 1.2),
    );
    panel.callouts(doc, callouts);
}

/// Reply gaps shaded over the panel and loss windows as bars along its top; their labels.
fn spans(
    doc: &mut Doc,
    panel: &Panel,
    a: &LayerAnalysis,
    secs: &dyn Fn(i64) -> f64,
) -> Vec<Callout> {
    let mut callouts = Vec::new();
    let label = |g: &Gap, what: &str, color| Callout {
        x1: panel.px(secs(g.start_ns)),
        x2: panel.px(secs(g.end_ns)),
        text: format!("{what} {}", fmt_dur(g.duration_ns as f64 / 1e6)),
        color,
    };
    for g in &a.reply_gaps {
        let c = label(g, "reply gap", "#b3140f");
        let shade = Paint::fill(RED)
            .fill_opacity(0.16)
            .with_stroke(RED)
            .stroke_opacity(0.7);
        panel.span(doc, c.x1, c.x2, shade);
        callouts.push(c);
    }
    for g in &a.loss_windows {
        let c = label(g, "loss window", "#a85f00");
        panel.band(doc, c.x1, c.x2, 2.0, 7.0, Paint::fill(ORANGE));
        callouts.push(c);
    }
    callouts
}

/// The probes binned per pixel column: min..max RTT of ok and of late replies, and whether
/// any was lost or failed.
struct Columns {
    ok: Vec<(f64, f64)>,
    late: Vec<(f64, f64)>,
    lost: Vec<bool>,
    failed: Vec<bool>,
}

impl Columns {
    fn of(
        panel: &Panel,
        recs: &[&ProbeRecord],
        p: Option<Params>,
        secs: &dyn Fn(i64) -> f64,
    ) -> Columns {
        let n = panel.columns();
        let mut c = Columns {
            ok: vec![(f64::INFINITY, 0.0); n],
            late: vec![(f64::INFINITY, 0.0); n],
            lost: vec![false; n],
            failed: vec![false; n],
        };
        for r in recs {
            let i = panel.column_of(secs(r.sent_ns));
            let v = p.map(|p| verdict(r, &p));
            match (r.outcome, r.rtt_ns()) {
                (Outcome::Ok, Some(rtt)) => {
                    let ms = rtt as f64 / 1e6;
                    let mm = if v.is_some_and(|v| v.late) {
                        &mut c.late[i]
                    } else {
                        &mut c.ok[i]
                    };
                    mm.0 = mm.0.min(ms);
                    mm.1 = mm.1.max(ms);
                }
                (Outcome::Failed, _) => c.failed[i] = true,
                _ => {
                    if v.is_none_or(|v| v.lost) {
                        c.lost[i] = true;
                    }
                }
            }
        }
        c
    }
}
