//! The targets file: names such as `pcscf` mapped to address, SIP port and transport.
//!
//! ```toml
//! [targets.pcscf]
//! host = "127.0.0.21"
//! sip_port = 5060
//! transport = "udp"
//! ```

use crate::sip::Transport;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetEntry {
    pub host: String,
    #[serde(default = "default_port")]
    pub sip_port: u16,
    #[serde(default = "default_transport")]
    pub transport: Transport,
    #[serde(default)]
    pub description: Option<String>,
}

fn default_port() -> u16 {
    5060
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
}

impl Target {
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
    pub fn parse(text: &str) -> Result<TargetsFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads `path`; a missing file is an empty one (addresses still work).
    pub fn load(path: &Path) -> Result<Option<TargetsFile>, String> {
        match std::fs::read_to_string(path) {
            Ok(t) => TargetsFile::parse(&t)
                .map(Some)
                .map_err(|e| format!("targets file {} is not valid: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read targets file {}: {e}", path.display())),
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (h, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {h}: {e}"))?
        .next()
        .ok_or_else(|| format!("{h} resolves to no address"))
}

/// Resolves `--target` (a name in `file`, `host:port`, `[v6]:port` or a bare host with port 5060).
pub fn resolve_target(
    spec: &str,
    file: Option<&TargetsFile>,
    file_path: &Path,
    transport_override: Option<Transport>,
) -> Result<Target, String> {
    if let Some(e) = file.and_then(|f| f.targets.get(spec)) {
        let addr = resolve(&e.host, e.sip_port)
            .map_err(|m| format!("target {spec} in {}: {m}", file_path.display()))?;
        return Ok(Target {
            name: spec.to_string(),
            addr,
            transport: transport_override.unwrap_or(e.transport),
        });
    }
    let transport = transport_override.unwrap_or(Transport::Udp);
    if let Ok(a) = spec.parse::<SocketAddr>() {
        return Ok(Target {
            name: spec.to_string(),
            addr: a,
            transport,
        });
    }
    if let Ok(ip) = spec.parse::<IpAddr>() {
        return Ok(Target {
            name: spec.to_string(),
            addr: SocketAddr::new(ip, 5060),
            transport,
        });
    }
    if let Some((h, p)) = spec.rsplit_once(':') {
        if let Ok(port) = p.parse::<u16>() {
            return Ok(Target {
                name: spec.to_string(),
                addr: resolve(h, port)?,
                transport,
            });
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
    Err(format!(
        "unknown target `{spec}`: not a name from the targets file and not HOST:PORT ({known})"
    ))
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
        let e = resolve_target("nosuch", Some(&f), p, None).unwrap_err();
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
}
