//! The kernel's side of [`super::Sa`]: ESP states and the policies that send a flow through
//! them, made over netlink (XFRM) in the network namespace of the calling thread.
//!
//! - Synchronous on purpose: one SA pair is eight requests, each answered by the kernel in
//!   microseconds, made once per registration by the worker thread that owns the UE. An async
//!   netlink stack (xfrmnetlink) would need a runtime beside the driver's own loop for nothing.
//!   The messages are `netlink-packet-xfrm`'s, the socket `netlink-sys`'s.
//! - [`Xfrm`] remembers everything it made. [`Xfrm::remove`] takes one UE's pair away;
//!   dropping the [`Xfrm`] takes away whatever is left, so a run that ends (Ctrl-C, SIGTERM,
//!   an error) leaves nothing in the kernel.
//! - Each SA's policy pair: the policy of its direction (`out`: send the flow through ESP; `in`:
//!   accept the flow only if it came through ESP, so a cleartext datagram to a protected port is
//!   dropped by the kernel, as at a real UE).

use super::{Dir, Sa};
use crate::sip::secagree::{AuthAlg, EncAlg};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_xfrm::{
    constants::{
        IPPROTO_ESP, XFRM_MODE_TRANSPORT, XFRM_POLICY_ALLOW, XFRM_POLICY_IN, XFRM_POLICY_OUT,
    },
    policy, state, Alg, AlgAuth, Selector, UserPolicyId, UserSaId, UserTemplate, XfrmAttrs,
    XfrmMessage, XFRM_ALG_AUTH_NAME_LEN, XFRM_ALG_NAME_LEN,
};
use netlink_sys::{protocols::NETLINK_XFRM, Socket, SocketAddr};
use std::io;

/// The longest wait for the kernel's answer to one request.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the kernel refused, with what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum XfrmError {
    #[error("cannot open a netlink XFRM socket: {0}")]
    Socket(io::Error),
    #[error("the kernel refused to {what}: {err}{hint}", hint = hint(err))]
    Refused { what: String, err: io::Error },
    #[error("netlink: {0}")]
    Netlink(String),
}

impl XfrmError {
    /// The kernel has no ESP at all: no SA can be made until it has.
    pub fn no_esp(&self) -> bool {
        matches!(self, XfrmError::Refused { err, .. } if err.raw_os_error() == Some(libc::EPROTONOSUPPORT))
    }
}

/// How to get past the refusals a user can do something about.
fn hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            " (IPsec SAs need CAP_NET_ADMIN: run as root, or in a network namespace of your own)"
        }
        // xfrm_get_type() found no ESP handler and could not load one.
        Some(libc::EPROTONOSUPPORT) => {
            " (this kernel has no ESP: CONFIG_INET_ESP / CONFIG_INET6_ESP are off and no esp4/esp6 module could be loaded; IPsec needs a kernel with ESP, e.g. Debian's)"
        }
        // crypto_alloc_aead() of the SA's authenc(...) template failed.
        Some(libc::ENOENT) => {
            " (the kernel cannot build this algorithm pair: a crypto module is missing, e.g. drbg, the random source of the CBC ciphers' IV generator)"
        }
        Some(libc::EEXIST) => " (an SA with this SPI and address already exists: another run, or a UE's SPIs reused)",
        _ => "",
    }
}

/// A netlink XFRM socket and what was made through it (see the module comment).
pub struct Xfrm {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Made and not yet removed, in the order made.
    live: Vec<Sa>,
}

impl Xfrm {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<Xfrm, XfrmError> {
        let mut sock = Socket::new(NETLINK_XFRM).map_err(XfrmError::Socket)?;
        sock.bind_auto().map_err(XfrmError::Socket)?;
        // The kernel acknowledges at once; the bound keeps a wait for an answer finite anyway.
        socket2::SockRef::from(&sock)
            .set_read_timeout(Some(ACK_WAIT))
            .map_err(XfrmError::Socket)?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(XfrmError::Socket)?;
        Ok(Xfrm {
            sock,
            seq: 0,
            buf: vec![0; 8192],
            live: Vec::new(),
        })
    }

    /// SAs made and not yet removed.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Makes every SA of `sas` and its policy, or none: on a refusal, what this call made is
    /// taken away again before the error is returned.
    pub fn install(&mut self, sas: &[Sa]) -> Result<(), XfrmError> {
        let before = self.live.len();
        for sa in sas {
            if let Err(e) = self.add_one(sa) {
                let made: Vec<Sa> = self.live.drain(before..).collect();
                for m in made.iter().rev() {
                    let _ = self.del_one(m);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes away SAs (and their policies) made by [`Xfrm::install`]. Unknown ones are ignored;
    /// the first kernel refusal is returned after trying all of them.
    pub fn remove(&mut self, sas: &[Sa]) -> Result<(), XfrmError> {
        let mut first = None;
        for sa in sas {
            let Some(i) = self.live.iter().position(|l| l == sa) else {
                continue;
            };
            let sa = self.live.swap_remove(i);
            if let Err(e) = self.del_one(&sa) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// How many packets the kernel has passed through the SAs of `sas` (its lifetime counter,
    /// summed): what tells a pair still in use from one its peer has left.
    pub fn packets(&mut self, sas: &[Sa]) -> Result<u64, XfrmError> {
        let mut total = 0;
        for sa in sas {
            let mut got = None;
            self.exchange(XfrmMessage::GetSa(sa_id(sa)), 0, |m| {
                if let XfrmMessage::AddSa(m) = m {
                    got = Some(m.user_sa_info.lifetime_cur.packets);
                }
            })
            .and_then(|()| {
                got.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no SA in the reply"))
            })
            .map(|n| total += n)
            .map_err(|err| XfrmError::Refused {
                what: format!("read the counters of {}", describe(sa)),
                err,
            })?;
        }
        Ok(total)
    }

    /// Takes away everything still made (what [`Drop`] does, with the errors).
    pub fn remove_all(&mut self) -> Result<(), XfrmError> {
        let mut first = None;
        while let Some(sa) = self.live.pop() {
            if let Err(e) = self.del_one(&sa) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn add_one(&mut self, sa: &Sa) -> Result<(), XfrmError> {
        self.request(
            XfrmMessage::AddSa(sa_message(sa)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|err| XfrmError::Refused {
            what: format!("add the SA {}", describe(sa)),
            err,
        })?;
        if let Err(err) = self.request(
            XfrmMessage::AddPolicy(policy_message(sa)),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            let _ = self.request(XfrmMessage::DeleteSa(sa_id(sa)), 0);
            return Err(XfrmError::Refused {
                what: format!("add the policy of {}", describe(sa)),
                err,
            });
        }
        self.live.push(sa.clone());
        Ok(())
    }

    fn del_one(&mut self, sa: &Sa) -> Result<(), XfrmError> {
        let p = self.request(XfrmMessage::DeletePolicy(policy_id(sa)), 0);
        let s = self.request(XfrmMessage::DeleteSa(sa_id(sa)), 0);
        p.and(s).map_err(|err| XfrmError::Refused {
            what: format!("delete {}", describe(sa)),
            err,
        })
    }

    /// Sends one request and waits for its acknowledgement.
    fn request(&mut self, msg: XfrmMessage, flags: u16) -> io::Result<()> {
        self.exchange(msg, flags, |_| {})
    }

    /// Sends one request, hands `reply` what comes back before the acknowledgement, and waits
    /// for that.
    fn exchange(
        &mut self,
        msg: XfrmMessage,
        flags: u16,
        mut reply: impl FnMut(XfrmMessage),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let len = nl.buffer_len();
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        nl.serialize(&mut self.buf[..len]);
        self.sock.send(&self.buf[..len], 0)?;
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<XfrmMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let step = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(()),
                                Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                            };
                        }
                        NetlinkPayload::InnerMessage(x) => reply(x),
                        _ => {}
                    }
                }
                if step == 0 {
                    break;
                }
                off += (step + 3) & !3;
            }
        }
    }
}

impl Drop for Xfrm {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            tracing::warn!("IPsec clean-up: {e}");
        }
    }
}

fn describe(sa: &Sa) -> String {
    format!(
        "{} {}:{} -> {}:{} spi {} ({}, {})",
        match sa.dir {
            Dir::In => "in",
            Dir::Out => "out",
        },
        sa.src,
        sa.sport,
        sa.dst,
        sa.dport,
        sa.spi,
        sa.auth,
        sa.enc
    )
}

/// The flow an SA carries: both addresses as /32 (/128), both ports, any protocol (SIP over UDP
/// and over TCP use the same protected ports, TS 33.203 §7.1).
fn selector(sa: &Sa) -> Selector {
    let mut s = Selector::default();
    let bits = if sa.src.is_ipv4() { 32 } else { 128 };
    s.source_prefix(&sa.src, bits);
    s.destination_prefix(&sa.dst, bits);
    s.sport = sa.sport;
    s.sport_mask = u16::MAX;
    s.dport = sa.dport;
    s.dport_mask = u16::MAX;
    s
}

fn name<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    out
}

/// The kernel's crypto names for the algorithms of TS 33.203.
fn auth_name(a: AuthAlg) -> &'static str {
    match a {
        AuthAlg::HmacSha1_96 => "hmac(sha1)",
        AuthAlg::HmacMd5_96 => "hmac(md5)",
    }
}

fn enc_name(e: EncAlg) -> &'static str {
    match e {
        EncAlg::Null => "ecb(cipher_null)",
        EncAlg::AesCbc => "cbc(aes)",
        EncAlg::DesEde3Cbc => "cbc(des3_ede)",
    }
}

fn sa_message(sa: &Sa) -> state::ModifyMessage {
    let mut m = state::ModifyMessage::default();
    let i = &mut m.user_sa_info;
    i.source(&sa.src);
    i.destination(&sa.dst);
    i.id.spi = sa.spi;
    i.id.proto = IPPROTO_ESP;
    i.mode = XFRM_MODE_TRANSPORT;
    i.reqid = sa.reqid;
    i.replay_window = 32;
    i.selector = selector(sa);
    m.nlas.push(XfrmAttrs::AuthenticationAlgTrunc(AlgAuth {
        alg_name: name::<XFRM_ALG_AUTH_NAME_LEN>(auth_name(sa.auth)),
        alg_key_len: (sa.auth_key.len() * 8) as u32,
        alg_trunc_len: 96,
        alg_key: sa.auth_key.clone(),
    }));
    m.nlas.push(XfrmAttrs::EncryptionAlg(Alg {
        alg_name: name::<XFRM_ALG_NAME_LEN>(enc_name(sa.enc)),
        alg_key_len: (sa.enc_key.len() * 8) as u32,
        alg_key: sa.enc_key.clone(),
    }));
    m
}

fn sa_id(sa: &Sa) -> state::DelGetMessage {
    let mut m = state::DelGetMessage::default();
    let mut id = UserSaId::default();
    id.destination(&sa.dst);
    id.spi = sa.spi;
    id.proto = IPPROTO_ESP;
    m.user_sa_id = id;
    m.nlas
        .push(XfrmAttrs::SrcAddr(netlink_packet_xfrm::Address::from_ip(
            &sa.src,
        )));
    m
}

fn direction(sa: &Sa) -> u8 {
    match sa.dir {
        Dir::In => XFRM_POLICY_IN,
        Dir::Out => XFRM_POLICY_OUT,
    }
}

fn policy_message(sa: &Sa) -> policy::ModifyMessage {
    let mut m = policy::ModifyMessage::default();
    let p = &mut m.user_policy_info;
    p.selector = selector(sa);
    p.direction = direction(sa);
    p.action = XFRM_POLICY_ALLOW;
    let mut t = UserTemplate::default();
    t.source(&sa.src);
    t.destination(&sa.dst);
    t.protocol(IPPROTO_ESP);
    t.mode(XFRM_MODE_TRANSPORT);
    t.reqid(sa.reqid);
    m.nlas.push(XfrmAttrs::Template(vec![t]));
    m
}

fn policy_id(sa: &Sa) -> policy::DelGetMessage {
    policy::DelGetMessage {
        user_policy_id: UserPolicyId {
            selector: selector(sa),
            index: 0,
            direction: direction(sa),
        },
        nlas: Vec::new(),
    }
}
