//! `imsload`: argument parsing and one call into the library.

use anyhow::{bail, Context as _};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use imsload::load::config::{
    Arrival, ByeBy, CoreConfig, DurationDist, ImsOptions, Mix, PreferredIdentity,
};
use imsload::load::control::{Controller, Objective};
use imsload::load::population::{self, Identity};
use imsload::load::runner::{self, RunSpec};
use imsload::load::shard::{self, Shard, ShardRun};
use imsload::profile::monitor::Monitor;
use imsload::profile::plan::Plan;
use imsload::profile::schema::{self, parse_duration, Profile};
use imsload::shutdown::{self, StopReason};
use imsload::sip::secagree::{AuthAlg, EncAlg};
use imsload::sip::transaction::Timers;
use imsload::sip::Transport;
use imsload::target::core::{TargetAka, TargetConfig};
use imsload::ua::answerer::AnswererConfig;
use imsload::ua::security::SecurityConfig;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Register a population of IMS users through a P-CSCF and place calls between them.
///
/// With no --target, runs against an embedded loopback target (registrar + proxy + answering UA).
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded target on its own (registrar with digest, proxy, answering UA), like
    /// `sipp -sn uas` with a registrar in front.
    Serve(Box<ServeArgs>),
    /// Merge the reports of a sharded run's shards (`--shard`/`--shards`) into one: counters
    /// summed, every percentile from the added histograms, rows merged by second, and a warning
    /// naming any shard missing, late to start or saturated (docs/sharding.md).
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// The shards' JSON reports (`imsload --report FILE`), or logs holding the lines
    /// `imsload --report -` printed (e.g. `kubectl logs` of every pod, in one file).
    #[arg(required = true, value_name = "REPORT")]
    reports: Vec<PathBuf>,
    /// Write the merged report as JSON here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write the merged per-second series here (.csv for CSV, else JSON lines).
    #[arg(long, value_name = "FILE")]
    series: Option<PathBuf>,
    /// Print only the warnings, not the merged table.
    #[arg(long, short)]
    quiet: bool,
}

fn shard_arg(s: &str) -> Result<Shard, String> {
    Shard::parse(s)
}

fn start_at(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    shard::parse_start_at(s)
}

/// `--ue-ports`: a count, or `users` (0 inside: one socket per user).
fn ue_ports(s: &str) -> Result<usize, String> {
    match s {
        "users" | "user" => Ok(0),
        _ => s
            .parse()
            .map_err(|_| format!("{s:?}: give a number of sockets per worker, or `users`")),
    }
}

/// `--media`'s codec names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MediaCodec {
    G711,
    Pcmu,
    Pcma,
}

/// The media plane's settings from `--media*`, or what is wrong with them.
fn media_config(a: &RunArgs) -> anyhow::Result<Option<imsload::media::engine::MediaConfig>> {
    use imsload::media::g711::{read_wav, tone, Codec};
    let Some(c) = a.media else { return Ok(None) };
    let ms = a.media_ptime.as_millis();
    if !(10..=200).contains(&ms) || ms % 5 != 0 || a.media_ptime.subsec_nanos() % 1_000_000 != 0 {
        bail!(
            "--media-ptime {:?}: give 10ms to 200ms in 5 ms steps (20ms is G.711's usual)",
            a.media_ptime
        );
    }
    if a.transport == Transport::Tcp {
        bail!("--media needs UDP signalling for now (the worker's media socket shares its UDP event loop): drop --transport tcp");
    }
    let samples = match &a.media_file {
        Some(p) => read_wav(p)?,
        None => tone(400.0),
    };
    if samples.is_empty() {
        bail!("--media-file: the file holds no audio");
    }
    let codec = match c {
        MediaCodec::Pcma => Codec::Pcma,
        MediaCodec::G711 | MediaCodec::Pcmu => Codec::Pcmu,
    };
    Ok(Some(imsload::media::engine::MediaConfig::new(
        codec,
        a.media_ptime,
        &samples,
    )))
}

fn ipsec_alg(s: &str) -> Result<AuthAlg, String> {
    AuthAlg::parse(s).ok_or_else(|| {
        format!("{s:?} is no integrity algorithm of TS 33.203: use hmac-sha-1-96 or hmac-md5-96")
    })
}

fn ipsec_ealg(s: &str) -> Result<EncAlg, String> {
    EncAlg::parse(s).ok_or_else(|| {
        format!("{s:?} is no encryption algorithm of TS 33.203: use null, aes-cbc or des-ede3-cbc")
    })
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 5s, 2m)"))
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a rate (a number ≥ 0, per second)")),
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Load profile (TOML; see profiles/ and docs/profiles.md): population, scenario mix,
    /// phases or a capacity search, monitors. Flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Print the plan (phases, rates, totals) and the settings in force; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// The P-CSCF (or any SIP proxy/registrar) to load: HOST:PORT. Default: embedded target.
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Home domain: REGISTER Request-URI and the host of public identities.
    #[arg(long, default_value = "ims.local")]
    domain: String,
    #[arg(long, value_enum, default_value = "udp")]
    transport: Transport,
    /// Number of users (from --user-pattern).
    #[arg(long, default_value_t = 10)]
    users: usize,
    /// User name pattern; %d or %0Nd is the index.
    #[arg(long, default_value = "user%04d")]
    user_pattern: String,
    #[arg(long, default_value_t = 1)]
    first_index: u64,
    /// Password rule: %u is the user name, %d the index.
    #[arg(long, default_value = "pw_%u")]
    password: String,
    /// Private identity (IMPI) pattern: %u is the user name, %d or %0Nd the index (e.g.
    /// 00101%010d@ims.mnc001.mcc001.3gppnetwork.org). Default: the user name.
    #[arg(long, value_name = "PATTERN")]
    impi_pattern: Option<String>,
    /// Users from a CSV file instead of the pattern: impu,impi,password[,k,opc,amf,sqn,tel], or
    /// columns named by a header line (impu, impi, password, k, op|opc, amf, sqn; hex; tel: tel:+… IMPU).
    #[arg(long, value_name = "CSV")]
    users_file: Option<PathBuf>,
    #[command(flatten)]
    aka: AkaArgs,
    #[command(flatten)]
    ims: ImsArgs,
    /// Initial registrations per second.
    #[arg(long, default_value = "100", value_parser = positive_rate)]
    reg_rate: f64,
    /// Registration lifetime asked for, seconds (re-REGISTER before it runs out).
    #[arg(long, default_value_t = 600)]
    expires: u32,
    /// Retry a failed registration after this long (default: no retry).
    #[arg(long, value_parser = duration)]
    reg_retry: Option<Duration>,
    /// Do not register; place calls to --ruri (like `sipp -sn uac`).
    #[arg(long)]
    no_register: bool,
    /// Call this Request-URI instead of registered users (implies --no-register).
    #[arg(long, value_name = "URI")]
    ruri: Option<String>,
    /// Call attempts per second (open loop: a slow target does not slow it).
    #[arg(long, default_value = "10", value_parser = positive_rate)]
    cps: f64,
    #[arg(long, value_enum, default_value = "constant")]
    arrival: Arrival,
    /// At most this many concurrent calls; arrivals beyond are counted as limited.
    #[arg(long, default_value_t = 10_000)]
    max_calls: usize,
    /// Timer resolution of a busy worker (SIPp's -timer_resol): it wakes at most once per
    /// this long, reads what gathered in batches and fires the timers then due, instead of
    /// waking for every datagram (the cost of each wake is most of a busy worker's kernel
    /// time). Delays are still measured to the microsecond (kernel receive stamps, UDP);
    /// calls start and retransmissions go up to this much late. 0s wakes for every event.
    #[arg(long, default_value = "1ms", value_parser = duration)]
    timer_resol: Duration,
    /// Stop after this many calls (like `sipp -m`).
    #[arg(long, value_name = "N")]
    calls: Option<u64>,
    /// Call hold time (mean, with --hold-dist exp).
    #[arg(long, default_value = "5s", value_parser = duration)]
    hold: Duration,
    #[arg(long, value_enum, default_value = "fixed")]
    hold_dist: DurationDist,
    /// How long the called side rings before answering.
    #[arg(long, default_value = "0s", value_parser = duration)]
    ring: Duration,
    /// CANCEL calls that ring longer than this.
    #[arg(long, default_value = "30s", value_parser = duration)]
    invite_timeout: Duration,
    #[arg(long, value_enum, default_value = "caller")]
    bye_by: ByeBy,
    /// Length of the call phase (after registration). Default: until Ctrl-C (10s on the
    /// embedded target).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Time allowed at the end for ending calls and de-registering.
    #[arg(long, default_value = "10s", value_parser = duration)]
    drain: Duration,
    /// RFC 3261 T1 (retransmission start).
    #[arg(long, default_value = "500ms", value_parser = duration)]
    t1: Duration,
    /// RFC 3261 T2 (retransmission cap).
    #[arg(long, default_value = "4s", value_parser = duration)]
    t2: Duration,
    /// Worker tasks (each with its own socket and share of the users). Default: one per 4,000
    /// calls/s or 8,000 registrations/s, at most one per core.
    #[arg(long)]
    workers: Option<usize>,
    /// Local IP to send from. Default: the one that routes to the target.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// First local port (worker i uses port+i; with --ue-ports N, its sockets take N
    /// consecutive ports). Default: any free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// UDP sockets per worker, users spread over them (user i on socket i % N), so that a
    /// P-CSCF sees them as distinct UEs; `users` (or 0): one socket, so one port, per user.
    #[arg(long, default_value = "1", value_parser = ue_ports, value_name = "N|users")]
    ue_ports: usize,
    /// Spread those sockets over N consecutive source addresses from --bind (IPv4), as real
    /// UEs each have their own: a P-CSCF keys its UE records by address, and many ports on one
    /// address crowd one hash slot (measured: docs/ims-lab.md). On loopback any 127.x.y.z
    /// works; elsewhere the addresses must be configured on the host.
    #[arg(long, default_value_t = 1, value_name = "N")]
    ue_ips: u32,
    /// IMS security agreement (TS 33.203, RFC 3329): each UE offers Security-Client in its
    /// first REGISTER, makes its four ESP SAs from the 401's Security-Server and its AKA keys,
    /// and sends everything after that through them (three sockets per UE). Needs AKA users,
    /// a P-CSCF that does sec-agree, a kernel with ESP and CAP_NET_ADMIN; run the UE side in
    /// its own network namespace (docs/ipsec.md).
    #[arg(long)]
    ipsec: bool,
    /// --ipsec: the integrity algorithm offered.
    #[arg(long, value_parser = ipsec_alg, default_value = "hmac-sha-1-96", value_name = "ALG")]
    ipsec_alg: AuthAlg,
    /// --ipsec: the encryption algorithm offered (Kamailio 5.6's des-ede3-cbc keys are broken,
    /// docs/ipsec.md).
    #[arg(long, value_parser = ipsec_ealg, default_value = "null", value_name = "EALG")]
    ipsec_ealg: EncAlg,
    /// Every call that is up carries RTP both ways (G.711; `g711` is PCMU first, PCMA if the
    /// peer has only that): from the ACK to the BYE, to where the far end's SDP says, with
    /// loss, jitter, the longest gap and a MOS per stream in the report (docs/media.md). UDP.
    #[arg(long, value_name = "CODEC")]
    media: Option<MediaCodec>,
    /// --media: packet time (10ms to 200ms, in 5 ms steps; a peer's a=ptime wins for what we
    /// send it).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms", value_name = "DURATION", requires = "media")]
    media_ptime: Duration,
    /// --media: play this WAV file (8 kHz, mono, 16-bit PCM), looped; default a 400 Hz tone.
    #[arg(long, value_name = "WAV", requires = "media")]
    media_file: Option<PathBuf>,
    /// --media: write one CSV line per stream as it ends (its SSRC, leg, start and end, packets,
    /// loss, jitter, its longest gap and when it began, R and MOS; docs/media.md).
    #[arg(long, value_name = "FILE", requires = "media")]
    media_log: Option<PathBuf>,
    /// Write the final report as JSON here; `-` prints it as one JSON line, last on stdout
    /// (for `kubectl logs`; `imsload merge` finds it there).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Run shard INDEX of COUNT (0-based, e.g. 2/8): its slice of the users and 1/COUNT of
    /// every rate and count; the report keeps what `imsload merge` needs (docs/sharding.md).
    #[arg(long, value_name = "INDEX/COUNT", value_parser = shard_arg, conflicts_with = "shards")]
    shard: Option<Shard>,
    /// Run one of COUNT shards, the index from JOB_COMPLETION_INDEX (as a Kubernetes Indexed
    /// Job sets it in each pod).
    #[arg(long, value_name = "COUNT")]
    shards: Option<u32>,
    /// Start the run at this UTC instant (RFC 3339, e.g. 2026-03-01T12:00:00Z) so that every
    /// shard's seconds line up; a shard that comes up later starts at once, counted late.
    #[arg(long, value_name = "TIME", value_parser = start_at)]
    start_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Write the per-second series here (.csv for CSV, else JSON lines).
    #[arg(long, value_name = "FILE")]
    series: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics while the run goes on (e.g.
    /// 0.0.0.0:9464): every counter of the report, responses by method and code, gauges, the
    /// RFC 6076 delays as histograms (docs/imsload.md, "Prometheus metrics").
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<SocketAddr>,
    /// The `run` label on every metric [default: imsload-<UTC start>].
    #[arg(long, value_name = "NAME", requires = "metrics")]
    metrics_run: Option<String>,
    /// After the run, keep serving the final metrics this long (Ctrl-C ends it sooner), so
    /// that the last scrape sees the final counts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    metrics_linger: Duration,
    /// No live progress lines (the final report is still printed).
    #[arg(long, short)]
    quiet: bool,
    /// Seed for caller/callee choice, arrival gaps and hold times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    hep: imsload::hep::mirror::HepArgs,
}

/// IMS AKA credentials shared by every pattern user (how lab HSSs are provisioned).
#[derive(Args, Debug, Default)]
struct AkaArgs {
    /// AKA: subscriber key K (32 hex digits). With it users answer AKAv1-MD5 challenges.
    #[arg(long, value_name = "HEX")]
    aka_k: Option<String>,
    /// AKA: OPc (32 hex digits).
    #[arg(
        long,
        value_name = "HEX",
        conflicts_with = "aka_op",
        requires = "aka_k"
    )]
    aka_opc: Option<String>,
    /// AKA: OP (32 hex digits); OPc is derived from it and K.
    #[arg(long, value_name = "HEX", requires = "aka_k")]
    aka_op: Option<String>,
    /// AKA: authentication management field the network puts in AUTN (4 hex digits).
    #[arg(long, value_name = "HEX", default_value = "8000", requires = "aka_k")]
    amf: String,
    /// AKA: the SQN the USIM (or, for `serve`, the HSS) starts from, hex.
    #[arg(long, value_name = "HEX", default_value = "0", requires = "aka_k")]
    sqn: String,
}

/// IMS UE headers (TS 24.229). `Supported: path` is always on REGISTER.
#[derive(Args, Debug, Default)]
struct ImsArgs {
    /// P-Access-Network-Info on REGISTER, INVITE and MESSAGE, e.g.
    /// '3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001'.
    #[arg(long, value_name = "VALUE")]
    pani: Option<String>,
    /// P-Preferred-Identity on INVITE and MESSAGE: the user's sip: IMPU, or its tel: IMPU.
    #[arg(long, value_name = "WHICH")]
    ppi: Option<PreferredIdentity>,
    /// +sip.instance in Contact, per user: a URN with %d or %0Nd for the user's index (CSV
    /// users: the row order from --first-index), e.g. 'urn:gsma:imei:35209900-%06d-0'.
    #[arg(long, value_name = "PATTERN")]
    sip_instance: Option<String>,
    /// +g.3gpp.icsi-ref in Contact (the URN; it is percent-encoded), e.g.
    /// urn:urn-7:3gpp-service.ims.icsi.mmtel.
    #[arg(long, value_name = "URN")]
    icsi_ref: Option<String>,
    /// A tel: IMPU per pattern user beside the sip: one: a global number with %d or %0Nd for
    /// the index, e.g. '+1555%07d'. CSV users: the `tel` column.
    #[arg(long, value_name = "PATTERN")]
    tel_pattern: Option<String>,
}

impl ImsArgs {
    fn options(&self) -> anyhow::Result<ImsOptions> {
        if let Some(p) = &self.pani {
            // It goes into a header line as given: a line break would forge headers.
            if p.trim().is_empty() || p.contains(['\r', '\n']) {
                bail!("--pani {p:?}: give one non-empty header value (no line breaks)");
            }
        }
        if let Some(i) = &self.icsi_ref {
            if !i.get(..4).is_some_and(|u| u.eq_ignore_ascii_case("urn:"))
                || i.contains(['"', ' ', '\r', '\n'])
            {
                bail!("--icsi-ref {i:?}: an ICSI is a URN, e.g. urn:urn-7:3gpp-service.ims.icsi.mmtel");
            }
        }
        Ok(ImsOptions {
            pani: self.pani.clone(),
            preferred_identity: self.ppi,
            icsi_ref: self.icsi_ref.clone(),
        })
    }
}

impl AkaArgs {
    fn subscription(&self) -> anyhow::Result<Option<population::AkaSubscription>> {
        let Some(k) = &self.aka_k else {
            return Ok(None);
        };
        population::aka_subscription(
            k,
            self.aka_op.as_deref(),
            self.aka_opc.as_deref(),
            Some(&self.amf),
            Some(&self.sqn),
        )
        .map(Some)
        .map_err(|(flag, why)| {
            let flag = match flag {
                "k" => "--aka-k",
                "op" => "--aka-op",
                "opc" => "--aka-opc",
                "amf" => "--amf",
                _ => "--sqn",
            };
            anyhow::anyhow!("{flag}: {why}")
        })
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    listen: SocketAddr,
    #[arg(long, default_value = "ims.local")]
    domain: String,
    /// Password rule for any user: %u is the user name.
    #[arg(long, default_value = "pw_%u")]
    password: String,
    /// Ring time before answering calls to non-registered URIs.
    #[arg(long, default_value = "0s", value_parser = duration)]
    ring: Duration,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Calls in progress the answering side holds at most; a new INVITE beyond is answered
    /// 503 with Retry-After and counted (calls_refused_overload), never stored.
    #[arg(long, default_value_t = AnswererConfig::default().max_calls)]
    max_calls: usize,
    /// While busy, wake at most once per this long and answer what gathered in one batch
    /// (as imsload's --timer-resol). The default, 0s, answers each datagram as it comes; 1ms
    /// costs far less CPU per call at tens of thousands of calls/s and delays answers by up
    /// to that much.
    #[arg(long, default_value = "0s", value_parser = duration)]
    timer_resol: Duration,
    /// Challenge with AKAv1-MD5 (these keys for every user; --sqn is the network's start).
    #[command(flatten)]
    aka: AkaArgs,
    /// AKA keys and SQNs per user from the same CSV imsload reads (users with k get AKA).
    #[arg(long, value_name = "CSV")]
    users_file: Option<PathBuf>,
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    hep: imsload::hep::mirror::HepArgs,
}

fn main() {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let code = match run_main(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imsload: error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What a profile adds to a run beyond flags.
#[derive(Default)]
struct ProfileRun {
    control: Option<Controller>,
    monitors: Vec<Monitor>,
    monitor_interval: Option<Duration>,
    mix: Mix,
    preregistered: f64,
    ring_dist: Option<DurationDist>,
    /// The `--dry-run` text.
    plan_text: String,
}

/// True when the user gave this flag on the command line (it then wins over the profile).
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn dist(d: &schema::Dist) -> anyhow::Result<(Duration, DurationDist)> {
    let mean =
        parse_duration(&d.mean).with_context(|| format!("{:?} is not a duration", d.mean))?;
    let kind = if d.dist == "exp" {
        DurationDist::Exp
    } else {
        DurationDist::Fixed
    };
    Ok((mean, kind))
}

/// Takes into `a` what the profile sets and the command line did not, and builds the rate
/// controller and monitors.
fn apply_profile(
    a: &mut RunArgs,
    m: &ArgMatches,
    p: &Profile,
    shard: Option<Shard>,
) -> anyhow::Result<ProfileRun> {
    let pop = &p.population;
    if !given(m, "users") {
        a.users = (*pop.count.get_ref()).max(0) as usize;
    }
    if !given(m, "user_pattern") {
        a.user_pattern.clone_from(&pop.pattern);
    }
    if !given(m, "first_index") {
        a.first_index = pop.first_index;
    }
    if !given(m, "password") {
        a.password.clone_from(&pop.password);
    }
    if !given(m, "users_file") && pop.file.is_some() {
        a.users_file = pop.file.as_ref().map(PathBuf::from);
    }
    if !given(m, "reg_rate") {
        a.reg_rate = *pop.reg_rate.get_ref();
    }
    if !given(m, "expires") {
        a.expires = pop.expires;
    }
    if !given(m, "ue_ports") {
        // Checked when the profile was loaded: a count, or "users" (0: one per user).
        if let Some(u) = &pop.ue_ports {
            a.ue_ports = match u.get_ref() {
                schema::UePorts::Count(n) => *n as usize,
                schema::UePorts::Named(_) => 0,
            };
        }
    }
    if !given(m, "target") && p.target.address.is_some() {
        a.target.clone_from(&p.target.address);
    }
    if !given(m, "domain") {
        if let Some(d) = &p.target.domain {
            a.domain.clone_from(d);
        }
    }
    if !given(m, "transport") {
        if let Some(t) = &p.target.transport {
            a.transport = match t.as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                other => bail!("profile: target.transport {other:?}: use \"udp\" or \"tcp\""),
            };
        }
    }
    let sc = &p.scenario;
    if !given(m, "arrival") {
        a.arrival = if sc.arrival == "poisson" {
            Arrival::Poisson
        } else {
            Arrival::Constant
        };
    }
    if !given(m, "hold") && !given(m, "hold_dist") {
        (a.hold, a.hold_dist) = dist(&sc.hold)?;
    }
    let mut out = ProfileRun {
        preregistered: *pop.preregistered.get_ref(),
        ..ProfileRun::default()
    };
    if !given(m, "ring") {
        let (ring, d) = dist(&sc.ring)?;
        a.ring = ring;
        out.ring_dist = Some(d);
    }
    let mx = &sc.mix;
    out.mix = Mix {
        call: *mx.call.get_ref(),
        register: *mx.register.get_ref(),
        reregister: *mx.reregister.get_ref(),
        deregister: *mx.deregister.get_ref(),
        message: *mx.message.get_ref(),
        options: *mx.options.get_ref(),
    };
    for mon in &p.monitors {
        out.monitors
            .push(Monitor::from_profile(mon).map_err(|e| anyhow::anyhow!("profile: {e}"))?);
        if let Some(iv) = mon.interval.as_deref().and_then(parse_duration) {
            out.monitor_interval = Some(out.monitor_interval.map_or(iv, |x: Duration| x.min(iv)));
        }
    }
    let mut plan = Plan::of(p);
    // --users (or a CSV) may have changed how many are pre-registered.
    plan.preregister = (a.users as f64 * pop.preregistered.get_ref()).round() as usize;
    plan.preregister_time =
        Duration::from_secs_f64(plan.preregister as f64 / pop.reg_rate.get_ref().max(0.001));
    if let Some(sh) = shard {
        // Every rate of the plan divided, its times kept: the shards' plans add up to the
        // profile's, second by second. The pre-registration takes as long (1/N of the users
        // at 1/N of the rate), so all shards begin the plan together.
        for seg in &mut plan.segments {
            seg.rate_from = sh.rate(seg.rate_from);
            seg.rate_to = sh.rate(seg.rate_to);
        }
        plan.preregister = sh.range(plan.preregister).len();
        plan.reg_rate = sh.rate(plan.reg_rate);
    }
    if let Some(d) = a.duration {
        // --duration caps the plan: segments past it are cut.
        plan.segments.retain(|s| s.start < d);
        if let Some(last) = plan.segments.last_mut() {
            last.duration = last.duration.min(d - last.start);
        }
    }
    if given(m, "cps") {
        out.plan_text = format!(
            "--cps {} given: a constant {} attempts/s replaces the profile's phases{}\n",
            a.cps,
            a.cps,
            match a.duration {
                Some(d) => format!(" for {}", humantime::format_duration(d)),
                None => " until Ctrl-C".into(),
            }
        );
        return Ok(out);
    }
    match (&p.capacity, p.phases.is_empty()) {
        (Some(_), false) => bail!(
            "profile: give [[phase]]s or [capacity], not both (a capacity search sets its own rates)"
        ),
        (Some(c), true) => {
            let each = parse_duration(&c.each).context("profile: capacity.each")?;
            let max_delay = sc
                .objective
                .as_deref()
                .and_then(parse_duration)
                .unwrap_or(Duration::from_secs(2));
            let limit_pct = c.limit_pct.as_ref().map_or(0.1, |l| *l.get_ref());
            // A shard searches with its share of each step: the merge judges the steps again
            // on the shards' summed outcomes (docs/sharding.md).
            let div = |r: f64| shard.map_or(r, |s| s.rate(r));
            out.plan_text = format!(
                "capacity search: attempts/s from {} in steps of {} every {} up to {}; a step fails when over {limit_pct} % \
                 of its scenarios fail or take longer than {} (TS 186 008 \"inadequately handled\"); the design objective \
                 capacity is the last step that passed\n",
                div(*c.from.get_ref()),
                div(*c.step.get_ref()),
                humantime::format_duration(each),
                div(*c.max.get_ref()),
                humantime::format_duration(max_delay),
            );
            out.control = Some(Controller::capacity(
                div(*c.from.get_ref()),
                div(*c.step.get_ref()),
                div(*c.max.get_ref()),
                each,
                Objective {
                    max_delay,
                    limit_pct,
                },
            ));
        }
        (None, true) => {
            out.plan_text = "the profile has no [[phase]]: --cps and --duration apply\n".into();
        }
        (None, false) => {
            out.plan_text = plan.to_text(p);
            out.control = Some(
                Controller::plan(&plan).map_err(|e| anyhow::anyhow!("profile: {e}"))?,
            );
        }
    }
    Ok(out)
}

/// `imsload merge`: the library merges; exit 2 on reports that cannot be merged, else as a
/// run: 1 when a registration or call failed in any shard.
fn merge(m: MergeArgs) -> anyhow::Result<i32> {
    use imsload::load::merge;
    let merged = merge::merge(merge::read_reports(&m.reports)?)?;
    merge::write(&merged, m.report.as_deref(), m.series.as_deref())?;
    if m.quiet {
        for w in &merged.report.warnings {
            eprintln!("WARNING: {w}");
        }
    } else {
        println!("{}", merged.report.to_text());
    }
    if let Some(p) = &m.report {
        println!("merged report written to {}", p.display());
    }
    if let Some(p) = &m.series {
        println!(
            "merged series ({} seconds) written to {}",
            merged.series.len(),
            p.display()
        );
    }
    Ok(if failures(&merged.report.counters) > 0 {
        1
    } else {
        0
    })
}

/// Registrations and calls that failed (what makes the exit code 1, as SIPp's).
fn failures(c: &imsload::load::stats::Counters) -> u64 {
    c.reg_failed
        + c.reg_timeouts
        + c.calls_failed
        + c.calls_timeout
        + c.calls_abandoned
        + c.calls_unanswered
        + c.dereg_unanswered
        + c.msg_failed
        + c.msg_timeouts
        + c.opt_failed
        + c.opt_timeouts
}

/// `--shard I/N`, or `--shards N` with the index from the environment.
fn shard_of(a: &RunArgs) -> anyhow::Result<Option<Shard>> {
    Ok(match (a.shard, a.shards) {
        (Some(s), _) => Some(s),
        (None, Some(n)) => Some(
            Shard::from_env(n, std::env::var(shard::INDEX_ENV).ok().as_deref())
                .map_err(|e| anyhow::anyhow!("--shards: {e}"))?,
        ),
        (None, None) => None,
    })
}

fn run_main(cli: Cli, matches: &ArgMatches) -> anyhow::Result<i32> {
    match cli.command {
        Some(Command::Serve(s)) => return serve(*s),
        Some(Command::Merge(m)) => return merge(m),
        None => {}
    }
    let mut a = cli.run;
    let shard = shard_of(&a)?;
    let prof = match &a.profile {
        Some(path) => {
            let p = schema::load(path)?;
            apply_profile(&mut a, matches, &p, shard)?
        }
        None => {
            if a.dry_run {
                bail!("--dry-run prints a profile's plan: give --profile FILE");
            }
            ProfileRun {
                preregistered: 1.0,
                ..ProfileRun::default()
            }
        }
    };
    let total_users = a.users;
    if let Some(sh) = shard {
        // Counts and rates of the whole run become this shard's share (a profile's phases were
        // divided above); each shard draws from a seed of its own.
        a.cps = sh.rate(a.cps);
        a.reg_rate = sh.rate(a.reg_rate);
        a.max_calls = sh.count_share(a.max_calls as u64).max(1) as usize;
        a.calls = a.calls.map(|c| sh.count_share(c));
        a.seed = sh.seed(a.seed);
        if a.users_file.is_none() {
            a.users = sh.range(a.users).len();
        }
    }
    if a.dry_run {
        if let Some(sh) = shard {
            println!(
                "shard {}/{}: users {:?} of {total_users}, 1/{} of every rate (the plan below is this shard's)",
                sh.index,
                sh.count,
                sh.range(total_users),
                sh.count
            );
        }
        print!("{}", prof.plan_text);
        println!(
            "settings: {} users ({}), target {}, domain {}, {}, {}, reg {}/s, expires {} s, {:?} arrivals, hold {} {:?}, ring {}",
            a.users,
            match &a.users_file {
                Some(f) => format!("from {}", f.display()),
                None => format!("pattern {}", a.user_pattern),
            },
            a.target.as_deref().unwrap_or("embedded"),
            a.domain,
            a.transport.param(),
            match a.ue_ports {
                0 => "one UDP socket per user".to_string(),
                1 => "one socket per worker".to_string(),
                n => format!("{n} sockets per worker"),
            },
            a.reg_rate,
            a.expires,
            a.arrival,
            humantime::format_duration(a.hold),
            a.hold_dist,
            humantime::format_duration(a.ring),
        );
        if !prof.monitors.is_empty() {
            let names: Vec<&str> = prof.monitors.iter().map(|m| m.name.as_str()).collect();
            println!("monitors: {}", names.join(", "));
        }
        return Ok(0);
    }
    let has_control = prof.control.is_some();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One worker per 4,000 calls/s or 8,000 registrations/s, up to the number of cores: at low
    // rates more workers only add wake-ups and migrations (measured: 0.66 vs 0.43 CPU-s per
    // 10,000 calls at 1,000 calls/s with 2 workers vs 1).
    let peak = if has_control { 0.0 } else { a.cps };
    let auto = ((peak / 4000.0).max(a.reg_rate / 8000.0).ceil() as usize).clamp(1, cores);
    let workers = a.workers.unwrap_or(auto).max(1);
    let users = load_users(&a, shard, total_users)?;
    let ims = a.ims.options()?;
    let register = !(a.no_register || a.ruri.is_some());
    if register && users.len() < 2 && a.cps > 0.0 {
        bail!(
            "calls between registered users need at least 2 users (--users {})",
            users.len()
        );
    }
    if a.t1.is_zero() || a.t2 < a.t1 {
        bail!(
            "timers must satisfy 0 < --t1 ≤ --t2 (got t1 {:?}, t2 {:?})",
            a.t1,
            a.t2
        );
    }
    let stdout_report = a.report.as_deref() == Some(std::path::Path::new("-"));
    if stdout_report {
        a.report = None;
    }
    let late_s = match a.start_at {
        Some(t) => {
            if !a.quiet {
                eprintln!(
                    "imsload: waiting for --start-at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                );
            }
            let late = shard::sleep_until(t).map_err(anyhow::Error::msg)?;
            if late > shard::LATE_S {
                eprintln!(
                    "imsload: WARNING: started {late:.1} s after --start-at: this run's seconds lag the other shards'"
                );
            }
            late
        }
        None => 0.0,
    };
    let rt = runtime(workers + 1)?;
    let a = a;
    rt.block_on(async move {
        let (trigger, _sd) = shutdown::channel();
        shutdown::watch_signals(trigger.clone());
        let embedded = a.target.is_none();
        let (target, served) = match &a.target {
            Some(t) => (resolve(t)?, None),
            None => {
                if a.transport == Transport::Tcp {
                    bail!("the embedded target speaks UDP only: give --target HOST:PORT for TCP");
                }
                // In process and reached by our own callers only: sized like the load side's
                // answerer, not like `serve`, so that no-registration runs at high rates (every
                // call answered here) are never refused.
                let d = CoreConfig::default();
                let cfg = TargetConfig {
                    domain: a.domain.clone(),
                    password_rule: a.password.clone(),
                    aka: target_aka(&users, None),
                    answerer: AnswererConfig {
                        max_calls: d.uas_max_calls,
                        max_bytes: d.uas_max_bytes,
                        ..AnswererConfig::default()
                    },
                    ..TargetConfig::default()
                };
                let s = imsload::target::serve::start(
                    cfg,
                    SocketAddr::from(([127, 0, 0, 1], 0)),
                    trigger.subscribe(),
                    Duration::from_secs(1),
                    false,
                )
                .await?;
                (s.addr, Some(s))
            }
        };
        // With a plan the controller ends the run; else --duration (10 s on the embedded
        // target, where a forgotten Ctrl-C should not run forever).
        let duration = if has_control {
            None
        } else {
            a.duration.or(embedded.then_some(Duration::from_secs(10)))
        };
        let fixed_ruri = a.ruri.clone().or_else(|| {
            (!register).then(|| format!("sip:service@{}", target))
        });
        if embedded {
            println!(
                "imsload: no --target given: running against the embedded target at {target} \
                 (registrar with digest + proxy + answering UA); give --target HOST:PORT for a real P-CSCF"
            );
        }
        let bind = match a.bind {
            Some(b) => b,
            None => local_ip_for(target)?,
        };
        let core = CoreConfig {
            target,
            transport: a.transport,
            domain: a.domain.clone(),
            timers: Timers { t1: a.t1, t2: a.t2, ..Timers::default() },
            register,
            expires: a.expires,
            reg_rate: a.reg_rate.max(0.001),
            preregistered: prof.preregistered,
            reg_retry: a.reg_retry,
            cps: if has_control { 0.0 } else { a.cps },
            mix: prof.mix,
            arrival: a.arrival,
            max_calls: a.max_calls.max(1),
            max_total_calls: a.calls,
            hold: a.hold,
            hold_dist: a.hold_dist,
            ring: a.ring,
            ring_dist: prof.ring_dist.unwrap_or(DurationDist::Fixed),
            invite_timeout: a.invite_timeout,
            bye_by: a.bye_by,
            fixed_ruri,
            duration,
            drain: a.drain,
            seed: a.seed,
            ims,
            ipsec: a.ipsec.then_some(SecurityConfig {
                alg: a.ipsec_alg,
                ealg: a.ipsec_ealg,
                pcscf: target.ip(),
            }),
            media: media_config(&a)?,
            ..CoreConfig::default()
        };
        if a.ipsec && embedded {
            bail!("--ipsec needs --target: a P-CSCF that does sec-agree (the embedded target does not)");
        }
        if a.ipsec && users.iter().all(|u| u.aka.is_none()) {
            bail!("--ipsec needs AKA users: the SAs are keyed from AKA's CK and IK (give --aka-k and --aka-opc, or k/opc columns in --users-file)");
        }
        println!(
            "imsload: {} users @{} → {target} over {}, register {}, {}, hold {:?}, {}",
            users.len(),
            a.domain,
            a.transport.param(),
            if register { "yes" } else { "no" },
            if has_control {
                format!("rates from {}", a.profile.as_deref().unwrap_or(std::path::Path::new("")).display())
            } else {
                format!("{} attempts/s", a.cps)
            },
            a.hold,
            match duration {
                Some(d) => format!("call phase {}", humantime::format_duration(d)),
                None if has_control => "until the plan ends".into(),
                None => "until Ctrl-C".into(),
            }
        );
        let metrics = match a.metrics {
            Some(addr) => {
                let run = a.metrics_run.clone().unwrap_or_else(|| {
                    format!(
                        "imsload-{}",
                        imsload::clock::stamp_for_path(chrono::Utc::now())
                    )
                });
                let e = imsload::load::metrics::Exporter::bind(addr, &run, &target.to_string())
                    .map_err(anyhow::Error::msg)?;
                if !a.quiet {
                    eprintln!(
                        "imsload: metrics at http://{}/metrics (run=\"{run}\")",
                        e.local_addr()
                    );
                }
                Some(std::sync::Arc::new(e))
            }
            None => None,
        };
        let spec = RunSpec {
            metrics: metrics.clone(),
            core,
            workers,
            bind,
            port: a.port,
            ue_ports: a.ue_ports,
            ue_ips: a.ue_ips.max(1),
            progress: !a.quiet,
            report_json: a.report.clone(),
            series: a.series.clone(),
            embedded_target: embedded,
            hep: a.hep.config("imsload"),
            media_log: a.media_log.clone(),
            timer_resolution: a.timer_resol,
            control: prof.control,
            monitors: prof.monitors,
            monitor_interval: prof.monitor_interval.unwrap_or(Duration::from_secs(1)),
            shard: shard.map(|shard| ShardRun {
                shard,
                start_at: a.start_at,
                late_s,
            }),
        };
        let report = runner::run(spec, users, trigger.clone()).await?;
        if let Some(s) = served {
            let _ = s.task.await;
        }
        println!("{}", report.to_text());
        if let Some(p) = &a.report {
            println!("report written to {}", p.display());
        }
        if stdout_report {
            // One line, last: `kubectl logs` keeps it whole and `imsload merge` finds it.
            println!("{}", serde_json::to_string(&report)?);
        }
        if let Some(m) = metrics {
            m.linger(a.metrics_linger).await;
        }
        let failed = failures(&report.counters);
        let _ = StopReason::Finished;
        // Like SIPp: exit 1 when anything failed, so scripts can tell.
        Ok(if failed > 0 { 1 } else { 0 })
    })
}

/// The run's users; a shard's slice of them (by position: pattern indices and CSV rows alike).
/// A pattern shard makes only its own users: its first index moves to its slice's start.
fn load_users(
    a: &RunArgs,
    shard: Option<Shard>,
    total_users: usize,
) -> anyhow::Result<Vec<Identity>> {
    let first_index = match (shard, &a.users_file) {
        (Some(sh), None) => a.first_index + sh.range(total_users).start as u64,
        _ => a.first_index,
    };
    let aka = a.aka.subscription()?;
    let mut users = match &a.users_file {
        Some(p) => {
            if aka.is_some() || a.impi_pattern.is_some() || a.ims.tel_pattern.is_some() {
                bail!("--aka-*/--impi-pattern/--tel-pattern apply to pattern users; with --users-file give k, opc, amf, sqn, tel columns in the CSV");
            }
            population::from_csv(p)?
        }
        None => population::from_spec(&population::PatternSpec {
            user: &a.user_pattern,
            first: first_index,
            count: a.users,
            domain: &a.domain,
            password: &a.password,
            impi: a.impi_pattern.as_deref(),
            aka,
            tel: a.ims.tel_pattern.as_deref(),
        })?,
    };
    if let Some(p) = &a.ims.sip_instance {
        population::set_instances(&mut users, p, first_index)
            .map_err(|e| anyhow::anyhow!("--sip-instance: {e}"))?;
    }
    if let (Some(sh), Some(f)) = (shard, &a.users_file) {
        let all = users.len();
        users = sh.slice(users);
        if users.is_empty() {
            bail!(
                "shard {}/{}: {} holds {all} users, none left for this shard (give fewer shards)",
                sh.index,
                sh.count,
                f.display()
            );
        }
    }
    Ok(users)
}

/// The embedded target's AKA data: the users that have keys (by IMPI), and `all` for anyone
/// else when given. `None` when nobody uses AKA (the target stays MD5).
fn target_aka(users: &[Identity], all: Option<population::AkaSubscription>) -> Option<TargetAka> {
    let mut t = TargetAka {
        all: all.map(|s| s.keys),
        initial_sqn: all.map_or(0, |s| s.sqn),
        sqn_step: 32,
        ..TargetAka::default()
    };
    for u in users {
        if let Some(s) = u.aka {
            t.users.insert(u.impi.clone(), (s.keys, s.sqn));
        }
    }
    (t.all.is_some() || !t.users.is_empty()).then_some(t)
}

/// `--target`: a name from `profiles/targets.toml` (the file imsprobe reads, so both tools
/// agree on what `pcscf` is), HOST:PORT, or a host (port 5060).
fn resolve(t: &str) -> anyhow::Result<SocketAddr> {
    let file = std::path::Path::new("profiles/targets.toml");
    if let Ok(Some(f)) = imsload::probe::targets::TargetsFile::load(file) {
        if let Some(e) = f.targets.get(t) {
            let host = if e.host.contains(':') {
                format!("[{}]", e.host)
            } else {
                e.host.clone()
            };
            return resolve(&format!("{host}:{}", e.sip_port))
                .with_context(|| format!("target {t} in {}", file.display()));
        }
    }
    let with_port = if t.parse::<SocketAddr>().is_ok()
        || t.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        t.to_string()
    } else {
        format!("{t}:5060")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| {
            format!("cannot resolve --target {t:?} (expected HOST:PORT, e.g. 127.0.0.1:5060)")
        })?
        .next()
        .with_context(|| format!("--target {t:?} resolves to no address"))
}

/// The local address the kernel would use to reach `target` (what goes in Via and Contact).
fn local_ip_for(target: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(target)
        .with_context(|| format!("no route to the target {target}"))?;
    Ok(s.local_addr()?.ip())
}

fn serve(s: ServeArgs) -> anyhow::Result<i32> {
    let rt = runtime(2)?;
    rt.block_on(async move {
        let (trigger, _sd) = shutdown::channel();
        shutdown::watch_signals(trigger.clone());
        let users = match &s.users_file {
            Some(p) => population::from_csv(p)?,
            None => Vec::new(),
        };
        let aka = target_aka(&users, s.aka.subscription()?);
        let aka_note = match &aka {
            Some(t) if t.all.is_some() => "AKAv1-MD5 for every user".to_string(),
            Some(t) => format!("AKAv1-MD5 for the {} users with keys, MD5 for others", t.users.len()),
            None => "MD5".to_string(),
        };
        let cfg = TargetConfig {
            aka,
            domain: s.domain.clone(),
            password_rule: s.password.clone(),
            answerer: AnswererConfig {
                ring: s.ring,
                max_calls: s.max_calls.max(1),
                ..AnswererConfig::default()
            },
            ..TargetConfig::default()
        };
        let hep = match s.hep.config("imsload") {
            Some(h) => Some(imsload::hep::mirror::Mirror::start(&h, "imsload serve")?),
            None => None,
        };
        let served = imsload::target::serve::start_with(
            cfg,
            s.listen,
            trigger.subscribe(),
            Duration::ZERO,
            !s.quiet,
            imsload::target::serve::Wiring {
                tap: hep.as_ref().map(|m| m.tap()),
                timer_resolution: s.timer_resol,
            },
        )
        .await?;
        println!(
            "imsload serve: listening on udp:{} for domain {} ({aka_note}; password rule {:?}); Ctrl-C to stop",
            served.addr, s.domain, s.password
        );
        if let Some(d) = s.duration {
            let t = trigger.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                t.stop(StopReason::Duration);
            });
        }
        let stats = served.task.await?;
        println!("{}", serde_json::to_string_pretty(&stats)?);
        if let Some(m) = hep {
            let h = m.finish(Duration::from_secs(2));
            println!("{}", h.line());
            if let Some(w) = h.warning() {
                println!("WARNING: {w}");
            }
        }
        Ok(0)
    })
}
