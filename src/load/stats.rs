//! What the load engine counts. Each worker counts into an [`Interval`]; once a second the runner
//! takes it and the aggregator adds it to the run's totals and to the per-second series. Intervals
//! merge by addition (histograms included), which is also how shards on several machines
//! combine their results: reports carry the histograms losslessly ([`EncodedDelays`]).

use crate::sip::{Method, ParseErrorKind};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Plain event counters. Every field is a count of events in the interval (or run).
/// Read back from reports by `imsload merge`; a counter a report lacks (an older imsload) is 0.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counters {
    /// Initial registrations started (one per user; challenge rounds are not extra attempts).
    pub reg_attempts: u64,
    pub reg_ok: u64,
    /// Ended with a final failure (including credentials refused).
    pub reg_failed: u64,
    /// Got no final response within 64·T1.
    pub reg_timeouts: u64,
    /// A second challenge after credentials were sent: the password (or K) is wrong.
    pub reg_auth_rejected: u64,
    /// AKA challenges whose MAC-A did not match the user's K/OPc: the network failed
    /// authentication (or K/OPc differ from the HSS's). Any REGISTER, initial or not.
    pub reg_aka_mac_failures: u64,
    /// AKA challenges with an SQN out of range, answered with AUTS (re-synchronisation).
    pub reg_aka_resyncs: u64,
    /// A fresh challenge after credentials were sent (new AKA vector or `stale=true`), answered
    /// again rather than counted as a rejection.
    pub reg_extra_challenges: u64,
    /// Initial registrations whose 2xx carried no P-Associated-URI (an IMS registrar sends it).
    pub reg_no_associated_uri: u64,
    /// Identities listed in P-Associated-URI of initial registrations' 2xx (all users summed).
    pub reg_associated_uris: u64,
    /// Initial registrations whose P-Associated-URI lacked one of the user's own IMPUs (its
    /// sip: IMPU, or its tel: IMPU when it has one).
    pub reg_associated_missing_own: u64,
    pub rereg_attempts: u64,
    pub rereg_ok: u64,
    pub rereg_failed: u64,
    pub dereg_attempts: u64,
    pub dereg_ok: u64,
    pub dereg_failed: u64,
    /// Scenario attempts the open-loop scheduler asked for (all kinds; calls among them).
    pub scenarios_offered: u64,
    /// Re-/de-/registration, MESSAGE or OPTIONS attempts not started: no suitable user (e.g.
    /// nobody unregistered for a `register` attempt, fewer than two registered users).
    pub scenarios_unplaced: u64,
    /// Calls the open-loop scheduler asked for.
    pub calls_offered: u64,
    /// Offered but not placed: `--max-calls` were already up.
    pub calls_limited: u64,
    /// Offered but not placed: fewer than two registered users.
    pub calls_unplaced: u64,
    /// INVITEs sent (first transmission; auth retries and retransmissions not included).
    pub calls_attempted: u64,
    pub calls_ringing: u64,
    pub calls_answered: u64,
    /// Final 3xx-6xx to the INVITE (after any auth round).
    pub calls_failed: u64,
    pub calls_timeout: u64,
    pub calls_cancelled: u64,
    /// Ended by BYE with 2xx.
    pub calls_completed: u64,
    pub calls_bye_481: u64,
    pub calls_bye_failed: u64,
    /// Still open when the drain time ran out with no request of ours outstanding: work we chose
    /// not to finish (a BYE or CANCEL not yet sent).
    pub calls_abandoned: u64,
    /// Still open when the drain time ran out with an INVITE, BYE or CANCEL of ours waiting for
    /// its final response: the target stopped answering.
    pub calls_unanswered: u64,
    /// De-registrations never sent when the drain time ran out.
    pub dereg_abandoned: u64,
    /// De-registrations sent and still waiting for a final response when the drain time ran out.
    pub dereg_unanswered: u64,
    /// INVITEs answered with 3xx (excluded from RFC 6076 ratios' denominators).
    pub invite_3xx: u64,
    /// INVITEs answered 480, 486, 600 or 603 (effective for SEER).
    pub invite_seer_effective: u64,
    /// INVITEs ended by timeout, 408, 500, 503 or 504 (ISA).
    pub invite_ineffective: u64,
    /// Answering side: INVITEs received, answered, BYEs and CANCELs received.
    pub uas_invites: u64,
    pub uas_answered: u64,
    pub uas_byes: u64,
    pub uas_cancels: u64,
    /// Answering side: new INVITEs refused with 503 (its cap on calls or bytes held was
    /// reached) and with 513 (headers too large to copy). Neither is stored.
    pub uas_refused_overload: u64,
    pub uas_refused_too_large: u64,
    /// MESSAGE scenarios: sent, answered 2xx, other final, no final response in 64·T1.
    pub msg_attempts: u64,
    pub msg_ok: u64,
    pub msg_failed: u64,
    pub msg_timeouts: u64,
    /// OPTIONS scenarios, likewise.
    pub opt_attempts: u64,
    pub opt_ok: u64,
    pub opt_failed: u64,
    pub opt_timeouts: u64,
    /// Our own retransmissions (Timer A/E, 2xx retransmits). Not the target's losses.
    pub retransmits: u64,
    /// Retransmitted responses and requests we absorbed.
    pub duplicates_received: u64,
    /// Responses that matched no transaction of ours.
    pub stray_responses: u64,
    /// Provisional responses to a transaction of ours that had already ended: a multi-process
    /// proxy may relay a 180 after the 200 that followed it. Normal reordering, not a stray.
    pub late_provisionals: u64,
    pub malformed: u64,
    /// Messages the kernel refused to send (UDP; a full buffer waits instead): lost before the
    /// wire. The first error of each kind is on stderr.
    pub send_errors: u64,
    /// Datagrams the kernel dropped at our sockets because their receive buffer was full
    /// (UDP, SO_RXQ_OVFL): the generator read too slowly, it is the bottleneck.
    pub rx_dropped: u64,
    pub msgs_sent: u64,
    pub msgs_received: u64,
    /// Scheduled actions that ran more than 10 ms late (the generator is saturated).
    pub late_actions: u64,
    /// `--ipsec`: UEs whose four SAs were made after their 401, and taken away again.
    pub ipsec_sa_setups: u64,
    pub ipsec_sa_teardowns: u64,
    /// `--ipsec` failures, by cause: a 401 without Security-Server, one that could not be
    /// read, one offering none of our algorithms, one without AKA keys; the kernel refusing
    /// the SAs or their removal; a protected REGISTER that got no answer.
    pub ipsec_no_security_server: u64,
    pub ipsec_malformed: u64,
    pub ipsec_alg_refused: u64,
    pub ipsec_no_keys: u64,
    pub ipsec_sa_install_failed: u64,
    pub ipsec_sa_remove_failed: u64,
    pub ipsec_protected_unanswered: u64,
    /// `--ipsec`: unprotected restarts (a retry, an AKA re-synchronisation) that took fresh
    /// ports and SPIs, and those that could not bind them.
    pub ipsec_fresh_ports: u64,
    pub ipsec_fresh_ports_failed: u64,
    /// `--ipsec`: SA pairs renewed by a re-authentication (TS 33.203 §7.4), and renewals whose
    /// SAs the kernel refused or whose REGISTER failed (the pair in force then goes too, with
    /// the registration).
    pub ipsec_sa_renewals: u64,
    pub ipsec_sa_renewals_failed: u64,
    /// `--ipsec`: pairs a renewal replaced that the P-CSCF still sent through 64·T1 later
    /// (kept until they fall silent, or the UE de-registers).
    pub ipsec_sa_replaced_in_use: u64,
    /// `--media` (docs/media.md): streams started and ended (one per call leg of ours), refused
    /// (an SSRC in use); RTP packets sent, received, our own come back (an echoing peer), lost
    /// (booked when the stream ends), duplicated, out of order; RTP that matched no stream;
    /// RTCP compound packets sent, received and malformed; other datagrams on the media
    /// sockets; sends over a packet time late; SDP (offer or answer) with no audio stream we
    /// can play.
    pub media_streams_started: u64,
    pub media_streams_ended: u64,
    pub media_streams_refused: u64,
    pub media_packets_sent: u64,
    pub media_packets_received: u64,
    pub media_packets_echoed: u64,
    pub media_packets_lost: u64,
    pub media_duplicates: u64,
    pub media_out_of_order: u64,
    pub media_unmatched: u64,
    pub media_rtcp_sent: u64,
    pub media_rtcp_received: u64,
    pub media_rtcp_malformed: u64,
    pub media_not_rtp: u64,
    pub media_late_sends: u64,
    pub media_sdp_unusable: u64,
    /// `--media`: silences of over three packet times that ended in the interval (a stream's
    /// audio came back after one).
    pub media_gaps: u64,
    /// `--media`: streams that stopped sending for a re-INVITE (hold), and that sent again.
    pub media_holds: u64,
    pub media_resumes: u64,
    /// `--media`: offers or answers in a call that changed a stream's codec, or its packet time.
    pub media_codec_changes: u64,
    pub media_ptime_changes: u64,
    /// INVITEs inside a call of ours, caller's or callee's (hold, resume), answered 200.
    pub reinvites_answered: u64,
    /// `--call-hold`: our callers' re-INVITEs answered 2xx (hold, then resume), and those that
    /// got another final response or none.
    pub call_holds: u64,
    pub call_resumes: u64,
    pub reinvites_failed: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        add!(
            reg_attempts,
            reg_ok,
            reg_failed,
            reg_timeouts,
            reg_auth_rejected,
            reg_aka_mac_failures,
            reg_aka_resyncs,
            rereg_attempts,
            rereg_ok,
            rereg_failed,
            dereg_attempts,
            dereg_ok,
            dereg_failed,
            scenarios_offered,
            scenarios_unplaced,
            calls_offered,
            calls_limited,
            calls_unplaced,
            calls_attempted,
            calls_ringing,
            calls_answered,
            calls_failed,
            calls_timeout,
            calls_cancelled,
            calls_completed,
            calls_bye_481,
            calls_bye_failed,
            reg_extra_challenges,
            reg_no_associated_uri,
            reg_associated_uris,
            reg_associated_missing_own,
            calls_abandoned,
            calls_unanswered,
            dereg_abandoned,
            dereg_unanswered,
            invite_3xx,
            invite_seer_effective,
            invite_ineffective,
            uas_invites,
            uas_answered,
            uas_byes,
            uas_cancels,
            uas_refused_overload,
            uas_refused_too_large,
            msg_attempts,
            msg_ok,
            msg_failed,
            msg_timeouts,
            opt_attempts,
            opt_ok,
            opt_failed,
            opt_timeouts,
            retransmits,
            duplicates_received,
            stray_responses,
            late_provisionals,
            malformed,
            send_errors,
            rx_dropped,
            msgs_sent,
            msgs_received,
            late_actions,
            ipsec_sa_setups,
            ipsec_sa_teardowns,
            ipsec_no_security_server,
            ipsec_malformed,
            ipsec_alg_refused,
            ipsec_no_keys,
            ipsec_sa_install_failed,
            ipsec_sa_remove_failed,
            ipsec_protected_unanswered,
            ipsec_fresh_ports,
            ipsec_fresh_ports_failed,
            ipsec_sa_renewals,
            ipsec_sa_renewals_failed,
            ipsec_sa_replaced_in_use,
            media_streams_started,
            media_streams_ended,
            media_streams_refused,
            media_packets_sent,
            media_packets_received,
            media_packets_echoed,
            media_packets_lost,
            media_duplicates,
            media_out_of_order,
            media_unmatched,
            media_rtcp_sent,
            media_rtcp_received,
            media_rtcp_malformed,
            media_not_rtp,
            media_late_sends,
            media_sdp_unusable,
            media_gaps,
            media_holds,
            media_resumes,
            media_codec_changes,
            media_ptime_changes,
            reinvites_answered,
            call_holds,
            call_resumes,
            reinvites_failed
        );
    }
}

/// Delay histograms in microseconds, named after RFC 6076.
#[derive(Clone, Debug)]
pub struct Delays {
    /// Registration Request Delay: first REGISTER sent → 2xx (challenge round included).
    pub rrd: Histogram<u64>,
    /// Session Request Delay: INVITE sent → first non-100 provisional or final response.
    pub srd: Histogram<u64>,
    /// INVITE sent → 200 OK (what a caller waits for an answer).
    pub answer: Histogram<u64>,
    /// Session Disconnect Delay: BYE sent → its final response.
    pub sdd: Histogram<u64>,
    /// Session Duration Time: 200 OK → BYE.
    pub sdt: Histogram<u64>,
    /// Lag of the generator's own schedule (call arrivals, registrations).
    pub sched_lag: Histogram<u64>,
    /// MESSAGE sent → its final response (the non-INVITE analogue of SRD).
    pub message: Histogram<u64>,
    /// OPTIONS sent → its final response.
    pub options: Histogram<u64>,
    /// `--media`, per stream at its end: the longest time without a packet (µs), the RFC 3550
    /// jitter (µs), the E-model MOS ×100; per packet, how late it left (µs); per RTCP report
    /// of the far end's on one of our streams, the round trip time it gives (µs).
    pub media_gap: Histogram<u64>,
    pub media_jitter: Histogram<u64>,
    pub media_mos: Histogram<u64>,
    pub media_send_lateness: Histogram<u64>,
    pub media_rtt: Histogram<u64>,
}

/// The largest value a delay histogram records (1 h in µs); larger ones are recorded as this.
pub const DELAY_MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits: percentiles exact to 0.1 %. The counts grow with the
    // largest value recorded (values are clamped to DELAY_MAX_US, so they stop at ~190 KB)
    // instead of being allocated and zeroed for the whole hour up front: most of the thirteen
    // stay empty in a run (no media, no MESSAGE), and a core is built per worker and per shard.
    Histogram::new(3).expect("static histogram precision is valid")
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            rrd: histogram(),
            srd: histogram(),
            answer: histogram(),
            sdd: histogram(),
            sdt: histogram(),
            sched_lag: histogram(),
            message: histogram(),
            options: histogram(),
            media_gap: histogram(),
            media_jitter: histogram(),
            media_mos: histogram(),
            media_send_lateness: histogram(),
            media_rtt: histogram(),
        }
    }
}

impl Delays {
    pub fn record(h: &mut Histogram<u64>, d: Duration) {
        Self::record_value(h, d.as_micros().try_into().unwrap_or(u64::MAX));
    }
    /// Records `v` in 1 ..= [`DELAY_MAX_US`].
    pub fn record_value(h: &mut Histogram<u64>, v: u64) {
        // `record`, not `saturating_record`: only it grows the counts (the other clamps to the
        // current top). Growing to DELAY_MAX_US cannot fail on a 64-bit usize.
        let v = v.clamp(1, DELAY_MAX_US);
        if h.record(v).is_err() {
            h.saturating_record(v);
        }
    }
    pub fn add(&mut self, o: &Delays) {
        for (a, b) in self.all_mut().into_iter().zip(o.all()) {
            // Same bounds everywhere, so adding cannot fail.
            let _ = a.add(b);
        }
    }
    fn all(&self) -> [&Histogram<u64>; 13] {
        [
            &self.rrd,
            &self.srd,
            &self.answer,
            &self.sdd,
            &self.sdt,
            &self.sched_lag,
            &self.message,
            &self.options,
            &self.media_gap,
            &self.media_jitter,
            &self.media_mos,
            &self.media_send_lateness,
            &self.media_rtt,
        ]
    }
    fn all_mut(&mut self) -> [&mut Histogram<u64>; 13] {
        [
            &mut self.rrd,
            &mut self.srd,
            &mut self.answer,
            &mut self.sdd,
            &mut self.sdt,
            &mut self.sched_lag,
            &mut self.message,
            &mut self.options,
            &mut self.media_gap,
            &mut self.media_jitter,
            &mut self.media_mos,
            &mut self.media_send_lateness,
            &mut self.media_rtt,
        ]
    }
    pub fn reset(&mut self) {
        for h in self.all_mut() {
            h.reset();
        }
    }

    /// Each histogram's name in reports, in the order of [`Delays::all`].
    const NAMES: [&'static str; 13] = [
        "rrd",
        "srd",
        "answer",
        "sdd",
        "sdt",
        "sched_lag",
        "message",
        "options",
        "media_gap",
        "media_jitter",
        "media_mos",
        "media_send_lateness",
        "media_rtt",
    ];

    /// The histograms as a report carries them (empty ones left out).
    pub fn encode(&self) -> EncodedDelays {
        EncodedDelays(
            Self::NAMES
                .iter()
                .zip(self.all())
                .filter(|(_, h)| !h.is_empty())
                .map(|(n, h)| (n.to_string(), encode_histogram(h)))
                .collect(),
        )
    }
}

/// A histogram as HdrHistogram's V2 serialization (the format every HdrHistogram library
/// reads), base64: lossless, so that shards' histograms add up to exactly the one a single
/// generator would have recorded.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::Serializer as _;
    // Written with the fixed 1 µs .. 1 h bounds, whatever the histogram in memory grew to:
    // the header carries them, and a reader (HdrHistogram in any language) adds one report's
    // histogram to another's only if their bounds take each other's values. With each
    // written at its own size, adding a shard with a longer delay failed (seen in
    // tests/shard_kamailio.rs). The serialization is sparse, so the bounds cost no bytes.
    //
    // The fixed-bounds copy is 188 KB of counts: one per thread, cleared for each use, as a
    // shard writes every non-empty histogram every second.
    thread_local! {
        static FIXED: std::cell::RefCell<Option<Histogram<u64>>> =
            const { std::cell::RefCell::new(None) };
    }
    let mut buf = Vec::new();
    FIXED.with_borrow_mut(|fixed| {
        if fixed.is_none() {
            *fixed = Histogram::<u64>::new_with_bounds(1, DELAY_MAX_US, 3).ok();
        }
        let fixed = fixed.as_mut().and_then(|f| {
            f.reset();
            f.add(h).ok().map(|_| &*f)
        });
        // Writing into a Vec fails only for histograms too large to count (not ours). A
        // histogram past an hour (not one of ours) is written as it is, and decoding refuses it.
        let _ = hdrhistogram::serialization::V2Serializer::new()
            .serialize(fixed.unwrap_or(h), &mut buf);
    });
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// Why a report's histogram text cannot be read back ([`decode_histogram`],
/// [`EncodedDelays::decode`]); `imsload merge` says which report and field.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("not base64: {0}")]
    NotBase64(base64::DecodeError),
    #[error("not an HdrHistogram V2 serialization: {0:?}")]
    NotV2(hdrhistogram::serialization::DeserializeError),
    #[error("values outside 1 µs .. 1 h: {0:?}")]
    OutOfRange(hdrhistogram::errors::AdditionError),
    #[error("unknown histogram {0:?}")]
    UnknownName(String),
    #[error("histogram {name:?}: {err}")]
    Named {
        name: String,
        err: Box<HistogramError>,
    },
}

/// Reads [`encode_histogram`]'s text back into a histogram with the report's bounds.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, HistogramError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(HistogramError::NotBase64)?;
    let read: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(HistogramError::NotV2)?;
    // `max` is the top of the largest value's bucket, which for DELAY_MAX_US is above it.
    if read.max() > read.highest_equivalent(DELAY_MAX_US) {
        return Err(HistogramError::OutOfRange(
            hdrhistogram::errors::AdditionError::OtherAddendValueExceedsRange,
        ));
    }
    let mut h = histogram();
    h.add(&read).map_err(HistogramError::OutOfRange)?;
    Ok(h)
}

/// [`Delays`] as reports carry them: each non-empty histogram encoded by [`encode_histogram`],
/// under its name (`"srd": "HISTFAAA…"`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct EncodedDelays(pub BTreeMap<String, String>);

impl EncodedDelays {
    /// Decodes every histogram; an error names the one that could not be read, or a name that
    /// is none of ours.
    pub fn decode(&self) -> Result<Delays, HistogramError> {
        let mut d = Delays::default();
        for (name, text) in &self.0 {
            let i = Delays::NAMES
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| HistogramError::UnknownName(name.clone()))?;
            *d.all_mut()[i] = decode_histogram(text).map_err(|e| HistogramError::Named {
                name: name.clone(),
                err: Box::new(e),
            })?;
        }
        Ok(d)
    }
}

/// Gauges: values at the end of an interval, summed over workers.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Gauges {
    pub registered: u64,
    pub active_calls: u64,
    pub answering_calls: u64,
    pub pending_transactions: u64,
    /// `--ipsec`: UEs whose SAs are made (in use).
    pub ipsec_ues_protected: u64,
    /// `--media`: streams running, and those among them that expect audio and got none for
    /// over three packet times (the calls whose audio is out right now).
    pub media_streams: u64,
    pub media_silent: u64,
}

impl Gauges {
    /// Workers' (or shards') gauges add up to the run's.
    pub fn add(&mut self, o: &Gauges) {
        self.registered += o.registered;
        self.active_calls += o.active_calls;
        self.answering_calls += o.answering_calls;
        self.pending_transactions += o.pending_transactions;
        self.ipsec_ues_protected += o.ipsec_ues_protected;
        self.media_streams += o.media_streams;
        self.media_silent += o.media_silent;
    }
}

/// What a response count is keyed by: the request's method and the status code, or no
/// response at all (a timeout). Written "INVITE 486" and "INVITE timeout" in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusKey {
    pub method: Method,
    /// `None`: no final response in time.
    pub code: Option<u16>,
}

impl StatusKey {
    /// Reads the report's spelling back ("INVITE 200", "REGISTER timeout").
    pub fn parse(s: &str) -> Option<StatusKey> {
        let (m, c) = s.split_once(' ')?;
        let method = Method::parse(m);
        if method.as_str() != m {
            return None;
        }
        let code = match c {
            "timeout" => None,
            c => Some(c.parse().ok()?),
        };
        Some(StatusKey { method, code })
    }
}

impl fmt::Display for StatusKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "{} {c}", self.method.as_str()),
            None => write!(f, "{} timeout", self.method.as_str()),
        }
    }
}

/// Response counts by [`StatusKey`]. Counted once per response on the hot path, so the key is
/// two integers and the table a short vector searched linearly: a run sees a dozen distinct
/// keys, and counting one that is already there allocates nothing (a `String` key did, per
/// response). Reports spell the keys out with [`StatusCounts::by_name`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts(Vec<(StatusKey, u64)>);

impl StatusCounts {
    pub fn add_to(&mut self, key: StatusKey, n: u64) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v += n,
            None => self.0.push((key, n)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (StatusKey, u64)> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The count under a key as reports write it ("INVITE 200").
    pub fn get(&self, name: &str) -> Option<&u64> {
        let key = StatusKey::parse(name)?;
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The counts keyed and ordered as the reports have always had them: by "METHOD CODE"
    /// string. Built once per report, not per response.
    pub fn by_name(&self) -> BTreeMap<String, u64> {
        self.0.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }
}

impl std::ops::Index<&str> for StatusCounts {
    type Output = u64;
    fn index(&self, name: &str) -> &u64 {
        self.get(name).expect("no count under this status key")
    }
}

/// One worker's counts over one interval (or, summed, a run's totals).
#[derive(Clone, Debug, Default)]
pub struct Interval {
    pub counters: Counters,
    /// Responses received by method and code, and timeouts.
    pub status: StatusCounts,
    pub malformed: BTreeMap<ParseErrorKind, u64>,
    pub delays: Delays,
    pub gauges: Gauges,
}

impl Interval {
    pub fn add(&mut self, o: &Interval) {
        self.counters.add(&o.counters);
        for (k, v) in o.status.iter() {
            self.status.add_to(k, v);
        }
        for (k, v) in &o.malformed {
            *self.malformed.entry(*k).or_default() += v;
        }
        self.delays.add(&o.delays);
    }

    /// `method` is a [`Method`] or its name (`"CANCEL"`); a name is matched, not stored.
    pub fn count_status(&mut self, method: impl Into<Method>, code: u16) {
        let method = method.into();
        self.status.add_to(
            StatusKey {
                method,
                code: Some(code),
            },
            1,
        );
    }

    pub fn count_timeout(&mut self, method: impl Into<Method>) {
        let method = method.into();
        self.status.add_to(StatusKey { method, code: None }, 1);
    }

    /// Hands out the counts so far and starts a fresh interval, keeping the histograms'
    /// allocations.
    pub fn take(&mut self) -> Interval {
        let out = Interval {
            counters: std::mem::take(&mut self.counters),
            status: std::mem::take(&mut self.status),
            malformed: std::mem::take(&mut self.malformed),
            delays: self.delays.clone(),
            gauges: self.gauges,
        };
        self.delays.reset();
        out
    }
}

/// Percentile summary of one histogram, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DelaySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl DelaySummary {
    pub fn of(h: &Histogram<u64>) -> DelaySummary {
        if h.is_empty() {
            return DelaySummary::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        DelaySummary {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// RFC 6076 end-to-end metrics from a run's totals.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Rfc6076 {
    pub registration_request_delay: DelaySummary,
    /// Ineffective Registration Attempts, % of attempts (failures and timeouts).
    pub ineffective_registration_attempts_pct: Option<f64>,
    pub session_request_delay: DelaySummary,
    pub session_disconnect_delay: DelaySummary,
    pub session_duration_time: DelaySummary,
    /// Session Establishment Ratio: INVITEs answered 200 / (INVITEs − INVITEs answered 3xx), %.
    pub session_establishment_ratio_pct: Option<f64>,
    /// SEER: INVITEs answered 200, 480, 486, 600 or 603 / (INVITEs − 3xx), %.
    pub session_establishment_effectiveness_ratio_pct: Option<f64>,
    /// Ineffective Session Attempts: timeouts, 408, 500, 503, 504 / INVITEs, %.
    pub ineffective_session_attempts_pct: Option<f64>,
    /// Session Completion Ratio: sessions ended by a successful BYE / INVITEs, %.
    pub session_completion_ratio_pct: Option<f64>,
}

fn pct(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| 100.0 * num as f64 / den as f64)
}

impl Rfc6076 {
    pub fn of(t: &Interval) -> Rfc6076 {
        let c = &t.counters;
        let invites = c.calls_attempted;
        let non3xx = invites.saturating_sub(c.invite_3xx);
        Rfc6076 {
            registration_request_delay: DelaySummary::of(&t.delays.rrd),
            ineffective_registration_attempts_pct: pct(
                c.reg_failed + c.reg_timeouts,
                c.reg_attempts,
            ),
            session_request_delay: DelaySummary::of(&t.delays.srd),
            session_disconnect_delay: DelaySummary::of(&t.delays.sdd),
            session_duration_time: DelaySummary::of(&t.delays.sdt),
            session_establishment_ratio_pct: pct(c.calls_answered, non3xx),
            session_establishment_effectiveness_ratio_pct: pct(
                c.calls_answered + c.invite_seer_effective,
                non3xx,
            ),
            ineffective_session_attempts_pct: pct(c.invite_ineffective, invites),
            session_completion_ratio_pct: pct(c.calls_completed, invites),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_by_addition() {
        let mut a = Interval::default();
        a.counters.calls_attempted = 10;
        a.counters.calls_answered = 8;
        a.count_status("INVITE", 200);
        Delays::record(&mut a.delays.srd, Duration::from_millis(5));
        a.counters.send_errors = 1;
        let mut b = a.clone();
        b.counters.invite_3xx = 2;
        b.counters.calls_completed = 8;
        Delays::record(&mut b.delays.srd, Duration::from_millis(15));
        let mut total = Interval::default();
        total.add(&a);
        total.add(&b);
        assert_eq!(total.counters.calls_attempted, 20);
        assert_eq!(total.counters.send_errors, 2);
        assert_eq!(total.status["INVITE 200"], 2);
        total.count_timeout(Method::Register);
        total.count_status("BYE", 481);
        let names: Vec<String> = total.status.by_name().into_keys().collect();
        assert_eq!(names, ["BYE 481", "INVITE 200", "REGISTER timeout"]);
        assert_eq!(
            StatusKey::parse("OTHER 99").unwrap().to_string(),
            "OTHER 99"
        );
        assert_eq!(StatusKey::parse("SUBSCRIBE 200"), None);
        assert_eq!(total.delays.srd.len(), 3);
        let m = Rfc6076::of(&total);
        // 16 answered of 20 − 2 (3xx) = 88.9 %.
        let ser = m.session_establishment_ratio_pct.unwrap();
        assert!((ser - 100.0 * 16.0 / 18.0).abs() < 1e-9);
        assert_eq!(m.session_completion_ratio_pct, Some(40.0));
        assert_eq!(m.session_request_delay.count, 3);
        assert!((m.session_request_delay.max_ms - 15.0).abs() < 0.1);
        assert_eq!(m.ineffective_registration_attempts_pct, None);
    }

    #[test]
    fn delay_histograms_grow_with_what_they_hold_up_to_an_hour() {
        // Thirteen histograms allocated for the whole hour were 2.4 MB per core, zeroed at
        // every start (a core per worker, per shard, and per fuzz input).
        let mut d = Delays::default();
        let small = d.srd.distinct_values();
        assert!(small < 4096, "{small} counts before any value");
        Delays::record(&mut d.srd, Duration::from_millis(20));
        let ms20 = d.srd.distinct_values();
        Delays::record(&mut d.srd, Duration::from_secs(7200));
        assert!(d.srd.distinct_values() > ms20);
        assert_eq!(d.srd.max(), d.srd.highest_equivalent(DELAY_MAX_US));
        assert!((d.srd.value_at_quantile(0.25) as f64 - 20_000.0).abs() < 20.0);
        // Reports carry the fixed bounds: raw HdrHistogram readers can add any two.
        let raw = |h: &Histogram<u64>| -> Histogram<u64> {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD
                .decode(encode_histogram(h))
                .unwrap();
            hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut b.as_slice())
                .unwrap()
        };
        let mut short = Delays::default();
        Delays::record(&mut short.srd, Duration::from_millis(2));
        let mut sum = raw(&short.srd);
        assert_eq!(sum.high(), raw(&d.srd).high());
        sum.add(raw(&d.srd))
            .expect("the shorter one takes the longer one's values");
        assert_eq!(sum.len(), 3);
        // More than an hour never comes back from a report either.
        let mut big = Histogram::<u64>::new(3).unwrap();
        big.record(2 * DELAY_MAX_US).unwrap();
        assert!(matches!(
            decode_histogram(&encode_histogram(&big)),
            Err(HistogramError::OutOfRange(_))
        ));
    }

    #[test]
    fn take_resets_counts() {
        let mut i = Interval::default();
        i.counters.msgs_sent = 3;
        Delays::record(&mut i.delays.rrd, Duration::from_millis(1));
        let t = i.take();
        assert_eq!(t.counters.msgs_sent, 3);
        assert_eq!(t.delays.rrd.len(), 1);
        assert_eq!(i.counters.msgs_sent, 0);
        assert!(i.delays.rrd.is_empty());
    }
}
