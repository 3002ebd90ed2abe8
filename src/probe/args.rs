//! `imsprobe`'s command line as clap parses it: the probe run, `--pcap-only` and `imsprobe
//! trials`. Here, not in the binary, so that tests build them from an argument list as a user
//! would type it; [`super::app`] and [`crate::trials::app`] turn them into settings and run.

// The doc comments are `--help` text, written for a terminal: `<timestamp>` is a placeholder,
// not HTML.
#![allow(rustdoc::invalid_html_tags)]

use crate::probe::diameter::{CxUser, DiaRequest};
use crate::probe::run::RunConfig;
use crate::probe::targets::{resolve_target, Target, TargetsFile};
use crate::probe::Layer;
use crate::sip::Transport;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "imsprobe",
    version,
    args_conflicts_with_subcommands = true,
    about = "Measure the service gaps of IMS elements at the SIP and the IP layer",
    after_help = "Examples:\n  imsprobe --target pcscf --rate 1000 --duration 120s\n  \
imsprobe --target 127.0.0.1:5060 --rate 2000 --icmp --sip\n  \
imsprobe --target pcscf --target scscf --duration 60s\n  \
imsprobe --pcap-only captures/20261125T035400Z-pcscf/capture.pcap\n  \
imsprobe trials --target pcscf --migrate 'lab/migration/lab.sh migrate' --trials 10\n\n\
Definitions of reply gap, loss window and late reply: docs/imsprobe.md; trials: docs/trials.md"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Target: a name from the targets file (pcscf, icscf, scscf, hss, ...) or HOST:PORT.
    /// Repeat to probe several targets in parallel, each with its own results.
    #[arg(long = "target", short = 't', value_name = "NAME|HOST:PORT")]
    pub targets: Vec<String>,
    /// Probes per second, per layer [default: 1000; with --pcap-only: estimated from the capture].
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to probe (e.g. 120s, 5m). Default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Output directory [default: captures/<timestamp>-<target>/]; with several targets, one
    /// subdirectory per target.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Busy-wait this long before each send instead of sleeping (costs CPU; 0 = never).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub spin: Duration,
    /// Only the summary: no live gap lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// More diagnostics on stderr (-v: debug, -vv: everything); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Recompute the gap report from a capture (pcap or pcapng, e.g. taken by tshark) instead of
    /// probing. Every destination of SIP OPTIONS or ICMP echo requests in it is a target.
    #[arg(long, value_name = "FILE")]
    pub pcap_only: Option<PathBuf>,
    /// With --pcap-only: only analyse probes to this host.
    #[arg(long, value_name = "IP")]
    pub pcap_host: Option<std::net::IpAddr>,
    #[command(flatten)]
    pub probe: ProbeOpts,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Migration trials: per trial probe the element, run a load, wait for a threshold (or a
    /// delay), run the migration command, keep probing; then a table and plots of every trial.
    Trials(Box<TrialsArgs>),
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
imsprobe trials --target 198.51.100.10:5060 --migrate 'lab/migration/lab.sh migrate' --trials 10 --out /tmp/mig\n  \
imsprobe trials --target pcscf --migrate 'xl migrate pcscf n2' --back 'xl migrate pcscf n1' --trials 26 \\\n    \
--load profiles/paper-2019.toml --trigger 'cpu > 90%' --monitor 'command xentop -b -i 2 -d 1' --monitor-parser xentop:pcscf\n  \
imsprobe trials --target hss --migrate 'xl migrate hss n2' --target pcscf --migrate 'xl migrate pcscf n2' \\\n    \
--target icscf --migrate 'xl migrate icscf n2' --target scscf --migrate 'xl migrate scscf n2' --trials 10\n\n\
The migration command gets IMSPROBE_TRIAL, IMSPROBE_DIRECTION (migrate|back), IMSPROBE_TRIAL_DIR,\n\
IMSPROBE_ELEMENT (the target's name) and IMSPROBE_STEP (its place in the sequence, from 1).\n\
Exit code: 0 when no trial failed (one stopped by Ctrl-C is not a failure), 1 when one failed,\n\
2 on a usage or setup error.\n\
Output and definitions: docs/trials.md")]
pub struct TrialsArgs {
    /// The migrating element: a name from the targets file or HOST:PORT. Repeat for a
    /// sequence (--target hss --target pcscf ...): each trial migrates them one after another,
    /// in this order, with a row per element.
    #[arg(long, short = 't', value_name = "NAME|HOST:PORT", required = true)]
    pub target: Vec<String>,
    /// Also probe these elements during each trial ("the others"); repeat.
    #[arg(long = "also", value_name = "NAME|HOST:PORT")]
    pub also: Vec<String>,
    /// The command that migrates the VM (run with sh -c); one per --target, in the same order.
    /// Its output is read for the hypervisor's figures: lab JSON, QMP query-migrate, virsh
    /// domjobinfo --completed, xl.
    #[arg(long, value_name = "CMD", required = true)]
    pub migrate: Vec<String>,
    /// The command that migrates it back (one per --target, or none): odd trials run
    /// --migrate, even trials --back. Without it every trial runs --migrate (e.g. a lab
    /// command that flips direction itself).
    #[arg(long, value_name = "CMD")]
    pub back: Vec<String>,
    /// Number of trials.
    #[arg(long, default_value_t = 1)]
    pub trials: u32,
    /// Wait between trials.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub pause: Duration,
    /// Baseline probing before the load starts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub before: Duration,
    /// Probing after the migration command ended.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub after: Duration,
    /// Wait this long after the load started before migrating (with --trigger: before the
    /// first check of the threshold).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub delay: Duration,
    /// Migrate when this holds on --monitor, e.g. 'cpu > 90%' (cpu: % of one core; memory: MiB;
    /// a command monitor's name is free).
    #[arg(long, value_name = "COND", requires = "monitor")]
    pub trigger: Option<String>,
    /// What the trigger reads: 'process NAME', 'pid N', 'cgroup PATH' or 'command CMD...'.
    #[arg(long, value_name = "SPEC")]
    pub monitor: Option<String>,
    /// How a command monitor's output is read: number, xentop:DOMAIN, virsh-domstats:DOMAIN.
    #[arg(long, value_name = "PARSER")]
    pub monitor_parser: Option<String>,
    /// Sample the monitor this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub monitor_interval: Duration,
    /// When the trigger has not held for this long, migrate anyway (recorded in the trial).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub trigger_timeout: Duration,
    /// Kill the migration command (SIGTERM, then SIGKILL) after this long; the trial fails.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub migrate_timeout: Duration,
    /// Run `imsload --profile PROFILE --target TARGET` during each trial.
    #[arg(long, value_name = "PROFILE", conflicts_with = "load_cmd")]
    pub load: Option<PathBuf>,
    /// Run this command (sh -c) as the load during each trial; {report}, {series}, {dir} and
    /// {target} are replaced by the trial's load report path, series path, folder and HOST:PORT.
    #[arg(long, value_name = "CMD")]
    pub load_cmd: Option<String>,
    /// The --target or --also the load is sent to [default: the first --target probed over
    /// SIP, so that in a sequence starting with the HSS the load goes to the P-CSCF].
    #[arg(long, value_name = "NAME|HOST:PORT")]
    pub load_target: Option<String>,
    /// The imsload binary for --load [default: next to imsprobe, else on PATH].
    #[arg(long, value_name = "PATH")]
    pub imsload: Option<PathBuf>,
    /// After SIGINT, wait this long for the load to drain and write its report.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub load_drain: Duration,
    /// A command printing a byte counter of the migration link, run just before and after
    /// each migration: its growth is the data transferred where the hypervisor reports none,
    /// e.g. 'cat /sys/class/net/eth1/statistics/tx_bytes /sys/class/net/eth1/statistics/rx_bytes
    /// | paste -sd+ | bc'.
    #[arg(long, value_name = "CMD")]
    pub data_cmd: Option<String>,
    /// Probes per second per layer.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Output directory [default: captures/<timestamp>-trials-<target>/].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub probe: ProbeOpts,
}

/// How probes run and are judged: shared by `imsprobe` and `imsprobe trials`.
#[derive(Args, Debug)]
pub struct ProbeOpts {
    #[command(flatten)]
    pub hep: crate::hep::mirror::HepArgs,
    /// The targets file.
    #[arg(
        long = "targets",
        value_name = "FILE",
        default_value = "profiles/targets.toml"
    )]
    pub targets_file: PathBuf,
    /// Run the SIP OPTIONS probe. With none of --sip, --icmp, --diameter, each target gets the
    /// layers its targets-file entry names, else SIP and ICMP.
    #[arg(long)]
    pub sip: bool,
    /// Run the ICMP echo probe (ICMPv6 for an IPv6 target).
    #[arg(long)]
    pub icmp: bool,
    /// Run the Diameter probe: one TCP connection to the target's Diameter port, a CER on every
    /// connect (as a CSCF peer), then a Device-Watchdog-Request per probe.
    #[arg(long)]
    pub diameter: bool,
    /// The Diameter port, overriding the targets file (default 3868).
    #[arg(long, value_name = "PORT")]
    pub diameter_port: Option<u16>,
    /// Probe the HSS's Cx application, not only its Diameter stack: each Diameter probe is a
    /// User-Authorization-Request for this subscriber instead of a watchdog. USER is an IMPU
    /// sip:user@realm (IMPI user@realm), an IMPI user@realm (IMPU sip:user@realm), or IMPI,IMPU.
    /// A UAA with a success result (2001, or Experimental-Result 2001/2002) is a good reply, an
    /// error (5001 user unknown, 3xxx) a failed one. Overrides the targets file's diameter_uar.
    #[arg(long, value_name = "USER", value_parser = CxUser::parse)]
    pub diameter_uar: Option<CxUser>,
    /// Origin-Realm of the Diameter probe (the lab HSS's realm by default).
    #[arg(long, default_value = "ims.mnc001.mcc001.3gppnetwork.org")]
    pub diameter_realm: String,
    /// SIP transport, overriding the targets file. TCP: one connection per target, made before
    /// probing; its loss is an outage (probes sent while down are lost) and it is made again,
    /// at most every 100 ms.
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// A probe without a good reply within this long has failed (loss window).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub timeout: Duration,
    /// Replies with an RTT above this are counted as late even within the timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub late_rtt: Duration,
    /// Report gaps and loss windows of at least this length.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    pub min_gap: Duration,
    /// Do not capture packets.
    #[arg(long)]
    pub no_capture: bool,
    /// Capture on this interface instead of the one that routes to the target.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Do not draw plots (the SVG/PNG timeline; with trials, the trials' figures too).
    #[arg(long)]
    pub no_plot: bool,
    /// SCHED_FIFO priority of the pacer thread when permitted (0 = normal scheduling).
    #[arg(long, default_value_t = 10)]
    pub rt_priority: i32,
    /// Serve Prometheus metrics at http://ADDR/metrics while probing (e.g. 0.0.0.0:9465): per
    /// target and layer probes sent and judged, the gap open now, the last gap, RTT histogram;
    /// with trials also each trial's phases (docs/imsprobe.md, "Prometheus metrics").
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The `run` label on every metric [default: imsprobe-<UTC start>].
    #[arg(long, value_name = "NAME", requires = "metrics")]
    pub metrics_run: Option<String>,
    /// After the run, keep serving the final metrics this long (Ctrl-C ends it sooner).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub metrics_linger: Duration,
}

impl ProbeOpts {
    /// Resolves target specs (names from the targets file or HOST:PORT); each at most once.
    fn targets<'a>(&self, specs: impl Iterator<Item = &'a String>) -> anyhow::Result<Vec<Target>> {
        let file = TargetsFile::load(&self.targets_file)?;
        let mut targets: Vec<Target> = Vec::new();
        for spec in specs {
            let mut t = resolve_target(spec, file.as_ref(), &self.targets_file, self.transport)?;
            if let Some(p) = self.diameter_port {
                t.diameter_port = p;
            }
            if let Some(u) = &self.diameter_uar {
                t.diameter_request = DiaRequest::Uar(u.clone());
            }
            anyhow::ensure!(
                !targets.iter().any(|x| x.path_name() == t.path_name()),
                "target {spec} is given twice"
            );
            targets.push(t);
        }
        Ok(targets)
    }

    /// The layers chosen on the command line; empty: each target's own.
    fn layers(&self) -> Vec<Layer> {
        [
            (self.sip, Layer::Sip),
            (self.icmp, Layer::Icmp),
            (self.diameter, Layer::Diameter),
        ]
        .into_iter()
        .filter_map(|(on, l)| on.then_some(l))
        .collect()
    }

    /// The probe engine's settings for these options (checked), without the metrics endpoint:
    /// binding it is the caller's step ([`ProbeOpts::metrics_exporter`]), so that these settings
    /// are built and checked with no side effect.
    pub fn run_config(
        &self,
        specs: &[&String],
        rate: f64,
        out: Option<PathBuf>,
        spin: Duration,
        quiet: bool,
    ) -> anyhow::Result<RunConfig> {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0 && rate <= 100_000.0,
            "--rate {rate}: give probes per second per layer, between 0 and 100000"
        );
        anyhow::ensure!(!self.timeout.is_zero(), "--timeout must be above zero");
        let targets = self.targets(specs.iter().copied())?;
        let layers = self.layers();
        if self.diameter_uar.is_some() {
            if let Some(t) = targets
                .iter()
                .find(|t| !t.layers(&layers).contains(&Layer::Diameter))
            {
                anyhow::bail!(
                    "--diameter-uar changes what the Diameter probes ask, but target {} is not probed with Diameter: add --diameter (or \"diameter\" to its layers in {})",
                    t.name,
                    self.targets_file.display()
                );
            }
        }
        Ok(RunConfig {
            targets,
            layers,
            diameter_realm: self.diameter_realm.clone(),
            rate,
            duration: None,
            timeout: self.timeout,
            late_rtt: self.late_rtt,
            min_gap: self.min_gap,
            out,
            capture: !self.no_capture,
            iface: self.iface.clone(),
            spin,
            rt_priority: (self.rt_priority > 0).then_some(self.rt_priority),
            plot: !self.no_plot,
            quiet,
            metrics: None,
            hep: self.hep.config("imsprobe"),
        })
    }

    /// The `/metrics` endpoint of `--metrics`, bound now; `None` without it.
    pub fn metrics_exporter(
        &self,
        quiet: bool,
    ) -> anyhow::Result<Option<std::sync::Arc<crate::probe::metrics::Exporter>>> {
        let Some(addr) = self.metrics else {
            return Ok(None);
        };
        let run = self.metrics_run.clone().unwrap_or_else(|| {
            format!(
                "imsprobe-{}",
                crate::clock::stamp_for_path(chrono::Utc::now())
            )
        });
        let e = crate::probe::metrics::Exporter::bind(addr, &run)?;
        if !quiet {
            tracing::info!(
                "metrics at http://{}/metrics (run=\"{run}\")",
                e.local_addr()
            );
        }
        Ok(Some(std::sync::Arc::new(e)))
    }
}
