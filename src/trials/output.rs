//! The files of a run of trials, rewritten after every trial: `trials.csv`, `trials.json`,
//! `summary.md` and the figures (per element when the trials migrate a sequence).

use super::record::TrialRecord;
use super::runner::TrialsConfig;
use super::table::{self, TrialRow};
use crate::probe::Layer;

/// A row per element per trial, in order.
pub fn rows(records: &[TrialRecord]) -> Vec<TrialRow> {
    records
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.row.clone()))
        .collect()
}

/// The other targets' largest gaps during each element's migration, for the summary.
fn others_markdown(records: &[TrialRecord]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let steps = || {
        records
            .iter()
            .flat_map(|r| r.steps.iter().map(move |st| (r, st)))
    };
    if steps().all(|(_, st)| st.targets.len() < 2) {
        return s;
    }
    let layers: Vec<Layer> = [Layer::Sip, Layer::Icmp, Layer::Diameter]
        .into_iter()
        .filter(|l| {
            steps().any(|(_, st)| {
                st.targets
                    .iter()
                    .skip(1)
                    .any(|t| t.layers.iter().any(|x| x.layer == *l))
            })
        })
        .collect();
    let _ = write!(
        s,
        "\n## The other targets during each migration\n\n| trial | migrated | target |"
    );
    for l in &layers {
        let name = match l {
            Layer::Sip => "SIP",
            Layer::Icmp => "ICMP",
            Layer::Diameter => "Diameter",
        };
        let _ = write!(s, " {name} gap ms |");
    }
    let _ = writeln!(s, "\n|{}", "---|".repeat(3 + layers.len()));
    for (r, st) in steps() {
        for t in st.targets.iter().skip(1) {
            let _ = write!(s, "| {} | {} | {} |", r.trial, st.element, t.target);
            for l in &layers {
                let cell = t
                    .layers
                    .iter()
                    .find(|x| x.layer == *l)
                    .map_or("–".to_string(), |x| {
                        x.reply_gap.as_ref().map_or("none".to_string(), |g| {
                            format!("{:.1} ± {:.1}", g.duration_ms, g.error_bound_ms)
                        })
                    });
                let _ = write!(s, " {cell} |");
            }
            let _ = writeln!(s);
        }
    }
    s
}

/// Per element, per column: what `f` makes of that element's rows.
fn per_element(
    rows: &[TrialRow],
    f: impl Fn(&[TrialRow]) -> serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    table::elements(rows)
        .into_iter()
        .map(|e| (e.to_string(), f(&table::rows_of(rows, e)).into()))
        .collect()
}

/// Writes trials.csv, trials.json, summary.md and the plots; returns the summary.
pub fn write(
    cfg: &TrialsConfig,
    records: &[TrialRecord],
    notes: &[String],
) -> anyhow::Result<String> {
    let rows = rows(records);
    let dir = &cfg.out;
    let w = |name: &str, text: &str| -> anyhow::Result<()> {
        let p = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))
    };
    w("trials.csv", &table::csv(&rows))?;
    let stats = per_element(&rows, |rows| {
        table::column_stats(rows)
            .into_iter()
            .map(|(k, s)| (k.to_string(), serde_json::to_value(s).unwrap_or_default()))
            .collect()
    });
    let trends = per_element(&rows, |rows| {
        table::COLUMNS
            .iter()
            .map(|c| {
                let pts: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.status == table::Status::Ok)
                    .filter_map(|r| (c.get)(r).map(|v| (r.trial as f64, v)))
                    .collect();
                (
                    c.key.to_string(),
                    serde_json::to_value(table::Trend::fit(&pts)).unwrap_or_default(),
                )
            })
            .collect()
    });
    let elements: Vec<serde_json::Value> = cfg
        .elements
        .iter()
        .map(|e| {
            serde_json::json!({
                "target": cfg.probe.targets[e.target].name,
                "migrate": e.migrate,
                "back": e.back,
            })
        })
        .collect();
    let json = serde_json::json!({
        "tool": "imsprobe trials",
        "version": env!("CARGO_PKG_VERSION"),
        "elements": elements,
        "trials_planned": cfg.trials,
        "rate": cfg.probe.rate,
        "min_gap_ms": cfg.probe.min_gap.as_secs_f64() * 1e3,
        "rows": rows,
        "stats_over_ok_trials": stats,
        "trend_per_trial": trends,
        "records": records,
        "notes": notes,
    });
    let text = serde_json::to_string_pretty(&json)?;
    w("trials.json", &(text + "\n"))?;
    let names: Vec<&str> = cfg
        .elements
        .iter()
        .map(|e| cfg.probe.targets[e.target].name.as_str())
        .collect();
    let title = match cfg.elements.as_slice() {
        [one] => format!("Migration trials: {} ({})", names[0], one.migrate),
        _ => format!("Migration trials: {}", names.join(" → ")),
    };
    let mut md = table::markdown(&rows, &title, cfg.probe.min_gap.as_secs_f64() * 1e3, notes);
    md.push_str(&others_markdown(records));
    w("summary.md", &md)?;
    if cfg.plot {
        let sequence = names.len() > 1;
        for e in &cfg.elements {
            let target = &cfg.probe.targets[e.target];
            let element = target.name.as_str();
            let of = table::rows_of(&rows, element);
            let short = format!("Migration trials: {element}");
            for (name, svg) in super::plot::all(&of, &short) {
                // One element: `downtime.svg`; a sequence: `hss-downtime.svg`, ...
                let stem = if sequence {
                    format!("{}-{name}", target.path_name())
                } else {
                    name.to_string()
                };
                w(&format!("{stem}.svg"), &svg)?;
                if let Err(e) = crate::chart::png(&svg, &dir.join(format!("{stem}.png"))) {
                    tracing::warn!("no PNG for {stem}: {e:#}");
                }
            }
        }
    }
    Ok(md)
}
