//! Records of a run: the JSON report, the per-probe CSV, the console summary. Written the same way
//! for live runs and for `--pcap-only`.

use super::analysis::{verdict, Gap, GapKind, LayerAnalysis, Params};
use super::{Layer, ProbeRecord, TimeBase};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

#[derive(Clone, Debug, Serialize)]
pub struct GapOut {
    pub layer: Layer,
    pub kind: GapKind,
    pub start_utc: String,
    pub end_utc: String,
    /// Seconds since the run's start (the plot's x axis).
    pub start_s: f64,
    pub end_s: f64,
    pub duration_ms: f64,
    pub error_bound_ms: f64,
    pub open_start: bool,
    pub open_end: bool,
    pub probes_lost: u64,
    pub failed_replies: u64,
    pub late_replies: u64,
    pub answered_after: u64,
    pub loss_estimate_ms: Option<f64>,
    pub max_rtt_ms: Option<f64>,
    /// Reply gaps: the longest interval between consecutive probes sent over the span; near
    /// `duration_ms`, the gap was the prober's own stall.
    pub max_send_interval_ms: f64,
}

impl GapOut {
    pub fn new(g: &Gap, tb: &TimeBase) -> GapOut {
        GapOut {
            layer: g.layer,
            kind: g.kind,
            start_utc: tb.label(g.start_ns),
            end_utc: tb.label(g.end_ns),
            start_s: g.start_ns as f64 / 1e9,
            end_s: g.end_ns as f64 / 1e9,
            duration_ms: ms(g.duration_ns),
            error_bound_ms: ms(g.error_bound_ns),
            open_start: g.open_start,
            open_end: g.open_end,
            probes_lost: g.probes_lost,
            failed_replies: g.failed_replies,
            late_replies: g.late_replies,
            answered_after: g.answered_after,
            loss_estimate_ms: (g.kind == GapKind::LossWindow).then(|| ms(g.loss_estimate_ns)),
            max_rtt_ms: g.max_rtt_ns.map(ms),
            max_send_interval_ms: ms(g.max_send_interval_ns),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SummaryOut {
    pub sent: u64,
    pub ok: u64,
    pub ok_after_timeout: u64,
    pub failed: u64,
    pub lost: u64,
    pub send_errors: u64,
    pub pending: u64,
    pub late: u64,
    pub availability_pct: f64,
    pub reply_gaps: usize,
    pub loss_windows: usize,
    pub longest_reply_gap_ms: f64,
    pub longest_loss_window_ms: f64,
    pub max_reply_interval_ms: f64,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    pub send_interval_jitter_p99_us: Option<f64>,
    pub achieved_rate: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerOut {
    pub layer: Layer,
    pub summary: SummaryOut,
    pub reply_gaps: Vec<GapOut>,
    pub loss_windows: Vec<GapOut>,
    /// Where receive times come from: `kernel` (SO_TIMESTAMPNS), `userspace`, `capture`.
    pub receive_timestamps: String,
    /// Socket details (`udp`, `tcp`, `icmp-datagram`, `icmp-raw`, `pcap`).
    pub socket: String,
    /// Identity of the probe stream in a capture: the ICMP echo id (raw sockets; datagram ICMP
    /// sockets get theirs from the kernel) or the local `ip:port` of the SIP socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_id: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_local: Option<String>,
    /// Counted, not recorded per probe: duplicates, malformed and foreign datagrams...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<super::table::Counters>,
    /// SIP or Diameter over TCP: connects, reconnects, connection losses, probes sent while down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<super::tcp::TcpStats>,
    /// Diameter: the Origin-Host the probe announced (how its DWRs are found in a capture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diameter_origin_host: Option<String>,
    /// Diameter: what each probe asked (`DWR`, or `UAR <impi> <impu>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diameter_request: Option<String>,
}

impl LayerOut {
    pub fn new(
        a: &LayerAnalysis,
        tb: &TimeBase,
        receive_timestamps: &str,
        socket: &str,
    ) -> LayerOut {
        let s = &a.summary;
        LayerOut {
            layer: a.layer,
            summary: SummaryOut {
                sent: s.sent,
                ok: s.ok,
                ok_after_timeout: s.ok_after_timeout,
                failed: s.failed,
                lost: s.lost,
                send_errors: s.send_errors,
                pending: s.pending,
                late: s.late,
                availability_pct: s.availability_pct,
                reply_gaps: s.reply_gaps,
                loss_windows: s.loss_windows,
                longest_reply_gap_ms: ms(s.longest_reply_gap_ns),
                longest_loss_window_ms: ms(s.longest_loss_window_ns),
                max_reply_interval_ms: ms(s.max_reply_interval_ns),
                rtt_p50_ms: s.rtt_p50_ns.map(ms),
                rtt_p99_ms: s.rtt_p99_ns.map(ms),
                rtt_max_ms: s.rtt_max_ns.map(ms),
                send_interval_jitter_p99_us: s.send_interval_jitter_p99_ns.map(|n| n as f64 / 1e3),
                achieved_rate: s.achieved_rate,
            },
            reply_gaps: a.reply_gaps.iter().map(|g| GapOut::new(g, tb)).collect(),
            loss_windows: a.loss_windows.iter().map(|g| GapOut::new(g, tb)).collect(),
            receive_timestamps: receive_timestamps.into(),
            socket: socket.into(),
            icmp_id: None,
            sip_local: None,
            counters: None,
            tcp: None,
            diameter_origin_host: None,
            diameter_request: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetOut {
    pub name: String,
    pub host: String,
    /// SIP port and transport, when SIP was probed.
    pub sip_port: Option<u16>,
    pub transport: Option<String>,
    /// Diameter port, when Diameter was probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diameter_port: Option<u16>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ParamsOut {
    pub rate: f64,
    pub interval_ms: f64,
    pub timeout_ms: f64,
    pub late_rtt_ms: f64,
    pub min_gap_ms: f64,
}

impl ParamsOut {
    pub fn new(p: &Params) -> ParamsOut {
        ParamsOut {
            rate: 1e9 / p.interval_ns.max(1) as f64,
            interval_ms: ms(p.interval_ns),
            timeout_ms: ms(p.timeout_ns),
            late_rtt_ms: ms(p.late_rtt_ns),
            min_gap_ms: ms(p.min_gap_ns),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Files {
    pub json: Option<String>,
    pub csv: Option<String>,
    pub svg: Option<String>,
    pub png: Option<String>,
    pub pcap: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// `live` or `pcap` (recomputed from a capture).
    pub mode: &'static str,
    pub source: Option<String>,
    pub target: TargetOut,
    pub started_utc: String,
    pub ended_utc: String,
    pub duration_s: f64,
    pub stop_reason: String,
    pub params: ParamsOut,
    pub layers: Vec<LayerOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacer: Option<super::pacer::PacerStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<super::capture::CaptureInfo>,
    pub warnings: Vec<String>,
    pub files: Files,
    /// `--hep`: SIP probe copies mirrored, dropped, refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hep: Option<crate::hep::mirror::HepStats>,
}

/// Writes `value` as pretty JSON to `path` atomically (temp file + rename): a reader never sees
/// half a report.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, value)?;
        f.write_all(b"\n")?;
        f.flush()?;
        f.get_ref().sync_all()?;
    }
    std::fs::rename(tmp, path)
}

pub const CSV_HEADER: &str =
    "layer,seq,sent_utc,sent_s,received_utc,received_s,rtt_ms,outcome,code,late";

/// One row per probe, layers in order, each by sequence number.
pub fn write_csv(
    path: &Path,
    layers: &[(&[ProbeRecord], Params)],
    tb: &TimeBase,
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(f, "{CSV_HEADER}")?;
    for (recs, p) in layers {
        let mut v: Vec<&ProbeRecord> = recs.iter().collect();
        v.sort_by_key(|r| (r.layer, r.seq));
        for r in v {
            let late = verdict(r, p).late;
            write!(
                f,
                "{},{},{},{:.9},",
                r.layer.as_str(),
                r.seq,
                tb.label(r.sent_ns),
                r.sent_ns as f64 / 1e9
            )?;
            match (r.received_ns, r.rtt_ns()) {
                (Some(t), Some(rtt)) => write!(
                    f,
                    "{},{:.9},{:.6},",
                    tb.label(t),
                    t as f64 / 1e9,
                    rtt as f64 / 1e6
                )?,
                // Stamped before its request: no RTT rather than a made-up 0.
                (Some(t), None) => write!(f, "{},{:.9},,", tb.label(t), t as f64 / 1e9)?,
                (None, _) => write!(f, ",,,")?,
            }
            writeln!(f, "{},{},{}", r.outcome.as_str(), r.code, late as u8)?;
        }
    }
    f.flush()
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

/// The end-of-run summary for the console.
pub fn summary_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== {} ({}{}{}) {} .. {}  {:.1} s  rate {}/s  stop: {}",
        r.target.name,
        // host:port, with an IPv6 host in brackets (RFC 3986), or the bare host.
        match (r.target.host.parse::<std::net::IpAddr>(), r.target.sip_port) {
            (Ok(ip), Some(p)) => std::net::SocketAddr::new(ip, p).to_string(),
            (_, Some(p)) => format!("{}:{p}", r.target.host),
            (_, None) => r.target.host.clone(),
        },
        r.target
            .transport
            .as_ref()
            .map(|t| format!(" {t}"))
            .unwrap_or_default(),
        r.target
            .diameter_port
            .map(|p| format!(", diameter port {p}"))
            .unwrap_or_default(),
        r.started_utc,
        r.ended_utc,
        r.duration_s,
        r.params.rate.round(),
        r.stop_reason
    );
    let _ = writeln!(
        s,
        "  {:<5} {:>9} {:>9} {:>6} {:>6} {:>7} {:>9} {:>5} {:>12} {:>5} {:>12} {:>26}",
        "layer",
        "sent",
        "ok",
        "late",
        "failed",
        "lost",
        "avail%",
        "gaps",
        "longest ms",
        "lossw",
        "longest ms",
        "rtt p50/p99/max ms"
    );
    for l in &r.layers {
        let m = &l.summary;
        let _ =
            writeln!(
            s,
            "  {:<5} {:>9} {:>9} {:>6} {:>6} {:>7} {:>9.4} {:>5} {:>12.3} {:>5} {:>12.3} {:>26}",
            l.layer.as_str(),
            m.sent,
            m.ok,
            m.late,
            m.failed,
            m.lost,
            m.availability_pct,
            m.reply_gaps,
            m.longest_reply_gap_ms,
            m.loss_windows,
            m.longest_loss_window_ms,
            format!("{}/{}/{}", opt_ms(m.rtt_p50_ms), opt_ms(m.rtt_p99_ms), opt_ms(m.rtt_max_ms)),
        );
    }
    for l in &r.layers {
        for g in l.reply_gaps.iter().chain(&l.loss_windows) {
            let _ = writeln!(
                s,
                "  {} {:<11} {} -> {}  {:>10.3} ms ±{:.3}{}{}  lost {} failed {} late {} burst {}{} max rtt {} ms",
                l.layer.as_str(),
                match g.kind {
                    GapKind::ReplyGap => "reply gap",
                    GapKind::LossWindow => "loss window",
                },
                g.start_utc,
                g.end_utc,
                g.duration_ms,
                g.error_bound_ms,
                if g.open_start { " (open start)" } else { "" },
                if g.open_end { " (open end)" } else { "" },
                g.probes_lost,
                g.failed_replies,
                g.late_replies,
                g.answered_after,
                g.loss_estimate_ms.map(|e| format!(" loss est {e:.3} ms")).unwrap_or_default(),
                opt_ms(g.max_rtt_ms),
            );
        }
    }
    for l in &r.layers {
        if let Some(t) = &l.tcp {
            let _ = writeln!(
                s,
                "  {} tcp: {} connection loss(es), {} reconnect(s), {} failed reconnect attempt(s), {} probes sent while down, {} writes would block",
                l.layer.as_str(),
                t.connection_losses,
                t.reconnects,
                t.failed_reconnects,
                t.sent_while_down,
                t.would_block
            );
        }
    }
    if let Some(h) = &r.hep {
        let _ = writeln!(s, "  {}", h.line());
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    s
}
