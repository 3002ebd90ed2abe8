//! imsprobe: measure every service gap of a target to the millisecond, at the SIP and the IP
//! layer. See `docs/imsprobe.md`.

use clap::Parser;
use imsload::probe::diameter::{CxUser, DiaRequest};
use imsload::probe::offline::{self, OfflineConfig};
use imsload::probe::report;
use imsload::probe::run::{self, RunConfig};
use imsload::probe::targets::{resolve_target, TargetsFile};
use imsload::probe::Layer;
use imsload::shutdown::{self, Signals, Trigger};
use imsload::sip::Transport;
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
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Target: a name from the targets file (pcscf, icscf, scscf, hss, ...) or HOST:PORT.
    /// Repeat to probe several targets in parallel, each with its own results.
    #[arg(long = "target", short = 't', value_name = "NAME|HOST:PORT")]
    targets: Vec<String>,
    /// Probes per second, per layer [default: 1000; with --pcap-only: estimated from the capture].
    #[arg(long)]
    rate: Option<f64>,
    /// How long to probe (e.g. 120s, 5m). Default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Output directory [default: captures/<timestamp>-<target>/]; with several targets, one
    /// subdirectory per target.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Busy-wait this long before each send instead of sleeping (costs CPU; 0 = never).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    spin: Duration,
    /// Only the summary: no live gap lines.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Recompute the gap report from a capture (pcap or pcapng, e.g. taken by tshark) instead of
    /// probing. Every destination of SIP OPTIONS or ICMP echo requests in it is a target.
    #[arg(long, value_name = "FILE")]
    pcap_only: Option<PathBuf>,
    /// With --pcap-only: only analyse probes to this host.
    #[arg(long, value_name = "IP")]
    pcap_host: Option<std::net::IpAddr>,
    #[command(flatten)]
    probe: ProbeOpts,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Migration trials: per trial probe the element, run a load, wait for a threshold (or a
    /// delay), run the migration command, keep probing; then a table and plots of every trial.
    Trials(Box<TrialsArgs>),
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
imsprobe trials --target 198.51.100.10:5060 --migrate 'lab/migration/lab.sh migrate' --trials 10 --out /tmp/mig\n  \
imsprobe trials --target pcscf --migrate 'xl migrate pcscf n2' --back 'xl migrate pcscf n1' --trials 26 \\\n    \
--load profiles/paper-2019.toml --trigger 'cpu > 90%' --monitor 'command xentop -b -i 2 -d 1' --monitor-parser xentop:pcscf\n  \
imsprobe trials --target hss --migrate 'xl migrate hss n2' --target pcscf --migrate 'xl migrate pcscf n2' \\\n    \
--target icscf --migrate 'xl migrate icscf n2' --target scscf --migrate 'xl migrate scscf n2' --trials 10\n\n\
The migration command gets IMSPROBE_TRIAL, IMSPROBE_DIRECTION (migrate|back), IMSPROBE_TRIAL_DIR,\n\
IMSPROBE_ELEMENT (the target's name) and IMSPROBE_STEP (its place in the sequence, from 1).\n\
Exit code: 0 when every trial succeeded, 1 when one failed or was interrupted or on an error.\n\
Output and definitions: docs/trials.md")]
struct TrialsArgs {
    /// The migrating element: a name from the targets file or HOST:PORT. Repeat for a
    /// sequence (--target hss --target pcscf ...): each trial migrates them one after another,
    /// in this order, with a row per element.
    #[arg(long, short = 't', value_name = "NAME|HOST:PORT", required = true)]
    target: Vec<String>,
    /// Also probe these elements during each trial ("the others"); repeat.
    #[arg(long = "also", value_name = "NAME|HOST:PORT")]
    also: Vec<String>,
    /// The command that migrates the VM (run with sh -c); one per --target, in the same order.
    /// Its output is read for the hypervisor's figures: lab JSON, QMP query-migrate, virsh
    /// domjobinfo --completed, xl.
    #[arg(long, value_name = "CMD", required = true)]
    migrate: Vec<String>,
    /// The command that migrates it back (one per --target, or none): odd trials run
    /// --migrate, even trials --back. Without it every trial runs --migrate (e.g. a lab
    /// command that flips direction itself).
    #[arg(long, value_name = "CMD")]
    back: Vec<String>,
    /// Number of trials.
    #[arg(long, default_value_t = 1)]
    trials: u32,
    /// Wait between trials.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pause: Duration,
    /// Baseline probing before the load starts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    before: Duration,
    /// Probing after the migration command ended.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    after: Duration,
    /// Wait this long after the load started before migrating (with --trigger: before the
    /// first check of the threshold).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    delay: Duration,
    /// Migrate when this holds on --monitor, e.g. 'cpu > 90%' (cpu: % of one core; memory: MiB;
    /// a command monitor's name is free).
    #[arg(long, value_name = "COND", requires = "monitor")]
    trigger: Option<String>,
    /// What the trigger reads: 'process NAME', 'pid N', 'cgroup PATH' or 'command CMD...'.
    #[arg(long, value_name = "SPEC")]
    monitor: Option<String>,
    /// How a command monitor's output is read: number, xentop:DOMAIN, virsh-domstats:DOMAIN.
    #[arg(long, value_name = "PARSER")]
    monitor_parser: Option<String>,
    /// Sample the monitor this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    monitor_interval: Duration,
    /// When the trigger has not held for this long, migrate anyway (recorded in the trial).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    trigger_timeout: Duration,
    /// Kill the migration command (SIGTERM, then SIGKILL) after this long; the trial fails.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    migrate_timeout: Duration,
    /// Run `imsload --profile PROFILE --target TARGET` during each trial.
    #[arg(long, value_name = "PROFILE", conflicts_with = "load_cmd")]
    load: Option<PathBuf>,
    /// Run this command (sh -c) as the load during each trial; {report}, {series}, {dir} and
    /// {target} are replaced by the trial's load report path, series path, folder and HOST:PORT.
    #[arg(long, value_name = "CMD")]
    load_cmd: Option<String>,
    /// The --target or --also the load is sent to [default: the first --target probed over
    /// SIP, so that in a sequence starting with the HSS the load goes to the P-CSCF].
    #[arg(long, value_name = "NAME|HOST:PORT")]
    load_target: Option<String>,
    /// The imsload binary for --load [default: next to imsprobe, else on PATH].
    #[arg(long, value_name = "PATH")]
    imsload: Option<PathBuf>,
    /// After SIGINT, wait this long for the load to drain and write its report.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    load_drain: Duration,
    /// A command printing a byte counter of the migration link, run just before and after
    /// each migration: its growth is the data transferred where the hypervisor reports none,
    /// e.g. 'cat /sys/class/net/eth1/statistics/tx_bytes /sys/class/net/eth1/statistics/rx_bytes
    /// | paste -sd+ | bc'.
    #[arg(long, value_name = "CMD")]
    data_cmd: Option<String>,
    /// Probes per second per layer.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Output directory [default: captures/<timestamp>-trials-<target>/].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    probe: ProbeOpts,
}

/// How probes run and are judged: shared by `imsprobe` and `imsprobe trials`.
#[derive(clap::Args, Debug)]
struct ProbeOpts {
    #[command(flatten)]
    hep: imsload::hep::mirror::HepArgs,
    /// The targets file.
    #[arg(
        long = "targets",
        value_name = "FILE",
        default_value = "profiles/targets.toml"
    )]
    targets_file: PathBuf,
    /// Run the SIP OPTIONS probe. With none of --sip, --icmp, --diameter, each target gets the
    /// layers its targets-file entry names, else SIP and ICMP.
    #[arg(long)]
    sip: bool,
    /// Run the ICMP echo probe (ICMPv6 for an IPv6 target).
    #[arg(long)]
    icmp: bool,
    /// Run the Diameter probe: one TCP connection to the target's Diameter port, a CER on every
    /// connect (as a CSCF peer), then a Device-Watchdog-Request per probe.
    #[arg(long)]
    diameter: bool,
    /// The Diameter port, overriding the targets file (default 3868).
    #[arg(long, value_name = "PORT")]
    diameter_port: Option<u16>,
    /// Probe the HSS's Cx application, not only its Diameter stack: each Diameter probe is a
    /// User-Authorization-Request for this subscriber instead of a watchdog. USER is an IMPU
    /// sip:user@realm (IMPI user@realm), an IMPI user@realm (IMPU sip:user@realm), or IMPI,IMPU.
    /// A UAA with a success result (2001, or Experimental-Result 2001/2002) is a good reply, an
    /// error (5001 user unknown, 3xxx) a failed one. Overrides the targets file's diameter_uar.
    #[arg(long, value_name = "USER", value_parser = parse_cx_user)]
    diameter_uar: Option<CxUser>,
    /// Origin-Realm of the Diameter probe (the lab HSS's realm by default).
    #[arg(long, default_value = "ims.mnc001.mcc001.3gppnetwork.org")]
    diameter_realm: String,
    /// SIP transport, overriding the targets file. TCP: one connection per target, made before
    /// probing; its loss is an outage (probes sent while down are lost) and it is made again,
    /// at most every 100 ms.
    #[arg(long, value_enum)]
    transport: Option<Transport>,
    /// A probe without a good reply within this long has failed (loss window).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    timeout: Duration,
    /// Replies with an RTT above this are counted as late even within the timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    late_rtt: Duration,
    /// Report gaps and loss windows of at least this length.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    min_gap: Duration,
    /// Do not capture packets.
    #[arg(long)]
    no_capture: bool,
    /// Capture on this interface instead of the one that routes to the target.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Do not draw plots (the SVG/PNG timeline; with trials, the trials' figures too).
    #[arg(long)]
    no_plot: bool,
    /// SCHED_FIFO priority of the pacer thread when permitted (0 = normal scheduling).
    #[arg(long, default_value_t = 10)]
    rt_priority: i32,
    /// Serve Prometheus metrics at http://ADDR/metrics while probing (e.g. 0.0.0.0:9465): per
    /// target and layer probes sent and judged, the gap open now, the last gap, RTT histogram;
    /// with trials also each trial's phases (docs/imsprobe.md, "Prometheus metrics").
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// The `run` label on every metric [default: imsprobe-<UTC start>].
    #[arg(long, value_name = "NAME", requires = "metrics")]
    metrics_run: Option<String>,
    /// After the run, keep serving the final metrics this long (Ctrl-C ends it sooner).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    metrics_linger: Duration,
}

impl ProbeOpts {
    /// Resolves target specs (names from the targets file or HOST:PORT); each at most once.
    fn targets<'a>(
        &self,
        specs: impl Iterator<Item = &'a String>,
    ) -> anyhow::Result<Vec<imsload::probe::targets::Target>> {
        let file = TargetsFile::load(&self.targets_file).map_err(anyhow::Error::msg)?;
        let mut targets: Vec<imsload::probe::targets::Target> = Vec::new();
        for spec in specs {
            let mut t = resolve_target(spec, file.as_ref(), &self.targets_file, self.transport)
                .map_err(anyhow::Error::msg)?;
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

    /// The probe engine's settings for these options (checked).
    fn run_config(
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
            metrics: self.metrics_exporter(quiet)?,
            hep: self.hep.config("imsprobe"),
        })
    }

    fn metrics_exporter(
        &self,
        quiet: bool,
    ) -> anyhow::Result<Option<std::sync::Arc<imsload::probe::metrics::Exporter>>> {
        let Some(addr) = self.metrics else {
            return Ok(None);
        };
        let run = self.metrics_run.clone().unwrap_or_else(|| {
            format!(
                "imsprobe-{}",
                imsload::clock::stamp_for_path(chrono::Utc::now())
            )
        });
        let e = imsload::probe::metrics::Exporter::bind(addr, &run).map_err(anyhow::Error::msg)?;
        if !quiet {
            eprintln!(
                "imsprobe: metrics at http://{}/metrics (run=\"{run}\")",
                e.local_addr()
            );
        }
        Ok(Some(std::sync::Arc::new(e)))
    }
}

fn parse_cx_user(s: &str) -> Result<CxUser, String> {
    CxUser::parse(s)
}

/// The one exit-code policy (`imsload::exit`): a failed trial is a failure (1), an error is a
/// usage or setup error (2).
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Trials(a)) = cli.command {
        return imsload::exit::code(
            "imsprobe trials",
            trials_main(*a).map(|c| imsload::exit::Outcome::failures_if(c != 0)),
        );
    }
    imsload::exit::code(
        "imsprobe",
        real_main(cli).map(|c| imsload::exit::Outcome::failures_if(c != 0)),
    )
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

fn trials_main(a: TrialsArgs) -> anyhow::Result<i32> {
    use imsload::profile::condition::Condition;
    use imsload::profile::monitor::Measure;
    use imsload::trials::{self, Element, LoadSpec, StartRule, TrialsConfig, TriggerSpec};
    anyhow::ensure!(
        a.migrate.len() == a.target.len(),
        "{} --target and {} --migrate: give one --migrate per --target, in the same order",
        a.target.len(),
        a.migrate.len()
    );
    anyhow::ensure!(
        a.back.is_empty() || a.back.len() == a.target.len(),
        "{} --target and {} --back: give one --back per --target, or none",
        a.target.len(),
        a.back.len()
    );
    for (i, t) in a.target.iter().enumerate() {
        anyhow::ensure!(
            !a.target[..i].contains(t) && !a.also.contains(t),
            "--target {t} is given twice: each element is migrated once per trial"
        );
    }
    let specs: Vec<&String> = a.target.iter().chain(&a.also).collect();
    let probe = a
        .probe
        .run_config(&specs, a.rate, None, Duration::ZERO, true)?;
    anyhow::ensure!(a.trials >= 1, "--trials must be at least 1");
    for (t, m) in a.target.iter().zip(&a.migrate) {
        anyhow::ensure!(
            !m.trim().is_empty(),
            "--migrate is empty for {t}: give the command that migrates its VM"
        );
    }
    anyhow::ensure!(
        !a.monitor_interval.is_zero(),
        "--monitor-interval must be above zero"
    );
    let start = match (&a.trigger, &a.monitor) {
        (None, Some(_)) => anyhow::bail!(
            "--monitor without --trigger: say when to migrate, e.g. --trigger 'cpu > 90%'"
        ),
        (None, None) => StartRule::Delay(a.delay),
        (Some(text), Some(m)) => {
            let condition = Condition::parse(text).map_err(|e| anyhow::anyhow!("--trigger {e}"))?;
            let source =
                imsload::profile::monitor::Source::from_spec(m, a.monitor_parser.as_deref())
                    .map_err(anyhow::Error::msg)?;
            let measure = match condition.metric.as_str() {
                "cpu" => Measure::Cpu,
                "mem" | "memory" => Measure::Memory,
                other => {
                    anyhow::ensure!(
                        matches!(source, imsload::profile::monitor::Source::Command { .. }),
                        "--trigger {text:?}: a process or cgroup monitor measures cpu or memory, not {other:?}"
                    );
                    Measure::Cpu
                }
            };
            StartRule::Trigger(TriggerSpec {
                text: text.clone(),
                condition,
                source,
                measure,
                delay: a.delay,
                interval: a.monitor_interval,
                timeout: a.trigger_timeout,
            })
        }
        (Some(_), None) => unreachable!("clap requires --monitor with --trigger"),
    };
    let load = match (&a.load, &a.load_cmd) {
        (Some(p), _) => {
            anyhow::ensure!(
                p.is_file(),
                "--load {}: no such profile file (profiles/*.toml)",
                p.display()
            );
            let imsload = a.imsload.clone().unwrap_or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|e| e.parent().map(|d| d.join("imsload")))
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from("imsload"))
            });
            Some(LoadSpec::Profile {
                imsload,
                profile: p.clone(),
            })
        }
        (None, Some(c)) => Some(LoadSpec::Command(c.clone())),
        (None, None) => None,
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("captures").join(format!(
            "{}-trials-{}",
            imsload::clock::stamp_for_path(chrono::Utc::now()),
            probe.targets[..a.target.len()]
                .iter()
                .map(|t| t.path_name())
                .collect::<Vec<_>>()
                .join("+")
        ))
    });
    let elements: Vec<Element> = (0..a.target.len())
        .map(|i| Element {
            target: i,
            migrate: a.migrate[i].clone(),
            back: a.back.get(i).cloned(),
        })
        .collect();
    // Targets are resolved in the order given: the --target ones, then the --also ones.
    let load_target = match &a.load_target {
        Some(t) => specs.iter().position(|s| *s == t).ok_or_else(|| {
            anyhow::anyhow!(
                "--load-target {t}: not one of the probed elements; give one of {}",
                specs
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
        None => trials::default_load_target(&probe.targets, &probe.layers, &elements),
    };
    let cfg = TrialsConfig {
        probe,
        elements,
        trials: a.trials,
        pause: a.pause,
        before: a.before,
        after: a.after,
        start,
        migrate_timeout: a.migrate_timeout,
        load,
        load_target,
        load_drain: a.load_drain,
        data_cmd: a.data_cmd.clone(),
        out,
        plot: !a.probe.no_plot,
    };
    let (trigger, _shutdown) = shutdown::channel();
    let children = trials::Children::default();
    watch_signals_trials(trigger.clone(), children.clone());
    let o = trials::run(&cfg, &trigger, &children)?;
    print!("{}", o.summary);
    println!("\nfiles: {}", o.dir.display());
    if cfg.probe.metrics.is_some() && !o.interrupted {
        imsload::metrics::linger_blocking(a.probe.metrics_linger);
    }
    let all_ok = !o.interrupted && o.rows.iter().all(|r| r.status == trials::table::Status::Ok);
    Ok(if all_ok { 0 } else { 1 })
}

/// Ctrl-C for trials: the first ends the current trial cleanly; the second stops the children
/// (they have their own process groups, so the terminal's SIGINT does not reach them) and exits.
fn watch_signals_trials(trigger: Trigger, children: imsload::trials::Children) {
    shutdown::watch_signals_on_thread(
        trigger,
        Signals {
            stopping: "imsprobe trials: stopping: this trial is recorded as interrupted, then the table is written (Ctrl-C again to quit at once)",
            quitting: "imsprobe trials: second interrupt: stopping the load and migration commands, exiting without the table",
            last_rites: Box::new(move || children.terminate()),
        },
    );
}

fn real_main(cli: Cli) -> anyhow::Result<i32> {
    if let Some(file) = &cli.pcap_only {
        return pcap_only(&cli, file);
    }
    anyhow::ensure!(
        !cli.targets.is_empty(),
        "no target: give --target NAME (from {}) or --target HOST:PORT, or --pcap-only FILE",
        cli.probe.targets_file.display()
    );
    let specs: Vec<&String> = cli.targets.iter().collect();
    let cfg = RunConfig {
        duration: cli.duration,
        ..cli.probe.run_config(
            &specs,
            cli.rate.unwrap_or(1000.0),
            cli.out.clone(),
            cli.spin,
            cli.quiet,
        )?
    };
    let (trigger, _shutdown) = shutdown::channel();
    watch_signals(trigger.clone());
    let results = run::run(&cfg, &trigger)?;
    for r in &results {
        print!("{}", report::summary_text(&r.report));
        println!("  files: {}", r.dir.display());
    }
    if cfg.metrics.is_some() {
        imsload::metrics::linger_blocking(cli.probe.metrics_linger);
    }
    Ok(0)
}

fn pcap_only(cli: &Cli, file: &std::path::Path) -> anyhow::Result<i32> {
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
    Ok(0)
}
