//! `imsload`'s command line as clap parses it: the low-level arguments, before a profile and the
//! defaults are merged in ([`super::settings`] does that, once). Here, not in the binary, so that
//! tests build them from an argument list as a user would type it.
//!
//! A flag a profile can also set is an `Option` without a clap default: `Some` means the user gave
//! it (it wins over the profile), and the default it shows in `--help` is applied by
//! [`super::settings::Settings::resolve`] when neither gave a value.

// The doc comments of the arguments are their --help text, in clap's form (`[default: …]`,
// `<realm>`), not rustdoc's.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use crate::load::config::{Arrival, ByeBy, DurationDist, ImsOptions, PreferredIdentity};
use crate::load::population;
use crate::load::shard::{self, Shard};
use crate::sip::secagree::{AuthAlg, EncAlg};
use crate::sip::Transport;
use crate::ua::answerer::AnswererConfig;
use anyhow::{anyhow, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Register a population of IMS users through a P-CSCF and place calls between them.
///
/// With no --target, runs against an embedded loopback target (registrar + proxy + answering UA).
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// More diagnostics on stderr (-v: debug, -vv: everything); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the embedded target on its own (registrar with digest, proxy, answering UA), like
    /// `sipp -sn uas` with a registrar in front.
    Serve(Box<ServeArgs>),
    /// Merge the reports of a sharded run's shards (`--shard`/`--shards`) into one: counters
    /// summed, every percentile from the added histograms, rows merged by second, and a warning
    /// naming any shard missing, late to start or saturated (docs/sharding.md).
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shards' JSON reports (`imsload --report FILE`), or logs holding the lines
    /// `imsload --report -` printed (e.g. `kubectl logs` of every pod, in one file).
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,
    /// Write the merged report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the merged per-second series here (.csv for CSV, else JSON lines).
    #[arg(long, value_name = "FILE")]
    pub series: Option<PathBuf>,
    /// Print only the warnings, not the merged table.
    #[arg(long, short)]
    pub quiet: bool,
}

// The value parsers' errors are whole messages, never `.context()` chains: clap prints an
// error with `{}`, which shows only an anyhow error's outermost context.

/// `--ue-ports`: a count, or `users` (0 inside: one socket per user).
fn ue_ports(s: &str) -> anyhow::Result<usize> {
    match s {
        "users" | "user" => Ok(0),
        _ => s
            .parse()
            .map_err(|_| anyhow!("{s:?}: give a number of sockets per worker, or `users`")),
    }
}

/// `--media`'s codec names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaCodec {
    G711,
    Pcmu,
    Pcma,
}

fn ipsec_alg(s: &str) -> anyhow::Result<AuthAlg> {
    AuthAlg::parse(s).ok_or_else(|| {
        anyhow!("{s:?} is no integrity algorithm of TS 33.203: use hmac-sha-1-96 or hmac-md5-96")
    })
}

fn ipsec_ealg(s: &str) -> anyhow::Result<EncAlg> {
    EncAlg::parse(s).ok_or_else(|| {
        anyhow!("{s:?} is no encryption algorithm of TS 33.203: use null, aes-cbc or des-ede3-cbc")
    })
}

fn duration(s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s).map_err(|e| anyhow!("{e} (examples: 500ms, 5s, 2m)"))
}

fn call_hold(s: &str) -> anyhow::Result<crate::ua::caller::HoldPlan> {
    use crate::sip::sdp::Direction;
    let mut parts = s.split(',').map(str::trim);
    let (Some(after), Some(length)) = (parts.next(), parts.next()) else {
        bail!("{s:?}: give AFTER,LENGTH[,MODE], e.g. 5s,3s or 5s,3s,inactive");
    };
    let direction = match parts.next() {
        None | Some("sendonly") => Direction::SendOnly,
        Some("inactive") => Direction::Inactive,
        Some(m) => bail!("{m:?} is no hold mode: use sendonly or inactive"),
    };
    if parts.next().is_some() {
        bail!("{s:?}: at most three parts, AFTER,LENGTH,MODE");
    }
    Ok(crate::ua::caller::HoldPlan {
        after: duration(after).map_err(|e| anyhow!("AFTER {after:?}: {e}"))?,
        length: duration(length).map_err(|e| anyhow!("LENGTH {length:?}: {e}"))?,
        direction,
    })
}

fn positive_rate(s: &str) -> anyhow::Result<f64> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => bail!("{s:?} is not a rate (a number ≥ 0, per second)"),
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Load profile (TOML; see profiles/ and docs/profiles.md): population, scenario mix,
    /// phases or a capacity search, monitors. Flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Print the plan (phases, rates, totals) and the settings in force; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The P-CSCF (or any SIP proxy/registrar) to load: HOST:PORT. Default: embedded target.
    #[arg(long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    /// Home domain: REGISTER Request-URI and the host of public identities [default: ims.local].
    #[arg(long)]
    pub domain: Option<String>,
    /// [default: udp]
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Number of users (from --user-pattern) [default: 10].
    #[arg(long)]
    pub users: Option<usize>,
    /// User name pattern; %d or %0Nd is the index [default: user%04d].
    #[arg(long)]
    pub user_pattern: Option<String>,
    /// [default: 1]
    #[arg(long)]
    pub first_index: Option<u64>,
    /// Password rule: %u is the user name, %d the index [default: pw_%u].
    #[arg(long)]
    pub password: Option<String>,
    /// Private identity (IMPI) pattern: %u is the user name, %d or %0Nd the index (e.g.
    /// 00101%010d@ims.mnc001.mcc001.3gppnetwork.org). Default: the user name.
    #[arg(long, value_name = "PATTERN")]
    pub impi_pattern: Option<String>,
    /// Users from a CSV file instead of the pattern: impu,impi,password[,k,opc,amf,sqn,tel], or
    /// columns named by a header line (impu, impi, password, k, op|opc, amf, sqn; hex; tel: tel:+… IMPU).
    #[arg(long, value_name = "CSV")]
    pub users_file: Option<PathBuf>,
    #[command(flatten)]
    pub aka: AkaArgs,
    #[command(flatten)]
    pub ims: ImsArgs,
    /// Initial registrations per second [default: 100].
    #[arg(long, value_parser = positive_rate)]
    pub reg_rate: Option<f64>,
    /// Registration lifetime asked for, seconds (re-REGISTER before it runs out) [default: 600].
    #[arg(long)]
    pub expires: Option<u32>,
    /// Retry a failed registration after this long (default: no retry).
    #[arg(long, value_parser = duration)]
    pub reg_retry: Option<Duration>,
    /// Do not register; place calls to --ruri (like `sipp -sn uac`).
    #[arg(long)]
    pub no_register: bool,
    /// Call this Request-URI instead of registered users (implies --no-register).
    #[arg(long, value_name = "URI")]
    pub ruri: Option<String>,
    /// Call attempts per second (open loop: a slow target does not slow it) [default: 10].
    #[arg(long, value_parser = positive_rate)]
    pub cps: Option<f64>,
    /// [default: constant]
    #[arg(long, value_enum)]
    pub arrival: Option<Arrival>,
    /// At most this many concurrent calls; arrivals beyond are counted as limited.
    #[arg(long, default_value_t = 10_000)]
    pub max_calls: usize,
    /// Timer resolution of a busy worker (SIPp's -timer_resol): it wakes at most once per
    /// this long, reads what gathered in batches and fires the timers then due, instead of
    /// waking for every datagram (the cost of each wake is most of a busy worker's kernel
    /// time). Delays are still measured to the microsecond (kernel receive stamps, UDP);
    /// calls start and retransmissions go up to this much late. 0s wakes for every event.
    /// Default 1ms; with --media 250us, since every RTP packet may leave up to this late.
    #[arg(long, value_parser = duration)]
    pub timer_resol: Option<Duration>,
    /// Stop after this many calls (like `sipp -m`).
    #[arg(long, value_name = "N")]
    pub calls: Option<u64>,
    /// Call hold time (mean, with --hold-dist exp) [default: 5s].
    #[arg(long, value_parser = duration)]
    pub hold: Option<Duration>,
    /// [default: fixed]
    #[arg(long, value_enum)]
    pub hold_dist: Option<DurationDist>,
    /// How long the called side rings before answering [default: 0s].
    #[arg(long, value_parser = duration)]
    pub ring: Option<Duration>,
    /// CANCEL calls that ring longer than this.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub invite_timeout: Duration,
    #[arg(long, value_enum, default_value = "caller")]
    pub bye_by: ByeBy,
    /// Length of the call phase (after registration). Default: until Ctrl-C (10s on the
    /// embedded target).
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Time allowed at the end for ending calls and de-registering.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub drain: Duration,
    /// RFC 3261 T1 (retransmission start).
    #[arg(long, default_value = "500ms", value_parser = duration)]
    pub t1: Duration,
    /// RFC 3261 T2 (retransmission cap).
    #[arg(long, default_value = "4s", value_parser = duration)]
    pub t2: Duration,
    /// Worker tasks (each with its own socket and share of the users). Default: one per 4,000
    /// calls/s or 8,000 registrations/s, at most one per core.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Local IP to send from. Default: the one that routes to the target.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// First local port (worker i uses port+i; with --ue-ports N, its sockets take N
    /// consecutive ports). Default: any free port.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// UDP sockets per worker, users spread over them (user i on socket i % N), so that a
    /// P-CSCF sees them as distinct UEs; `users` (or 0): one socket, so one port, per user
    /// [default: 1].
    #[arg(long, value_parser = ue_ports, value_name = "N|users")]
    pub ue_ports: Option<usize>,
    /// Spread those sockets over N consecutive source addresses from --bind (IPv4), as real
    /// UEs each have their own: a P-CSCF keys its UE records by address, and many ports on one
    /// address crowd one hash slot (measured: docs/ims-lab.md). On loopback any 127.x.y.z
    /// works; elsewhere the addresses must be configured on the host.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ue_ips: u32,
    /// IMS security agreement (TS 33.203, RFC 3329): each UE offers Security-Client in its
    /// first REGISTER, makes its four ESP SAs from the 401's Security-Server and its AKA keys,
    /// and sends everything after that through them (three sockets per UE). Needs AKA users,
    /// a P-CSCF that does sec-agree, a kernel with ESP and CAP_NET_ADMIN; run the UE side in
    /// its own network namespace (docs/ipsec.md).
    #[arg(long)]
    pub ipsec: bool,
    /// --ipsec: the integrity algorithm offered.
    #[arg(long, value_parser = ipsec_alg, default_value = "hmac-sha-1-96", value_name = "ALG")]
    pub ipsec_alg: AuthAlg,
    /// --ipsec: the encryption algorithm offered (Kamailio 5.6's des-ede3-cbc keys are broken,
    /// docs/ipsec.md).
    #[arg(long, value_parser = ipsec_ealg, default_value = "null", value_name = "EALG")]
    pub ipsec_ealg: EncAlg,
    /// Every call that is up carries RTP both ways (G.711; `g711` is PCMU first, PCMA if the
    /// peer has only that): from the ACK to the BYE, to where the far end's SDP says, with
    /// loss, jitter, the longest gap and a MOS per stream in the report (docs/media.md). UDP.
    #[arg(long, value_name = "CODEC")]
    pub media: Option<MediaCodec>,
    /// --media: packet time (10ms to 200ms, in 5 ms steps; a peer's a=ptime wins for what we
    /// send it).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms", value_name = "DURATION", requires = "media")]
    pub media_ptime: Duration,
    /// --media: play this WAV file (8 kHz, mono, 16-bit PCM), looped; default a 400 Hz tone.
    #[arg(long, value_name = "WAV", requires = "media")]
    pub media_file: Option<PathBuf>,
    /// --media: send each worker's RTP to one far socket as UDP GSO trains (up to 64 packets
    /// per send): about 2.5x less CPU per stream at thousands of calls. A capture on lo, a
    /// veth, or a NIC that segments UDP itself then shows each train as one large datagram
    /// that Wireshark cannot read as RTP: leave it off when you capture (docs/media.md).
    #[arg(long, requires = "media")]
    pub media_gso: bool,
    /// --media: write one CSV line per stream as it ends (its SSRC, leg, start and end, packets,
    /// loss, jitter, its longest gap and when it began, R and MOS; docs/media.md). Without
    /// media (here or in the profile) the file holds its header only.
    #[arg(long, value_name = "FILE")]
    pub media_log: Option<PathBuf>,
    /// Every caller puts its answered call on hold AFTER the answer and takes it off LENGTH
    /// later, each with a re-INVITE (RFC 3264 §8.4): `AFTER,LENGTH[,sendonly|inactive]`, e.g.
    /// `5s,3s` (sendonly, the default: the held party hears us; inactive: silence both ways).
    /// With --media the streams follow the answers, and a hold is no gap.
    #[arg(long, value_name = "AFTER,LENGTH[,MODE]", value_parser = call_hold)]
    pub call_hold: Option<crate::ua::caller::HoldPlan>,
    /// Write the final report as JSON here; `-` prints it as one JSON line, last on stdout
    /// (for `kubectl logs`; `imsload merge` finds it there).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Run shard INDEX of COUNT (0-based, e.g. 2/8): its slice of the users and 1/COUNT of
    /// every rate and count; the report keeps what `imsload merge` needs (docs/sharding.md).
    #[arg(long, value_name = "INDEX/COUNT", value_parser = Shard::parse, conflicts_with = "shards")]
    pub shard: Option<Shard>,
    /// Run one of COUNT shards, the index from JOB_COMPLETION_INDEX (as a Kubernetes Indexed
    /// Job sets it in each pod).
    #[arg(long, value_name = "COUNT")]
    pub shards: Option<u32>,
    /// Start the run at this UTC instant (RFC 3339, e.g. 2026-03-01T12:00:00Z) so that every
    /// shard's seconds line up; a shard that comes up later starts at once, counted late.
    #[arg(long, value_name = "TIME", value_parser = shard::parse_start_at)]
    pub start_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Write the per-second series here (.csv for CSV, else JSON lines).
    #[arg(long, value_name = "FILE")]
    pub series: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics while the run goes on (e.g.
    /// 0.0.0.0:9464): every counter of the report, responses by method and code, gauges, the
    /// RFC 6076 delays as histograms (docs/imsload.md, "Prometheus metrics").
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,
    /// The `run` label on every metric [default: imsload-<UTC start>].
    #[arg(long, value_name = "NAME", requires = "metrics")]
    pub metrics_run: Option<String>,
    /// After the run, keep serving the final metrics this long (Ctrl-C ends it sooner), so
    /// that the last scrape sees the final counts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub metrics_linger: Duration,
    /// No live progress lines (the final report is still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// Seed for caller/callee choice, arrival gaps and hold times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub hep: crate::hep::mirror::HepArgs,
}

/// IMS AKA credentials shared by every pattern user (how lab HSSs are provisioned).
#[derive(Args, Debug, Default, Clone)]
pub struct AkaArgs {
    /// AKA: subscriber key K (32 hex digits). With it users answer AKAv1-MD5 challenges.
    #[arg(long, value_name = "HEX")]
    pub aka_k: Option<String>,
    /// AKA: OPc (32 hex digits).
    #[arg(
        long,
        value_name = "HEX",
        conflicts_with = "aka_op",
        requires = "aka_k"
    )]
    pub aka_opc: Option<String>,
    /// AKA: OP (32 hex digits); OPc is derived from it and K.
    #[arg(long, value_name = "HEX", requires = "aka_k")]
    pub aka_op: Option<String>,
    /// AKA: authentication management field the network puts in AUTN (4 hex digits).
    #[arg(long, value_name = "HEX", default_value = "8000", requires = "aka_k")]
    pub amf: String,
    /// AKA: the SQN the USIM (or, for `serve`, the HSS) starts from, hex.
    #[arg(long, value_name = "HEX", default_value = "0", requires = "aka_k")]
    pub sqn: String,
}

/// IMS UE headers (TS 24.229). `Supported: path` is always on REGISTER.
#[derive(Args, Debug, Default, Clone, Serialize)]
pub struct ImsArgs {
    /// P-Access-Network-Info on REGISTER, INVITE and MESSAGE, e.g.
    /// '3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001'.
    #[arg(long, value_name = "VALUE")]
    pub pani: Option<String>,
    /// P-Preferred-Identity on INVITE and MESSAGE: the user's sip: IMPU, or its tel: IMPU.
    #[arg(long, value_name = "WHICH")]
    pub ppi: Option<PreferredIdentity>,
    /// +sip.instance in Contact, per user: a URN with %d or %0Nd for the user's index (CSV
    /// users: the row order from --first-index), e.g. 'urn:gsma:imei:35209900-%06d-0'.
    #[arg(long, value_name = "PATTERN")]
    pub sip_instance: Option<String>,
    /// +g.3gpp.icsi-ref in Contact (the URN; it is percent-encoded), e.g.
    /// urn:urn-7:3gpp-service.ims.icsi.mmtel.
    #[arg(long, value_name = "URN")]
    pub icsi_ref: Option<String>,
    /// A tel: IMPU per pattern user beside the sip: one: a global number with %d or %0Nd for
    /// the index, e.g. '+1555%07d'. CSV users: the `tel` column.
    #[arg(long, value_name = "PATTERN")]
    pub tel_pattern: Option<String>,
}

impl ImsArgs {
    pub fn options(&self) -> anyhow::Result<ImsOptions> {
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
    pub fn subscription(&self) -> anyhow::Result<Option<population::AkaSubscription>> {
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
        .map_err(|e| {
            let flag = match e.column() {
                "k" => "--aka-k",
                "op" => "--aka-op",
                "opc" => "--aka-opc",
                "amf" => "--amf",
                _ => "--sqn",
            };
            anyhow::Error::new(e).context(flag)
        })
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (UDP).
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "ims.local")]
    pub domain: String,
    /// Password rule for any user: %u is the user name.
    #[arg(long, default_value = "pw_%u")]
    pub password: String,
    /// Ring time before answering calls to non-registered URIs.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub ring: Duration,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Calls in progress the answering side holds at most; a new INVITE beyond is answered
    /// 503 with Retry-After and counted (calls_refused_overload), never stored.
    #[arg(long, default_value_t = AnswererConfig::default().max_calls)]
    pub max_calls: usize,
    /// While busy, wake at most once per this long and answer what gathered in one batch
    /// (as imsload's --timer-resol). The default, 0s, answers each datagram as it comes; 1ms
    /// costs far less CPU per call at tens of thousands of calls/s and delays answers by up
    /// to that much.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub timer_resol: Duration,
    /// Challenge with AKAv1-MD5 (these keys for every user; --sqn is the network's start).
    #[command(flatten)]
    pub aka: AkaArgs,
    /// AKA keys and SQNs per user from the same CSV imsload reads (users with k get AKA).
    #[arg(long, value_name = "CSV")]
    pub users_file: Option<PathBuf>,
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub hep: crate::hep::mirror::HepArgs,
}
