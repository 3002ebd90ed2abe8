//! The pacer thread of a live run: on each tick of the common schedule, the next probe of every
//! layer of one target, written from its codec's template and recorded as sent.

use super::diameter::DiaCodec;
use super::icmp::EchoCodec;
use super::net::{self, IcmpSocket, ProbeClock};
use super::pacer::{self, PacerConfig, PacerStats};
use super::sipcodec::OptionsCodec;
use super::table::LayerTable;
use super::tcp;
use socket2::Socket;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

/// The pacer's way to send SIP.
pub(super) enum SipTx {
    Udp(Arc<Socket>),
    Tcp(tcp::TcpSender),
}

/// The SIP probe's table, socket, codec and (`--hep`) mirror.
pub(super) type SipPacing = (
    Arc<LayerTable>,
    SipTx,
    Arc<OptionsCodec>,
    Option<super::hep::SipMirror>,
);

pub(super) struct Pacing {
    pub(super) sip: Option<SipPacing>,
    pub(super) icmp: Option<(Arc<LayerTable>, Arc<IcmpSocket>, Arc<EchoCodec>)>,
    pub(super) diameter: Option<(Arc<LayerTable>, tcp::TcpSender, Arc<DiaCodec>)>,
}

pub(super) fn spawn_pacer(
    pacing: Pacing,
    cfg: PacerConfig,
    clock: ProbeClock,
    stop: Arc<AtomicBool>,
) -> JoinHandle<PacerStats> {
    std::thread::Builder::new()
        .name("imsprobe-pacer".into())
        .spawn(move || {
            let mut pacing = pacing;
            let mut sip_seq = 0u64;
            let mut icmp_seq = 0u64;
            let mut dia_seq = 0u64;
            // One buffer for every OPTIONS (and one for every DWR or UAR), written from templates.
            let mut msg = Vec::with_capacity(1024);
            let mut dwr = Vec::with_capacity(512);
            pacer::run(&cfg, &stop, |_k, _due| {
                if let Some((table, tx, codec, hep)) = &mut pacing.sip {
                    codec.write_request(sip_seq, &mut msg);
                    let sent = table.push_sent_now(sip_seq, || clock.now_ns());
                    let r = match tx {
                        SipTx::Udp(socket) => net::send_nonblocking(socket, &msg),
                        SipTx::Tcp(sender) => sender.send(&msg),
                    };
                    match (r, hep) {
                        (Err(errno), _) => table.mark_send_error(sip_seq, errno),
                        (Ok(()), Some(h)) => h.sent(sent, &msg),
                        (Ok(()), None) => {}
                    }
                    sip_seq += 1;
                }
                if let Some((table, socket, codec)) = &pacing.icmp {
                    let pkt = codec.request(icmp_seq);
                    table.push_sent_now(icmp_seq, || clock.now_ns());
                    if let Err(errno) = net::send_nonblocking(&socket.socket, &pkt) {
                        table.mark_send_error(icmp_seq, errno);
                    }
                    icmp_seq += 1;
                }
                if let Some((table, tx, codec)) = &mut pacing.diameter {
                    codec.write_request(dia_seq, &mut dwr);
                    table.push_sent_now(dia_seq, || clock.now_ns());
                    if let Err(errno) = tx.send(&dwr) {
                        table.mark_send_error(dia_seq, errno);
                    }
                    dia_seq += 1;
                }
            })
        })
        .expect("spawn pacer thread")
}
