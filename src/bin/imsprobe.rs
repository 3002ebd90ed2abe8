//! imsprobe: measure every service gap of a target to the millisecond, at the SIP and the IP
//! layer. See `docs/imsprobe.md`.

use clap::Parser;
use imsload::probe::analysis::{self, Params};
use imsload::probe::report::{self, Files, LayerOut, ParamsOut, Report, TargetOut};
use imsload::probe::run::{self, RunConfig};
use imsload::probe::targets::{resolve_target, TargetsFile};
use imsload::probe::{pcapread, Layer};
use imsload::shutdown::{self, StopReason, Trigger};
use imsload::sip::Transport;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "imsprobe",
    version,
    about = "Measure the service gaps of IMS elements at the SIP and the IP layer",
    after_help = "Examples:\n  imsprobe --target pcscf --rate 1000 --duration 120s\n  \
imsprobe --target 127.0.0.1:5060 --rate 2000 --icmp --sip\n  \
imsprobe --target pcscf --target scscf --duration 60s\n  \
imsprobe --pcap-only captures/20261125T035400Z-pcscf/capture.pcap\n\n\
Definitions of reply gap, loss window and late reply: docs/imsprobe.md"
)]
struct Cli {
    /// Target: a name from the targets file (pcscf, icscf, scscf, hss, ...) or HOST:PORT.
    /// Repeat to probe several targets in parallel, each with its own results.
    #[arg(long = "target", short = 't', value_name = "NAME|HOST:PORT")]
    targets: Vec<String>,
    /// The targets file.
    #[arg(
        long = "targets",
        value_name = "FILE",
        default_value = "profiles/targets.toml"
    )]
    targets_file: PathBuf,
    /// Probes per second, per layer [default: 1000; with --pcap-only: estimated from the capture].
    #[arg(long)]
    rate: Option<f64>,
    /// How long to probe (e.g. 120s, 5m). Default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Run the SIP OPTIONS probe (with neither --sip nor --icmp, both run).
    #[arg(long)]
    sip: bool,
    /// Run the ICMP echo probe (with neither --sip nor --icmp, both run).
    #[arg(long)]
    icmp: bool,
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
    /// Output directory [default: captures/<timestamp>-<target>/]; with several targets, one
    /// subdirectory per target.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Do not capture packets.
    #[arg(long)]
    no_capture: bool,
    /// Capture on this interface instead of the one that routes to the target.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Do not draw the SVG/PNG timeline.
    #[arg(long)]
    no_plot: bool,
    /// Busy-wait this long before each send instead of sleeping (costs CPU; 0 = never).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    spin: Duration,
    /// SCHED_FIFO priority of the pacer thread when permitted (0 = normal scheduling).
    #[arg(long, default_value_t = 10)]
    rt_priority: i32,
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
}

fn main() {
    let cli = Cli::parse();
    let code = match real_main(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imsprobe: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn watch_signals(trigger: Trigger) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            eprintln!("imsprobe: stopping: awaiting the last replies, flushing the capture, writing the reports (Ctrl-C again to quit at once)");
            trigger.stop(StopReason::Interrupted);
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            eprintln!("imsprobe: second interrupt: exiting without writing the reports");
            std::process::exit(130);
        });
    });
}

fn real_main(cli: Cli) -> anyhow::Result<i32> {
    if let Some(file) = &cli.pcap_only {
        return pcap_only(&cli, file);
    }
    anyhow::ensure!(
        !cli.targets.is_empty(),
        "no target: give --target NAME (from {}) or --target HOST:PORT, or --pcap-only FILE",
        cli.targets_file.display()
    );
    let file = TargetsFile::load(&cli.targets_file).map_err(anyhow::Error::msg)?;
    let mut targets = Vec::new();
    for spec in &cli.targets {
        let t = resolve_target(spec, file.as_ref(), &cli.targets_file, cli.transport)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            !targets
                .iter()
                .any(|x: &imsload::probe::targets::Target| x.path_name() == t.path_name()),
            "target {spec} is given twice"
        );
        targets.push(t);
    }
    let layers = match (cli.sip, cli.icmp) {
        (false, false) | (true, true) => vec![Layer::Sip, Layer::Icmp],
        (true, false) => vec![Layer::Sip],
        (false, true) => vec![Layer::Icmp],
    };
    let rate = cli.rate.unwrap_or(1000.0);
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0 && rate <= 100_000.0,
        "--rate {rate}: give probes per second per layer, between 0 and 100000"
    );
    anyhow::ensure!(!cli.timeout.is_zero(), "--timeout must be above zero");
    let cfg = RunConfig {
        targets,
        layers,
        rate,
        duration: cli.duration,
        timeout: cli.timeout,
        late_rtt: cli.late_rtt,
        min_gap: cli.min_gap,
        out: cli.out.clone(),
        capture: !cli.no_capture,
        iface: cli.iface.clone(),
        spin: cli.spin,
        rt_priority: (cli.rt_priority > 0).then_some(cli.rt_priority),
        plot: !cli.no_plot,
        quiet: cli.quiet,
    };
    let (trigger, _shutdown) = shutdown::channel();
    watch_signals(trigger.clone());
    let results = run::run(&cfg, &trigger)?;
    for r in &results {
        print!("{}", report::summary_text(&r.report));
        println!("  files: {}", r.dir.display());
    }
    Ok(0)
}

fn pcap_only(cli: &Cli, file: &std::path::Path) -> anyhow::Result<i32> {
    let cap = pcapread::read(file, cli.pcap_host).map_err(anyhow::Error::msg)?;
    let tb = cap.time_base;
    let base_out = cli.out.clone().unwrap_or_else(|| {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "capture".into());
        file.with_file_name(format!("{stem}-analysis"))
    });
    let targets: Vec<_> = cap
        .targets
        .iter()
        .filter(|t| !t.sip.is_empty() || !t.icmp.is_empty())
        .collect();
    anyhow::ensure!(
        !targets.is_empty(),
        "{} holds no SIP OPTIONS (over UDP or TCP) and no ICMP echo requests{} ({} packets read)",
        file.display(),
        cli.pcap_host
            .map(|h| format!(" to {h}"))
            .unwrap_or_default(),
        cap.stats.packets
    );
    for t in &targets {
        let dir = if targets.len() == 1 {
            base_out.clone()
        } else {
            base_out.join(t.host.replace(':', "_"))
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e} (use --out DIR)", dir.display()))?;
        let all: Vec<_> = t.sip.iter().chain(&t.icmp).copied().collect();
        let interval_ns = match cli.rate {
            Some(r) => (1e9 / r).round() as i64,
            None => [&t.sip, &t.icmp]
                .iter()
                .filter_map(|v| analysis::estimate_interval(v))
                .min()
                .unwrap_or(1_000_000),
        };
        let start = all.iter().map(|r| r.sent_ns).min().unwrap_or(0);
        let end = all
            .iter()
            .map(|r| r.received_ns.unwrap_or(r.sent_ns).max(r.sent_ns))
            .max()
            .unwrap_or(0);
        let params = Params {
            interval_ns,
            timeout_ns: cli.timeout.as_nanos() as i64,
            late_rtt_ns: cli.late_rtt.as_nanos() as i64,
            min_gap_ns: cli.min_gap.as_nanos() as i64,
            end_ns: end,
        };
        let mut analyses = Vec::new();
        let mut layers = Vec::new();
        let mut sets = Vec::new();
        for (layer, recs) in [(Layer::Sip, &t.sip), (Layer::Icmp, &t.icmp)] {
            if recs.is_empty() {
                continue;
            }
            let a = analysis::analyze(layer, recs, &params);
            layers.push(LayerOut::new(&a, &tb, "capture", "pcap"));
            analyses.push(a);
            sets.push((recs.as_slice(), params));
        }
        let mut rep = Report {
            tool: "imsprobe",
            version: env!("CARGO_PKG_VERSION"),
            mode: "pcap",
            source: Some(file.display().to_string()),
            target: TargetOut {
                name: t.host.clone(),
                host: t.host.clone(),
                sip_port: t.sip_port,
                transport: t.sip_transport.map(str::to_string),
            },
            started_utc: tb.label(start),
            ended_utc: tb.label(end),
            duration_s: (end - start) as f64 / 1e9,
            stop_reason: "capture".into(),
            params: ParamsOut::new(&params),
            layers,
            pacer: None,
            capture: None,
            warnings: pcap_warnings(&cap.stats),
            files: Files::default(),
        };
        run::write_outputs(&dir, &mut rep, &sets, &analyses, &tb, !cli.no_plot)?;
        print!("{}", report::summary_text(&rep));
        println!("  files: {}", dir.display());
    }
    Ok(0)
}

fn pcap_warnings(st: &pcapread::PcapStats) -> Vec<String> {
    let mut w = Vec::new();
    if st.unmatched_replies > 0 {
        w.push(format!(
            "{} replies in the capture match no request in it (capture started mid-run, or the requests were not captured)",
            st.unmatched_replies
        ));
    }
    if st.tcp_holes > 0 {
        w.push(format!(
            "the capture missed bytes inside SIP TCP connections {} times; the messages cut by those holes were skipped",
            st.tcp_holes
        ));
    }
    if st.tcp_unframed > 0 {
        w.push(format!(
            "{} times SIP TCP data could not be framed (bad Content-Length?); the partial messages were skipped",
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
