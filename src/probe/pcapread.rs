//! Rebuilds probe records from a capture (`imsprobe --pcap-only FILE`), so the gap report can be
//! recomputed after the fact, also from captures taken by tshark/tcpdump on a real testbed.
//!
//! A probe is any SIP OPTIONS request over UDP (matched to its response by Call-ID + CSeq + top
//! Via branch) or any ICMP echo request (matched to the reply by destination, id and sequence;
//! a reply is matched to the newest unanswered request with that identity). Requests are grouped
//! by destination host: each destination is a target. Send and receive times are the capture's
//! timestamps (the wire, as seen where the capture was taken). IPv4 and IPv6 for SIP, IPv4 for
//! ICMP; link types Ethernet, Linux cooked (v1, v2), raw IP, BSD loopback.

use super::{icmp, Layer, Outcome, ProbeRecord, TimeBase};
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
    /// Echo id of the ICMP requests.
    pub icmp_id: Option<u16>,
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

/// One probe stream: SIP OPTIONS to (host, port), or ICMP echo to host with one echo id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Stream {
    Sip(IpAddr, u16),
    Icmp(IpAddr, u16),
}

/// Reads `path` (pcap or pcapng, any timestamp resolution) and rebuilds the probes. `only_host`
/// keeps only requests to that destination. When several streams of one layer go to the same
/// host (two pings with different ids, OPTIONS to two ports), the largest one is analysed and
/// the others are listed in [`PcapStats::ignored_streams`].
pub fn read(path: &Path, only_host: Option<IpAddr>) -> Result<Captured, String> {
    let mut cap = Capture::from_file_with_precision(path, Precision::Nano)
        .map_err(|e| format!("cannot read capture {}: {e}", path.display()))?;
    let linktype = cap.get_datalink().0;
    let mut stats = PcapStats::default();
    let mut t0: Option<i128> = None;
    let mut streams: HashMap<Stream, Vec<ProbeRecord>> = HashMap::new();
    // SIP: (call-id, cseq, branch) -> (stream, index). ICMP: (dst, id, seq16) -> newest index.
    let mut sip_idx: HashMap<(String, u32, String), (Stream, usize)> = HashMap::new();
    let mut icmp_idx: HashMap<(IpAddr, u16, u16), usize> = HashMap::new();
    let complete = |stats: &mut PcapStats,
                    rec: Option<&mut ProbeRecord>,
                    t: i64,
                    outcome: Outcome,
                    code: u16| match rec {
        Some(r) if r.received_ns.is_some() => stats.duplicate_replies += 1,
        Some(r) => {
            r.received_ns = Some(t);
            r.outcome = outcome;
            r.code = code;
        }
        None => stats.unmatched_replies += 1,
    };
    loop {
        let p = match cap.next_packet() {
            Ok(p) => p,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(format!("capture {} is damaged: {e}", path.display())),
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
                let Some((is_req, code, call_id, cseq, branch)) =
                    super::sipcodec::options_identity(&payload[8..])
                else {
                    continue;
                };
                if is_req {
                    if only_host.is_some_and(|h| h != dst) {
                        continue;
                    }
                    let key = Stream::Sip(dst, dport);
                    let v = streams.entry(key).or_default();
                    sip_idx.insert((call_id, cseq, branch), (key, v.len()));
                    v.push(ProbeRecord::sent(Layer::Sip, v.len() as u64, t));
                } else if code >= 200 {
                    let rec = match sip_idx.get(&(call_id, cseq, branch)) {
                        Some(&(key @ Stream::Sip(h, port), i)) if h == src && port == sport => {
                            streams.get_mut(&key).and_then(|v| v.get_mut(i))
                        }
                        _ => None,
                    };
                    let outcome = if (200..300).contains(&code) {
                        Outcome::Ok
                    } else {
                        Outcome::Failed
                    };
                    complete(&mut stats, rec, t, outcome, code);
                }
            }
            1 if payload.len() >= 8 => {
                let id = u16::from_be_bytes([payload[4], payload[5]]);
                let seq16 = u16::from_be_bytes([payload[6], payload[7]]);
                match payload[0] {
                    icmp::ECHO_REQUEST => {
                        if only_host.is_some_and(|h| h != dst) {
                            continue;
                        }
                        let v = streams.entry(Stream::Icmp(dst, id)).or_default();
                        icmp_idx.insert((dst, id, seq16), v.len());
                        v.push(ProbeRecord::sent(Layer::Icmp, v.len() as u64, t));
                    }
                    icmp::ECHO_REPLY => {
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
            Stream::Sip(h, _) | Stream::Icmp(h, _) => h,
        };
        let tg = targets.entry(host).or_insert_with(|| CapturedTarget {
            host: host.to_string(),
            ..CapturedTarget::default()
        });
        let recs = streams.remove(&key).unwrap_or_default();
        match key {
            Stream::Sip(_, port) if tg.sip.is_empty() => {
                tg.sip = recs;
                tg.sip_port = Some(port);
            }
            Stream::Icmp(_, id) if tg.icmp.is_empty() => {
                tg.icmp = recs;
                tg.icmp_id = Some(id);
            }
            Stream::Sip(h, port) => stats
                .ignored_streams
                .push(format!("{n} SIP OPTIONS to {h}:{port}")),
            Stream::Icmp(h, id) => stats
                .ignored_streams
                .push(format!("{n} ICMP echo requests to {h} with id {id}")),
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
