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
    /// `host:port` of the SIP requests (first seen).
    pub sip_port: Option<u16>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PcapStats {
    pub packets: u64,
    /// Frames we could not decode down to IP.
    pub undecodable: u64,
    /// SIP responses / ICMP replies that matched no request in the capture.
    pub unmatched_replies: u64,
    pub duplicate_replies: u64,
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

/// Reads `path` (pcap or pcapng, any timestamp resolution) and rebuilds the probes. `only_host`
/// keeps only requests to that destination.
pub fn read(path: &Path, only_host: Option<IpAddr>) -> Result<Captured, String> {
    let mut cap = Capture::from_file_with_precision(path, Precision::Nano)
        .map_err(|e| format!("cannot read capture {}: {e}", path.display()))?;
    let linktype = cap.get_datalink().0;
    let mut stats = PcapStats::default();
    let mut t0: Option<i128> = None;
    let mut targets: BTreeMap<IpAddr, CapturedTarget> = BTreeMap::new();
    // SIP: (call-id, cseq, branch) -> (dst, index). ICMP: (dst, id, seq16) -> newest index.
    let mut sip_idx: HashMap<(String, u32, String), (IpAddr, usize)> = HashMap::new();
    let mut icmp_idx: HashMap<(IpAddr, u16, u16), usize> = HashMap::new();
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
                let dport = u16::from_be_bytes([payload[2], payload[3]]);
                let body = &payload[8..];
                let Some((is_req, code, call_id, cseq, branch)) =
                    super::sipcodec::options_identity(body)
                else {
                    continue;
                };
                if is_req {
                    if only_host.is_some_and(|h| h != dst) {
                        continue;
                    }
                    let tg = targets.entry(dst).or_insert_with(|| CapturedTarget {
                        host: dst.to_string(),
                        ..CapturedTarget::default()
                    });
                    tg.sip_port.get_or_insert(dport);
                    let seq = tg.sip.len() as u64;
                    tg.sip.push(ProbeRecord::sent(Layer::Sip, seq, t));
                    sip_idx.insert((call_id, cseq, branch), (dst, seq as usize));
                } else if code >= 200 {
                    match sip_idx.get(&(call_id, cseq, branch)) {
                        Some(&(d, i)) if d == src => {
                            let Some(r) = targets.get_mut(&d).and_then(|tg| tg.sip.get_mut(i))
                            else {
                                continue;
                            };
                            if r.received_ns.is_some() {
                                stats.duplicate_replies += 1;
                            } else {
                                r.received_ns = Some(t);
                                r.code = code;
                                r.outcome = if (200..300).contains(&code) {
                                    Outcome::Ok
                                } else {
                                    Outcome::Failed
                                };
                            }
                        }
                        _ => stats.unmatched_replies += 1,
                    }
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
                        let tg = targets.entry(dst).or_insert_with(|| CapturedTarget {
                            host: dst.to_string(),
                            ..CapturedTarget::default()
                        });
                        let seq = tg.icmp.len() as u64;
                        tg.icmp.push(ProbeRecord::sent(Layer::Icmp, seq, t));
                        icmp_idx.insert((dst, id, seq16), seq as usize);
                    }
                    icmp::ECHO_REPLY => match icmp_idx.get(&(src, id, seq16)) {
                        Some(&i) => {
                            let Some(r) = targets.get_mut(&src).and_then(|tg| tg.icmp.get_mut(i))
                            else {
                                continue;
                            };
                            if r.received_ns.is_some() {
                                stats.duplicate_replies += 1;
                            } else {
                                r.received_ns = Some(t);
                                r.outcome = Outcome::Ok;
                            }
                        }
                        None => stats.unmatched_replies += 1,
                    },
                    _ => {}
                }
            }
            _ => {}
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
