//! Packet capture with libpcap: one blocking thread per target, immediate mode, BPF-filtered to
//! the target's host, on the interface that routes to it, written as a classic pcap file with
//! nanosecond timestamps (magic `a1b23c4d`, which Wireshark/tshark read natively; classic pcap
//! has no per-interface resolution to get wrong, unlike pcapng's `if_tsresol`).

use anyhow::Context as _;
use pcap::{Capture, Device, Precision};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What the capture did, for the report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CaptureInfo {
    pub file: Option<PathBuf>,
    pub interface: String,
    pub filter: String,
    pub packets_written: u64,
    /// libpcap's counters at the end: received by the filter, dropped for lack of buffer space,
    /// dropped by the interface.
    pub received: u32,
    pub dropped: u32,
    pub if_dropped: u32,
    /// Why there is no capture (or why it ended early).
    pub error: Option<String>,
}

pub struct CaptureHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<CaptureInfo>>,
}

/// The interface whose address the kernel uses to reach `target` (`lo` for 127.x), or `any`.
pub fn interface_towards(target: IpAddr) -> String {
    if target.is_loopback() {
        if let Ok(devs) = Device::list() {
            if let Some(d) = devs.iter().find(|d| d.flags.is_loopback()) {
                return d.name.clone();
            }
        }
        return "lo".into();
    }
    let Ok(local) = super::net::local_addr_towards(SocketAddr::new(target, 9)) else {
        return "any".into();
    };
    Device::list()
        .ok()
        .and_then(|devs| {
            devs.into_iter()
                .find(|d| d.addresses.iter().any(|a| a.addr == local.ip()))
                .map(|d| d.name)
        })
        .unwrap_or_else(|| "any".into())
}

/// What a target's capture keeps: the probes of the layers this run sends, and their replies.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// SIP's port, and whether over TCP.
    pub sip: Option<(u16, bool)>,
    /// ICMP echo: the identifier our requests carry, where we choose it (raw sockets; an
    /// unprivileged datagram socket's identifier is the kernel's), else `Some(None)`.
    pub icmp: Option<Option<u16>>,
    pub diameter_port: Option<u16>,
}

/// The BPF filter of one target's capture: its host, and only this run's probe traffic to it.
/// Not `host H` alone: on a shared host (loopback above all) another run probing another port
/// or with another echo identifier would land in this pcap, and `--pcap-only`, which keeps the
/// largest stream per layer, could then read the other run's probes as ours. ICMP errors
/// (unreachable, time exceeded) are kept whatever they quote.
pub fn filter(host: IpAddr, scope: &Scope) -> String {
    let mut parts = Vec::new();
    if let Some((port, tcp)) = scope.sip {
        parts.push(format!("{} port {port}", if tcp { "tcp" } else { "udp" }));
    }
    if let Some(port) = scope.diameter_port {
        parts.push(format!("tcp port {port}"));
    }
    match (scope.icmp, host) {
        (None, _) => {}
        (Some(None), IpAddr::V4(_)) => parts.push("icmp".into()),
        (Some(None), IpAddr::V6(_)) => parts.push("icmp6".into()),
        (Some(Some(id)), IpAddr::V4(_)) => parts.push(format!(
            "(icmp and ((icmp[0] != 0 and icmp[0] != 8) or icmp[4:2] == {id}))"
        )),
        // Echo types 128/129 at the ICMPv6 header right after a fixed IPv6 header (our probes
        // carry no extension headers).
        (Some(Some(id)), IpAddr::V6(_)) => parts.push(format!(
            "(icmp6 and ((ip6[40] != 128 and ip6[40] != 129) or ip6[44:2] == {id}))"
        )),
    }
    if parts.is_empty() {
        return format!("host {host}");
    }
    format!("host {host} and ({})", parts.join(" or "))
}

/// Opens the capture now (so errors are reported before probing starts, and no early packet is
/// missed) and starts its thread. `filter`: [`filter`].
pub fn start(interface: &str, filter: &str, path: &Path) -> anyhow::Result<CaptureHandle> {
    let filter = filter.to_string();
    // Whole messages, not contexts: the remedy follows libpcap's reason.
    let explain = |what: &str, e: pcap::Error| {
        anyhow::anyhow!(
            "packet capture disabled: {what} on interface {interface}: {e}. Capturing needs root or \
             CAP_NET_RAW and CAP_NET_ADMIN (`sudo setcap cap_net_raw,cap_net_admin+ep $(which imsprobe)`), \
             or pick another interface with --iface, or turn capture off with --no-capture. \
             Probing continues without a pcap file."
        )
    };
    let cap = Capture::from_device(interface)
        .map_err(|e| explain("cannot find the device", e))?
        .immediate_mode(true)
        .precision(Precision::Nano)
        // Whole frames: on loopback (MTU 65536) a TCP segment plus its link header exceeds
        // 65535 bytes, and a cut segment is a hole in the stream `--pcap-only` reassembles.
        .snaplen(262_144)
        .buffer_size(16 << 20)
        .timeout(50)
        .open()
        .map_err(|e| explain("cannot open a live capture", e))?;
    let mut cap = cap;
    cap.filter(&filter, true)
        .map_err(|e| explain(&format!("cannot set the BPF filter `{filter}`"), e))?;
    // Non-blocking reads plus our own poll: libpcap's own read timeout does not fire with
    // TPACKET_V3 in immediate mode on an idle interface, so a blocking read could never see
    // the stop.
    let mut cap = cap
        .setnonblock()
        .map_err(|e| explain("cannot make the capture non-blocking", e))?;
    let mut save = cap
        .savefile(path)
        .with_context(|| format!("packet capture disabled: cannot create {}", path.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut info = CaptureInfo {
        file: Some(path.to_path_buf()),
        interface: interface.to_string(),
        filter,
        ..CaptureInfo::default()
    };
    let thread = std::thread::Builder::new()
        .name("imsprobe-capture".into())
        .spawn(move || {
            // Once stopping: read on until the buffer is drained or 200 ms passed (other
            // traffic to the host may never pause).
            use std::os::fd::AsRawFd;
            let fd = cap.as_raw_fd();
            let mut stopping: Option<std::time::Instant> = None;
            loop {
                match cap.next_packet() {
                    Ok(p) => {
                        save.write(&p);
                        info.packets_written += 1;
                    }
                    Err(pcap::Error::TimeoutExpired) => {
                        if stopping.is_some() {
                            break;
                        }
                        let mut pfd = libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        unsafe { libc::poll(&mut pfd, 1, 20) };
                    }
                    Err(e) => {
                        info.error = Some(format!("capture ended early: {e}"));
                        break;
                    }
                }
                match stopping {
                    Some(t) if t.elapsed() > std::time::Duration::from_millis(200) => break,
                    Some(_) => {}
                    None if stop2.load(Ordering::Relaxed) => {
                        stopping = Some(std::time::Instant::now())
                    }
                    None => {}
                }
            }
            if let Err(e) = save.flush() {
                info.error = Some(format!("cannot flush the pcap file: {e}"));
            }
            if let Ok(s) = cap.stats() {
                info.received = s.received;
                info.dropped = s.dropped;
                info.if_dropped = s.if_dropped;
            }
            info
        })
        .context("packet capture disabled: cannot start its thread")?;
    Ok(CaptureHandle {
        stop,
        thread: Some(thread),
    })
}

impl CaptureHandle {
    /// Stops the capture and waits until the file is complete.
    pub fn finish(mut self) -> CaptureInfo {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(info)) => info,
            _ => CaptureInfo {
                error: Some("the capture thread panicked".into()),
                ..CaptureInfo::default()
            },
        }
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap::{Capture, Linktype};

    /// A raw IPv4 packet (DLT_RAW, 12 on Linux): header, then `l4` (UDP/TCP ports or an ICMP header).
    fn v4(proto: u8, dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        v4_from([127, 0, 0, 1], proto, dst, l4)
    }

    fn v4_from(src: [u8; 4], proto: u8, dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    fn ports(src: u16, dst: u16) -> Vec<u8> {
        let mut v = src.to_be_bytes().to_vec();
        v.extend_from_slice(&dst.to_be_bytes());
        v.extend_from_slice(&[0; 16]);
        v
    }

    fn icmp(kind: u8, id: u16) -> Vec<u8> {
        let mut v = vec![kind, 0, 0, 0];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&[0, 1, 0, 0]);
        v
    }

    fn v6_icmp(kind: u8, id: u16) -> Vec<u8> {
        let body = icmp(kind, id);
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(body.len() as u16).to_be_bytes());
        p.extend_from_slice(&[58, 64]);
        p.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&body);
        p
    }

    #[test]
    fn the_filter_keeps_this_runs_probes_and_drops_another_runs() {
        let lo: IpAddr = [127, 0, 0, 1].into();
        let scope = Scope {
            sip: Some((5060, false)),
            icmp: Some(Some(7)),
            diameter_port: Some(3868),
        };
        let f = filter(lo, &scope);
        let dead = Capture::dead(Linktype(12)).unwrap();
        let prog = dead
            .compile(&f, true)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        let dst = [127, 0, 0, 1];
        // Ours: SIP to the target's port (both ways), the Diameter peer, echoes with our id,
        // ICMP errors.
        assert!(prog.filter(&v4(17, dst, &ports(40000, 5060))));
        assert!(prog.filter(&v4(17, dst, &ports(5060, 40000))));
        assert!(prog.filter(&v4(6, dst, &ports(50000, 3868))));
        assert!(prog.filter(&v4(1, dst, &icmp(8, 7))));
        assert!(prog.filter(&v4(1, dst, &icmp(0, 7))));
        assert!(prog.filter(&v4(1, dst, &icmp(3, 0))));
        // Another run on the same host: another SIP port, another echo id; another host.
        assert!(!prog.filter(&v4(17, dst, &ports(40000, 5062))));
        assert!(!prog.filter(&v4(1, dst, &icmp(8, 8))));
        assert!(!prog.filter(&v4(1, dst, &icmp(0, 8))));
        assert!(!prog.filter(&v4_from(
            [127, 0, 0, 3],
            17,
            [127, 0, 0, 2],
            &ports(40000, 5060)
        )));

        // ICMPv6 by identifier.
        let f6 = filter(
            std::net::Ipv6Addr::LOCALHOST.into(),
            &Scope {
                icmp: Some(Some(7)),
                ..Scope::default()
            },
        );
        let p6 = dead
            .compile(&f6, true)
            .unwrap_or_else(|e| panic!("{f6}: {e}"));
        assert!(p6.filter(&v6_icmp(128, 7)) && p6.filter(&v6_icmp(129, 7)));
        assert!(p6.filter(&v6_icmp(1, 0)), "destination unreachable");
        assert!(!p6.filter(&v6_icmp(128, 8)));

        // Without a chosen identifier (a datagram ICMP socket) every echo is kept; without
        // any layer, the host alone.
        let any = filter(
            lo,
            &Scope {
                icmp: Some(None),
                ..Scope::default()
            },
        );
        assert_eq!(any, "host 127.0.0.1 and (icmp)");
        assert_eq!(filter(lo, &Scope::default()), "host 127.0.0.1");
        let tcp = filter(
            lo,
            &Scope {
                sip: Some((5061, true)),
                ..Scope::default()
            },
        );
        assert_eq!(tcp, "host 127.0.0.1 and (tcp port 5061)");
    }
}
