//! Our trials beside the reference study's figures (Ahkam, Munadi, Arif 2019, "Precopy Live
//! Migration on Core Network Virtualization IMS"): its three figures over 26 trials, ours per
//! element, and what differs between the two setups, so that nobody reads one as the other.
//! Pure: rows in, Markdown out.

use super::table::{elements, rows_of, Stats, Status, TrialRow};
use std::fmt::Write as _;

/// The study's ranges over its 26 trials (all four VMs together; it gives no per-VM figures).
const STUDY_DATA_MB: &str = "297–301";
const STUDY_MIGRATION_S: &str = "27.88–28.15";
const STUDY_DOWNTIME_S: &str = "0.94–3.01";

/// `mean (min–max)` in `scale`d units, or `–`.
fn range(rows: &[TrialRow], get: impl Fn(&TrialRow) -> Option<f64>, scale: f64) -> String {
    let v: Vec<f64> = rows.iter().filter_map(&get).map(|x| x * scale).collect();
    match Stats::of(&v) {
        Some(s) if s.n > 1 => format!("{:.2} ({:.2}–{:.2})", s.mean, s.min, s.max),
        Some(s) => format!("{:.2}", s.mean),
        None => "–".into(),
    }
}

/// The longest reply gap of the element's own service (SIP for a CSCF, Diameter for the HSS).
fn service_gap(r: &TrialRow) -> Option<f64> {
    match (r.sip_gap_ms, r.diameter_gap_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The section of `summary.md`; empty when no ok trial has a figure to compare.
pub fn beside(rows: &[TrialRow]) -> String {
    let ok: Vec<TrialRow> = rows
        .iter()
        .filter(|r| r.status == Status::Ok)
        .cloned()
        .collect();
    if !ok
        .iter()
        .any(|r| r.data_mb.is_some() || r.vm_pause_ms.is_some())
    {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n## Beside the reference study\n\n\
Ahkam, Munadi, Arif (2019), *Precopy Live Migration on Core Network Virtualization IMS*: \
OpenIMSCore in four Xen VMs migrated one after another over 1 Gbit/s, 26 trials; its figures \
are ranges over all trials and VMs. Ours: per element, mean (min–max) over the ok trials.\n\n\
| | data MB | migration s | downtime s | hypervisor downtime s | service gap s |\n\
|---|---|---|---|---|---|\n\
| study (all VMs) | {STUDY_DATA_MB} | {STUDY_MIGRATION_S} | {STUDY_DOWNTIME_S} | – | not measured |"
    );
    for element in elements(&ok) {
        let rs = rows_of(&ok, element);
        let _ = writeln!(
            s,
            "| {element} | {} | {} | {} | {} | {} |",
            range(&rs, |r| r.data_mb, 1.0),
            range(&rs, |r| r.study_migration_ms.or(r.hv_total_ms), 1e-3),
            range(&rs, |r| r.vm_pause_ms, 1e-3),
            range(&rs, |r| r.hv_downtime_ms, 1e-3),
            range(&rs, service_gap, 1e-3),
        );
    }
    let migration = if ok.iter().any(|r| r.study_migration_ms.is_some()) {
        "the study's definition, the target's container starting to the VM running there: \
         here the destination's QEMU starting to its RESUME"
    } else {
        "the study's definition (the target's container starting to the VM running there) is \
         not reported by this hypervisor's output: its own total time is shown instead"
    };
    let _ = writeln!(
        s,
        "\nWhat differs:\n\n\
- **migration s**: {migration}.\n\
- **downtime s**: the study's definition, VM halt to start, is our STOP→RESUME (source STOP \
event to destination RESUME). The hypervisor's own downtime (QEMU: measured on the source, \
until the last byte is handed to the socket) is shorter; both are shown.\n\
- **data MB**: what precopy sent, which follows the memory a guest really touched (QEMU sends \
untouched, zero pages as a few bytes each) and its dirtying rate, not its size alone.\n\
- **service gap s**: what the element's clients saw (the longest SIP or Diameter reply gap \
overlapping its migration, see the table); the study did not measure it.\n\
- **setup**: the study ran Xen 4.4 on two physical hosts; a QEMU lab (lab/migration) runs \
its guests under TCG (an emulated CPU) with both hosts as network namespaces of one machine, \
so CPU-bound phases (boot, the resumed guest's first replies) are slower than on hardware, \
while the 1 Gbit/s migration link is shaped to the study's speed."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(element: &str, data: f64, pause: f64, status: Status) -> TrialRow {
        TrialRow {
            trial: 1,
            element: element.into(),
            status,
            data_mb: Some(data),
            vm_pause_ms: Some(pause),
            hv_total_ms: Some(1500.0),
            study_migration_ms: Some(1200.0),
            sip_gap_ms: Some(600.0),
            ..TrialRow::default()
        }
    }

    #[test]
    fn puts_each_element_beside_the_study_from_its_ok_trials() {
        let rows = [
            row("hss", 96.0, 400.0, Status::Ok),
            row("hss", 98.0, 600.0, Status::Ok),
            row("hss", 500.0, 9000.0, Status::Failed),
            row("pcscf", 118.0, 284.0, Status::Ok),
        ];
        let md = beside(&rows);
        assert!(md.contains("| study (all VMs) | 297–301 | 27.88–28.15 | 0.94–3.01 |"));
        // the failed trial is left out of the hss range
        assert!(
            md.contains("| hss | 97.00 (96.00–98.00) | 1.20 (1.20–1.20) | 0.50 (0.40–0.60) |"),
            "{md}"
        );
        assert!(md.contains("| pcscf | 118.00 | 1.20 | 0.28 |"), "{md}");
        assert!(md.contains("the destination's QEMU starting to its RESUME"));
    }

    #[test]
    fn says_which_migration_time_it_shows_and_is_empty_without_figures() {
        let mut r = row("pcscf", 118.0, 284.0, Status::Ok);
        r.study_migration_ms = None;
        let md = beside(&[r]);
        assert!(md.contains("| pcscf | 118.00 | 1.50 |"), "{md}");
        assert!(md.contains("its own total time is shown instead"));
        let bare = TrialRow {
            status: Status::Ok,
            ..TrialRow::default()
        };
        assert_eq!(beside(&[bare]), "");
        assert_eq!(beside(&[row("hss", 1.0, 1.0, Status::Failed)]), "");
    }
}
