//! `--pcap-only`: the gap report recomputed from a capture (ours, or any pcap/pcapng such as
//! tshark's), with no probing. Every destination of probes in it is a target; each gets the
//! report a live run writes, built by the same [`ReportBuilder`].

// The doc comments of the arguments are their --help text, in clap's form (`[default: …]`,
// `<realm>`), not rustdoc's.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use super::analysis::{self, Params};
use super::pcapread::{self, CapturedTarget, PcapStats};
use super::report::{Report, TargetOut};
use super::report_builder::{Origin, ReportBuilder, RunInfo};
use super::Layer;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `--pcap-only` reads and how it judges the probes it finds.
#[derive(Clone, Debug)]
pub struct OfflineConfig {
    pub file: PathBuf,
    /// Only the probes to this host.
    pub host: Option<IpAddr>,
    /// Probes per second per layer; `None`: estimated from the capture.
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub late_rtt: Duration,
    pub min_gap: Duration,
    /// Output directory [default: `<file stem>-analysis` beside the capture]; with several
    /// targets each gets a subdirectory.
    pub out: Option<PathBuf>,
    pub plot: bool,
}

/// One target's report and where its files are.
pub struct OfflineResult {
    pub dir: PathBuf,
    pub report: Report,
}

/// Reads the capture and writes a report per target found in it, handing each to `each` as
/// soon as its files are written.
pub fn analyse(cfg: &OfflineConfig, mut each: impl FnMut(&OfflineResult)) -> anyhow::Result<()> {
    let file = &cfg.file;
    let cap = pcapread::read(file, cfg.host)?;
    let targets: Vec<&CapturedTarget> = cap
        .targets
        .iter()
        .filter(|t| !t.sip.is_empty() || !t.icmp.is_empty() || !t.diameter.is_empty())
        .collect();
    anyhow::ensure!(
        !targets.is_empty(),
        "{} holds no SIP OPTIONS (over UDP or TCP), no ICMP echo requests and no imsprobe \
         Diameter watchdogs or UARs{} ({} packets read)",
        file.display(),
        cfg.host.map(|h| format!(" to {h}")).unwrap_or_default(),
        cap.stats.packets
    );
    let base_out = cfg.out.clone().unwrap_or_else(|| default_out(file));
    for t in &targets {
        let dir = if targets.len() == 1 {
            base_out.clone()
        } else {
            base_out.join(t.host.replace(':', "_"))
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e} (use --out DIR)", dir.display()))?;
        let report = target_report(cfg, t, &cap.stats, cap.time_base, &dir)?;
        each(&OfflineResult { dir, report });
    }
    Ok(())
}

fn default_out(file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "capture".into());
    file.with_file_name(format!("{stem}-analysis"))
}

fn target_report(
    cfg: &OfflineConfig,
    t: &CapturedTarget,
    stats: &PcapStats,
    tb: super::TimeBase,
    dir: &Path,
) -> anyhow::Result<Report> {
    let layers = [
        (Layer::Sip, &t.sip),
        (Layer::Icmp, &t.icmp),
        (Layer::Diameter, &t.diameter),
    ];
    let interval_ns = match cfg.rate {
        Some(r) => (1e9 / r).round() as i64,
        None => layers
            .iter()
            .filter_map(|(_, v)| analysis::estimate_interval(v))
            .min()
            .unwrap_or(1_000_000),
    };
    let all = || layers.iter().flat_map(|(_, v)| v.iter());
    let start = all().map(|r| r.sent_ns).min().unwrap_or(0);
    let end = all()
        .map(|r| r.received_ns.unwrap_or(r.sent_ns).max(r.sent_ns))
        .max()
        .unwrap_or(0);
    let params = Params {
        interval_ns,
        timeout_ns: cfg.timeout.as_nanos() as i64,
        late_rtt_ns: cfg.late_rtt.as_nanos() as i64,
        min_gap_ns: cfg.min_gap.as_nanos() as i64,
        end_ns: end,
    };
    let mut b = ReportBuilder::new(tb, params);
    for (layer, recs) in layers {
        if !recs.is_empty() {
            b.layer(layer, recs.as_slice(), "capture", "pcap");
        }
    }
    let run = RunInfo {
        origin: Origin::Capture(cfg.file.clone()),
        target: TargetOut {
            name: t.host.clone(),
            host: t.host.clone(),
            sip_port: t.sip_port,
            transport: t.sip_transport.map(str::to_string),
            diameter_port: t.diameter_port,
        },
        start_ns: start,
        end_ns: end,
        warnings: warnings(stats),
    };
    b.write(run, dir, cfg.plot)
}

/// What the reading of the capture leaves uncertain.
fn warnings(st: &PcapStats) -> Vec<String> {
    let mut w = Vec::new();
    if st.unmatched_replies > 0 {
        w.push(format!(
            "{} replies in the capture match no request in it (capture started mid-run, or the requests were not captured)",
            st.unmatched_replies
        ));
    }
    if st.tcp_holes > 0 {
        w.push(format!(
            "the capture missed bytes inside TCP connections (SIP, Diameter) {} times; the messages cut by those holes were skipped",
            st.tcp_holes
        ));
    }
    if st.tcp_unframed > 0 {
        w.push(format!(
            "{} times TCP data could not be framed (bad SIP Content-Length or Diameter length?); the partial messages were skipped",
            st.tcp_unframed
        ));
    }
    for s in &st.ignored_streams {
        w.push(format!(
            "not analysed (a larger stream to the same host was): {s}"
        ));
    }
    w
}
