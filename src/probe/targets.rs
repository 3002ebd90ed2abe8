//! The targets file: names such as `pcscf` mapped to address, SIP port and transport, and the
//! layers that suit the element (the HSS speaks Diameter, not SIP).
//!
//! ```toml
//! [targets.pcscf]
//! host = "127.0.0.21"
//! sip_port = 5060
//! transport = "udp"
//!
//! [targets.hss]
//! host = "127.0.0.20"
//! diameter_port = 3868
//! layers = ["diameter", "icmp"]
//! # probe the HSS's Cx application (a UAR for this user) instead of its stack (DWR)
//! diameter_uar = "sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
//! ```

use super::diameter::{CxUser, CxUserError, DiaRequest};
use super::Layer;
use crate::sip::Transport;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

/// Why a target cannot be probed: the targets file, or the name or address given. Each names
/// the file or the host. (Causes sit in `err` fields, not `source`: the messages end with them,
/// and `{:#}` would print them twice.)
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("targets file {path} is not valid: {err}")]
    Invalid { path: String, err: toml::de::Error },
    #[error("cannot read targets file {path}: {err}")]
    Read { path: String, err: io::Error },
    #[error("cannot resolve {host}: {err}")]
    Resolve { host: String, err: io::Error },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error("target {name} in {path}: {err}")]
    Entry {
        name: String,
        path: String,
        err: Box<TargetsError>,
    },
    #[error("target {name} in {path}: diameter_uar {err}")]
    DiameterUar {
        name: String,
        path: String,
        err: CxUserError,
    },
    #[error(
        "unknown target `{spec}`: not a name from the targets file and not HOST:PORT ({known})"
    )]
    Unknown { spec: String, known: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetEntry {
    pub host: String,
    #[serde(default = "default_port")]
    pub sip_port: u16,
    #[serde(default = "default_transport")]
    pub transport: Transport,
    /// The Diameter port (for `--diameter`, or `layers` with "diameter").
    #[serde(default = "default_diameter_port")]
    pub diameter_port: u16,
    /// Diameter probes are Cx User-Authorization-Requests for this user instead of watchdogs
    /// (see [`CxUser::parse`]).
    #[serde(default)]
    pub diameter_uar: Option<String>,
    /// Layers probed when the command line selects none (default: SIP and ICMP).
    #[serde(default)]
    pub layers: Option<Vec<Layer>>,
    #[serde(default)]
    pub description: Option<String>,
}

fn default_port() -> u16 {
    5060
}
/// RFC 6733's port for Diameter over TCP.
pub const DIAMETER_PORT: u16 = 3868;
fn default_diameter_port() -> u16 {
    DIAMETER_PORT
}
fn default_transport() -> Transport {
    Transport::Udp
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsFile {
    #[serde(default)]
    pub targets: BTreeMap<String, TargetEntry>,
}

/// A resolved target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The name (from the file) or the address as given; used in file names.
    pub name: String,
    pub addr: SocketAddr,
    pub transport: Transport,
    pub diameter_port: u16,
    /// What the Diameter probes ask: a watchdog, or a UAR for a subscriber.
    pub diameter_request: DiaRequest,
    /// The file's layers for this target, if it names any.
    pub layers: Option<Vec<Layer>>,
}

impl Target {
    /// A target at `addr` with the defaults for everything the file could say.
    pub fn at(name: &str, addr: SocketAddr, transport: Transport) -> Target {
        Target {
            name: name.to_string(),
            addr,
            transport,
            diameter_port: DIAMETER_PORT,
            diameter_request: DiaRequest::Watchdog,
            layers: None,
        }
    }

    /// The layers to probe: those the command line chose, else the file's, else SIP and ICMP.
    pub fn layers(&self, chosen: &[Layer]) -> Vec<Layer> {
        if !chosen.is_empty() {
            return chosen.to_vec();
        }
        self.layers
            .clone()
            .unwrap_or_else(|| vec![Layer::Sip, Layer::Icmp])
    }

    /// The Diameter peer's address.
    pub fn diameter_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.diameter_port)
    }

    /// `name` made safe for a directory name.
    pub fn path_name(&self) -> String {
        self.name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
    pub fn host(&self) -> IpAddr {
        self.addr.ip()
    }
}

impl TargetsFile {
    pub fn parse(text: &str) -> Result<TargetsFile, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads `path`; a missing file is an empty one (addresses still work).
    pub fn load(path: &Path) -> Result<Option<TargetsFile>, TargetsError> {
        let p = || path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(t) => TargetsFile::parse(&t)
                .map(Some)
                .map_err(|err| TargetsError::Invalid { path: p(), err }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(TargetsError::Read { path: p(), err }),
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, TargetsError> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (h, port)
        .to_socket_addrs()
        .map_err(|err| TargetsError::Resolve {
            host: h.into(),
            err,
        })?
        .next()
        .ok_or_else(|| TargetsError::NoAddress(h.into()))
}

/// Resolves `--target` (a name in `file`, `host:port`, `[v6]:port` or a bare host with port 5060).
pub fn resolve_target(
    spec: &str,
    file: Option<&TargetsFile>,
    file_path: &Path,
    transport_override: Option<Transport>,
) -> Result<Target, TargetsError> {
    if let Some(e) = file.and_then(|f| f.targets.get(spec)) {
        let addr = resolve(&e.host, e.sip_port).map_err(|err| TargetsError::Entry {
            name: spec.into(),
            path: file_path.display().to_string(),
            err: Box::new(err),
        })?;
        let diameter_request = match &e.diameter_uar {
            None => DiaRequest::Watchdog,
            Some(u) => {
                DiaRequest::Uar(CxUser::parse(u).map_err(|err| TargetsError::DiameterUar {
                    name: spec.into(),
                    path: file_path.display().to_string(),
                    err,
                })?)
            }
        };
        return Ok(Target {
            diameter_port: e.diameter_port,
            diameter_request,
            layers: e.layers.clone(),
            ..Target::at(spec, addr, transport_override.unwrap_or(e.transport))
        });
    }
    let transport = transport_override.unwrap_or(Transport::Udp);
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return Ok(Target::at(spec, a, transport));
    }
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(Target::at(spec, SocketAddr::new(ip, 5060), transport));
    }
    if let Some((h, p)) = spec.rsplit_once(':') {
        if let Ok(port) = p.parse::<u16>() {
            return Ok(Target::at(spec, resolve(h, port)?, transport));
        }
    }
    let known = match file {
        Some(f) if !f.targets.is_empty() => format!(
            "known names in {}: {}",
            file_path.display(),
            f.targets.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        Some(_) => format!("{} names no targets", file_path.display()),
        None => format!(
            "{} does not exist (use --targets FILE)",
            file_path.display()
        ),
    };
    Err(TargetsError::Unknown {
        spec: spec.into(),
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profile_parses_and_names_resolve() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/targets.toml"
        ))
        .unwrap();
        let f = TargetsFile::parse(&text).unwrap();
        for n in ["pcscf", "icscf", "scscf", "hss"] {
            assert!(f.targets.contains_key(n), "{n}");
        }
        let p = Path::new("profiles/targets.toml");
        let t = resolve_target("pcscf", Some(&f), p, None).unwrap();
        assert_eq!(t.addr, "127.0.0.21:5060".parse().unwrap());
        assert_eq!(t.transport, Transport::Udp);
        let t = resolve_target("127.0.0.1:5070", Some(&f), p, Some(Transport::Tcp)).unwrap();
        assert_eq!(t.addr.port(), 5070);
        assert_eq!(t.transport, Transport::Tcp);
        assert_eq!(t.path_name(), "127.0.0.1_5070");
        assert_eq!(
            resolve_target("127.0.0.9", None, p, None)
                .unwrap()
                .addr
                .port(),
            5060
        );
        let e = resolve_target("nosuch", Some(&f), p, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pcscf") && e.contains("nosuch"), "{e}");
        assert!(TargetsFile::parse("[targets.x]\nhost=1\n").is_err());
    }

    #[test]
    fn transport_tcp_in_the_file_and_the_override() {
        let f = TargetsFile::parse(
            "[targets.scscf]\nhost = \"127.0.0.23\"\nsip_port = 6060\ntransport = \"tcp\"\n",
        )
        .unwrap();
        let p = Path::new("t.toml");
        let t = resolve_target("scscf", Some(&f), p, None).unwrap();
        assert_eq!(t.transport, Transport::Tcp);
        assert_eq!(t.addr, "127.0.0.23:6060".parse().unwrap());
        let t = resolve_target("scscf", Some(&f), p, Some(Transport::Udp)).unwrap();
        assert_eq!(
            t.transport,
            Transport::Udp,
            "--transport overrides the file"
        );
        assert!(TargetsFile::parse("[targets.x]\nhost = \"h\"\ntransport = \"sctp\"\n").is_err());
    }

    #[test]
    fn the_hss_is_probed_with_diameter_and_icmp_unless_told_otherwise() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/targets.toml"
        ))
        .unwrap();
        let f = TargetsFile::parse(&text).unwrap();
        let p = Path::new("profiles/targets.toml");
        let hss = resolve_target("hss", Some(&f), p, None).unwrap();
        assert_eq!(hss.layers(&[]), vec![Layer::Diameter, Layer::Icmp]);
        assert_eq!(
            hss.layers(&[Layer::Icmp]),
            vec![Layer::Icmp],
            "the command line wins"
        );
        assert_eq!(hss.diameter_addr(), "127.0.0.20:3868".parse().unwrap());
        assert_eq!(hss.diameter_request, DiaRequest::Watchdog);
        let cx = resolve_target("hss-cx", Some(&f), p, None).unwrap();
        assert_eq!(
            cx.diameter_request,
            DiaRequest::Uar(CxUser {
                impi: "001010000000001@ims.mnc001.mcc001.3gppnetwork.org".into(),
                impu: "sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org".into(),
            })
        );
        let bad =
            TargetsFile::parse("[targets.x]\nhost = \"127.0.0.1\"\ndiameter_uar = \"tel:+1\"\n")
                .unwrap();
        let e = resolve_target("x", Some(&bad), p, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("diameter_uar") && e.contains("IMPI,IMPU"), "{e}");
        let pcscf = resolve_target("pcscf", Some(&f), p, None).unwrap();
        assert_eq!(pcscf.layers(&[]), vec![Layer::Sip, Layer::Icmp]);
        let e = TargetsFile::parse("[targets.x]\nhost = \"h\"\nlayers = [\"smtp\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp"), "{e}");
    }
}
