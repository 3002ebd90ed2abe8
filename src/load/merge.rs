//! `imsload merge`: the reports of a sharded run's shards made into one. Counters are summed;
//! every percentile comes from the shards' histograms added together (HdrHistograms merge by
//! addition, exactly: never an average of percentiles); per-second rows are merged by second
//! of the wall clock, each second's percentiles again from its added histograms. What cannot be
//! merged honestly is named in a warning: shards missing, late to start, or saturated.

use super::control::{CapacityResult, CapacityStep, Handled};
use super::report::{PhaseSummary, PlanReport, Report, SeriesRow, SeriesWriter};
use super::shard::{ShardRow, ShardSection, LATE_S};
use super::stats::{
    decode_histogram, Counters, DelaySummary, EncodedDelays, Gauges, Interval, Rfc6076,
};
use crate::shutdown::StopReason;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why reports could not be merged. Each names the file (and the field) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no reports to merge: give the shards' JSON reports (imsload merge shard-*.json --report all.json)")]
    NoInput,
    // `err`, not `source`: the message already ends with it, and `{:#}` would print it twice.
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}: {why}")]
    Input { path: String, why: String },
}

fn input(path: &str, why: impl Into<String>) -> MergeError {
    MergeError::Input {
        path: path.to_string(),
        why: why.into(),
    }
}

/// What merge reads of a report (`imsload --report`). Fields it does not need are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct ShardReport {
    pub tool: String,
    pub target: String,
    #[serde(default)]
    pub embedded_target: bool,
    pub transport: String,
    pub users: usize,
    pub workers: usize,
    pub started_utc: String,
    pub ended_utc: String,
    pub call_phase_s: f64,
    pub stop_reason: StopReason,
    pub offered_cps: f64,
    pub counters: Counters,
    #[serde(default)]
    pub status_codes: BTreeMap<String, u64>,
    #[serde(default)]
    pub malformed_by_kind: BTreeMap<String, u64>,
    #[serde(default)]
    pub settings: serde_json::Value,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub generator_behind_s: u64,
    #[serde(default)]
    pub plan: Option<PlanReport>,
    #[serde(default)]
    pub histograms: Option<EncodedDelays>,
    #[serde(default)]
    pub shard: Option<ShardSection>,
    #[serde(default)]
    pub merged: Option<serde_json::Value>,
}

/// One report as read, with where it came from (a file, or a line of one).
#[derive(Clone, Debug)]
pub struct Source {
    pub label: String,
    pub report: ShardReport,
}

/// What went into a merged report, in it as `merged`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MergeSection {
    /// The shard count the reports name (the number of reports, for unsharded ones).
    pub shards: u32,
    /// The reports merged, in shard order.
    pub sources: Vec<String>,
    /// Shard indices present, missing, late to start and saturated.
    pub present: Vec<u32>,
    pub missing: Vec<u32>,
    pub late: Vec<u32>,
    pub saturated: Vec<u32>,
}

/// The merged report and its per-second series.
pub struct Merged {
    pub report: Report,
    pub series: Vec<SeriesRow>,
}

/// Reads reports: each file holds one JSON report (`imsload --report FILE`) or lines among
/// which some are reports (`imsload --report -` prints one as a line; `kubectl logs` of an
/// Indexed Job's pods gathers them into one file).
pub fn read_reports(paths: &[PathBuf]) -> Result<Vec<Source>, MergeError> {
    if paths.is_empty() {
        return Err(MergeError::NoInput);
    }
    let mut out = Vec::new();
    for p in paths {
        let path = p.display().to_string();
        let text = std::fs::read_to_string(p).map_err(|err| MergeError::Read {
            path: path.clone(),
            err,
        })?;
        out.extend(parse_reports(&path, &text)?);
    }
    Ok(out)
}

/// [`read_reports`] for one file's text (`path` only names it in errors).
pub fn parse_reports(path: &str, text: &str) -> Result<Vec<Source>, MergeError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
            return Ok(vec![Source {
                label: path.to_string(),
                report: from_value(path, v)?,
            }]);
        }
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if !l.starts_with('{') || !l.contains("\"tool\":\"imsload\"") {
            continue;
        }
        let label = format!("{path}:{}", n + 1);
        let v: serde_json::Value = serde_json::from_str(l)
            .map_err(|e| input(&label, format!("a report line that is not JSON: {e}")))?;
        out.push(Source {
            report: from_value(&label, v)?,
            label,
        });
    }
    if out.is_empty() {
        return Err(input(
            path,
            "holds no imsload report: give the JSON that imsload --report FILE wrote, or a log \
             with the line imsload --report - printed",
        ));
    }
    Ok(out)
}

fn from_value(label: &str, v: serde_json::Value) -> Result<ShardReport, MergeError> {
    if v.get("tool").and_then(|t| t.as_str()) != Some("imsload") {
        return Err(input(
            label,
            "not an imsload report (no \"tool\": \"imsload\"); imsprobe's and serve's reports do not merge",
        ));
    }
    let r: ShardReport = serde_json::from_value(v).map_err(|e| {
        input(
            label,
            format!("not a report this imsload can read: {e} (write it with this version's imsload --report)"),
        )
    })?;
    if r.histograms.is_none() {
        return Err(input(
            label,
            "has no \"histograms\": it was written by an imsload older than `merge`, whose \
             percentiles cannot be merged exactly; run the shards again with this version",
        ));
    }
    if r.merged.is_some() {
        return Err(input(
            label,
            "is a merged report already: merge the shards' own reports instead",
        ));
    }
    Ok(r)
}

fn parse_utc(label: &str, field: &str, s: &str) -> Result<DateTime<Utc>, MergeError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| input(label, format!("{field} {s:?} is not an RFC 3339 time: {e}")))
}

/// The shard index of a source (its position when the reports are not sharded).
fn index_of(s: &Source, pos: usize) -> u32 {
    s.report.shard.as_ref().map_or(pos as u32, |sh| sh.index)
}

/// Merges the reports (see the module comment). Errors are for reports that cannot go together
/// (shard counts that differ, one shard twice, sharded beside unsharded); gaps are warnings.
pub fn merge(mut sources: Vec<Source>) -> Result<Merged, MergeError> {
    if sources.is_empty() {
        return Err(MergeError::NoInput);
    }
    let sharded = sources.iter().filter(|s| s.report.shard.is_some()).count();
    if sharded != 0 && sharded != sources.len() {
        let odd = sources
            .iter()
            .find(|s| s.report.shard.is_none())
            .expect("one is unsharded");
        return Err(input(
            &odd.label,
            "has no \"shard\" section while the other reports do: it is not from this sharded \
             run (give only the reports of runs with --shard/--shards)",
        ));
    }
    let count = match sources[0].report.shard.as_ref() {
        Some(s) => s.count,
        None => sources.len() as u32,
    };
    for s in &sources {
        if let Some(sh) = &s.report.shard {
            if sh.count != count {
                return Err(input(
                    &s.label,
                    format!(
                        "shard.count is {} but {} says {count}: the reports are from different runs \
                         (every shard of one run is given the same --shards N)",
                        sh.count, sources[0].label
                    ),
                ));
            }
        }
    }
    sources.sort_by_key(|s| s.report.shard.as_ref().map(|sh| sh.index));
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for (pos, s) in sources.iter().enumerate() {
        let i = index_of(s, pos);
        if let Some(other) = seen.insert(i, &s.label) {
            return Err(input(
                &s.label,
                format!(
                    "shard.index {i} again ({other} is shard {i} too): each shard is merged once; \
                     drop the duplicate, or check that the pods had distinct JOB_COMPLETION_INDEX"
                ),
            ));
        }
    }
    let starts: Vec<DateTime<Utc>> = sources
        .iter()
        .map(|s| parse_utc(&s.label, "started_utc", &s.report.started_utc))
        .collect::<Result<_, _>>()?;
    let ends: Vec<DateTime<Utc>> = sources
        .iter()
        .map(|s| parse_utc(&s.label, "ended_utc", &s.report.ended_utc))
        .collect::<Result<_, _>>()?;
    let first_start = *starts.iter().min().expect("one source at least");
    let last_end = *ends.iter().max().expect("one source at least");

    let mut section = MergeSection {
        shards: count,
        sources: sources.iter().map(|s| s.label.clone()).collect(),
        present: sources
            .iter()
            .enumerate()
            .map(|(p, s)| index_of(s, p))
            .collect(),
        ..MergeSection::default()
    };
    section.missing = (0..count)
        .filter(|i| !section.present.contains(i))
        .collect();
    let mut warnings = Vec::new();
    if !section.missing.is_empty() {
        warnings.push(format!(
            "shard(s) {} of {count} missing: their users and their share of every rate are not in \
             these figures (each shard is 1/{count} of the run); find their reports (kubectl logs \
             of those pods) or run again",
            list(&section.missing)
        ));
    }
    let mut start_ats = BTreeSet::new();
    for (pos, (s, start)) in sources.iter().zip(&starts).enumerate() {
        let i = index_of(s, pos);
        let late = match s.report.shard.as_ref() {
            Some(sh) if sh.start_at.is_some() => {
                start_ats.insert(sh.start_at.clone().unwrap_or_default());
                sh.late_s
            }
            _ => (*start - first_start)
                .to_std()
                .map_or(0.0, |d| d.as_secs_f64()),
        };
        if late > LATE_S {
            section.late.push(i);
            warnings.push(format!(
                "shard {i} ({}) started {late:.1} s late{}: its seconds fall into later rows of the \
                 merged series and its plan ran behind the others'; give --start-at far enough \
                 ahead for every pod to be up",
                s.label,
                if s.report.shard.as_ref().is_some_and(|sh| sh.start_at.is_some()) {
                    " against --start-at"
                } else {
                    " against the first shard"
                }
            ));
        }
        let c = &s.report.counters;
        if s.report.generator_behind_s > 0 || c.rx_dropped > 0 {
            section.saturated.push(i);
            warnings.push(format!(
                "shard {i} ({}) was saturated or late in {} seconds by its self-check{}: the merged \
                 figures of those seconds say more about that generator than about the target; \
                 give it more CPU or more shards",
                s.label,
                s.report.generator_behind_s,
                if c.rx_dropped > 0 {
                    format!(", and its kernel dropped {} datagrams it read too slowly", c.rx_dropped)
                } else {
                    String::new()
                }
            ));
        }
    }
    if start_ats.len() > 1 {
        warnings.push(format!(
            "the shards were given different --start-at ({}): their seconds do not line up",
            start_ats.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }

    // Totals: counters and maps summed, histograms added.
    let mut total = Interval::default();
    let mut status = BTreeMap::new();
    let mut malformed = BTreeMap::new();
    for s in &sources {
        let r = &s.report;
        total.counters.add(&r.counters);
        let d = r
            .histograms
            .as_ref()
            .expect("checked when read")
            .decode()
            .map_err(|e| input(&s.label, format!("histograms: {e}")))?;
        total.delays.add(&d);
        for (k, v) in &r.status_codes {
            *status.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &r.malformed_by_kind {
            *malformed.entry(k.clone()).or_insert(0) += v;
        }
    }
    let series = if sharded > 0 {
        merge_series(&sources, &starts, first_start)?
    } else {
        warnings.push(
            "the reports are not from --shard runs: no per-second series to merge".to_string(),
        );
        Vec::new()
    };
    let mut targets: Vec<&str> = Vec::new();
    for s in &sources {
        if !targets.contains(&s.report.target.as_str()) {
            targets.push(&s.report.target);
        }
    }
    if targets.len() > 1 {
        warnings.push(format!(
            "the shards loaded different targets ({})",
            targets.join(", ")
        ));
    }
    for (pos, s) in sources.iter().enumerate() {
        let i = index_of(s, pos);
        for w in &s.report.warnings {
            warnings.push(format!("shard {i}: {w}"));
        }
    }
    let c = &total.counters;
    let call_phase_s = sources
        .iter()
        .map(|s| s.report.call_phase_s)
        .fold(0.0, f64::max);
    let plan = merge_plans(&sources)?;
    let offered_cps = match &plan {
        Some(p) if !p.phases.is_empty() => p.offered_rate(),
        _ => sources.iter().map(|s| s.report.offered_cps).sum(),
    };
    let first = &sources[0].report;
    let report = Report {
        tool: "imsload",
        version: env!("CARGO_PKG_VERSION"),
        target: targets.join(", "),
        embedded_target: sources.iter().any(|s| s.report.embedded_target),
        transport: first.transport.clone(),
        users: sources.iter().map(|s| s.report.users).sum(),
        workers: sources.iter().map(|s| s.report.workers).sum(),
        started_utc: label(first_start),
        ended_utc: label(last_end),
        elapsed_s: (last_end - first_start)
            .to_std()
            .map_or(0.0, |d| d.as_secs_f64()),
        call_phase_s,
        stop_reason: first.stop_reason,
        offered_cps,
        achieved_cps: if call_phase_s > 0.0 {
            c.calls_attempted as f64 / call_phase_s
        } else {
            0.0
        },
        counters: c.clone(),
        status_codes: status,
        malformed_by_kind: malformed,
        rfc6076: Rfc6076::of(&total),
        answer_delay: DelaySummary::of(&total.delays.answer),
        message_delay: DelaySummary::of(&total.delays.message),
        options_delay: DelaySummary::of(&total.delays.options),
        scheduling_lag: DelaySummary::of(&total.delays.sched_lag),
        settings: serde_json::json!({
            "merged_from": section.sources,
            "first_shard_settings": first.settings,
        }),
        warnings,
        generator_behind_s: sources.iter().map(|s| s.report.generator_behind_s).sum(),
        plan,
        hep: None,
        media: super::report::MediaReport::of(&total),
        histograms: total.delays.encode(),
        shard: None,
        merged: Some(section),
    };
    Ok(Merged { report, series })
}

fn label(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn list(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// Where a phase name stands in a run, so that a merged second shows the slowest shard's (as
/// a shard's row shows its slowest worker's).
fn phase_rank(p: &str) -> usize {
    [
        "registering",
        "calling",
        "ending calls",
        "de-registering",
        "done",
    ]
    .iter()
    .position(|n| *n == p)
    .unwrap_or(0)
}

/// Rows of every shard merged by second of the wall clock: a shard that started k seconds
/// after the first has its row n in merged row n + k.
fn merge_series(
    sources: &[Source],
    starts: &[DateTime<Utc>],
    first_start: DateTime<Utc>,
) -> Result<Vec<SeriesRow>, MergeError> {
    let mut by_second: BTreeMap<u64, Vec<(&str, &ShardRow)>> = BTreeMap::new();
    for (s, start) in sources.iter().zip(starts) {
        let sh = s.report.shard.as_ref().expect("sharded");
        let offset = (*start - first_start)
            .to_std()
            .map_or(0, |d| d.as_secs_f64().round() as u64);
        for r in &sh.series {
            by_second
                .entry(r.second + offset)
                .or_default()
                .push((&s.label, r));
        }
    }
    let mut out = Vec::with_capacity(by_second.len());
    for (second, rows) in by_second {
        let mut iv = Interval::default();
        let mut cpu = 0.0;
        let mut started = 0;
        let mut offered: Option<f64> = None;
        let mut plan_phases: Vec<&str> = Vec::new();
        let mut phase = "done";
        for (who, r) in &rows {
            iv.counters.add(&r.row.counters);
            Gauges::add(&mut iv.gauges, &r.row.gauges);
            let d = r.histograms.decode().map_err(|e| {
                input(
                    who,
                    format!("shard.series second {}: histograms: {e}", r.second),
                )
            })?;
            iv.delays.add(&d);
            cpu += r.row.generator_cpu_pct;
            started += r.row.attempts_started;
            if let Some(o) = r.row.offered_rate {
                offered = Some(offered.unwrap_or(0.0) + o);
            }
            if let Some(p) = r.row.plan_phase.as_deref() {
                if !plan_phases.contains(&p) {
                    plan_phases.push(p);
                }
            }
            if phase_rank(&r.row.phase) < phase_rank(phase) {
                phase = &r.row.phase;
            }
        }
        let at = first_start + chrono::Duration::seconds(second as i64);
        let mut row = SeriesRow::new(second as f64, label(at), phase, &iv);
        row.generator_cpu_pct = cpu;
        row.attempts_started = started;
        row.offered_rate = offered;
        row.plan_phase = (!plan_phases.is_empty()).then(|| plan_phases.join(" | "));
        // Every shard reads the same monitors: the lowest shard's readings stand for all.
        row.monitors = rows[0].1.row.monitors.clone();
        out.push(row);
    }
    Ok(out)
}

/// Plan phases added up by position (offered and started attempts summed), threshold events
/// named by shard, and capacity steps judged again on the shards' summed outcomes.
fn merge_plans(sources: &[Source]) -> Result<Option<PlanReport>, MergeError> {
    let plans: Vec<(u32, &Source, &PlanReport)> = sources
        .iter()
        .enumerate()
        .filter_map(|(p, s)| s.report.plan.as_ref().map(|pl| (index_of(s, p), s, pl)))
        .collect();
    let Some((_, _, template)) = plans.first() else {
        return Ok(None);
    };
    let mut phases: Vec<PhaseSummary> = Vec::new();
    for (k, ph) in template.phases.iter().enumerate() {
        let mut m = PhaseSummary {
            phase: ph.phase.clone(),
            ..PhaseSummary::default()
        };
        for (_, _, p) in &plans {
            if let Some(x) = p.phases.get(k).filter(|x| x.phase == ph.phase) {
                m.seconds = m.seconds.max(x.seconds);
                m.offered_attempts += x.offered_attempts;
                m.started_attempts += x.started_attempts;
            }
        }
        if m.seconds > 0 {
            m.offered_rate = m.offered_attempts / m.seconds as f64;
            m.achieved_rate = m.started_attempts as f64 / m.seconds as f64;
        }
        phases.push(m);
    }
    let mut events = Vec::new();
    for (i, _, p) in &plans {
        for e in &p.events {
            let mut e = e.clone();
            e.what = format!("shard {i}: {}", e.what);
            events.push(e);
        }
    }
    events.sort_by_key(|e| e.t);
    let caps: Vec<(u32, &Source, &CapacityResult)> = plans
        .iter()
        .filter_map(|(i, s, p)| p.capacity.as_ref().map(|c| (*i, *s, c)))
        .collect();
    let capacity = match caps.first() {
        None => None,
        Some((_, _, c0)) => Some(merge_capacity(&caps, c0)?),
    };
    Ok(Some(PlanReport {
        phases,
        events,
        capacity,
    }))
}

/// A capacity step merged: the shards' step rates and outcomes summed and judged against the
/// objective on the sum; a step passes only if every shard ran it in full.
fn merge_capacity(
    caps: &[(u32, &Source, &CapacityResult)],
    c0: &CapacityResult,
) -> Result<CapacityResult, MergeError> {
    let steps_max = caps.iter().map(|c| c.2.steps.len()).max().unwrap_or(0);
    let mut steps = Vec::new();
    let mut capacity = None;
    let mut failed_once = false;
    for k in 0..steps_max {
        let mut handled = Handled::default();
        let mut rate = 0.0;
        let mut achieved = 0.0;
        let mut seconds = u64::MAX;
        let mut present = 0;
        let mut hist = None::<hdrhistogram::Histogram<u64>>;
        for (_, s, c) in caps {
            let Some(st) = c.steps.get(k) else { continue };
            present += 1;
            handled.add(&st.handled);
            rate += st.rate;
            achieved += st.achieved_rate;
            seconds = seconds.min(st.seconds);
            if let Some(t) = &st.answer_histogram {
                let h = decode_histogram(t).map_err(|e| {
                    input(
                        &s.label,
                        format!("plan.capacity.steps[{k}].answer_histogram: {e}"),
                    )
                })?;
                match hist.as_mut() {
                    Some(acc) => {
                        let _ = acc.add(&h);
                    }
                    None => hist = Some(h),
                }
            }
        }
        let pct = handled.inadequate_pct();
        let passed = present == caps.len() && pct <= c0.limit_pct && handled.attempts > 0;
        if passed && !failed_once {
            capacity = Some(rate);
        } else {
            failed_once = true;
        }
        let answer = hist.as_ref().map(DelaySummary::of).unwrap_or_default();
        steps.push(CapacityStep {
            rate,
            seconds,
            achieved_rate: achieved,
            handled,
            inadequate_pct: pct,
            passed,
            answer_p50_ms: answer.p50_ms,
            answer_p99_ms: answer.p99_ms,
            answer_histogram: hist.as_ref().map(super::stats::encode_histogram),
        });
    }
    let ended: Vec<String> = caps
        .iter()
        .map(|(i, _, c)| format!("shard {i}: {}", c.ended))
        .collect();
    Ok(CapacityResult {
        design_objective_capacity: capacity,
        limit_pct: c0.limit_pct,
        max_delay_ms: c0.max_delay_ms,
        steps,
        ended: ended.join("; "),
    })
}

/// Writes the merged report (pretty JSON) and series (CSV for `.csv`, else JSON lines).
pub fn write(m: &Merged, report: Option<&Path>, series: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(p) = report {
        let text = serde_json::to_string_pretty(&m.report)?;
        std::fs::write(p, text)
            .with_context(|| format!("cannot write the merged report {}", p.display()))?;
    }
    if let Some(p) = series {
        let mut w = SeriesWriter::create(p)?;
        for r in &m.series {
            w.write(r)
                .with_context(|| format!("writing the merged series {}", p.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::stats::{encode_histogram, Delays};
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    /// Samples with a long tail (most 1-5 ms, some 50-800 ms), as delays under load look.
    fn samples(seed: u64, n: usize) -> Vec<u64> {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                if rng.random::<f64>() < 0.03 {
                    rng.random_range(50_000..800_000)
                } else {
                    rng.random_range(1_000..5_000)
                }
            })
            .collect()
    }

    #[test]
    fn merged_histograms_give_the_percentiles_of_one_histogram_of_every_sample() {
        let mut one = Delays::default();
        let mut shards = Vec::new();
        // Four shards of different sizes and different tails.
        for (k, n) in [(0u64, 5_000usize), (1, 1_234), (2, 20_000), (3, 7)] {
            let mut d = Delays::default();
            for us in samples(k, n) {
                Delays::record(&mut d.srd, Duration::from_micros(us * (k + 1)));
                Delays::record(&mut one.srd, Duration::from_micros(us * (k + 1)));
            }
            shards.push(d);
        }
        // Through the report's text, as merge reads it.
        let mut merged = Delays::default();
        for d in &shards {
            let back = d.encode().decode().unwrap();
            assert_eq!(back.srd, d.srd, "V2 + base64 is lossless");
            merged.add(&back);
        }
        assert_eq!(merged.srd.len(), one.srd.len());
        for q in [0.0, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(
                merged.srd.value_at_quantile(q),
                one.srd.value_at_quantile(q),
                "quantile {q}"
            );
        }
        assert_eq!(DelaySummary::of(&merged.srd), DelaySummary::of(&one.srd));
        // What the merge must not do: the mean of the shards' p99s is far from the true p99.
        let avg_p99 = shards
            .iter()
            .map(|d| d.srd.value_at_quantile(0.99) as f64)
            .sum::<f64>()
            / 4.0;
        let true_p99 = one.srd.value_at_quantile(0.99) as f64;
        assert!(
            (avg_p99 - true_p99).abs() / true_p99 > 0.05,
            "averaged {avg_p99} vs {true_p99}"
        );
    }

    /// A shard's report as imsload writes it, trimmed to what merge reads.
    fn report(index: u32, count: u32, start: &str, srd_ms: &[u64], late_s: f64) -> String {
        let mut d = Delays::default();
        for ms in srd_ms {
            Delays::record(&mut d.srd, Duration::from_millis(*ms));
        }
        let row = |second: u64, calls: u64, ms: u64| {
            let mut i = Interval::default();
            i.counters.calls_attempted = calls;
            i.gauges.registered = 10;
            Delays::record(&mut i.delays.srd, Duration::from_millis(ms));
            let r = SeriesRow::new(second as f64, String::new(), "calling", &i);
            serde_json::json!({"second": second, "row": r, "histograms": i.delays.encode()})
        };
        serde_json::json!({
            "tool": "imsload", "version": "0.1.0", "target": "127.0.0.1:5060",
            "embedded_target": false, "transport": "udp", "users": 10, "workers": 1,
            "started_utc": start, "ended_utc": "2026-03-01T12:00:10Z", "elapsed_s": 10.0,
            "call_phase_s": 8.0, "stop_reason": "duration", "offered_cps": 5.0,
            "achieved_cps": 5.0,
            "counters": {"calls_attempted": srd_ms.len(), "reg_ok": 10},
            "status_codes": {"INVITE 200": srd_ms.len()},
            "malformed_by_kind": {}, "warnings": [], "generator_behind_s": 0,
            "histograms": d.encode(),
            "shard": {"index": index, "count": count, "start_at": "2026-03-01T12:00:00Z",
                      "late_s": late_s,
                      "series": [row(1, 2, 1 + index as u64), row(2, 3, 10 * (1 + index as u64))]},
        })
        .to_string()
    }

    fn sources(reports: &[(String, String)]) -> Vec<Source> {
        reports
            .iter()
            .flat_map(|(p, t)| parse_reports(p, t).unwrap())
            .collect()
    }

    #[test]
    fn shards_merge_into_summed_counters_exact_percentiles_and_rows_by_second() {
        let s0 = report(0, 3, "2026-03-01T12:00:00.010Z", &[1, 2, 3, 400], 0.01);
        let s1 = report(1, 3, "2026-03-01T12:00:00.020Z", &[5, 6], 0.02);
        let s2 = report(2, 3, "2026-03-01T12:00:00.030Z", &[7, 8, 900], 0.03);
        let m = merge(sources(&[
            ("b.json".into(), s1),
            ("c.json".into(), s2),
            ("a.json".into(), s0),
        ]))
        .unwrap();
        let r = &m.report;
        assert_eq!(r.counters.calls_attempted, 9);
        assert_eq!(r.counters.reg_ok, 30);
        assert_eq!(r.users, 30);
        assert_eq!(r.status_codes["INVITE 200"], 9);
        let mut one = Delays::default();
        for ms in [1, 2, 3, 400, 5, 6, 7, 8, 900] {
            Delays::record(&mut one.srd, Duration::from_millis(ms));
        }
        assert_eq!(r.rfc6076.session_request_delay, DelaySummary::of(&one.srd));
        let sec = r.merged.as_ref().unwrap();
        assert_eq!(sec.present, [0, 1, 2]);
        assert_eq!(sec.sources, ["a.json", "b.json", "c.json"]);
        assert!(sec.missing.is_empty() && sec.late.is_empty() && sec.saturated.is_empty());
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        // Two whole seconds, each the three shards' rows summed, percentiles from their sum.
        assert_eq!(m.series.len(), 2);
        assert_eq!(m.series[0].counters.calls_attempted, 6);
        assert_eq!(m.series[1].counters.calls_attempted, 9);
        assert_eq!(m.series[0].gauges.registered, 30);
        let mut h = Delays::default();
        for ms in [10, 20, 30] {
            Delays::record(&mut h.srd, Duration::from_millis(ms));
        }
        assert_eq!(m.series[1].srd_p50_ms, DelaySummary::of(&h.srd).p50_ms);
        // 20 ms as the histogram's bucket reads it (3 significant digits): 20.015.
        assert!((m.series[1].srd_p50_ms - 20.0).abs() < 0.02);
        assert_eq!(m.series[1].t_s, 2.0);
        assert_eq!(m.series[1].utc, "2026-03-01T12:00:02.010000000Z");
        // The merged report carries its merged histograms: merges compose.
        assert_eq!(r.histograms.decode().unwrap().srd, one.srd);
    }

    #[test]
    fn missing_late_and_saturated_shards_are_named() {
        let s0 = report(0, 4, "2026-03-01T12:00:00Z", &[1], 0.0);
        let s2 = report(2, 4, "2026-03-01T12:00:02.5Z", &[2], 2.5);
        let mut v: serde_json::Value =
            serde_json::from_str(&report(3, 4, "2026-03-01T12:00:00Z", &[3], 0.0)).unwrap();
        v["generator_behind_s"] = 4.into();
        // Reports as `--report -` lines in one log, among other output.
        let log = format!("imsload: 10 users\n{s0}\nsome line\n{}\n", v);
        let m = merge(sources(&[("pods.log".into(), log), ("s2.json".into(), s2)])).unwrap();
        let sec = m.report.merged.as_ref().unwrap();
        assert_eq!(sec.present, [0, 2, 3]);
        assert_eq!(sec.missing, [1]);
        assert_eq!(sec.late, [2]);
        assert_eq!(sec.saturated, [3]);
        assert_eq!(sec.sources[0], "pods.log:2");
        let w = m.report.warnings.join("\n");
        assert!(w.contains("shard(s) 1 of 4 missing"), "{w}");
        assert!(w.contains("shard 2 (s2.json) started 2.5 s late"), "{w}");
        assert!(w.contains("shard 3 (pods.log:4) was saturated"), "{w}");
        // The late shard's rows move 3 s later (2.5 s rounded) in the merged series.
        let secs: Vec<f64> = m.series.iter().map(|r| r.t_s).collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 5.0]);
    }

    #[test]
    fn reports_that_cannot_merge_say_which_file_and_why() {
        let err = |srcs: Vec<Source>| merge(srcs).err().unwrap().to_string();
        let a = report(0, 2, "2026-03-01T12:00:00Z", &[1], 0.0);
        let b = report(0, 2, "2026-03-01T12:00:00Z", &[1], 0.0);
        let e = err(sources(&[
            ("a.json".into(), a.clone()),
            ("b.json".into(), b),
        ]));
        assert!(
            e.contains("b.json") && e.contains("shard.index 0 again") && e.contains("a.json"),
            "{e}"
        );
        let c = report(1, 3, "2026-03-01T12:00:00Z", &[1], 0.0);
        let e = err(sources(&[
            ("a.json".into(), a.clone()),
            ("c.json".into(), c),
        ]));
        assert!(
            e.contains("c.json: shard.count is 3 but a.json says 2"),
            "{e}"
        );
        let e = parse_reports("x.json", "{\"tool\":\"imsload\",\"users\":3}")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.json: not a report") && e.contains("missing field"),
            "{e}"
        );
        let e = parse_reports("y.txt", "hello\n").unwrap_err().to_string();
        assert!(e.contains("y.txt: holds no imsload report"), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&a).unwrap();
        v.as_object_mut().unwrap().remove("histograms");
        let e = parse_reports("old.json", &v.to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("old.json: has no \"histograms\""), "{e}");
        let mut v: serde_json::Value = serde_json::from_str(&a).unwrap();
        v["histograms"]["srd"] = "%%%".into();
        let e = err(sources(&[("bad.json".into(), v.to_string())]));
        assert!(
            e.contains("bad.json: histograms: histogram \"srd\": not base64"),
            "{e}"
        );
        assert!(matches!(merge(Vec::new()), Err(MergeError::NoInput)));
        // A histogram is exact through encode/decode even at the bounds.
        let mut h = Delays::default();
        Delays::record(&mut h.srd, Duration::from_secs(3600));
        assert_eq!(decode_histogram(&encode_histogram(&h.srd)).unwrap(), h.srd);
    }

    fn step(rate: f64, attempts: u64, failed: u64, answers_ms: &[u64]) -> serde_json::Value {
        let mut d = Delays::default();
        for ms in answers_ms {
            Delays::record(&mut d.answer, Duration::from_millis(*ms));
        }
        let h = Handled {
            attempts,
            failed,
            slow: 0,
        };
        serde_json::to_value(CapacityStep {
            rate,
            seconds: 2,
            achieved_rate: attempts as f64 / 2.0,
            handled: h,
            inadequate_pct: h.inadequate_pct(),
            passed: h.inadequate_pct() <= 1.0,
            answer_p50_ms: 0.0,
            answer_p99_ms: 0.0,
            answer_histogram: Some(encode_histogram(&d.answer)),
        })
        .unwrap()
    }

    #[test]
    fn capacity_steps_are_judged_again_on_the_shards_sums() {
        // Shard 0 passes steps 1-3 on its own; shard 1 fails step 2 alone (3 of 40 failed).
        // Summed, step 2 has 3 failures in 80 attempts: 3.75 % > 1 %, so it fails merged too,
        // and step 3, which only shard 0 ran, cannot pass.
        let plan = |steps: Vec<serde_json::Value>, phases: serde_json::Value| {
            serde_json::json!({"phases": phases, "events": [{"t": 3, "what": "step 2 failed"}],
                "capacity": {"design_objective_capacity": null, "limit_pct": 1.0,
                    "max_delay_ms": 100.0, "steps": steps, "ended": "x"}})
        };
        let ph = |started: u64| {
            serde_json::json!([{"phase": "capacity step 1 (10/s)",
            "seconds": 2, "offered_attempts": 20.0, "started_attempts": started,
            "offered_rate": 10.0, "achieved_rate": 0.0}])
        };
        let mut a: serde_json::Value =
            serde_json::from_str(&report(0, 2, "2026-03-01T12:00:00Z", &[1], 0.0)).unwrap();
        a["plan"] = plan(
            vec![
                step(10.0, 20, 0, &[1, 2]),
                step(20.0, 40, 0, &[3]),
                step(30.0, 60, 0, &[4]),
            ],
            ph(20),
        );
        let mut b: serde_json::Value =
            serde_json::from_str(&report(1, 2, "2026-03-01T12:00:00Z", &[1], 0.0)).unwrap();
        b["plan"] = plan(
            vec![step(10.0, 20, 0, &[5, 600]), step(20.0, 40, 3, &[7])],
            ph(18),
        );
        let m = merge(sources(&[
            ("a.json".into(), a.to_string()),
            ("b.json".into(), b.to_string()),
        ]))
        .unwrap();
        let p = m.report.plan.unwrap();
        assert_eq!(p.phases[0].started_attempts, 38);
        assert_eq!(p.phases[0].offered_rate, 20.0);
        assert_eq!(p.events.len(), 2);
        assert!(p.events[1].what.starts_with("shard 1: "), "{:?}", p.events);
        let c = p.capacity.unwrap();
        let got: Vec<(f64, u64, bool)> = c
            .steps
            .iter()
            .map(|s| (s.rate, s.handled.attempts, s.passed))
            .collect();
        assert_eq!(
            got,
            [(20.0, 40, true), (40.0, 80, false), (30.0, 60, false)]
        );
        assert_eq!(c.design_objective_capacity, Some(20.0));
        assert!((c.steps[1].inadequate_pct - 3.75).abs() < 1e-9);
        // Step 1's answer percentiles are those of the shards' added histograms.
        let mut one = Delays::default();
        for ms in [1, 2, 5, 600] {
            Delays::record(&mut one.answer, Duration::from_millis(ms));
        }
        let want = DelaySummary::of(&one.answer);
        assert_eq!(
            (c.steps[0].answer_p50_ms, c.steps[0].answer_p99_ms),
            (want.p50_ms, want.p99_ms)
        );
    }
}
