//! The probe engine behind `imsprobe`: how long did a target's service really stop, as a SIP client
//! and as an IP host sees it?
//!
//! # Layout
//! - [`analysis`]: **pure** gap analysis over [`ProbeRecord`]s (reply gaps, loss windows, late
//!   replies, summary figures). The same functions serve live runs and records rebuilt from a
//!   capture (`--pcap-only`); they never read a clock or a socket.
//! - [`sipcodec`] / [`icmp`] / [`diameter`]: sans-IO codecs: the OPTIONS, echo or DWR of probe
//!   *n*, and which probe a received message answers (matched by identity, never by order).
//! - [`table`]: the shared, append-only record store the pacer writes and the receivers complete.
//! - [`net`]: sockets, `recvmmsg` batches with `SO_TIMESTAMPNS` kernel receive timestamps, ICMP
//!   socket fallback (datagram ICMP, then raw).
//! - [`tcp`]: probes over TCP (SIP, Diameter): the connection shared by pacer and receiver,
//!   non-blocking writes, greeting (CER) on every connect, reconnects.
//! - [`pacer`]: the dedicated sending thread on an absolute schedule (`clock_nanosleep`
//!   `TIMER_ABSTIME`).
//! - [`capture`]: libpcap capture thread (nanosecond pcap) and [`pcapread`], which rebuilds
//!   records from any capture.
//! - [`targets`]: the targets file (`profiles/targets.toml`).
//! - [`report`]: JSON report, per-probe CSV, console summary; [`plot`]: SVG/PNG timeline;
//!   [`report_builder`]: a target's report and files from its records, one way for live runs
//!   and captures.
//! - [`run`]: a live run's settings and entry point; [`session`]: its steps (start, live view,
//!   collect), over `setup` (a target's sockets, connections, capture), `send` (the pacer
//!   thread), `receive` (the receiver threads) and [`live`] (the live gap state).
//! - [`offline`]: `--pcap-only`, the same report from a capture.
//! - [`args`]: `imsprobe`'s command line as clap parses it (`imsprobe trials`' too), and the
//!   probe settings it makes; [`app`]: the `imsprobe` command (a run, `--pcap-only`, or
//!   `trials` handed to [`crate::trials::app`]) from arguments to an exit outcome.
//!
//! Times inside are `i64` nanoseconds since the run's time base (`t = 0` at the start of the run
//! for live probes; the first packet for a capture). A [`TimeBase`] turns them into UTC labels.

pub mod analysis;
pub mod app;
pub mod args;
pub mod capture;
pub mod diameter;
pub mod hep;
pub mod icmp;
pub mod live;
pub mod metrics;
pub mod net;
pub mod offline;
pub mod pacer;
pub mod pcapread;
pub mod plot;
mod receive;
pub mod report;
pub mod report_builder;
pub mod run;
mod send;
pub mod session;
mod setup;
pub mod sipcodec;
pub mod table;
pub mod targets;
pub mod tcp;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The layer a probe runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// SIP OPTIONS over UDP or TCP.
    Sip,
    /// ICMP echo.
    Icmp,
    /// Diameter Device-Watchdog over TCP (the HSS's service).
    Diameter,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Sip => "sip",
            Layer::Icmp => "icmp",
            Layer::Diameter => "diameter",
        }
    }
    pub fn parse(s: &str) -> Option<Layer> {
        match s {
            "sip" => Some(Layer::Sip),
            "icmp" => Some(Layer::Icmp),
            "diameter" => Some(Layer::Diameter),
            _ => None,
        }
    }
}

/// What became of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No final reply (yet).
    NoReply,
    /// A final reply that counts as success: SIP 2xx, ICMP echo reply.
    Ok,
    /// A final reply that counts as failure: SIP 3xx-6xx (a 503 during overload), an ICMP error
    /// (destination unreachable, time exceeded) about this probe.
    Failed,
    /// The send itself failed (ENETUNREACH, ENOBUFS, no TCP connection, ...). Counts as lost.
    SendError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NoReply => "no_reply",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::SendError => "send_error",
        }
    }
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "no_reply" => Some(Outcome::NoReply),
            "ok" => Some(Outcome::Ok),
            "failed" => Some(Outcome::Failed),
            "send_error" => Some(Outcome::SendError),
            _ => None,
        }
    }
}

/// One probe: when it left, when (if ever) its first final reply arrived, and what it said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    pub layer: Layer,
    /// Per-layer sequence number, 0-based, in send order.
    pub seq: u64,
    /// Send time, ns since the time base.
    pub sent_ns: i64,
    /// Arrival of the first final reply, ns since the time base (kernel timestamp when known).
    pub received_ns: Option<i64>,
    /// How much earlier than `received_ns` that reply may really have arrived: 0 with a kernel
    /// receive stamp; over TCP, the receiver's measured lateness ([`tcp::Lateness`]).
    pub received_early_ns: u32,
    pub outcome: Outcome,
    /// SIP status code; ICMP type of the reply (0 = echo reply, 3 = unreachable, ...); errno
    /// for a send error; 0 otherwise.
    pub code: u16,
}

impl ProbeRecord {
    pub fn sent(layer: Layer, seq: u64, sent_ns: i64) -> ProbeRecord {
        ProbeRecord {
            layer,
            seq,
            sent_ns,
            received_ns: None,
            received_early_ns: 0,
            outcome: Outcome::NoReply,
            code: 0,
        }
    }

    /// Round-trip time in ns, when a reply arrived. A reply stamped before its request (a clock
    /// that misbehaved: counted as `negative_rtts` when it was recorded) has none, rather than a
    /// made-up zero.
    pub fn rtt_ns(&self) -> Option<i64> {
        self.received_ns
            .map(|r| r - self.sent_ns)
            .filter(|&rtt| rtt >= 0)
    }
}

/// When a reply arrived, ns since the time base, and how much earlier it may really have
/// arrived (0: a kernel receive stamp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub at_ns: i64,
    pub early_ns: u32,
}

impl Arrival {
    /// A kernel-stamped (or otherwise exact) arrival.
    pub fn exact(at_ns: i64) -> Arrival {
        Arrival { at_ns, early_ns: 0 }
    }
}

/// Turns time-base nanoseconds into wall-clock UTC labels.
///
/// Live runs take `wall0` from the run's [`crate::clock::Epoch`] (through
/// [`net::ProbeClock`], which is built on it: one (wall, monotonic) pair per run, monotonic time
/// inside), so the labels are exactly `Epoch`'s. It is kept apart from `Epoch` because probe
/// times are `i64` ns offsets (kernel stamps mapped onto them, possibly before `t = 0`), not
/// `Instant`s, and because a capture (`--pcap-only`) has a wall-clock origin but no monotonic one
/// from which an `Epoch` could be made.
#[derive(Clone, Copy, Debug)]
pub struct TimeBase {
    /// Wall-clock UTC at `t = 0`.
    pub wall0: DateTime<Utc>,
}

impl TimeBase {
    pub fn wall(&self, ns: i64) -> DateTime<Utc> {
        self.wall0 + chrono::Duration::nanoseconds(ns)
    }
    /// RFC 3339 UTC with nanoseconds.
    pub fn label(&self, ns: i64) -> String {
        self.wall(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
    /// Nanoseconds since the Unix epoch (for comparing with capture timestamps).
    pub fn unix_ns(&self, ns: i64) -> i128 {
        let w = self.wall(ns);
        w.timestamp() as i128 * 1_000_000_000 + w.timestamp_subsec_nanos() as i128
    }
}
