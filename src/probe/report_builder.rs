//! One target's report, built the same way whether its records come from a live run or from a
//! capture (`--pcap-only`): every layer analysed with the run's [`Params`], the warnings every
//! report owes, then CSV, SVG/PNG and the JSON (last, listing the others) written to its folder.

use super::analysis::{self, LayerAnalysis, Params};
use super::capture::CaptureInfo;
use super::pacer::{self, PacerStats};
use super::report::{self, Files, LayerOut, ParamsOut, Report, TargetOut};
use super::{Layer, ProbeRecord, TimeBase};
use crate::hep::mirror::HepStats;
use crate::shutdown::StopReason;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Where the records came from, and what only that kind of run knows.
// One per report, moved once: boxing the live variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Origin {
    Live {
        stop_reason: StopReason,
        pacer: PacerStats,
        capture: Option<CaptureInfo>,
        hep: Option<HepStats>,
    },
    /// Rebuilt from this capture file.
    Capture(PathBuf),
}

/// The run as a whole, beside its layers.
pub struct RunInfo {
    pub origin: Origin,
    pub target: TargetOut,
    /// The span of the run, ns since the time base.
    pub start_ns: i64,
    pub end_ns: i64,
    /// Warnings of the run so far (setup, capture, HEP; a capture's reading).
    pub warnings: Vec<String>,
}

/// Collects a target's layers, then writes its files.
pub struct ReportBuilder<'r> {
    tb: TimeBase,
    params: Params,
    layers: Vec<LayerOut>,
    analyses: Vec<LayerAnalysis>,
    /// Live runs hand over their snapshots; a capture lends the records it holds.
    records: Vec<Cow<'r, [ProbeRecord]>>,
}

impl<'r> ReportBuilder<'r> {
    pub fn new(tb: TimeBase, params: Params) -> ReportBuilder<'r> {
        ReportBuilder {
            tb,
            params,
            layers: Vec::new(),
            analyses: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Analyses one layer; the caller fills in what it alone knows (counters, TCP figures...)
    /// in the [`LayerOut`] returned.
    pub fn layer(
        &mut self,
        layer: Layer,
        records: impl Into<Cow<'r, [ProbeRecord]>>,
        receive_timestamps: &str,
        socket: &str,
    ) -> &mut LayerOut {
        let records = records.into();
        let a = analysis::analyze(layer, &records, &self.params);
        self.layers
            .push(LayerOut::new(&a, &self.tb, receive_timestamps, socket));
        self.analyses.push(a);
        self.records.push(records);
        self.layers.last_mut().expect("just pushed")
    }

    /// The report, before any file is written.
    fn report(&mut self, run: RunInfo) -> Report {
        let mut warnings = run.warnings;
        warnings.extend(clock_step_warnings(&self.layers));
        let (mode, source, stop_reason, pacer, capture, hep) = match run.origin {
            Origin::Live {
                stop_reason,
                pacer,
                capture,
                hep,
            } => {
                if pacer.skipped_ticks > 0 {
                    warnings.push(format!(
                        "the prober itself was stalled for more than {} ms; {} ticks were skipped",
                        pacer::MAX_BEHIND_NS / 1_000_000,
                        pacer.skipped_ticks
                    ));
                }
                let stop = format!("{stop_reason:?}").to_lowercase();
                ("live", None, stop, Some(pacer), capture, hep)
            }
            Origin::Capture(file) => (
                "pcap",
                Some(file.display().to_string()),
                "capture".to_string(),
                None,
                None,
                None,
            ),
        };
        let pcap = capture
            .as_ref()
            .and_then(|c| c.file.as_ref())
            .map(|f| f.display().to_string());
        Report {
            tool: "imsprobe",
            version: env!("CARGO_PKG_VERSION"),
            mode,
            source,
            target: run.target,
            started_utc: self.tb.label(run.start_ns),
            ended_utc: self.tb.label(run.end_ns),
            duration_s: (run.end_ns - run.start_ns) as f64 / 1e9,
            stop_reason,
            params: ParamsOut::new(&self.params),
            layers: std::mem::take(&mut self.layers),
            pacer,
            capture,
            warnings,
            files: Files {
                pcap,
                ..Files::default()
            },
            hep,
        }
    }

    /// Writes CSV, SVG/PNG (with `plot`) and the JSON into `dir`, and returns the report.
    pub fn write(mut self, run: RunInfo, dir: &Path, plot: bool) -> anyhow::Result<Report> {
        let mut rep = self.report(run);
        let sets: Vec<(&[ProbeRecord], Params)> =
            self.records.iter().map(|r| (&r[..], self.params)).collect();
        write_outputs(dir, &mut rep, &sets, &self.analyses, &self.tb, plot)?;
        Ok(rep)
    }
}

/// A realtime clock step while replies were read, per layer whose counters saw one.
fn clock_step_warnings(layers: &[LayerOut]) -> Vec<String> {
    layers
        .iter()
        .filter_map(|lo| {
            let c = lo.counters.as_ref()?;
            (c.clock_steps > 0 || c.negative_rtts > 0).then(|| {
                format!(
                    "{}: the realtime clock stepped while replies were being read: {} kernel \
                     stamps replaced by the read time, {} replies stamped before their request \
                     (kept for gaps, left out of RTT figures)",
                    lo.layer.as_str(),
                    c.clock_steps,
                    c.negative_rtts
                )
            })
        })
        .collect()
}

/// Writes CSV, SVG/PNG and JSON (last, listing the others) into `dir`.
fn write_outputs(
    dir: &Path,
    rep: &mut Report,
    records: &[(&[ProbeRecord], Params)],
    analyses: &[LayerAnalysis],
    tb: &TimeBase,
    plot: bool,
) -> anyhow::Result<()> {
    let csv = dir.join("probes.csv");
    report::write_csv(&csv, records, tb)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", csv.display()))?;
    rep.files.csv = Some(csv.display().to_string());
    if plot {
        let svg_path = dir.join("timeline.svg");
        let svg = super::plot::svg(rep, records, analyses);
        std::fs::write(&svg_path, &svg)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", svg_path.display()))?;
        rep.files.svg = Some(svg_path.display().to_string());
        let png_path = dir.join("timeline.png");
        match crate::chart::png(&svg, &png_path) {
            Ok(()) => rep.files.png = Some(png_path.display().to_string()),
            Err(e) => rep.warnings.push(format!("no PNG plot: {e:#}")),
        }
    }
    let json = dir.join("report.json");
    rep.files.json = Some(json.display().to_string());
    report::write_json(&json, rep)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", json.display()))?;
    Ok(())
}
