//! Diameter base protocol codec (RFC 6733 §3, §4): message header, AVPs (vendor flag, grouped
//! AVPs, padding), and stream framing. Sans-IO: bytes in, values out, and back.
//!
//! Only what a Cx HSS needs; AVPs are kept as raw data and read with typed accessors, so an AVP
//! this codec does not know is carried, never an error.

use std::net::IpAddr;

/// 3GPP's vendor id (the V flag AVPs of TS 29.229 carry it).
pub const VENDOR_3GPP: u32 = 10415;
/// Cx/Dx application id (TS 29.229 §6.1).
pub const APP_CX: u32 = 16_777_216;
/// Diameter common messages (CER, DWR, DPR) run on application id 0.
pub const APP_COMMON: u32 = 0;
/// The relay application id: a peer advertising it takes every application.
pub const APP_RELAY: u32 = 0xffff_ffff;

/// Header flags (RFC 6733 §3).
pub mod hflags {
    pub const REQUEST: u8 = 0x80;
    pub const PROXIABLE: u8 = 0x40;
    pub const ERROR: u8 = 0x20;
    pub const RETRANSMIT: u8 = 0x10;
}

/// AVP flags (RFC 6733 §4.1).
pub mod aflags {
    pub const VENDOR: u8 = 0x80;
    pub const MANDATORY: u8 = 0x40;
}

/// Command codes (RFC 6733 §3.1, TS 29.229 §6.1).
pub mod cmd {
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    pub const DEVICE_WATCHDOG: u32 = 280;
    pub const DISCONNECT_PEER: u32 = 282;
    pub const USER_AUTHORIZATION: u32 = 300;
    pub const SERVER_ASSIGNMENT: u32 = 301;
    pub const LOCATION_INFO: u32 = 302;
    pub const MULTIMEDIA_AUTH: u32 = 303;
    pub const REGISTRATION_TERMINATION: u32 = 304;
    pub const PUSH_PROFILE: u32 = 305;
}

/// AVP codes. Base (RFC 6733 §4.5) ones have no vendor; Cx ones (TS 29.229 §6.3) are 3GPP's.
pub mod code {
    // base
    pub const USER_NAME: u32 = 1;
    pub const HOST_IP_ADDRESS: u32 = 257;
    pub const AUTH_APPLICATION_ID: u32 = 258;
    pub const ACCT_APPLICATION_ID: u32 = 259;
    pub const VENDOR_SPECIFIC_APPLICATION_ID: u32 = 260;
    pub const SESSION_ID: u32 = 263;
    pub const ORIGIN_HOST: u32 = 264;
    pub const SUPPORTED_VENDOR_ID: u32 = 265;
    pub const VENDOR_ID: u32 = 266;
    pub const FIRMWARE_REVISION: u32 = 267;
    pub const RESULT_CODE: u32 = 268;
    pub const PRODUCT_NAME: u32 = 269;
    pub const DISCONNECT_CAUSE: u32 = 273;
    pub const AUTH_SESSION_STATE: u32 = 277;
    pub const ORIGIN_STATE_ID: u32 = 278;
    pub const FAILED_AVP: u32 = 279;
    pub const ERROR_MESSAGE: u32 = 281;
    pub const DESTINATION_REALM: u32 = 283;
    pub const DESTINATION_HOST: u32 = 293;
    pub const ORIGIN_REALM: u32 = 296;
    pub const EXPERIMENTAL_RESULT: u32 = 297;
    pub const EXPERIMENTAL_RESULT_CODE: u32 = 298;
    // Cx (vendor 10415)
    pub const VISITED_NETWORK_IDENTIFIER: u32 = 600;
    pub const PUBLIC_IDENTITY: u32 = 601;
    pub const SERVER_NAME: u32 = 602;
    pub const SERVER_CAPABILITIES: u32 = 603;
    pub const MANDATORY_CAPABILITY: u32 = 604;
    pub const OPTIONAL_CAPABILITY: u32 = 605;
    pub const USER_DATA: u32 = 606;
    pub const SIP_NUMBER_AUTH_ITEMS: u32 = 607;
    pub const SIP_AUTHENTICATION_SCHEME: u32 = 608;
    pub const SIP_AUTHENTICATE: u32 = 609;
    pub const SIP_AUTHORIZATION: u32 = 610;
    pub const SIP_AUTH_DATA_ITEM: u32 = 612;
    pub const SIP_ITEM_NUMBER: u32 = 613;
    pub const SERVER_ASSIGNMENT_TYPE: u32 = 614;
    pub const USER_AUTHORIZATION_TYPE: u32 = 623;
    pub const USER_DATA_ALREADY_AVAILABLE: u32 = 624;
    pub const CONFIDENTIALITY_KEY: u32 = 625;
    pub const INTEGRITY_KEY: u32 = 626;
}

/// Result-Code values (RFC 6733 §7.1) and Cx Experimental-Result-Code values (TS 29.229 §6.2).
pub mod result {
    pub const SUCCESS: u32 = 2001;
    pub const COMMAND_UNSUPPORTED: u32 = 3001;
    pub const APPLICATION_UNSUPPORTED: u32 = 3007;
    pub const INVALID_AVP_VALUE: u32 = 5004;
    pub const MISSING_AVP: u32 = 5005;
    pub const AUTHORIZATION_REJECTED: u32 = 5003;
    pub const NO_COMMON_APPLICATION: u32 = 5010;
    pub const UNABLE_TO_COMPLY: u32 = 5012;
    // experimental, vendor 10415
    pub const FIRST_REGISTRATION: u32 = 2001;
    pub const SUBSEQUENT_REGISTRATION: u32 = 2002;
    pub const UNREGISTERED_SERVICE: u32 = 2003;
    pub const ERROR_USER_UNKNOWN: u32 = 5001;
    pub const ERROR_IDENTITIES_DONT_MATCH: u32 = 5002;
    pub const ERROR_IDENTITY_NOT_REGISTERED: u32 = 5003;
    pub const ERROR_AUTH_SCHEME_NOT_SUPPORTED: u32 = 5006;
}

/// Fixed header length (RFC 6733 §3).
pub const HEADER_LEN: usize = 20;
/// Largest message this codec accepts (the 24-bit length field allows 16 MiB; a Cx message is
/// a few kB).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// Why bytes are not a Diameter message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes: shorter than the 20-byte header")]
    Short(usize),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("message length {len} does not fit (have {have} bytes, limit {MAX_MESSAGE_LEN})")]
    Length { len: usize, have: usize },
    #[error("AVP {code} at offset {offset}: bad length {len}")]
    AvpLength {
        code: u32,
        offset: usize,
        len: usize,
    },
    #[error("AVP {code}: {what}")]
    AvpValue { code: u32, what: &'static str },
}

/// One AVP: code, flags, vendor id (present exactly when the V flag is set) and raw data
/// (unpadded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avp {
    pub code: u32,
    pub flags: u8,
    pub vendor: Option<u32>,
    pub data: Vec<u8>,
}

impl Avp {
    /// An AVP with the M flag, and the V flag when `vendor` is given.
    pub fn new(code: u32, vendor: Option<u32>, data: Vec<u8>) -> Avp {
        let flags = aflags::MANDATORY | if vendor.is_some() { aflags::VENDOR } else { 0 };
        Avp {
            code,
            flags,
            vendor,
            data,
        }
    }
    /// Base AVP (no vendor), Unsigned32/Integer32/Enumerated.
    pub fn u32(code: u32, v: u32) -> Avp {
        Avp::new(code, None, v.to_be_bytes().to_vec())
    }
    /// Base AVP, UTF8String/DiameterIdentity/OctetString.
    pub fn bytes(code: u32, v: impl Into<Vec<u8>>) -> Avp {
        Avp::new(code, None, v.into())
    }
    /// Base AVP, Grouped.
    pub fn grouped(code: u32, children: &[Avp]) -> Avp {
        Avp::new(code, None, encode_avps(children))
    }
    /// 3GPP AVP (V and M flags, vendor 10415), Unsigned32/Enumerated.
    pub fn u32_3gpp(code: u32, v: u32) -> Avp {
        Avp::new(code, Some(VENDOR_3GPP), v.to_be_bytes().to_vec())
    }
    /// 3GPP AVP, UTF8String/OctetString.
    pub fn bytes_3gpp(code: u32, v: impl Into<Vec<u8>>) -> Avp {
        Avp::new(code, Some(VENDOR_3GPP), v.into())
    }
    /// 3GPP AVP, Grouped.
    pub fn grouped_3gpp(code: u32, children: &[Avp]) -> Avp {
        Avp::new(code, Some(VENDOR_3GPP), encode_avps(children))
    }
    /// Address AVP (RFC 6733 §4.3.1): 2-byte address family (1 IPv4, 2 IPv6) then the address.
    pub fn address(code: u32, ip: IpAddr) -> Avp {
        let mut data = Vec::with_capacity(18);
        match ip {
            IpAddr::V4(a) => {
                data.extend_from_slice(&1u16.to_be_bytes());
                data.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                data.extend_from_slice(&2u16.to_be_bytes());
                data.extend_from_slice(&a.octets());
            }
        }
        Avp::new(code, None, data)
    }

    pub fn is(&self, code: u32, vendor: Option<u32>) -> bool {
        self.code == code && self.vendor == vendor
    }
    pub fn as_u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.data.as_slice().try_into().ok()?))
    }
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
    pub fn as_address(&self) -> Option<IpAddr> {
        let (fam, rest) = self.data.split_at_checked(2)?;
        match (u16::from_be_bytes([fam[0], fam[1]]), rest.len()) {
            (1, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(rest).ok()?)),
            (2, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(rest).ok()?)),
            _ => None,
        }
    }
    /// The AVPs inside a Grouped AVP.
    pub fn children(&self) -> Result<Vec<Avp>, DecodeError> {
        decode_avps(&self.data)
    }

    /// Encoded length including padding.
    pub fn encoded_len(&self) -> usize {
        pad4(self.header_len() + self.data.len())
    }
    fn header_len(&self) -> usize {
        if self.vendor.is_some() {
            12
        } else {
            8
        }
    }
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let len = self.header_len() + self.data.len();
        let mut flags = self.flags & !aflags::VENDOR;
        if self.vendor.is_some() {
            flags |= aflags::VENDOR;
        }
        out.extend_from_slice(&self.code.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        if let Some(v) = self.vendor {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&self.data);
        out.resize(out.len() + pad4(len) - len, 0);
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Encodes AVPs back to back (the payload of a message or of a Grouped AVP).
pub fn encode_avps(avps: &[Avp]) -> Vec<u8> {
    let mut out = Vec::with_capacity(avps.iter().map(Avp::encoded_len).sum());
    for a in avps {
        a.encode_into(&mut out);
    }
    out
}

/// Decodes AVPs back to back. The padding of the last AVP may be absent (some peers omit it
/// inside grouped AVPs); anything else that does not add up is an error.
pub fn decode_avps(mut buf: &[u8]) -> Result<Vec<Avp>, DecodeError> {
    let mut avps = Vec::new();
    let mut offset = 0;
    while !buf.is_empty() {
        if buf.len() < 8 {
            return Err(DecodeError::AvpLength {
                code: 0,
                offset,
                len: buf.len(),
            });
        }
        let code = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        let hdr = if flags & aflags::VENDOR != 0 { 12 } else { 8 };
        if len < hdr || len > buf.len() {
            return Err(DecodeError::AvpLength { code, offset, len });
        }
        let vendor = (hdr == 12).then(|| u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]));
        avps.push(Avp {
            code,
            flags,
            vendor,
            data: buf[hdr..len].to_vec(),
        });
        let step = pad4(len).min(buf.len());
        buf = &buf[step..];
        offset += step;
    }
    Ok(avps)
}

/// A Diameter message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub flags: u8,
    pub command: u32,
    pub app_id: u32,
    pub hop_by_hop: u32,
    pub end_to_end: u32,
    pub avps: Vec<Avp>,
}

/// Total length of the message at the start of `buf`, once its header is there: `None` while
/// fewer than 4 bytes are buffered. Lets a stream reader frame messages.
pub fn frame_len(buf: &[u8]) -> Option<Result<usize, DecodeError>> {
    if buf.len() < 4 {
        return None;
    }
    if buf[0] != 1 {
        return Some(Err(DecodeError::Version(buf[0])));
    }
    let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) || len % 4 != 0 {
        return Some(Err(DecodeError::Length {
            len,
            have: buf.len(),
        }));
    }
    Some(Ok(len))
}

impl Message {
    pub fn request(command: u32, app_id: u32, hop_by_hop: u32, end_to_end: u32) -> Message {
        Message {
            flags: hflags::REQUEST,
            command,
            app_id,
            hop_by_hop,
            end_to_end,
            avps: Vec::new(),
        }
    }

    /// The answer skeleton for `req`: same command, application and identifiers, R cleared,
    /// P kept (RFC 6733 §6.2), no AVPs yet.
    pub fn answer_to(req: &Message) -> Message {
        Message {
            flags: req.flags & hflags::PROXIABLE,
            command: req.command,
            app_id: req.app_id,
            hop_by_hop: req.hop_by_hop,
            end_to_end: req.end_to_end,
            avps: Vec::new(),
        }
    }

    pub fn is_request(&self) -> bool {
        self.flags & hflags::REQUEST != 0
    }

    pub fn push(&mut self, avp: Avp) -> &mut Message {
        self.avps.push(avp);
        self
    }

    /// First top-level AVP with this code and vendor.
    pub fn find(&self, code: u32, vendor: Option<u32>) -> Option<&Avp> {
        self.avps.iter().find(|a| a.is(code, vendor))
    }
    pub fn find_all(&self, code: u32, vendor: Option<u32>) -> impl Iterator<Item = &Avp> {
        self.avps.iter().filter(move |a| a.is(code, vendor))
    }
    pub fn str_avp(&self, code: u32, vendor: Option<u32>) -> Option<&str> {
        self.find(code, vendor).and_then(Avp::as_str)
    }
    pub fn u32_avp(&self, code: u32, vendor: Option<u32>) -> Option<u32> {
        self.find(code, vendor).and_then(Avp::as_u32)
    }
    /// Result-Code, or the Experimental-Result-Code inside Experimental-Result.
    pub fn result_code(&self) -> Option<u32> {
        if let Some(rc) = self.u32_avp(code::RESULT_CODE, None) {
            return Some(rc);
        }
        let er = self
            .find(code::EXPERIMENTAL_RESULT, None)?
            .children()
            .ok()?;
        er.iter()
            .find(|a| a.is(code::EXPERIMENTAL_RESULT_CODE, None))
            .and_then(Avp::as_u32)
    }

    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self.avps.iter().map(Avp::encoded_len).sum();
        let len = HEADER_LEN + body;
        let mut out = Vec::with_capacity(len);
        out.push(1);
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(self.flags);
        out.extend_from_slice(&self.command.to_be_bytes()[1..]);
        out.extend_from_slice(&self.app_id.to_be_bytes());
        out.extend_from_slice(&self.hop_by_hop.to_be_bytes());
        out.extend_from_slice(&self.end_to_end.to_be_bytes());
        for a in &self.avps {
            a.encode_into(&mut out);
        }
        out
    }

    /// Decodes exactly one message; `buf` must be exactly its length.
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Short(buf.len()));
        }
        let len = frame_len(buf).expect("20 bytes are there")?;
        if len != buf.len() {
            return Err(DecodeError::Length {
                len,
                have: buf.len(),
            });
        }
        let be = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        Ok(Message {
            flags: buf[4],
            command: be(4) & 0x00ff_ffff,
            app_id: be(8),
            hop_by_hop: be(12),
            end_to_end: be(16),
            avps: decode_avps(&buf[HEADER_LEN..])?,
        })
    }
}

/// Short name of a command for logs (`CER`, `MAA`, …).
pub fn command_name(command: u32, request: bool) -> String {
    let base = match command {
        cmd::CAPABILITIES_EXCHANGE => "CE",
        cmd::DEVICE_WATCHDOG => "DW",
        cmd::DISCONNECT_PEER => "DP",
        cmd::USER_AUTHORIZATION => "UA",
        cmd::SERVER_ASSIGNMENT => "SA",
        cmd::LOCATION_INFO => "LI",
        cmd::MULTIMEDIA_AUTH => "MA",
        cmd::REGISTRATION_TERMINATION => "RT",
        cmd::PUSH_PROFILE => "PP",
        other => return format!("cmd{other}{}", if request { "R" } else { "A" }),
    };
    format!("{base}{}", if request { 'R' } else { 'A' })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn avp_padding_and_vendor() {
        let a = Avp::bytes_3gpp(code::PUBLIC_IDENTITY, "sip:a@b");
        let mut out = Vec::new();
        a.encode_into(&mut out);
        // 12-byte header + 7 bytes data = 19, padded to 20; length field says 19
        assert_eq!(out.len(), 20);
        assert_eq!(&out[0..4], &601u32.to_be_bytes());
        assert_eq!(out[4], aflags::VENDOR | aflags::MANDATORY);
        assert_eq!(&out[5..8], &[0, 0, 19]);
        assert_eq!(&out[8..12], &10415u32.to_be_bytes());
        assert_eq!(out[19], 0);
        let back = decode_avps(&out).unwrap();
        assert_eq!(back, vec![a]);
    }

    #[test]
    fn message_round_trip_with_grouped() {
        let mut m = Message::request(cmd::MULTIMEDIA_AUTH, APP_CX, 0x1234, 0x5678);
        m.flags |= hflags::PROXIABLE;
        m.push(Avp::bytes(code::SESSION_ID, "scscf;1;2"))
            .push(Avp::grouped(
                code::VENDOR_SPECIFIC_APPLICATION_ID,
                &[
                    Avp::u32(code::VENDOR_ID, VENDOR_3GPP),
                    Avp::u32(code::AUTH_APPLICATION_ID, APP_CX),
                ],
            ))
            .push(Avp::grouped_3gpp(
                code::SIP_AUTH_DATA_ITEM,
                &[
                    Avp::bytes_3gpp(code::SIP_AUTHENTICATION_SCHEME, "Digest-AKAv1-MD5"),
                    Avp::bytes_3gpp(code::SIP_AUTHENTICATE, vec![7u8; 32]),
                ],
            ))
            .push(Avp::address(
                code::HOST_IP_ADDRESS,
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20)),
            ));
        let bytes = m.encode();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(frame_len(&bytes), Some(Ok(bytes.len())));
        let back = Message::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert!(back.is_request());
        let item = back
            .find(code::SIP_AUTH_DATA_ITEM, Some(VENDOR_3GPP))
            .unwrap();
        let kids = item.children().unwrap();
        assert_eq!(kids[0].as_str(), Some("Digest-AKAv1-MD5"));
        assert_eq!(kids[1].data, vec![7u8; 32]);
        assert_eq!(
            back.find(code::HOST_IP_ADDRESS, None).unwrap().as_address(),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 20)))
        );
        let ans = Message::answer_to(&back);
        assert!(!ans.is_request());
        assert_eq!(ans.flags, hflags::PROXIABLE);
        assert_eq!((ans.hop_by_hop, ans.end_to_end), (0x1234, 0x5678));
    }

    #[test]
    fn experimental_result_code() {
        let mut m = Message::request(cmd::USER_AUTHORIZATION, APP_CX, 1, 1);
        m.push(Avp::grouped(
            code::EXPERIMENTAL_RESULT,
            &[
                Avp::u32(code::VENDOR_ID, VENDOR_3GPP),
                Avp::u32(code::EXPERIMENTAL_RESULT_CODE, result::FIRST_REGISTRATION),
            ],
        ));
        assert_eq!(m.result_code(), Some(2001));
    }

    #[test]
    fn framing_errors() {
        assert_eq!(frame_len(&[1, 0, 0]), None);
        assert_eq!(
            frame_len(&[2, 0, 0, 20]),
            Some(Err(DecodeError::Version(2)))
        );
        assert!(matches!(
            frame_len(&[1, 0, 0, 8]),
            Some(Err(DecodeError::Length { .. }))
        ));
        assert!(matches!(
            Message::decode(&[1u8; 10]),
            Err(DecodeError::Short(10))
        ));
        // an AVP claiming more bytes than there are
        let mut m = Message::request(cmd::DEVICE_WATCHDOG, 0, 1, 1);
        m.push(Avp::bytes(code::ORIGIN_HOST, "x"));
        let mut b = m.encode();
        b[HEADER_LEN + 7] = 200;
        assert!(matches!(
            Message::decode(&b),
            Err(DecodeError::AvpLength { code: 264, .. })
        ));
    }

    #[test]
    fn unpadded_last_avp_in_group_is_accepted() {
        // 8-byte header + 1 byte, no padding
        let raw = [0, 0, 1, 8, 0x40, 0, 0, 9, b'x'];
        let avps = decode_avps(&raw).unwrap();
        assert_eq!(avps[0].code, 264);
        assert_eq!(avps[0].data, b"x");
    }
}
