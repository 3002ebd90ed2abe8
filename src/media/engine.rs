//! The media plane of one worker, sans IO: every RTP stream of its calls, sent and received on
//! one socket shared by all of them and told apart by SSRC (docs/media.md says why one socket:
//! at 2,000 calls a socket per leg is 4,000 descriptors and a system call per packet read,
//! where a shared one reads 32 packets a call).
//!
//! Input + now → packets to send + the next deadline, as the user-agent machines are. The owner
//! starts a stream when a call is up (the caller at its ACK, the callee at the ACK it gets) and
//! stops it at BYE; it derives SSRCs from the Call-ID, so both ends of a call between two
//! imsload users know each other's SSRC without reading a packet. A stream from any other peer
//! (SIPp's echo, a media relay) is matched by our own SSRC coming back or by the address its
//! SDP gave.
//!
//! RTCP (RFC 3550 §6) goes out of a second socket, whose port our SDP names (`a=rtcp`, RFC
//! 3605), to the port the far end's SDP names (or its RTP port + 1): per stream, an SR (or RR
//! when it does not send) with a report block on what it receives and an SDES CNAME, at RFC
//! 3550's interval, and a BYE when it ends. What the far end reports gives each stream a round
//! trip time and the loss and jitter it saw.

use super::g711::Codec;
use super::quality::{e_model, Receiver};
use super::rtcp::{self, Packet, Report, ReportBlock, SenderInfo};
use super::rtp::{Header, NotRtp, HEADER};
use super::sdp::RemoteMedia;
use crate::sip::transport::{buffer, Transmit};
use crate::slab::{Key, Slab};
use crate::ua::timers::TimerWheel;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What streams play, encoded once for the run.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The codec we offer first and answer with when the offer has it.
    pub codec: Codec,
    /// Our packet time (`--media-ptime`); a peer's `a=ptime` wins for what we send it.
    pub ptime: Duration,
    /// The audio, 8 kHz, in each law; streams loop over it.
    pub pcmu: Arc<[u8]>,
    pub pcma: Arc<[u8]>,
}

impl MediaConfig {
    /// `samples`: 8 kHz linear audio (a tone or a file's), at least one packet long.
    pub fn new(codec: Codec, ptime: Duration, samples: &[i16]) -> MediaConfig {
        let mut s = samples.to_vec();
        let frame = (ptime.as_millis() as usize * 8).max(80);
        while s.len() < frame {
            s.extend_from_slice(samples);
            if samples.is_empty() {
                s.resize(frame, 0);
            }
        }
        MediaConfig {
            codec,
            ptime,
            pcmu: Codec::Pcmu.encode(&s).into(),
            pcma: Codec::Pcma.encode(&s).into(),
        }
    }
}

/// Counts since the last [`MediaEngine::take_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCounts {
    pub streams_started: u64,
    pub streams_ended: u64,
    /// Streams that could not start: an SSRC already in use on this worker.
    pub streams_refused: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Our own packets come back (an echoing peer such as `sipp -rtp_echo`).
    pub packets_echoed: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Packets lost, booked when their stream ends (only then is the count final).
    pub packets_lost: u64,
    /// RTP that matched no stream (an ended call's last packets, a stranger).
    pub unmatched: u64,
    /// RTCP compound packets sent, received (and valid), and received but failing RFC 3550
    /// A.2's checks.
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    pub rtcp_malformed: u64,
    /// Datagrams on a media socket that were neither RTP nor RTCP.
    pub not_rtp: u64,
    /// Sends more than a packet time late (the worker is overloaded).
    pub late_sends: u64,
    /// Silences of over three packet times that ended (a packet came after one): counted in
    /// the second the audio came back.
    pub gaps: u64,
    /// Streams that stopped sending for a new offer or answer (a hold), and that sent again.
    pub holds: u64,
    pub resumes: u64,
    /// Offers or answers after the first that changed a stream's codec, or its packet time
    /// (RFC 3264 §8.3.2), taken up from the next packet.
    pub codec_changes: u64,
    pub ptime_changes: u64,
}

/// One stream's figures when it ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamSummary {
    /// Our SSRC (the low bit: 0 the caller's leg, 1 the callee's): what Wireshark's RTP
    /// streams view lists for the stream we sent.
    pub ssrc: u32,
    pub started: Instant,
    pub ended: Instant,
    /// The packet time it sent at (the far end's `a=ptime`).
    pub ptime: Duration,
    pub sent: u64,
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub jitter_ms: f64,
    /// The longest time without a packet, from the stream's start (a stream that got nothing
    /// has a gap as long as it lasted) to its end.
    pub longest_gap: Duration,
    /// When that gap began.
    pub longest_gap_at: Instant,
    pub r_factor: f64,
    pub mos: f64,
    /// From the far end's RTCP, when it sent any: the latest round trip time (from the LSR
    /// and DLSR of its report on our stream), and the loss and jitter it last reported.
    pub rtt: Option<Duration>,
    pub far_lost: Option<i32>,
    pub far_jitter_ms: Option<f64>,
}

/// Events for the owner to book.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MediaEvent {
    Ended(StreamSummary),
    /// How late a packet left (µs past its due time): the send-time jitter.
    SendLateness(Duration),
    /// A round trip time from an RTCP report on one of our streams.
    RoundTrip(Duration),
}

/// What a timer of the engine's is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tick {
    Rtp,
    Rtcp,
}

/// RFC 3550 §6.2's minimum RTCP interval. For a two-party G.711 call the computed interval
/// (5 % of ~80 kbit/s shared by two members sending ~100-byte reports: ~0.4 s) is below it, so
/// this is the interval; the first report comes after half of it (§6.2).
const RTCP_MIN: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Stream {
    ssrc: u32,
    far_ssrc: Option<u32>,
    remote: SocketAddr,
    codec: Codec,
    ptime: Duration,
    samples: u32,
    seq: u16,
    ts: u32,
    /// The next packet's due time (each from the last by one ptime: no drift).
    due: Instant,
    send: bool,
    receive: bool,
    sent: u64,
    pos: usize,
    started: Instant,
    /// The SSRC the receiver follows: the first that reached this stream (its far end's, or our
    /// own sent back by an echoing peer). Packets of any other are not this stream's.
    source: Option<u32>,
    rx: Receiver,
    /// Where RTCP goes, and what the last report said we had (RFC 3550 A.3's priors).
    rtcp_remote: SocketAddr,
    prior: (u64, u64),
    /// The far end's latest SR: the middle of its NTP time, and when it came.
    last_sr: Option<(u32, Instant)>,
    /// The far end's latest report on our stream, and the round trip it gave.
    far: Option<ReportBlock>,
    rtt: Option<Duration>,
}

/// See the module comment.
#[derive(Clone)]
pub struct MediaEngine {
    cfg: MediaConfig,
    sock: u32,
    /// The socket's address: what comes from it is one of our own streams on this worker,
    /// never an echo.
    local: SocketAddr,
    streams: Slab<Stream>,
    /// Streams by our SSRC (how the owner names them, and how an echo finds its stream), and
    /// by the far end's (how its packets find the stream that receives them: with both legs
    /// of a call on one worker, one SSRC is in both maps, for different streams).
    by_ssrc: HashMap<u32, Key>,
    by_far: HashMap<u32, Key>,
    /// A remote address used by exactly one stream (None: by several, so not a key).
    by_addr: HashMap<SocketAddr, Option<Key>>,
    timers: TimerWheel<(Key, u32, Tick)>,
    out: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
    counts: MediaCounts,
    /// The RTCP socket (its index and address), when the worker has one.
    rtcp: Option<(u32, SocketAddr)>,
    /// The NTP time of an instant, read once (the module comment of `rtcp` says why once).
    ntp_at: (Instant, Duration),
    cname: String,
    /// RTCP intervals are randomized (§6.3.1) so that reports of calls set up together spread.
    rng: SmallRng,
}

/// Stream `role` (0 caller, 1 callee) of the call `call_id`: the same on both ends.
pub fn ssrc_of(call_id: &str, role: u32) -> u32 {
    // FNV-1a: cheap, and the two roles differ in the low bit only.
    let mut h: u32 = 0x811c_9dc5;
    for b in call_id.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h & !1) | (role & 1)
}

impl MediaEngine {
    /// `sock`: the index of the worker's media socket (every packet leaves from it), bound
    /// at `local`; `wall`: the wall clock at `now`, since the Unix epoch (for RTCP's NTP times).
    pub fn new(
        cfg: MediaConfig,
        sock: u32,
        local: SocketAddr,
        now: Instant,
        wall: Duration,
    ) -> MediaEngine {
        MediaEngine {
            cfg,
            sock,
            local,
            streams: Slab::default(),
            by_ssrc: HashMap::new(),
            by_far: HashMap::new(),
            by_addr: HashMap::new(),
            // 1 ms ticks over 256 ms: every packet time of G.711 in the near wheel.
            timers: TimerWheel::with_geometry(now, 20, 8),
            out: VecDeque::new(),
            events: VecDeque::new(),
            counts: MediaCounts::default(),
            rtcp: None,
            ntp_at: (now, wall),
            cname: format!("imsload@{}", local.ip()),
            rng: SmallRng::seed_from_u64(u64::from(local.port()) << 32 | u64::from(sock)),
        }
    }

    /// Sends RTCP from socket `sock`, bound at `local` (our SDP names its port), for streams
    /// started from now on.
    pub fn enable_rtcp(&mut self, sock: u32, local: SocketAddr) {
        self.rtcp = Some((sock, local));
    }

    fn ntp(&self, t: Instant) -> u64 {
        let (at, wall) = self.ntp_at;
        rtcp::ntp(if t >= at {
            wall + (t - at)
        } else {
            wall.saturating_sub(at - t)
        })
    }

    /// RFC 3550 §6.3.1: the deterministic interval times a uniform 0.5–1.5, over e − 3/2 to
    /// make up for the timer reconsideration that shortens it on average.
    fn rtcp_interval(&mut self, first: bool) -> Duration {
        let td = if first { RTCP_MIN / 2 } else { RTCP_MIN };
        td.mul_f64(self.rng.random_range(0.5..1.5) / (std::f64::consts::E - 1.5))
    }

    pub fn config(&self) -> &MediaConfig {
        &self.cfg
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Starts stream `ssrc` towards `remote`; `far_ssrc` is the far end's, when known.
    /// Refused (and counted) when `ssrc` is already in use here.
    pub fn start(
        &mut self,
        now: Instant,
        ssrc: u32,
        far_ssrc: Option<u32>,
        remote: RemoteMedia,
    ) -> bool {
        if self.by_ssrc.contains_key(&ssrc) {
            self.counts.streams_refused += 1;
            return false;
        }
        let ptime = Duration::from_millis(u64::from(remote.ptime_ms));
        let k = self.streams.insert(Stream {
            ssrc,
            far_ssrc: None,
            remote: remote.addr,
            codec: remote.codec,
            ptime,
            samples: u32::from(remote.ptime_ms) * 8,
            seq: (ssrc >> 8) as u16,
            ts: ssrc.rotate_left(13),
            due: now,
            send: remote.direction.we_send(),
            receive: remote.direction.we_receive(),
            sent: 0,
            pos: 0,
            started: now,
            source: None,
            rx: Receiver::new(8000),
            rtcp_remote: remote.rtcp,
            prior: (0, 0),
            last_sr: None,
            far: None,
            rtt: None,
        });
        self.by_ssrc.insert(ssrc, k);
        if let Some(f) = far_ssrc {
            if let std::collections::hash_map::Entry::Vacant(v) = self.by_far.entry(f) {
                v.insert(k);
                self.streams.get_mut(k).expect("just inserted").far_ssrc = Some(f);
            }
        }
        self.by_addr
            .entry(remote.addr)
            .and_modify(|e| *e = None)
            .or_insert(Some(k));
        if remote.direction.we_send() {
            self.timers.insert(now, (k, ssrc, Tick::Rtp));
        }
        if self.rtcp.is_some() {
            let at = now + self.rtcp_interval(true);
            self.timers.insert(at, (k, ssrc, Tick::Rtcp));
        }
        self.counts.streams_started += 1;
        true
    }

    /// A new offer or answer for stream `ssrc` (a re-INVITE: hold, resume), in force from
    /// `now`. A stream put on hold stops sending, and a silence it no longer expects is no gap;
    /// one resumed sends again with its RTP clock moved on by the time it was quiet (RFC 3550
    /// §5.1: a timestamp is the sampling instant) and measures gaps from the resume. A new
    /// address moves it; RFC 2543's hold address 0.0.0.0 only stops it sending. Another codec
    /// or packet time (RFC 3264 §8.3.2: a re-offer may change either) is taken up from the next
    /// packet on, the RTP clock running on (both G.711 laws count 8,000 a second). False when
    /// there is no such stream.
    pub fn update(&mut self, now: Instant, ssrc: u32, remote: RemoteMedia) -> bool {
        let Some(&k) = self.by_ssrc.get(&ssrc) else {
            return false;
        };
        let held = remote.addr.ip().is_unspecified();
        let send = remote.direction.we_send() && !held;
        let receive = remote.direction.we_receive();
        let s = self.streams.get_mut(k).expect("mapped streams exist");
        let ptime = Duration::from_millis(u64::from(remote.ptime_ms));
        self.counts.codec_changes += u64::from(s.codec != remote.codec);
        self.counts.ptime_changes += u64::from(s.ptime != ptime);
        s.codec = remote.codec;
        s.ptime = ptime;
        s.samples = u32::from(remote.ptime_ms) * 8;
        if send && !s.send {
            let quiet = now.saturating_duration_since(s.due);
            let rate = u128::from(s.codec.clock_rate());
            s.ts =
                s.ts.wrapping_add((quiet.as_nanos() * rate / 1_000_000_000) as u32);
            // Not before the packet the hold cut off was due: a quick hold and resume keeps
            // the packet time.
            s.due = s.due.max(now);
            self.timers.insert(s.due, (k, ssrc, Tick::Rtp));
            self.counts.resumes += 1;
        } else if !send && s.send {
            self.counts.holds += 1;
        }
        if receive && !s.receive {
            s.rx.resume(now);
        }
        (s.send, s.receive) = (send, receive);
        if !held && remote.addr != s.remote {
            let old = std::mem::replace(&mut s.remote, remote.addr);
            s.rtcp_remote = remote.rtcp;
            if self.by_addr.get(&old) == Some(&Some(k)) {
                self.by_addr.remove(&old);
            }
            self.by_addr
                .entry(remote.addr)
                .and_modify(|e| *e = None)
                .or_insert(Some(k));
        }
        true
    }

    /// Ends stream `ssrc` (no-op when unknown) and books its figures.
    pub fn stop(&mut self, now: Instant, ssrc: u32) {
        let Some(k) = self.by_ssrc.remove(&ssrc) else {
            return;
        };
        let Some(s) = self.streams.remove(k) else {
            return;
        };
        if let Some(f) = s.far_ssrc {
            if self.by_far.get(&f) == Some(&k) {
                self.by_far.remove(&f);
            }
        }
        if let Some(Some(owner)) = self.by_addr.get(&s.remote) {
            if *owner == k {
                self.by_addr.remove(&s.remote);
            }
        }
        self.counts.streams_ended += 1;
        if let Some((sock, _)) = self.rtcp {
            let data = report(&s, now, self.ntp(now), &self.cname, true);
            self.push_report(sock, s.rtcp_remote, data);
        }
        let summary = summarize(&s, now);
        self.counts.packets_lost += summary.lost;
        self.events.push_back(MediaEvent::Ended(summary));
    }

    /// Ends every stream (a run that ends with calls still up), each summarized.
    pub fn stop_all(&mut self, now: Instant) {
        let ssrcs: Vec<u32> = self.by_ssrc.keys().copied().collect();
        for ssrc in ssrcs {
            self.stop(now, ssrc);
        }
    }

    pub fn handle_input(&mut self, now: Instant, data: &[u8], from: SocketAddr) {
        let h = match Header::parse(data) {
            Ok((h, _)) => h,
            Err(NotRtp::Rtcp) => return self.handle_rtcp(now, data),
            Err(_) => {
                self.counts.not_rtp += 1;
                return;
            }
        };
        // Our own SSRC back is an echo when it comes from where the stream sends to (an
        // echoing peer), and not from our own socket. Anything else with our SSRC is another
        // leg's packet: with both legs of a call on this worker, the callee's first packets
        // (straight, or through a relay) can come before the caller's stream, which expects
        // them, has started; taken as an echo they would make the callee's stream deaf.
        let echo = self.by_ssrc.get(&h.ssrc).filter(|&&k| {
            from != self.local && self.streams.get(k).is_some_and(|s| s.remote == from)
        });
        let k = match self.by_far.get(&h.ssrc).or(echo) {
            Some(k) => *k,
            None => match self.by_addr.get(&from) {
                // A peer that chose its own SSRC (not an imsload, or a relay that rewrites
                // them), at an address only one stream talks to, before any packet with the
                // SSRC we expected: learn it.
                // Not from ourselves, and not in the first packet times, when the far end's
                // first packets may simply precede our stream.
                Some(Some(k))
                    if from != self.local
                        && self.streams.get(*k).is_some_and(|s| {
                            s.rx.received == 0
                                && now.saturating_duration_since(s.started) > 3 * s.ptime
                        }) =>
                {
                    let k = *k;
                    let s = self.streams.get_mut(k).expect("checked");
                    if let Some(old) = s.far_ssrc.replace(h.ssrc) {
                        if self.by_far.get(&old) == Some(&k) {
                            self.by_far.remove(&old);
                        }
                    }
                    self.by_far.insert(h.ssrc, k);
                    k
                }
                _ => {
                    self.counts.unmatched += 1;
                    return;
                }
            },
        };
        let Some(s) = self.streams.get_mut(k) else {
            self.counts.unmatched += 1;
            return;
        };
        if *s.source.get_or_insert(h.ssrc) != h.ssrc {
            // With both legs of a call on this worker, a packet of the callee's that comes
            // after the caller's stream ended finds the callee's own stream by its SSRC.
            self.counts.unmatched += 1;
            return;
        }
        if h.ssrc == s.ssrc {
            self.counts.packets_echoed += 1;
        }
        if !s.receive {
            // Audio while we were told to expect none: the far end resumed before its answer
            // reached us (our own resume's 200 goes through the proxies, its RTP straight
            // here). The silence we were told of ends here and was no gap.
            s.rx.resume(now);
        }
        if s.rx
            .last_arrival()
            .is_some_and(|l| now.saturating_duration_since(l) > 3 * s.ptime)
        {
            self.counts.gaps += 1;
        }
        let (d, o) = (s.rx.duplicates, s.rx.out_of_order);
        s.rx.packet(h.seq, h.timestamp, now, s.started);
        self.counts.duplicates += s.rx.duplicates - d;
        self.counts.out_of_order += s.rx.out_of_order - o;
        self.counts.packets_received += 1;
    }

    /// An RTCP compound packet (on either socket: a peer may multiplex it with RTP). An SR
    /// from the source a stream receives is remembered for our next report's LSR/DLSR; a report
    /// block on one of our streams gives it a round trip time and the far end's view.
    fn handle_rtcp(&mut self, now: Instant, data: &[u8]) {
        let Ok(packets) = rtcp::parse(data) else {
            self.counts.rtcp_malformed += 1;
            return;
        };
        self.counts.rtcp_received += 1;
        let arrival = rtcp::middle(self.ntp(now));
        for p in packets {
            let Packet::Report {
                ssrc,
                sender,
                blocks,
            } = p
            else {
                continue;
            };
            if let (Some(info), Some(&k)) = (sender, self.by_far.get(&ssrc)) {
                if let Some(s) = self.streams.get_mut(k) {
                    s.last_sr = Some((rtcp::middle(info.ntp), now));
                }
            }
            for b in blocks {
                let Some(s) = self
                    .by_ssrc
                    .get(&b.ssrc)
                    .and_then(|&k| self.streams.get_mut(k))
                else {
                    continue;
                };
                s.far = Some(b);
                if let Some(rtt) = rtcp::round_trip(arrival, b.lsr, b.dlsr) {
                    s.rtt = Some(rtt);
                    self.events.push_back(MediaEvent::RoundTrip(rtt));
                }
            }
        }
    }

    /// Queues a compound report (an SR or RR, SDES, and a BYE when `bye`) from the RTCP socket.
    fn push_report(&mut self, sock: u32, dest: SocketAddr, data: Vec<u8>) {
        self.counts.rtcp_sent += 1;
        self.out.push_back(Transmit {
            src: sock,
            dest,
            data,
        });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, (k, ssrc, tick))) = self.timers.pop_due(now) {
            let Some(s) = self.streams.get(k) else {
                continue;
            };
            if s.ssrc != ssrc {
                continue;
            }
            if tick == Tick::Rtcp {
                let Some((sock, _)) = self.rtcp else { continue };
                let (ntp, next) = (self.ntp(now), now + self.rtcp_interval(false));
                let s = self.streams.get_mut(k).expect("just read");
                let data = report(s, now, ntp, &self.cname, false);
                s.prior = (s.rx.expected(), s.rx.received);
                let dest = s.rtcp_remote;
                self.timers.insert(next, (k, ssrc, Tick::Rtcp));
                self.push_report(sock, dest, data);
                continue;
            }
            // Not sending (on hold), or a tick of the chain before a hold that a resume
            // replaced: one chain of packets per stream.
            let Some(s) = self.streams.get_mut(k).filter(|s| s.send && s.due == at) else {
                continue;
            };
            let late = now.saturating_duration_since(s.due);
            if late > s.ptime {
                self.counts.late_sends += 1;
            }
            self.events.push_back(MediaEvent::SendLateness(late));
            let audio = match s.codec {
                Codec::Pcmu => &self.cfg.pcmu,
                Codec::Pcma => &self.cfg.pcma,
            };
            let n = s.samples as usize;
            let mut data = buffer(HEADER + n);
            Header {
                marker: s.sent == 0,
                pt: s.codec.payload_type(),
                seq: s.seq,
                timestamp: s.ts,
                ssrc: s.ssrc,
            }
            .write(&mut data);
            if s.pos + n > audio.len() {
                s.pos = 0;
            }
            data.extend_from_slice(&audio[s.pos..(s.pos + n).min(audio.len())]);
            data.resize(HEADER + n, audio[0]);
            s.pos += n;
            s.seq = s.seq.wrapping_add(1);
            s.ts = s.ts.wrapping_add(s.samples);
            s.sent += 1;
            s.due += s.ptime;
            self.timers.insert(s.due, (k, ssrc, Tick::Rtp));
            self.counts.packets_sent += 1;
            self.out.push_back(Transmit {
                src: self.sock,
                dest: s.remote,
                data,
            });
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    pub fn take_counts(&mut self) -> MediaCounts {
        std::mem::take(&mut self.counts)
    }

    /// Streams that expect packets and got none for more than three packet times: the calls
    /// whose audio is out right now.
    pub fn silent_streams(&self, now: Instant) -> u64 {
        let mut n = 0;
        for k in self.streams.keys() {
            let Some(s) = self.streams.get(k) else {
                continue;
            };
            let last = s.rx.last_arrival().unwrap_or(s.started);
            if s.receive && now.saturating_duration_since(last) > 3 * s.ptime {
                n += 1;
            }
        }
        n
    }
}

/// Stream `s`'s compound report at `now` (`ntp` its NTP time): an SR when it has sent, else
/// an RR; a report block once it receives a source; our CNAME; a BYE when `bye`.
fn report(s: &Stream, now: Instant, ntp: u64, cname: &str, bye: bool) -> Vec<u8> {
    let rx = &s.rx;
    let block = s.source.map(|source| {
        let (expected, received) = (rx.expected(), rx.received);
        // RFC 3550 A.3: the fraction of the interval's expected packets that were lost.
        let exp_i = expected.saturating_sub(s.prior.0);
        let lost_i = exp_i.saturating_sub(received.saturating_sub(s.prior.1));
        ReportBlock {
            ssrc: source,
            fraction_lost: (lost_i << 8)
                .checked_div(exp_i)
                .map_or(0, |f| f.min(255) as u8),
            cumulative_lost: i32::try_from(expected as i64 - received as i64).unwrap_or(i32::MAX),
            highest_seq: rx.highest_seq(),
            jitter: rx.jitter_units(),
            lsr: s.last_sr.map_or(0, |(lsr, _)| lsr),
            dlsr: s
                .last_sr
                .map_or(0, |(_, at)| rtcp::units(now.saturating_duration_since(at))),
        }
    });
    let sender = (s.send && s.sent > 0).then(|| {
        // The RTP time of `now`: the next packet's timestamp, less the samples until it is due.
        let rate = u128::from(s.codec.clock_rate());
        let ahead = (s.due.saturating_duration_since(now).as_nanos() * rate / 1_000_000_000) as u32;
        let behind =
            (now.saturating_duration_since(s.due).as_nanos() * rate / 1_000_000_000) as u32;
        SenderInfo {
            ntp,
            rtp_timestamp: s.ts.wrapping_sub(ahead).wrapping_add(behind),
            packets: s.sent as u32,
            // G.711: one octet per sample.
            octets: (s.sent * u64::from(s.samples)) as u32,
        }
    });
    let mut data = buffer(128);
    Report {
        ssrc: s.ssrc,
        sender,
        block,
        cname,
        bye,
    }
    .write(&mut data);
    data
}

fn summarize(s: &Stream, now: Instant) -> StreamSummary {
    let rx = &s.rx;
    // A stream that expected audio and got none, or stopped getting it, was silent from its
    // last packet (or its start) to its end: that silence counts as a gap, and the packets it
    // should have held as expected.
    let last = rx.last_arrival().unwrap_or(s.started);
    let tail = now.saturating_duration_since(last);
    let (mut gap, mut gap_at) = (rx.longest_gap, rx.longest_gap_at.unwrap_or(s.started));
    let mut expected = rx.expected();
    if s.receive && tail > gap {
        gap = tail;
        gap_at = last;
    }
    if s.receive && rx.received == 0 {
        expected = (tail.as_nanos() / s.ptime.as_nanos().max(1)) as u64;
    }
    let lost = expected.saturating_sub(rx.received);
    let ratio = if expected > 0 {
        lost as f64 / expected as f64
    } else {
        0.0
    };
    // Mouth to ear: the packet time, a jitter buffer holding twice the jitter, nothing for the
    // network (loopback or a LAN; docs/media.md).
    let delay = s.ptime + Duration::from_secs_f64(2.0 * rx.jitter_ms() / 1000.0);
    let (r, mos) = if s.receive {
        e_model(ratio, delay)
    } else {
        (0.0, 0.0)
    };
    StreamSummary {
        ssrc: s.ssrc,
        started: s.started,
        ended: now,
        ptime: s.ptime,
        sent: s.sent,
        received: rx.received,
        expected,
        lost,
        jitter_ms: rx.jitter_ms(),
        longest_gap: gap,
        longest_gap_at: gap_at,
        r_factor: r,
        mos,
        rtt: s.rtt,
        far_lost: s.far.map(|b| b.cumulative_lost),
        far_jitter_ms: s
            .far
            .map(|b| f64::from(b.jitter) * 1000.0 / f64::from(s.codec.clock_rate())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::g711::tone;
    use super::super::sdp::Direction;
    use super::*;

    fn cfg() -> MediaConfig {
        MediaConfig::new(Codec::Pcmu, Duration::from_millis(20), &tone(400.0))
    }

    fn remote(addr: SocketAddr) -> RemoteMedia {
        RemoteMedia {
            addr,
            codec: Codec::Pcmu,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp: SocketAddr::new(addr.ip(), addr.port() + 1),
        }
    }

    /// The far end at `addr` with direction `d`, as a re-INVITE or its answer says.
    fn with(addr: ([u8; 4], u16), d: Direction) -> RemoteMedia {
        RemoteMedia {
            direction: d,
            ..remote(addr.into())
        }
    }

    /// A call `name` between the pair: the caller's stream on A, the callee's on B.
    fn call(p: &mut Pair, name: &str) -> (u32, u32) {
        let (caller, callee) = (ssrc_of(name, 0), ssrc_of(name, 1));
        let now = p.now;
        assert!(p.b.start(now, callee, Some(caller), remote(A.into())));
        assert!(p.a.start(now, caller, Some(callee), remote(B.into())));
        (caller, callee)
    }

    /// Two engines (two workers) wired back to back under a virtual clock, 1 ms steps;
    /// `lose(i)` drops the i-th packet on the wire. Returns what each side's events said.
    struct Pair {
        now: Instant,
        a: MediaEngine,
        b: MediaEngine,
        wire: u64,
    }

    const A: ([u8; 4], u16) = ([127, 0, 0, 1], 4000);
    /// 2026-12-05, as the runtime reads it once.
    const WALL: Duration = Duration::from_secs(1_796_428_800);
    const B: ([u8; 4], u16) = ([127, 0, 0, 2], 4002);

    impl Pair {
        fn new() -> Pair {
            let now = Instant::now();
            Pair {
                now,
                a: MediaEngine::new(cfg(), 0, A.into(), now, WALL),
                b: MediaEngine::new(cfg(), 0, B.into(), now, WALL),
                wire: 0,
            }
        }
        fn run(&mut self, ms: u64, mut lose: impl FnMut(u64) -> bool) {
            for _ in 0..ms {
                self.now += Duration::from_millis(1);
                for (from, to) in [(true, false), (false, true)] {
                    let src = if from { &mut self.a } else { &mut self.b };
                    src.handle_timeout(self.now);
                    let mut out = Vec::new();
                    while let Some(t) = src.poll_transmit() {
                        out.push(t);
                    }
                    let (dst, src_addr) = if to {
                        (&mut self.a, B)
                    } else {
                        (&mut self.b, A)
                    };
                    for t in out {
                        self.wire += 1;
                        if !lose(self.wire) {
                            dst.handle_input(self.now, &t.data, src_addr.into());
                        }
                        t.recycle();
                    }
                }
            }
        }
    }

    fn ended(e: &mut MediaEngine) -> Vec<StreamSummary> {
        std::iter::from_fn(|| e.poll_event())
            .filter_map(|e| match e {
                MediaEvent::Ended(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_call_between_two_workers_flows_both_ways_and_loss_and_silence_are_measured() {
        let mut p = Pair::new();
        let (caller, callee) = call(&mut p, "call-1");
        // 1 s clean, then every packet A sends lost for 200 ms, then 800 ms clean.
        p.run(1000, |_| false);
        let a_sent = p.a.take_counts().packets_sent;
        p.run(200, |_| true);
        p.run(800, |_| false);
        let now = p.now;
        p.a.stop(now, caller);
        p.b.stop(now, callee);
        let (sa, sb) = (ended(&mut p.a)[0], ended(&mut p.b)[0]);
        assert_eq!(a_sent, 51, "one packet at the start, then one per 20 ms");
        assert_eq!((sa.sent, sb.sent), (101, 101));
        // Both directions lost the 200 ms (10 packets each way).
        assert_eq!((sa.lost, sb.lost), (10, 10));
        assert_eq!((sa.received, sb.received), (91, 91));
        assert!(
            sb.longest_gap >= Duration::from_millis(200)
                && sb.longest_gap <= Duration::from_millis(221),
            "{:?}",
            sb.longest_gap
        );
        assert!(sb.mos < 4.0 && sb.mos > 2.0, "10 % loss: {}", sb.mos);
        assert_eq!(p.a.streams() + p.b.streams(), 0);
    }

    #[test]
    fn a_run_that_ends_with_streams_up_summarizes_every_one() {
        let mut p = Pair::new();
        let now = p.now;
        for i in 0..3 {
            let (caller, callee) = (ssrc_of(&format!("c{i}"), 0), ssrc_of(&format!("c{i}"), 1));
            assert!(p.a.start(now, caller, Some(callee), remote(B.into())));
        }
        // A's streams go out into silence: B has none to answer with.
        p.run(500, |_| false);
        let now = p.now;
        p.a.stop_all(now);
        let ended = ended(&mut p.a);
        assert_eq!(ended.len(), 3);
        assert_eq!(p.a.streams(), 0);
        assert_eq!(p.a.take_counts().streams_ended, 3);
        // Nothing came back: each silence is the whole stream.
        for s in ended {
            assert_eq!(s.received, 0);
            assert!(
                s.longest_gap >= Duration::from_millis(480),
                "{:?}",
                s.longest_gap
            );
        }
    }

    #[test]
    fn both_legs_on_one_worker_each_get_the_others_audio() {
        // The callee answers and sends first, to the caller's address: this very socket. Its
        // packets must wait for the caller's stream, not become the callee's own "echo".
        let now = Instant::now();
        let mut e = MediaEngine::new(cfg(), 0, A.into(), now, WALL);
        let (caller, callee) = (ssrc_of("c", 0), ssrc_of("c", 1));
        let mut t = now;
        assert!(e.start(t, callee, Some(caller), remote(A.into())));
        let loop_back = |e: &mut MediaEngine, t: Instant| {
            e.handle_timeout(t);
            let mut out = Vec::new();
            while let Some(x) = e.poll_transmit() {
                out.push(x);
            }
            for x in out {
                e.handle_input(t, &x.data, A.into());
                x.recycle();
            }
        };
        for _ in 0..30 {
            t += Duration::from_millis(1);
            loop_back(&mut e, t);
        }
        assert!(e.start(t, caller, Some(callee), remote(A.into())));
        for _ in 0..1000 {
            t += Duration::from_millis(1);
            loop_back(&mut e, t);
        }
        let c = e.take_counts();
        assert_eq!(c.packets_echoed, 0);
        // The callee's first two packets came before the caller's stream: unmatched.
        assert_eq!(c.unmatched, 2, "{c:?}");
        e.stop(t, caller);
        e.stop(t, callee);
        let s = ended(&mut e);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|s| s.received >= 49 && s.lost == 0), "{s:?}");
    }

    #[test]
    fn an_echo_is_its_own_audio_from_where_it_sends_and_garbage_is_counted() {
        let now = Instant::now();
        let peer: SocketAddr = B.into();
        let mut e = MediaEngine::new(cfg(), 0, A.into(), now, WALL);
        let me = ssrc_of("x", 0);
        assert!(e.start(now, me, Some(ssrc_of("x", 1)), remote(peer)));
        assert!(
            !e.start(now, me, None, remote(peer)),
            "an SSRC in use is refused"
        );
        e.handle_timeout(now);
        let first = e.poll_transmit().unwrap();
        // From elsewhere it is not an echo: a stranger's copy.
        e.handle_input(now, &first.data, "127.0.0.9:9".parse().unwrap());
        e.handle_input(now, &first.data, peer);
        // An RR, then the same with a length running past the datagram's end.
        e.handle_input(now, b"\x80\xc9\0\x01rtcp", peer);
        e.handle_input(now, b"\x80\xc9\0\x02rtcp", peer);
        e.handle_input(now, b"hello", peer);
        let c = e.take_counts();
        assert_eq!(
            (
                c.packets_echoed,
                c.unmatched,
                c.rtcp_received,
                c.rtcp_malformed,
                c.not_rtp
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!((c.streams_started, c.streams_refused), (1, 1));
    }

    #[test]
    fn rtcp_reports_give_each_end_the_round_trip_and_what_the_far_end_lost() {
        // Two workers 25 ms apart each way, both with RTCP; A's RTP lost from 5 s to 5.2 s.
        let now = Instant::now();
        let (a_rtcp, b_rtcp): (SocketAddr, SocketAddr) = (
            "127.0.0.1:4001".parse().unwrap(),
            "127.0.0.2:4003".parse().unwrap(),
        );
        let mut a = MediaEngine::new(cfg(), 0, A.into(), now, WALL);
        let mut b = MediaEngine::new(cfg(), 0, B.into(), now, WALL + Duration::from_secs(7));
        a.enable_rtcp(1, a_rtcp);
        b.enable_rtcp(1, b_rtcp);
        let (caller, callee) = (ssrc_of("r", 0), ssrc_of("r", 1));
        assert!(b.start(now, callee, Some(caller), remote(A.into())));
        assert!(a.start(now, caller, Some(callee), remote(B.into())));
        let delay = Duration::from_millis(25);
        let mut wire: VecDeque<(Instant, bool, Transmit)> = VecDeque::new();
        let (mut t, mut byes) = (now, 0);
        let mut step = |a: &mut MediaEngine, b: &mut MediaEngine, t: Instant, end: bool| {
            for (from_a, e) in [(true, &mut *a), (false, &mut *b)] {
                e.handle_timeout(t);
                while let Some(x) = e.poll_transmit() {
                    let lost = from_a
                        && x.src == 0
                        && t >= now + Duration::from_millis(5000)
                        && t < now + Duration::from_millis(5200);
                    if end && x.src == 1 {
                        let bye = rtcp::parse(&x.data)
                            .unwrap()
                            .any(|p| matches!(p, Packet::Bye(_)));
                        byes += usize::from(bye);
                    }
                    if !lost {
                        wire.push_back((t + delay, from_a, x));
                    }
                }
            }
            while wire.front().is_some_and(|w| w.0 <= t) {
                let (_, from_a, x) = wire.pop_front().expect("checked");
                let (to, from) = if from_a { (&mut *b, A) } else { (&mut *a, B) };
                to.handle_input(t, &x.data, from.into());
                x.recycle();
            }
        };
        for _ in 0..20_000 {
            t += Duration::from_millis(1);
            step(&mut a, &mut b, t, false);
        }
        a.stop(t, caller);
        b.stop(t, callee);
        step(&mut a, &mut b, t, true);
        assert_eq!(byes, 2, "each stream's last report ends with a BYE");
        let events = |e: &mut MediaEngine| -> (Vec<StreamSummary>, Vec<Duration>) {
            let (mut ended, mut rtts) = (Vec::new(), Vec::new());
            while let Some(ev) = e.poll_event() {
                match ev {
                    MediaEvent::Ended(s) => ended.push(s),
                    MediaEvent::RoundTrip(r) => rtts.push(r),
                    MediaEvent::SendLateness(_) => {}
                }
            }
            (ended, rtts)
        };
        let ((sa, ra), (sb, rb)) = (events(&mut a), events(&mut b));
        let (ca, cb) = (a.take_counts(), b.take_counts());
        // 20 s: a first report after 1-3 s, then one every 2-6 s, and the BYE.
        for c in [ca, cb] {
            assert!((4..=11).contains(&c.rtcp_sent), "{c:?}");
            assert_eq!(c.rtcp_malformed, 0);
        }
        // Every report but the first few (before an SR of the far end's came) gives a round
        // trip of 50 ms, whatever the two ends' wall clocks say.
        assert!(ra.len() >= 2 && rb.len() >= 2, "{ra:?} {rb:?}");
        for r in ra.iter().chain(&rb) {
            assert!(
                r.abs_diff(Duration::from_millis(50)) <= Duration::from_millis(2),
                "{r:?}"
            );
        }
        assert_eq!(sa[0].rtt, ra.last().copied());
        // What B reports on A's stream: the 10 packets lost, jitter near 0; A lost nothing.
        assert_eq!((sb[0].lost, sa[0].lost), (10, 0));
        assert_eq!((sa[0].far_lost, sb[0].far_lost), (Some(10), Some(0)));
        assert!(sa[0].far_jitter_ms.is_some_and(|j| j < 1.0), "{:?}", sa[0]);
    }

    #[test]
    fn a_held_stream_sends_nothing_its_silence_is_no_gap_and_a_resume_starts_one_chain() {
        let mut p = Pair::new();
        let (caller, callee) = call(&mut p, "h");
        p.run(1000, |_| false);
        // Both ends on hold for 2 s (inactive), as a hold and its answer would put them.
        let now = p.now;
        assert!(p.a.update(now, caller, with(B, Direction::Inactive)));
        assert!(p.b.update(now, callee, with(A, Direction::Inactive)));
        let before = (p.a.take_counts(), p.b.take_counts());
        p.run(2000, |_| false);
        let held = (p.a.take_counts(), p.b.take_counts());
        assert_eq!((held.0.packets_sent, held.1.packets_sent), (0, 0));
        assert_eq!((before.0.holds, before.1.holds), (1, 1));
        // Resumed, on hold again within the packet time, and resumed: one packet per 20 ms.
        let now = p.now;
        for d in [
            Direction::SendRecv,
            Direction::Inactive,
            Direction::SendRecv,
        ] {
            p.a.update(now, caller, with(B, d));
            p.b.update(now, callee, with(A, d));
            p.run(5, |_| false);
        }
        p.run(985, |_| false);
        let after = p.a.take_counts();
        assert!(
            (49..=51).contains(&after.packets_sent),
            "one chain of packets: {after:?}"
        );
        assert_eq!((after.holds, after.resumes), (1, 2));
        assert!(!p.a.update(now, ssrc_of("nobody", 0), remote(B.into())));
        let now = p.now;
        p.a.stop(now, caller);
        p.b.stop(now, callee);
        for s in ended(&mut p.a).into_iter().chain(ended(&mut p.b)) {
            assert_eq!(s.lost, 0, "{s:?}");
            assert!(s.longest_gap < Duration::from_millis(40), "{s:?}");
            assert!(s.jitter_ms < 1.0, "a resumed clock is no jitter: {s:?}");
        }
    }

    #[test]
    fn a_reoffer_that_changes_codec_and_packet_time_is_taken_up_from_the_next_packet() {
        let mut a = MediaEngine::new(cfg(), 0, A.into(), Instant::now(), WALL);
        let ssrc = ssrc_of("c", 0);
        let mut now = Instant::now();
        assert!(a.start(now, ssrc, None, remote(B.into())));
        // (ms since start, payload type, RTP timestamp) of each RTP packet to B.
        let mut sent: Vec<(u64, u8, u32)> = Vec::new();
        let t0 = now;
        let run = |a: &mut MediaEngine, now: &mut Instant, sent: &mut Vec<_>, ms: u64| {
            for _ in 0..ms {
                *now += Duration::from_millis(1);
                a.handle_timeout(*now);
                while let Some(t) = a.poll_transmit() {
                    if t.dest == SocketAddr::from(B) {
                        let ts = u32::from_be_bytes(t.data[4..8].try_into().unwrap());
                        sent.push(((*now - t0).as_millis() as u64, t.data[1] & 0x7f, ts));
                    }
                    t.recycle();
                }
            }
        };
        run(&mut a, &mut now, &mut sent, 999);
        let before = sent.len();
        assert!((49..=51).contains(&before), "{sent:?}");
        // The same codec and packet time again (a session refresh) changes nothing.
        assert!(a.update(now, ssrc, remote(B.into())));
        let c = a.take_counts();
        assert_eq!((c.codec_changes, c.ptime_changes), (0, 0));
        // PCMA at 30 ms, as the far end's re-INVITE offers.
        assert!(a.update(
            now,
            ssrc,
            RemoteMedia {
                codec: Codec::Pcma,
                ptime_ms: 30,
                ..remote(B.into())
            }
        ));
        let c = a.take_counts();
        assert_eq!((c.codec_changes, c.ptime_changes), (1, 1));
        run(&mut a, &mut now, &mut sent, 900);
        let after = &sent[before..];
        assert!(after.iter().all(|p| p.1 == 8), "{after:?}");
        assert!((29..=31).contains(&after.len()), "{after:?}");
        for w in after.windows(2) {
            assert_eq!(w[1].0 - w[0].0, 30, "{after:?}");
            assert_eq!(w[1].2.wrapping_sub(w[0].2), 240, "{after:?}");
        }
        // The first packet after the change follows the last one before by one old ptime.
        assert_eq!(after[0].2.wrapping_sub(sent[before - 1].2), 160);
        assert!(sent[..before].iter().all(|p| p.1 == 0));
    }

    #[test]
    fn audio_that_comes_back_before_the_resume_is_answered_ends_the_hold_with_no_gap() {
        // We held (our sendonly answered recvonly): A sends, B does not. B resumes when our
        // resume reaches it, and its first packets reach A before the answer does.
        let mut p = Pair::new();
        let (caller, callee) = call(&mut p, "r");
        p.run(500, |_| false);
        let now = p.now;
        assert!(p.a.update(now, caller, with(B, Direction::RecvOnly)));
        assert!(p.b.update(now, callee, with(A, Direction::SendOnly)));
        p.run(1500, |_| false);
        let now = p.now;
        assert!(p.b.update(now, callee, with(A, Direction::SendRecv)));
        p.run(100, |_| false);
        let now = p.now;
        assert!(p.a.update(now, caller, with(B, Direction::SendRecv)));
        p.run(400, |_| false);
        let now = p.now;
        p.a.stop(now, caller);
        p.b.stop(now, callee);
        for s in ended(&mut p.a).into_iter().chain(ended(&mut p.b)) {
            assert_eq!(s.lost, 0, "{s:?}");
            assert!(s.longest_gap < Duration::from_millis(40), "{s:?}");
        }
    }
}
