//! One target's side of a live run, opened before the first probe: the output folder, the SIP
//! socket or TCP connection, the ICMP socket, the Diameter connection with its CER, the capture
//! and the `--hep` mirror. Failing to open what was asked for is an error here, before any probe
//! is sent; what only degrades the run (no kernel timestamps, no ICMP, no capture) is a warning.

use super::capture::{self, CaptureHandle, CaptureInfo};
use super::diameter::DiaCodec;
use super::icmp::EchoCodec;
use super::net::{self, IcmpSocket, ProbeClock};
use super::run::RunConfig;
use super::sipcodec::OptionsCodec;
use super::table::LayerTable;
use super::targets::Target;
use super::tcp::TcpLink;
use super::Layer;
use socket2::Socket;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// The SIP socket of a target.
#[derive(Clone)]
pub(super) enum SipSock {
    Udp(Arc<Socket>),
    Tcp(Arc<TcpLink>),
}

pub(super) struct SipIo {
    pub(super) table: Arc<LayerTable>,
    pub(super) sock: SipSock,
    pub(super) codec: Arc<OptionsCodec>,
    /// Kernel receive timestamps (UDP with SO_TIMESTAMPNS).
    pub(super) timestamps: bool,
    /// Our `ip:port` (the first connection's, for TCP).
    pub(super) local: String,
}

pub(super) struct IcmpIo {
    pub(super) table: Arc<LayerTable>,
    pub(super) socket: Arc<IcmpSocket>,
    pub(super) codec: Arc<EchoCodec>,
}

/// The Diameter connection of a target (the HSS's Cx peer port).
pub(super) struct DiaIo {
    pub(super) table: Arc<LayerTable>,
    pub(super) link: Arc<TcpLink>,
    pub(super) codec: Arc<DiaCodec>,
}

pub(super) struct TargetRun {
    pub(super) target: Target,
    pub(super) dir: PathBuf,
    pub(super) sip: Option<SipIo>,
    pub(super) icmp: Option<IcmpIo>,
    pub(super) diameter: Option<DiaIo>,
    pub(super) capture: Option<CaptureHandle>,
    pub(super) capture_info: Option<CaptureInfo>,
    pub(super) warnings: Vec<String>,
    pub(super) answered: Arc<AtomicU64>,
    pub(super) hep: Option<(crate::hep::mirror::Mirror, super::hep::SipMirror)>,
}

impl TargetRun {
    /// The record tables of the layers this target probes.
    pub(super) fn tables(&self) -> impl Iterator<Item = &Arc<LayerTable>> {
        [
            self.sip.as_ref().map(|s| &s.table),
            self.icmp.as_ref().map(|s| &s.table),
            self.diameter.as_ref().map(|s| &s.table),
        ]
        .into_iter()
        .flatten()
    }
}

fn out_dir(cfg: &RunConfig, t: &Target, clock: &ProbeClock) -> PathBuf {
    match &cfg.out {
        Some(d) if cfg.targets.len() == 1 => d.clone(),
        Some(d) => d.join(t.path_name()),
        None => PathBuf::from("captures").join(format!(
            "{}-{}",
            crate::clock::stamp_for_path(clock.epoch.wall),
            t.path_name()
        )),
    }
}

pub(super) fn setup_target(
    cfg: &RunConfig,
    t: &Target,
    clock: &ProbeClock,
    run_id: u32,
) -> anyhow::Result<TargetRun> {
    let dir = out_dir(cfg, t, clock);
    std::fs::create_dir_all(&dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create output directory {}: {e} (choose another with --out DIR)",
            dir.display()
        )
    })?;
    let mut warnings = Vec::new();
    let layers = t.layers(&cfg.layers);
    let mut sip = None;
    let mut hep = None;
    if layers.contains(&Layer::Sip) {
        let (sock, local, timestamps) = match t.transport {
            crate::sip::Transport::Udp => {
                let (socket, timestamps) = net::sip_udp_socket(t.addr).map_err(|e| {
                    anyhow::anyhow!(
                        "target {}: cannot open a UDP socket to {}: {e}",
                        t.name,
                        t.addr
                    )
                })?;
                let local = socket.local_addr().ok().and_then(|a| a.as_socket());
                if !timestamps {
                    warnings.push(
                        "SIP: the kernel refused SO_TIMESTAMPNS; receive times are userspace readings"
                            .into(),
                    );
                }
                (SipSock::Udp(Arc::new(socket)), local, timestamps)
            }
            crate::sip::Transport::Tcp => {
                let link = TcpLink::open(t.addr, Duration::from_secs(2)).map_err(|e| {
                    anyhow::anyhow!(
                        "target {}: cannot connect over TCP to {}: {e} (is a SIP server listening on TCP there? --transport udp probes over UDP)",
                        t.name,
                        t.addr
                    )
                })?;
                let local = link.local_addr();
                (SipSock::Tcp(Arc::new(link)), local, false)
            }
        };
        let local_addr = local;
        let local = local
            .map(|a| a.to_string())
            .unwrap_or_else(|| "0.0.0.0:0".into());
        let target_str = t.addr.to_string();
        if let Some(h) = &cfg.hep {
            let m = crate::hep::mirror::Mirror::start(h, &format!("imsprobe {}", t.name))?;
            let sm = match &sock {
                SipSock::Udp(_) => super::hep::SipMirror::udp(
                    m.tap(),
                    t.addr,
                    local_addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    *clock,
                ),
                SipSock::Tcp(l) => super::hep::SipMirror::tcp(m.tap(), l.clone(), *clock),
            };
            hep = Some((m, sm));
        }
        sip = Some(SipIo {
            table: Arc::new(LayerTable::new(Layer::Sip)),
            sock,
            codec: Arc::new(OptionsCodec::new(run_id, t.transport, &target_str, &local)),
            timestamps,
            local,
        });
    }
    let mut icmp_io = None;
    if layers.contains(&Layer::Icmp) {
        match net::icmp_socket(t.host()) {
            Ok(s) => {
                if !s.timestamps {
                    warnings.push("ICMP: the kernel refused SO_TIMESTAMPNS; receive times are userspace readings".into());
                }
                icmp_io = Some(IcmpIo {
                    table: Arc::new(LayerTable::new(Layer::Icmp)),
                    codec: Arc::new(EchoCodec {
                        id: (run_id as u16) ^ (std::process::id() as u16),
                        token: ((run_id as u64) << 32) | rand::random::<u32>() as u64,
                        target: t.host(),
                    }),
                    socket: Arc::new(s),
                });
            }
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!("{}: {msg}", t.name);
                warnings.push(msg);
            }
        }
    }
    let mut diameter = None;
    if layers.contains(&Layer::Diameter) {
        let addr = t.diameter_addr();
        // CER's Host-IP-Address: the address the kernel will use towards the peer.
        let local_ip = net::local_addr_towards(addr)
            .map(|a| a.ip())
            .unwrap_or(addr.ip());
        let codec = DiaCodec::new(
            run_id,
            local_ip,
            &cfg.diameter_realm,
            t.diameter_request.clone(),
        );
        let link = TcpLink::open_with_greeting(addr, Duration::from_secs(2), codec.cer()).map_err(
            |e| {
                anyhow::anyhow!(
                    "target {}: cannot connect to a Diameter peer at {addr}: {e} (is the HSS \
                     listening there? set diameter_port in the targets file, or --diameter-port)",
                    t.name
                )
            },
        )?;
        diameter = Some(DiaIo {
            table: Arc::new(LayerTable::new(Layer::Diameter)),
            link: Arc::new(link),
            codec: Arc::new(codec),
        });
    }
    if sip.is_none() && icmp_io.is_none() && diameter.is_none() {
        anyhow::bail!(
            "target {}: no probe can run (SIP not selected and ICMP not available: {})",
            t.name,
            warnings.join("; ")
        );
    }
    let mut capture = None;
    let mut capture_info = None;
    if cfg.capture {
        let iface = cfg
            .iface
            .clone()
            .unwrap_or_else(|| capture::interface_towards(t.host()));
        let path = dir.join("capture.pcap");
        let scope = capture::Scope {
            sip: sip
                .as_ref()
                .map(|s| (t.addr.port(), matches!(s.sock, SipSock::Tcp(_)))),
            icmp: icmp_io.as_ref().map(|i| i.socket.raw.then_some(i.codec.id)),
            diameter_port: diameter.as_ref().map(|_| t.diameter_port),
        };
        match capture::start(&iface, &capture::filter(t.host(), &scope), &path) {
            Ok(h) => capture = Some(h),
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!("{}: {msg}", t.name);
                warnings.push(msg.clone());
                capture_info = Some(CaptureInfo {
                    interface: iface,
                    error: Some(msg),
                    ..CaptureInfo::default()
                });
            }
        }
    }
    Ok(TargetRun {
        target: t.clone(),
        dir,
        sip,
        icmp: icmp_io,
        diameter,
        capture,
        capture_info,
        warnings,
        answered: Arc::new(AtomicU64::new(0)),
        hep,
    })
}
