//! Rebuilds probe records from a capture (`imsprobe --pcap-only FILE`), so the gap report can be
//! recomputed after the fact, also from captures taken by tshark/tcpdump on a real testbed.
//!
//! A probe is any SIP OPTIONS request over UDP or TCP (matched to its response by Call-ID + CSeq +
//! top Via branch) or any ICMP echo request (matched to the reply by destination, id and sequence;
//! a reply is matched to the newest unanswered request with that identity). Requests are grouped
//! by destination host: each destination is a target. Send and receive times are the capture's
//! timestamps (the wire, as seen where the capture was taken). IPv4 and IPv6 for SIP, IPv4 for
//! ICMP; link types Ethernet, Linux cooked (v1, v2), raw IP, BSD loopback.
//!
//! Diameter: any Device-Watchdog-Request or Cx User-Authorization-Request whose Origin-Host
//! starts with `imsprobe-` (ours; a peer's own DWRs are not probes), matched to its answer by
//! command, hop-by-hop and end-to-end id; DWA Result-Code 2001 is a good reply, any other a
//! failed one; a UAA is good with a success-class result (2xxx, also as Experimental-Result),
//! failed with any other (as live, [`super::diameter::answer_outcome`]).
//!
//! Over TCP (SIP and Diameter): each direction of each connection is reassembled by TCP sequence
//! number and cut into messages by Content-Length, or a Diameter header's length when the
//! direction's first byte is Diameter's version 1. Segments must arrive in order in the capture (as on
//! loopback, or wherever the capture point saw no loss); a retransmitted or overlapping segment
//! contributes only its new bytes; a hole (a segment the capture missed) discards the partial
//! message and resynchronises on the next message start, counted in `tcp_holes`. A message's
//! time is the capture time of the segment that completed it.

use super::diameter::{answer_outcome, is_probe_command, DiameterFramer};
use super::{icmp, Layer, Outcome, ProbeRecord, TimeBase};
use crate::diameter as dia;
use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use pcap::{Capture, Precision};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The probes to one destination found in a capture.
#[derive(Clone, Debug, Default)]
pub struct CapturedTarget {
    pub host: String,
    pub sip: Vec<ProbeRecord>,
    pub icmp: Vec<ProbeRecord>,
    /// Destination port of the SIP requests.
    pub sip_port: Option<u16>,
    /// Their transport (`udp` or `tcp`).
    pub sip_transport: Option<&'static str>,
    /// Echo id of the ICMP requests.
    pub icmp_id: Option<u16>,
    pub diameter: Vec<ProbeRecord>,
    /// Destination port of the Diameter watchdog requests.
    pub diameter_port: Option<u16>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PcapStats {
    pub packets: u64,
    /// Frames we could not decode down to IP.
    pub undecodable: u64,
    /// SIP responses / ICMP replies that matched no request in the capture.
    pub unmatched_replies: u64,
    pub duplicate_replies: u64,
    /// Smaller probe streams to an analysed host that were left out.
    pub ignored_streams: Vec<String>,
    /// SIP over TCP: bytes the capture missed inside a connection (resynchronised after).
    pub tcp_holes: u64,
    /// SIP over TCP: data that could not be framed as SIP (the partial message is dropped).
    pub tcp_unframed: u64,
}

pub struct Captured {
    pub time_base: TimeBase,
    pub targets: Vec<CapturedTarget>,
    pub stats: PcapStats,
}

/// An IP packet: (src, dst, protocol, payload).
type Ip<'a> = (IpAddr, IpAddr, u8, &'a [u8]);

fn ip_packet(linktype: i32, frame: &[u8]) -> Option<Ip<'_>> {
    let (ethertype, l3): (u16, &[u8]) = match linktype {
        1 => {
            // Ethernet, with up to two VLAN tags.
            let mut et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
            let mut off = 14;
            while et == 0x8100 || et == 0x88a8 {
                et = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
                off += 4;
            }
            (et, frame.get(off..)?)
        }
        113 => (
            u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]),
            frame.get(16..)?,
        ),
        276 => (
            u16::from_be_bytes([*frame.first()?, *frame.get(1)?]),
            frame.get(20..)?,
        ),
        12 | 14 | 101 => {
            let v = frame.first()? >> 4;
            (if v == 6 { 0x86dd } else { 0x0800 }, frame)
        }
        0 | 108 => {
            let v = frame.get(4)? >> 4;
            (if v == 6 { 0x86dd } else { 0x0800 }, frame.get(4..)?)
        }
        _ => return None,
    };
    match ethertype {
        0x0800 => {
            if l3.len() < 20 || l3[0] >> 4 != 4 {
                return None;
            }
            // Skip non-first fragments.
            let frag = u16::from_be_bytes([l3[6], l3[7]]) & 0x1fff;
            if frag != 0 {
                return None;
            }
            let dst = Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]);
            let (src, proto, payload) = icmp::ipv4_payload(l3)?;
            Some((IpAddr::V4(src), IpAddr::V4(dst), proto, payload))
        }
        0x86dd => {
            if l3.len() < 40 {
                return None;
            }
            let src: [u8; 16] = l3[8..24].try_into().ok()?;
            let dst: [u8; 16] = l3[24..40].try_into().ok()?;
            let plen = u16::from_be_bytes([l3[4], l3[5]]) as usize;
            let end = (40 + plen).min(l3.len());
            Some((
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                l3[6],
                &l3[40..end],
            ))
        }
        _ => None,
    }
}

/// One probe stream: SIP OPTIONS to (host, port, over TCP?), or ICMP echo to host with one echo
/// id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Stream {
    Sip(IpAddr, u16, bool),
    Icmp(IpAddr, u16),
    /// Destination, port and command (DWR and UAR runs to one peer are separate streams).
    Diameter(IpAddr, u16, u32),
}

/// One direction of a TCP connection being reassembled.
#[derive(Default)]
struct Flow {
    /// Sequence number of the next byte expected.
    next: Option<u32>,
    framer: crate::sip::transport::StreamFramer,
    /// Set by the first byte of the direction: Diameter (version 1) or SIP.
    diameter: Option<DiameterFramer>,
    decided: bool,
}

/// Diameter probes: (hop-by-hop, end-to-end) → (stream, index).
type DiaIndex = HashMap<(u32, u32), (Stream, usize)>;

/// One Diameter message seen at `t` from `src:sport` to `dst:dport`.
fn diameter_message(
    msg: &[u8],
    (src, sport, dst, dport): (IpAddr, u16, IpAddr, u16),
    t: i64,
    only_host: Option<IpAddr>,
    streams: &mut HashMap<Stream, Vec<ProbeRecord>>,
    idx: &mut DiaIndex,
    stats: &mut PcapStats,
) {
    let Ok(m) = dia::Message::decode(msg) else {
        stats.tcp_unframed += 1;
        return;
    };
    if !is_probe_command(m.command) {
        return;
    }
    let key = (m.hop_by_hop, m.end_to_end);
    if m.is_request() {
        let ours = m
            .str_avp(dia::code::ORIGIN_HOST, None)
            .is_some_and(|h| h.starts_with("imsprobe-"));
        if !ours || only_host.is_some_and(|h| h != dst) {
            return;
        }
        let stream = Stream::Diameter(dst, dport, m.command);
        let v = streams.entry(stream).or_default();
        idx.insert(key, (stream, v.len()));
        v.push(ProbeRecord::sent(Layer::Diameter, v.len() as u64, t));
    } else {
        let rec = match idx.get(&key) {
            Some(&(stream @ Stream::Diameter(h, port, c), i))
                if h == src && port == sport && c == m.command =>
            {
                streams.get_mut(&stream).and_then(|v| v.get_mut(i))
            }
            _ => None,
        };
        let (result, ok) = answer_outcome(m.command, &m);
        let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
        complete(stats, rec, t, outcome, result.min(u16::MAX as u32) as u16);
    }
}

type SipIndex = HashMap<(String, u32, String), (Stream, usize)>;

/// One SIP message seen at `t` from `src:sport` to `dst:dport`.
#[allow(clippy::too_many_arguments)]
fn sip_message(
    msg: &[u8],
    (src, sport, dst, dport, tcp): (IpAddr, u16, IpAddr, u16, bool),
    t: i64,
    only_host: Option<IpAddr>,
    streams: &mut HashMap<Stream, Vec<ProbeRecord>>,
    sip_idx: &mut SipIndex,
    stats: &mut PcapStats,
) {
    let Some((is_req, code, call_id, cseq, branch)) = super::sipcodec::options_identity(msg) else {
        return;
    };
    if is_req {
        if only_host.is_some_and(|h| h != dst) {
            return;
        }
        let key = Stream::Sip(dst, dport, tcp);
        let v = streams.entry(key).or_default();
        sip_idx.insert((call_id, cseq, branch), (key, v.len()));
        v.push(ProbeRecord::sent(Layer::Sip, v.len() as u64, t));
    } else if code >= 200 {
        let rec = match sip_idx.get(&(call_id, cseq, branch)) {
            Some(&(key @ Stream::Sip(h, port, over_tcp), i))
                if h == src && port == sport && over_tcp == tcp =>
            {
                streams.get_mut(&key).and_then(|v| v.get_mut(i))
            }
            _ => None,
        };
        let outcome = if (200..300).contains(&code) {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        complete(stats, rec, t, outcome, code);
    }
}

fn complete(
    stats: &mut PcapStats,
    rec: Option<&mut ProbeRecord>,
    t: i64,
    outcome: Outcome,
    code: u16,
) {
    match rec {
        Some(r) if r.received_ns.is_some() => stats.duplicate_replies += 1,
        Some(r) => {
            r.received_ns = Some(t);
            r.outcome = outcome;
            r.code = code;
        }
        None => stats.unmatched_replies += 1,
    }
}

/// The new bytes of a TCP segment of `flow` (in-order reassembly), updating it.
fn tcp_new_bytes<'a>(
    flow: &mut Flow,
    seq: u32,
    syn: bool,
    data: &'a [u8],
    stats: &mut PcapStats,
) -> &'a [u8] {
    if syn {
        flow.next = Some(seq.wrapping_add(1));
        flow.framer = Default::default();
        return &[];
    }
    if data.is_empty() {
        return data;
    }
    let end = seq.wrapping_add(data.len() as u32);
    let fresh = match flow.next {
        None => data,
        Some(n) => {
            let off = seq.wrapping_sub(n) as i32;
            if off == 0 {
                data
            } else if off < 0 {
                // Retransmission or overlap: only the bytes beyond what we have.
                let skip = off.unsigned_abs() as usize;
                if skip >= data.len() {
                    return &[];
                }
                &data[skip..]
            } else {
                // A hole: the capture missed bytes. Drop the partial message.
                stats.tcp_holes += 1;
                flow.framer = Default::default();
                data
            }
        }
    };
    flow.next = Some(end);
    fresh
}

/// Reads `path` (pcap or pcapng, any timestamp resolution) and rebuilds the probes. `only_host`
/// keeps only requests to that destination. When several streams of one layer go to the same
/// host (two pings with different ids, OPTIONS to two ports), the largest one is analysed and
/// the others are listed in [`PcapStats::ignored_streams`].
pub fn read(path: &Path, only_host: Option<IpAddr>) -> anyhow::Result<Captured> {
    let mut cap = Capture::from_file_with_precision(path, Precision::Nano)
        .with_context(|| format!("cannot read capture {}", path.display()))?;
    let linktype = cap.get_datalink().0;
    let mut stats = PcapStats::default();
    let mut t0: Option<i128> = None;
    let mut streams: HashMap<Stream, Vec<ProbeRecord>> = HashMap::new();
    // SIP: (call-id, cseq, branch) -> (stream, index). ICMP: (dst, id, seq16) -> newest index.
    let mut sip_idx: SipIndex = HashMap::new();
    let mut icmp_idx: HashMap<(IpAddr, u16, u16), usize> = HashMap::new();
    let mut dia_idx: DiaIndex = HashMap::new();
    let mut flows: HashMap<(IpAddr, u16, IpAddr, u16), Flow> = HashMap::new();
    loop {
        let p = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => {
                return Err(e).with_context(|| format!("capture {} is damaged", path.display()))
            }
        };
        stats.packets += 1;
        let ts = p.header.ts.tv_sec as i128 * 1_000_000_000 + p.header.ts.tv_usec as i128;
        let t0v = *t0.get_or_insert(ts);
        let t = (ts - t0v) as i64;
        let Some((src, dst, proto, payload)) = ip_packet(linktype, p.data) else {
            stats.undecodable += 1;
            continue;
        };
        match proto {
            17 if payload.len() >= 8 => {
                let sport = u16::from_be_bytes([payload[0], payload[1]]);
                let dport = u16::from_be_bytes([payload[2], payload[3]]);
                sip_message(
                    &payload[8..],
                    (src, sport, dst, dport, false),
                    t,
                    only_host,
                    &mut streams,
                    &mut sip_idx,
                    &mut stats,
                );
            }
            6 if payload.len() >= 20 => {
                let sport = u16::from_be_bytes([payload[0], payload[1]]);
                let dport = u16::from_be_bytes([payload[2], payload[3]]);
                let seq = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                let doff = (payload[12] >> 4) as usize * 4;
                let flags = payload[13];
                if doff < 20 || doff > payload.len() {
                    stats.undecodable += 1;
                    continue;
                }
                let key = (src, sport, dst, dport);
                if flags & 0x04 != 0 {
                    // RST: the connection is gone.
                    flows.remove(&key);
                    continue;
                }
                let flow = flows.entry(key).or_default();
                let fresh =
                    tcp_new_bytes(flow, seq, flags & 0x02 != 0, &payload[doff..], &mut stats);
                if fresh.is_empty() {
                    continue;
                }
                if !flow.decided {
                    flow.decided = true;
                    if fresh[0] == 1 {
                        flow.diameter = Some(DiameterFramer::default());
                    }
                }
                if let Some(df) = &mut flow.diameter {
                    df.push(fresh);
                    loop {
                        match df.next_message() {
                            Ok(Some(m)) => diameter_message(
                                m,
                                (src, sport, dst, dport),
                                t,
                                only_host,
                                &mut streams,
                                &mut dia_idx,
                                &mut stats,
                            ),
                            Ok(None) => break,
                            Err(_) => {
                                stats.tcp_unframed += 1;
                                *df = DiameterFramer::default();
                                break;
                            }
                        }
                    }
                    continue;
                }
                flow.framer.push(fresh);
                loop {
                    match flow.framer.next_message() {
                        Ok(Some(m)) => sip_message(
                            m,
                            (src, sport, dst, dport, true),
                            t,
                            only_host,
                            &mut streams,
                            &mut sip_idx,
                            &mut stats,
                        ),
                        Ok(None) => break,
                        Err(_) => {
                            stats.tcp_unframed += 1;
                            flow.framer = Default::default();
                            break;
                        }
                    }
                }
            }
            1 | icmp::IPPROTO_ICMPV6 if payload.len() >= 8 => {
                let id = u16::from_be_bytes([payload[4], payload[5]]);
                let seq16 = u16::from_be_bytes([payload[6], payload[7]]);
                let (request, reply) = if proto == 1 {
                    (icmp::ECHO_REQUEST, icmp::ECHO_REPLY)
                } else {
                    (icmp::V6_ECHO_REQUEST, icmp::V6_ECHO_REPLY)
                };
                match payload[0] {
                    k if k == request => {
                        if only_host.is_some_and(|h| h != dst) {
                            continue;
                        }
                        let v = streams.entry(Stream::Icmp(dst, id)).or_default();
                        icmp_idx.insert((dst, id, seq16), v.len());
                        v.push(ProbeRecord::sent(Layer::Icmp, v.len() as u64, t));
                    }
                    k if k == reply => {
                        let rec = icmp_idx.get(&(src, id, seq16)).and_then(|&i| {
                            streams
                                .get_mut(&Stream::Icmp(src, id))
                                .and_then(|v| v.get_mut(i))
                        });
                        complete(&mut stats, rec, t, Outcome::Ok, 0);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // Per destination: the largest stream of each layer.
    let mut keys: Vec<(Stream, usize)> = streams.iter().map(|(k, v)| (*k, v.len())).collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut targets: BTreeMap<IpAddr, CapturedTarget> = BTreeMap::new();
    for (key, n) in keys {
        let host = match key {
            Stream::Sip(h, _, _) | Stream::Icmp(h, _) | Stream::Diameter(h, _, _) => h,
        };
        let tg = targets.entry(host).or_insert_with(|| CapturedTarget {
            host: host.to_string(),
            ..CapturedTarget::default()
        });
        let recs = streams.remove(&key).unwrap_or_default();
        match key {
            Stream::Sip(_, port, tcp) if tg.sip.is_empty() => {
                tg.sip = recs;
                tg.sip_port = Some(port);
                tg.sip_transport = Some(if tcp { "tcp" } else { "udp" });
            }
            Stream::Icmp(_, id) if tg.icmp.is_empty() => {
                tg.icmp = recs;
                tg.icmp_id = Some(id);
            }
            Stream::Diameter(_, port, _) if tg.diameter.is_empty() => {
                tg.diameter = recs;
                tg.diameter_port = Some(port);
            }
            Stream::Sip(h, port, tcp) => stats.ignored_streams.push(format!(
                "{n} SIP OPTIONS to {h}:{port} over {}",
                if tcp { "TCP" } else { "UDP" }
            )),
            Stream::Icmp(h, id) => stats
                .ignored_streams
                .push(format!("{n} ICMP echo requests to {h} with id {id}")),
            Stream::Diameter(h, port, c) => stats.ignored_streams.push(format!(
                "{n} Diameter {} to {h}:{port}",
                dia::command_name(c, true)
            )),
        }
    }
    let t0 = t0.unwrap_or(0);
    let wall0 = Utc
        .timestamp_opt(
            (t0.div_euclid(1_000_000_000)) as i64,
            t0.rem_euclid(1_000_000_000) as u32,
        )
        .single()
        .unwrap_or_default();
    Ok(Captured {
        time_base: TimeBase { wall0 },
        targets: targets.into_values().collect(),
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::sipcodec::OptionsCodec;
    use crate::sip::builder::Writer;
    use crate::sip::{Message, Transport};
    use std::io::Write as _;

    /// An IPv4 + TCP packet (checksums left zero: nobody checks them here).
    fn tcp(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        seq: u32,
        flags: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let total = 20 + 20 + data.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(data);
        p
    }

    /// A nanosecond pcap of raw IP packets, one every `step` ns.
    fn pcap(packets: &[(i64, Vec<u8>)]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut h = Vec::new();
        h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&65535u32.to_le_bytes());
        h.extend_from_slice(&101u32.to_le_bytes());
        for (t, p) in packets {
            let t = 1_764_000_000_000_000_000i64 + t;
            h.extend_from_slice(&((t / 1_000_000_000) as u32).to_le_bytes());
            h.extend_from_slice(&((t % 1_000_000_000) as u32).to_le_bytes());
            h.extend_from_slice(&(p.len() as u32).to_le_bytes());
            h.extend_from_slice(&(p.len() as u32).to_le_bytes());
            h.extend_from_slice(p);
        }
        f.write_all(&h).unwrap();
        f
    }

    #[test]
    fn sip_over_tcp_is_reassembled_in_order_with_retransmissions_and_holes() {
        let (c, s) = ([127, 0, 0, 1], [127, 0, 0, 21]);
        let (cp, sp) = (40000u16, 5060u16);
        let codec = OptionsCodec::new(9, Transport::Tcp, "127.0.0.21:5060", "127.0.0.1:40000");
        let reqs: Vec<Vec<u8>> = (0..4).map(|i| codec.request(i)).collect();
        let ok = |r: &[u8]| {
            Writer::response_to(&Message::parse(r).unwrap(), 200, "OK", Some("x")).finish(None, b"")
        };
        let ms = 1_000_000i64;
        let mut pk = Vec::new();
        let (mut cs, mut ss) = (1000u32, 5000u32);
        pk.push((0, tcp(c, cp, s, sp, cs - 1, 0x02, b"")));
        pk.push((0, tcp(s, sp, c, cp, ss - 1, 0x12, b"")));
        // Probe 0 in two segments, the first retransmitted in between.
        let (a, b) = reqs[0].split_at(100);
        pk.push((ms, tcp(c, cp, s, sp, cs, 0x18, a)));
        pk.push((ms + 10, tcp(c, cp, s, sp, cs, 0x18, a)));
        pk.push((ms + 20, tcp(c, cp, s, sp, cs + 100, 0x18, b)));
        cs += reqs[0].len() as u32;
        // Probe 1 whole; probe 2 lost by the capture (a hole); probe 3 whole.
        pk.push((2 * ms, tcp(c, cp, s, sp, cs, 0x18, &reqs[1])));
        cs += reqs[1].len() as u32;
        cs += reqs[2].len() as u32;
        pk.push((4 * ms, tcp(c, cp, s, sp, cs, 0x18, &reqs[3])));
        // Replies to 0 and 1 coalesced in one segment, 3 alone (2 was never seen).
        let mut two = ok(&reqs[0]);
        two.extend(ok(&reqs[1]));
        pk.push((5 * ms, tcp(s, sp, c, cp, ss, 0x18, &two)));
        ss += two.len() as u32;
        pk.push((6 * ms, tcp(s, sp, c, cp, ss, 0x18, &ok(&reqs[3]))));
        let f = pcap(&pk);
        let cap = read(f.path(), None).unwrap();
        assert_eq!(cap.targets.len(), 1);
        let t = &cap.targets[0];
        assert_eq!((t.sip_port, t.sip_transport), (Some(5060), Some("tcp")));
        let got: Vec<(i64, Option<i64>)> =
            t.sip.iter().map(|r| (r.sent_ns, r.received_ns)).collect();
        // t = 0 is the first packet; a request's time is that of its last segment.
        assert_eq!(
            got,
            vec![
                (ms + 20, Some(5 * ms)),
                (2 * ms, Some(5 * ms)),
                (4 * ms, Some(6 * ms))
            ]
        );
        assert!(t
            .sip
            .iter()
            .all(|r| r.outcome == Outcome::Ok && r.code == 200));
        assert_eq!(cap.stats.tcp_holes, 1);
        assert_eq!(cap.stats.unmatched_replies, 0);
    }
}
