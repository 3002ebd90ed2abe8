//! The `imsprobe` command: a probe run or `--pcap-only`, from parsed arguments to an
//! [`Outcome`]. The binary parses, calls [`main`] (or, for `imsprobe trials`, the trials
//! room's own, which sits above this one) and maps the result with [`crate::exit::code`].

use crate::exit::Outcome;
use crate::probe::args::Cli;
use crate::probe::offline::{self, OfflineConfig};
use crate::probe::report;
use crate::probe::run;
use crate::shutdown::{self, Signals, Trigger};
use std::path::Path;

/// Runs what the command line asks for. An error is a usage or setup error (exit 2).
pub fn main(cli: Cli) -> anyhow::Result<Outcome> {
    if let Some(file) = &cli.pcap_only {
        return pcap_only(&cli, file);
    }
    probe(&cli)
}

/// A live run, until `--duration` or Ctrl-C. It measures gaps, it does not judge them: it ends
/// `Ok` whenever it could measure.
fn probe(cli: &Cli) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        !cli.targets.is_empty(),
        "no target: give --target NAME (from {}) or --target HOST:PORT, or --pcap-only FILE",
        cli.probe.targets_file.display()
    );
    let specs: Vec<&String> = cli.targets.iter().collect();
    let mut cfg = cli.probe.run_config(
        &specs,
        cli.rate.unwrap_or(1000.0),
        cli.out.clone(),
        cli.spin,
        cli.quiet,
    )?;
    cfg.duration = cli.duration;
    cfg.metrics = cli.probe.metrics_exporter(cli.quiet)?;
    let (trigger, _shutdown) = shutdown::channel();
    watch_signals(trigger.clone());
    let results = run::run(&cfg, &trigger)?;
    for r in &results {
        print!("{}", report::summary_text(&r.report));
        println!("  files: {}", r.dir.display());
    }
    if cfg.metrics.is_some() {
        crate::metrics::linger_blocking(cli.probe.metrics_linger);
    }
    Ok(Outcome::Ok)
}

fn watch_signals(trigger: Trigger) {
    shutdown::watch_signals_on_thread(
        trigger,
        Signals {
            stopping: "imsprobe: stopping: awaiting the last replies, flushing the capture, writing the reports (Ctrl-C again to quit at once)",
            quitting: "imsprobe: second interrupt: exiting without writing the reports",
            last_rites: Box::new(|| {}),
        },
    );
}

/// `--pcap-only`: the same reports from a capture, nothing sent.
fn pcap_only(cli: &Cli, file: &Path) -> anyhow::Result<Outcome> {
    let cfg = OfflineConfig {
        file: file.to_path_buf(),
        host: cli.pcap_host,
        rate: cli.rate,
        timeout: cli.probe.timeout,
        late_rtt: cli.probe.late_rtt,
        min_gap: cli.probe.min_gap,
        out: cli.out.clone(),
        plot: !cli.probe.no_plot,
    };
    offline::analyse(&cfg, |r| {
        print!("{}", report::summary_text(&r.report));
        println!("  files: {}", r.dir.display());
    })?;
    Ok(Outcome::Ok)
}
