//! The subscriber file the HSS serves and the UE side (imsload) reads: CSV with the header
//! `impu,impi,password,k,opc,amf,sqn` (k, opc: 32 hex digits; amf: 4; sqn: 12, or empty for 0),
//! optionally followed by a `tel` column: a tel: IMPU of the same subscription (`tel:+15550001`,
//! may be empty), put in the implicit registration set after the row's `impu`.
//!
//! Several rows with one IMPI make one subscription with several public identities (an
//! implicit registration set); the keys of its first row count. `password` is for plain
//! digest users and unused by the HSS. Blank lines and lines starting with `#` are skipped.
//! The `sqn` column is the last SQN used: the HSS's first vector carries `sqn + 32`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::vectors::sqn_from_bytes;

pub const HEADER: &str = "impu,impi,password,k,opc,amf,sqn";
/// [`HEADER`] with the optional tel: IMPU column.
pub const HEADER_TEL: &str = "impu,impi,password,k,opc,amf,sqn,tel";

/// One IMS subscription (one IMPI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub impi: String,
    /// Public identities, in file order; the first is the default one.
    pub impus: Vec<String>,
    pub k: [u8; 16],
    pub opc: [u8; 16],
    pub amf: [u8; 2],
    /// SQN_HE: the last SQN handed out.
    pub sqn: u64,
}

/// All subscriptions, indexed by IMPI and by IMPU.
#[derive(Debug, Default, Clone)]
pub struct Subscribers {
    pub list: Vec<Subscriber>,
    by_impi: HashMap<String, usize>,
    by_impu: HashMap<String, usize>,
}

fn hex_n<const N: usize>(field: &str, name: &str) -> Result<[u8; N]> {
    crate::hex::decode(field).map_err(|e| anyhow!("{name} {e}"))
}

impl Subscribers {
    pub fn load(path: &Path) -> Result<Subscribers> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading subscriber file {}", path.display()))?;
        Subscribers::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Subscribers> {
        let mut subs = Subscribers::default();
        let mut header_seen = false;
        let mut fields = 7;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if !header_seen {
                let cols: Vec<&str> = line.split(',').map(str::trim).collect();
                fields = match cols.join(",") {
                    h if h == HEADER => 7,
                    h if h == HEADER_TEL => 8,
                    _ => bail!(
                        "line {}: header must be {HEADER:?} or {HEADER_TEL:?}, is {line:?}",
                        n + 1
                    ),
                };
                header_seen = true;
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != fields {
                bail!("line {}: {} fields, want {fields}", n + 1, f.len());
            }
            let tel = f.get(7).copied().filter(|t| !t.is_empty());
            if let Some(t) = tel {
                if !t.starts_with("tel:+") {
                    bail!(
                        "line {}: tel {t:?} is not a global tel: URI (tel:+15550001)",
                        n + 1
                    );
                }
            }
            let (impu, impi) = (f[0], f[1]);
            if impu.is_empty() || impi.is_empty() {
                bail!("line {}: empty impu or impi", n + 1);
            }
            let row = (|| -> Result<Subscriber> {
                let sqn = if f[6].is_empty() {
                    0
                } else {
                    sqn_from_bytes(&hex_n::<6>(f[6], "sqn")?)
                };
                Ok(Subscriber {
                    impi: impi.to_string(),
                    impus: vec![impu.to_string()],
                    k: hex_n(f[3], "k")?,
                    opc: hex_n(f[4], "opc")?,
                    amf: hex_n(f[5], "amf")?,
                    sqn,
                })
            })()
            .with_context(|| format!("line {}", n + 1))?;
            let idx = match subs.by_impi.get(impi) {
                Some(&i) => i,
                None => {
                    subs.list.push(Subscriber {
                        impus: Vec::new(),
                        ..row
                    });
                    subs.by_impi.insert(impi.to_string(), subs.list.len() - 1);
                    subs.list.len() - 1
                }
            };
            for u in std::iter::once(impu).chain(tel) {
                if subs.by_impu.insert(u.to_string(), idx).is_some() {
                    bail!("line {}: impu {u} listed twice", n + 1);
                }
                subs.list[idx].impus.push(u.to_string());
            }
        }
        if !header_seen {
            bail!("no header line {HEADER:?}");
        }
        Ok(subs)
    }

    pub fn index_of_impi(&self, impi: &str) -> Option<usize> {
        self.by_impi.get(impi).copied()
    }
    pub fn index_of_impu(&self, impu: &str) -> Option<usize> {
        self.by_impu.get(impu).copied()
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\
# lab users
impu,impi,password,k,opc,amf,sqn
sip:001010000000001@ims.example,001010000000001@ims.example,,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000020
tel:+15550001,001010000000001@ims.example,,00000000000000000000000000000000,00000000000000000000000000000000,0000,
sip:u2@ims.example,u2@ims.example,pw,0102030405060708090a0b0c0d0e0f10,0102030405060708090a0b0c0d0e0f10,b9b9,
";

    #[test]
    fn parse_groups_by_impi() {
        let s = Subscribers::parse(CSV).unwrap();
        assert_eq!(s.len(), 2);
        let a = &s.list[0];
        assert_eq!(
            a.impus,
            vec!["sip:001010000000001@ims.example", "tel:+15550001"]
        );
        assert_eq!(a.sqn, 32);
        assert_eq!(a.amf, [0x80, 0]);
        assert_eq!(a.k[0], 0x46);
        assert_eq!(s.index_of_impu("tel:+15550001"), Some(0));
        assert_eq!(s.index_of_impi("u2@ims.example"), Some(1));
        assert_eq!(s.list[1].sqn, 0);
    }

    #[test]
    fn tel_column_joins_the_implicit_set() {
        let z = "0".repeat(32);
        let csv = format!(
            "{HEADER_TEL}\nsip:a@d,a@d,,{z},{z},8000,,tel:+15550001\nsip:b@d,b@d,,{z},{z},8000,,\n"
        );
        let s = Subscribers::parse(&csv).unwrap();
        assert_eq!(s.list[0].impus, vec!["sip:a@d", "tel:+15550001"]);
        assert_eq!(s.index_of_impu("tel:+15550001"), Some(0));
        assert_eq!(s.list[1].impus, vec!["sip:b@d"]);
        let bad = format!("{HEADER_TEL}\nsip:a@d,a@d,,{z},{z},8000,,+15550001\n");
        let e = format!("{:#}", Subscribers::parse(&bad).unwrap_err());
        assert!(e.contains("line 2") && e.contains("tel:"), "{e}");
        let dup = format!(
            "{HEADER_TEL}\nsip:a@d,a@d,,{z},{z},8000,,tel:+1\nsip:b@d,b@d,,{z},{z},8000,,tel:+1\n"
        );
        assert!(Subscribers::parse(&dup).is_err());
    }

    #[test]
    fn parse_errors() {
        assert!(Subscribers::parse("impu,impi\n").is_err());
        assert!(Subscribers::parse("").is_err());
        let bad_k = format!("{HEADER}\nsip:a@b,a@b,,00,{},0000,\n", "0".repeat(32));
        let e = format!("{:#}", Subscribers::parse(&bad_k).unwrap_err());
        assert!(e.contains("line 2") && e.contains("k"), "{e}");
        let dup = format!(
            "{HEADER}\nsip:a@b,a@b,,{z},{z},0000,\nsip:a@b,c@b,,{z},{z},0000,\n",
            z = "0".repeat(32)
        );
        assert!(Subscribers::parse(&dup).is_err());
    }
}
