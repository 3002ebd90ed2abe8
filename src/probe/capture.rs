//! Packet capture with libpcap: one blocking thread per target, immediate mode, BPF-filtered to
//! the target's host, on the interface that routes to it, written as a classic pcap file with
//! nanosecond timestamps (magic `a1b23c4d`, which Wireshark/tshark read natively; classic pcap
//! has no per-interface resolution to get wrong, unlike pcapng's `if_tsresol`).

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

/// Opens the capture now (so errors are reported before probing starts, and no early packet is
/// missed) and starts its thread.
pub fn start(interface: &str, host: IpAddr, path: &Path) -> Result<CaptureHandle, String> {
    let filter = format!("host {host}");
    let explain = |what: &str, e: pcap::Error| {
        format!(
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
    let mut save = cap.savefile(path).map_err(|e| {
        format!(
            "packet capture disabled: cannot create {}: {e}",
            path.display()
        )
    })?;
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
        .map_err(|e| format!("packet capture disabled: cannot start its thread: {e}"))?;
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
