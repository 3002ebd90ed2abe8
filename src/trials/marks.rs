//! Each trial's phases where dashboards see them: as Prometheus gauges on the probe's
//! `--metrics` endpoint (`imsprobe_trial_phase_timestamp_seconds{trial, element, phase}`, Unix
//! time, set as the phase happens; the shipped Grafana dashboard draws them as annotations),
//! and at the end as `annotations.json` in Grafana's annotation API shape.

use crate::metrics::{Kind, Page};
use crate::probe::metrics::Exporter;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// One phase of one trial.
#[derive(Clone, Debug)]
pub struct Mark {
    pub trial: u32,
    /// The element a migration phase belongs to; empty for the trial's own phases.
    pub element: String,
    /// `trial_start`, `load_start`, `trigger`, `migration_start`, `migration_end`, the
    /// hypervisor's events (`vm_stop`, `vm_resume`, ...), `trial_end`.
    pub phase: String,
    pub utc: DateTime<Utc>,
}

#[derive(Default)]
pub struct Marks {
    exporter: Option<Arc<Exporter>>,
    all: Mutex<Vec<Mark>>,
}

impl Marks {
    pub fn new(exporter: Option<Arc<Exporter>>) -> Marks {
        Marks {
            exporter,
            all: Mutex::new(Vec::new()),
        }
    }

    /// Records a phase and publishes it at once.
    pub fn mark(&self, trial: u32, element: &str, phase: &str, utc: DateTime<Utc>) {
        let page = {
            let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
            all.push(Mark {
                trial,
                element: element.to_string(),
                phase: phase.to_string(),
                utc,
            });
            self.exporter.as_ref().map(|e| page(e.run(), &all))
        };
        if let (Some(e), Some(p)) = (&self.exporter, page) {
            e.set_marks(p);
        }
    }

    /// Every mark so far as Grafana annotations (`POST /api/annotations` takes each).
    pub fn annotations(&self) -> serde_json::Value {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::Value::Array(
            all.iter()
                .map(|m| {
                    let mut tags = vec![
                        "imsprobe".to_string(),
                        format!("trial-{}", m.trial),
                        m.phase.clone(),
                    ];
                    if !m.element.is_empty() {
                        tags.push(m.element.clone());
                    }
                    serde_json::json!({
                        "time": m.utc.timestamp_millis(),
                        "tags": tags,
                        "text": format!(
                            "trial {}{}: {}",
                            m.trial,
                            if m.element.is_empty() { String::new() } else { format!(" {}", m.element) },
                            m.phase
                        ),
                    })
                })
                .collect(),
        )
    }
}

/// The marks as one gauge family: a sample per trial, element and phase.
fn page(run: &str, all: &[Mark]) -> String {
    let mut p = Page::new(&[("run", run)]);
    p.family(
        "imsprobe_trial_phase_timestamp_seconds",
        Kind::Gauge,
        "When each phase of each trial happened, Unix time (migration phases per element).",
    );
    for m in all {
        let trial = m.trial.to_string();
        p.sample(
            "imsprobe_trial_phase_timestamp_seconds",
            &[
                ("trial", &trial),
                ("element", &m.element),
                ("phase", &m.phase),
            ],
            m.utc.timestamp_millis() as f64 / 1e3,
        );
    }
    if let Some(last) = all.last() {
        p.single(
            "imsprobe_trial",
            Kind::Gauge,
            "The trial running now (the last one after the end).",
            last.trial as f64,
        );
    }
    p.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_become_gauges_and_annotations() {
        let m = Marks::new(None);
        let t = DateTime::parse_from_rfc3339("2026-12-04T12:00:01.250Z")
            .unwrap()
            .with_timezone(&Utc);
        m.mark(2, "pcscf", "migration_start", t);
        let page = page("r", &m.all.lock().unwrap());
        assert!(page.contains(
            "imsprobe_trial_phase_timestamp_seconds{run=\"r\",trial=\"2\",element=\"pcscf\",phase=\"migration_start\"} 1796385601.25\n"
        ), "{page}");
        assert!(page.ends_with("imsprobe_trial{run=\"r\"} 2\n"));
        let a = m.annotations();
        assert_eq!(a[0]["time"], 1796385601250i64);
        assert_eq!(a[0]["text"], "trial 2 pcscf: migration_start");
    }
}
