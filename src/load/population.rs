//! Who the simulated users are: identities and credentials, from a printf-style pattern or a
//! CSV file of `impu,impi,password` with optional AKA columns `k`, `op`/`opc`, `amf`, `sqn`
//! and a `tel` column (a tel: IMPU beside the sip: one).

use crate::hex::HexError;
use crate::sip::aka::{self, AkaError, AkaKeys};
use std::path::Path;

/// One subscriber as the network knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Public identity (IMPU) without the `sip:` scheme, e.g. `user0001@ims.local`.
    pub impu: String,
    /// Private identity (IMPI), the digest username.
    pub impi: String,
    /// Digest password for MD5 challenges (unused by AKA users, may be empty).
    pub password: String,
    /// IMS AKA subscription (USIM/ISIM): when present, AKAv1-MD5 challenges are answered.
    pub aka: Option<AkaSubscription>,
    /// A tel: IMPU of the same subscription (`tel:+15550001`), registered implicitly with the
    /// sip: IMPU: the network lists it in P-Associated-URI, and it can be the preferred identity.
    pub tel: Option<String>,
    /// The UE's instance ID for `+sip.instance` (RFC 5626), e.g. `urn:gsma:imei:35209900-000001-0`.
    pub instance: Option<String>,
}

/// What a USIM holds, as provisioned in the HSS: K, OPc, AMF and the SQN both sides start from
/// (the UE's highest accepted SQN; the HSS's last issued one). The HSS reads the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AkaSubscription {
    pub keys: AkaKeys,
    pub sqn: u64,
}

/// Lab HSSs commonly provision AMF 8000 (the separation bit set); the UE itself takes AMF from
/// AUTN, so this only matters to the network side reading the same data.
pub const DEFAULT_AMF: [u8; 2] = [0x80, 0x00];

impl Identity {
    /// The user part of the IMPU (what Contact and Request-URI carry).
    pub fn user(&self) -> &str {
        self.impu.split('@').next().unwrap_or(&self.impu)
    }
    pub fn uri(&self) -> String {
        format!("sip:{}", self.impu)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PopulationError {
    #[error("user pattern {0:?} has no %d or %0Nd to put the index in (example: user%04d)")]
    PatternWithoutIndex(String),
    // `err`, not `source`: the message already ends with it, and `{:#}` would print it twice.
    #[error("cannot read users file {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path}:{line}: {why} (expected: impu,impi,password[,k,opc,amf,sqn,tel] — e.g. sip:alice@ims.local,alice@ims.local,secret — or a header line naming the columns)")]
    BadLine {
        path: String,
        line: usize,
        why: String,
    },
    #[error("{path}:{line}: column {column}: {why}")]
    BadField {
        path: String,
        line: usize,
        column: String,
        why: String,
    },
    #[error(
        "{path}:1: header: {why} (known columns: impu, impi, password, k, op, opc, amf, sqn, tel)"
    )]
    BadHeader { path: String, why: String },
    #[error("IMPI pattern {0:?} has neither %u (user name) nor %d/%0Nd (index): every user would share one private identity")]
    ImpiPatternConstant(String),
    #[error("tel pattern {pattern:?}: {why} (example: +1555%07d gives tel:+15550000001)")]
    BadTelPattern { pattern: String, why: TelError },
    #[error("instance pattern {0:?} has no %d or %0Nd: every user would claim the same device (example: urn:gsma:imei:35209900-%06d-0)")]
    InstancePatternConstant(String),
    #[error("instance pattern {0:?}: an instance ID is a URN (RFC 5626 §4.1), e.g. urn:gsma:imei:35209900-%06d-0 or urn:uuid:…")]
    InstanceNotUrn(String),
    #[error("users file {0} holds no users")]
    Empty(String),
}

/// Why a number is not one an IMS tel: IMPU can carry; callers say where it came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TelError {
    #[error("no %d or %0Nd to put the index in")]
    NoIndex,
    #[error("not a global number: it must start with +")]
    NotGlobal,
    #[error("{0:?} is not + followed by digits")]
    NotDigits(String),
}

/// Why AKA keys as given make no subscription. The flags and the CSV columns name the same
/// fields differently, so each caller turns [`SubscriptionError::column`] into its own word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("K {0}")]
    K(HexError),
    #[error("AMF {0}")]
    Amf(HexError),
    #[error("OPc {0}")]
    Opc(HexError),
    #[error("OP {0}")]
    Op(HexError),
    #[error("both OP and OPc given: give one (OPc is derived from OP)")]
    OpAndOpc,
    #[error("K given without OP or OPc")]
    NoOp,
    #[error(transparent)]
    Sqn(AkaError),
}

impl SubscriptionError {
    /// The field at fault, as the CSV header names it.
    pub fn column(&self) -> &'static str {
        match self {
            SubscriptionError::K(_) => "k",
            SubscriptionError::Amf(_) => "amf",
            SubscriptionError::Opc(_) | SubscriptionError::OpAndOpc | SubscriptionError::NoOp => {
                "opc"
            }
            SubscriptionError::Op(_) => "op",
            SubscriptionError::Sqn(_) => "sqn",
        }
    }
}

/// Expands `%d`, `%0Nd` (index) in a pattern.
fn expand_index(pattern: &str, index: u64) -> Option<String> {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut found = false;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'd' {
                let width: usize = pattern[i + 1..j].parse().unwrap_or(0);
                out.push_str(&format!("{index:0width$}"));
                found = true;
                i = j + 1;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    found.then_some(out)
}

/// How to build a population from patterns (the CLI's `--user-pattern` family).
#[derive(Clone, Debug)]
pub struct PatternSpec<'a> {
    /// User name pattern, `%d`/`%0Nd` is the index: the IMPU is `<user>@<domain>`.
    pub user: &'a str,
    pub first: u64,
    pub count: usize,
    pub domain: &'a str,
    /// Password rule: `%u` the user name, `%d`/`%0Nd` the index.
    pub password: &'a str,
    /// IMPI pattern (`%u` user name, `%d`/`%0Nd` index); `None`: the user name, as Kamailio's
    /// auth_db expects. IMS labs use `%015d@ims.mnc001.mcc001.3gppnetwork.org`-style IMPIs.
    pub impi: Option<&'a str>,
    /// One K/OPc/AMF/SQN for every user (how lab HSSs are provisioned), or MD5 only.
    pub aka: Option<AkaSubscription>,
    /// tel: IMPU pattern (a global number, `%d`/`%0Nd` the index), e.g. `+1555%07d`.
    pub tel: Option<&'a str>,
}

/// Users from a pattern: `user%04d` with indices `first..first+count`, public identity
/// `<user>@<domain>`, private identity the same (as Kamailio's auth_db expects), password from
/// `password_rule` where `%u` is the user name and `%d`/`%0Nd` the index.
pub fn from_pattern(
    pattern: &str,
    first: u64,
    count: usize,
    domain: &str,
    password_rule: &str,
) -> Result<Vec<Identity>, PopulationError> {
    from_spec(&PatternSpec {
        user: pattern,
        first,
        count,
        domain,
        password: password_rule,
        impi: None,
        aka: None,
        tel: None,
    })
}

/// Users from a [`PatternSpec`].
pub fn from_spec(spec: &PatternSpec<'_>) -> Result<Vec<Identity>, PopulationError> {
    if expand_index(spec.user, 0).is_none() {
        return Err(PopulationError::PatternWithoutIndex(spec.user.to_string()));
    }
    if let Some(p) = spec.impi {
        if !p.contains("%u") && expand_index(p, 0).is_none() {
            return Err(PopulationError::ImpiPatternConstant(p.to_string()));
        }
    }
    if let Some(t) = spec.tel {
        tel_uri(t, spec.first).map_err(|why| PopulationError::BadTelPattern {
            pattern: t.to_string(),
            why,
        })?;
    }
    let rule = |pattern: &str, user: &str, idx: u64| {
        let r = pattern.replace("%u", user);
        expand_index(&r, idx).unwrap_or(r)
    };
    Ok((0..spec.count as u64)
        .map(|k| {
            let idx = spec.first + k;
            let user = expand_index(spec.user, idx).unwrap_or_default();
            Identity {
                impu: format!("{user}@{}", spec.domain),
                impi: spec
                    .impi
                    .map_or_else(|| user.clone(), |p| rule(p, &user, idx)),
                password: rule(spec.password, &user, idx),
                aka: spec.aka,
                tel: spec.tel.and_then(|t| tel_uri(t, idx).ok()),
                instance: None,
            }
        })
        .collect())
}

/// `tel:` + the pattern expanded with `index`; the number must be global (`+` and digits,
/// RFC 3966 visual separators `-` `.` allowed), as an IMS tel: IMPU is.
fn tel_uri(pattern: &str, index: u64) -> Result<String, TelError> {
    let p = pattern.strip_prefix("tel:").unwrap_or(pattern);
    let n = expand_index(p, index).ok_or(TelError::NoIndex)?;
    global_number(&n)?;
    Ok(format!("tel:{n}"))
}

fn global_number(n: &str) -> Result<(), TelError> {
    let digits = n.strip_prefix('+').ok_or(TelError::NotGlobal)?;
    if !digits.bytes().any(|b| b.is_ascii_digit())
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(TelError::NotDigits(n.into()));
    }
    Ok(())
}

/// Gives every user an instance ID for `+sip.instance` from `pattern` (`%d`/`%0Nd`: the user's
/// index, `first` for the first user; for CSV users the row order from `first`).
pub fn set_instances(
    users: &mut [Identity],
    pattern: &str,
    first: u64,
) -> Result<(), PopulationError> {
    if expand_index(pattern, 0).is_none() {
        return Err(PopulationError::InstancePatternConstant(pattern.into()));
    }
    if !pattern
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        return Err(PopulationError::InstanceNotUrn(pattern.into()));
    }
    for (k, u) in users.iter_mut().enumerate() {
        u.instance = expand_index(pattern, first + k as u64);
    }
    Ok(())
}

/// Builds an AKA subscription from hex strings as the CLI and the CSV give them: K and exactly
/// one of OP/OPc are needed; AMF defaults to [`DEFAULT_AMF`], SQN to 0.
pub fn aka_subscription(
    k: &str,
    op: Option<&str>,
    opc: Option<&str>,
    amf: Option<&str>,
    sqn: Option<&str>,
) -> Result<AkaSubscription, SubscriptionError> {
    let k: [u8; 16] = crate::hex::decode(k).map_err(SubscriptionError::K)?;
    let amf = match amf.filter(|a| !a.trim().is_empty()) {
        Some(a) => crate::hex::decode(a).map_err(SubscriptionError::Amf)?,
        None => DEFAULT_AMF,
    };
    let keys = match (
        op.filter(|o| !o.trim().is_empty()),
        opc.filter(|o| !o.trim().is_empty()),
    ) {
        (Some(_), Some(_)) => return Err(SubscriptionError::OpAndOpc),
        (None, Some(c)) => AkaKeys::with_opc(
            k,
            crate::hex::decode(c).map_err(SubscriptionError::Opc)?,
            amf,
        ),
        (Some(o), None) => AkaKeys::with_op(
            k,
            crate::hex::decode(o).map_err(SubscriptionError::Op)?,
            amf,
        ),
        (None, None) => return Err(SubscriptionError::NoOp),
    };
    let sqn = match sqn.filter(|s| !s.trim().is_empty()) {
        Some(s) => aka::parse_sqn(s).map_err(SubscriptionError::Sqn)?,
        None => 0,
    };
    Ok(AkaSubscription { keys, sqn })
}

/// CSV columns, by position (no header) or by name (header line).
#[derive(Default)]
struct Columns {
    impu: usize,
    impi: usize,
    password: Option<usize>,
    k: Option<usize>,
    op: Option<usize>,
    opc: Option<usize>,
    amf: Option<usize>,
    sqn: Option<usize>,
    tel: Option<usize>,
}

impl Columns {
    /// Without a header: `impu,impi,password[,k,opc,amf,sqn,tel]`.
    fn positional() -> Columns {
        Columns {
            impu: 0,
            impi: 1,
            password: Some(2),
            k: Some(3),
            op: None,
            opc: Some(4),
            amf: Some(5),
            sqn: Some(6),
            tel: Some(7),
        }
    }

    /// `path` names the file in the error.
    fn from_header(path: &str, cols: &[&str]) -> Result<Columns, PopulationError> {
        let bad = |why: String| PopulationError::BadHeader {
            path: path.to_string(),
            why,
        };
        let mut found: [Option<usize>; 9] = [None; 9];
        const NAMES: [&str; 9] = [
            "impu", "impi", "password", "k", "op", "opc", "amf", "sqn", "tel",
        ];
        for (i, c) in cols.iter().enumerate() {
            let name = c.to_ascii_lowercase();
            let Some(slot) = NAMES.iter().position(|n| *n == name) else {
                return Err(bad(format!("unknown column {c:?}")));
            };
            if found[slot].replace(i).is_some() {
                return Err(bad(format!("column {c:?} appears twice")));
            }
        }
        let (Some(impu), Some(impi)) = (found[0], found[1]) else {
            return Err(bad("impu and impi columns are required".into()));
        };
        if found[3].is_none() && found[2].is_none() {
            return Err(bad(
                "need a password column, or k with op/opc for AKA users".into(),
            ));
        }
        if found[3].is_some() && found[4].is_none() && found[5].is_none() {
            return Err(bad("column k needs op or opc".into()));
        }
        if found[4].is_some() && found[5].is_some() {
            return Err(bad("give op or opc, not both".into()));
        }
        Ok(Columns {
            impu,
            impi,
            password: found[2],
            k: found[3],
            op: found[4],
            opc: found[5],
            amf: found[6],
            sqn: found[7],
            tel: found[8],
        })
    }
}

/// Users from a CSV file. With a header line (first line starting with `impu`), columns go by
/// name: `impu`, `impi`, `password`, for AKA users `k`, `op` or `opc`, `amf`, `sqn` (hex), and
/// `tel` (a tel: IMPU of the same user, `tel:+…`, may be empty). Without one they go by
/// position: `impu,impi,password[,k,opc,amf,sqn,tel]`. Lines starting with
/// `#` are skipped; `sip:` in front of the IMPU is optional. A row whose `k` is empty is an MD5
/// user.
pub fn from_csv(path: &Path) -> Result<Vec<Identity>, PopulationError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| PopulationError::Read {
        path: p.clone(),
        err,
    })?;
    parse_csv(&p, &text)
}

fn parse_csv(p: &str, text: &str) -> Result<Vec<Identity>, PopulationError> {
    let mut users = Vec::new();
    let mut columns = Columns::positional();
    let mut named = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if n == 0 && line.to_ascii_lowercase().starts_with("impu") {
            columns = Columns::from_header(p, &cols)?;
            named = true;
            continue;
        }
        let bad = |why: &str| PopulationError::BadLine {
            path: p.to_string(),
            line: n + 1,
            why: why.to_string(),
        };
        let need = if named {
            [
                Some(columns.impu),
                Some(columns.impi),
                columns.password,
                columns.k,
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0)
                + 1
        } else {
            3
        };
        if cols.len() < need {
            return Err(bad(&format!("{} columns, need {need}", cols.len())));
        }
        let get = |i: Option<usize>| i.and_then(|i| cols.get(i).copied()).unwrap_or("");
        let impu_col = cols[columns.impu];
        let impu = impu_col.strip_prefix("sip:").unwrap_or(impu_col);
        if !impu.contains('@') || impu.starts_with('@') {
            return Err(bad(&format!(
                "public identity {impu_col:?} is not user@domain"
            )));
        }
        let impi = cols[columns.impi];
        if impi.is_empty() {
            return Err(bad("private identity is empty"));
        }
        let k = get(columns.k);
        let aka = if k.is_empty() {
            None
        } else {
            let op = columns.op.map(|i| get(Some(i)));
            let opc = columns.opc.map(|i| get(Some(i)));
            Some(
                aka_subscription(
                    k,
                    op,
                    opc,
                    columns.amf.map(|i| get(Some(i))),
                    columns.sqn.map(|i| get(Some(i))),
                )
                .map_err(|e| {
                    let column = e.column();
                    PopulationError::BadField {
                        path: p.to_string(),
                        line: n + 1,
                        column: if named {
                            column.to_string()
                        } else {
                            format!(
                                "{} ({column})",
                                match column {
                                    "k" => 4,
                                    "op" | "opc" => 5,
                                    "amf" => 6,
                                    _ => 7,
                                }
                            )
                        },
                        why: e.to_string(),
                    }
                })?,
            )
        };
        let tel = match get(columns.tel) {
            "" => None,
            t => {
                let col = if named {
                    "tel".into()
                } else {
                    "8 (tel)".into()
                };
                let bad_tel = |why: String| PopulationError::BadField {
                    path: p.to_string(),
                    line: n + 1,
                    column: col,
                    why,
                };
                let Some(num) = t.strip_prefix("tel:") else {
                    return Err(bad_tel(format!("{t:?} is not a tel: URI (tel:+15550001)")));
                };
                global_number(num).map_err(|why| bad_tel(format!("{t:?}: {why}")))?;
                Some(t.to_string())
            }
        };
        users.push(Identity {
            impu: impu.to_string(),
            impi: impi.to_string(),
            password: get(columns.password).to_string(),
            aka,
            tel,
            instance: None,
        });
    }
    if users.is_empty() {
        return Err(PopulationError::Empty(p.to_string()));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_expands_like_the_test_subscribers() {
        let u = from_pattern("user%04d", 1, 3, "ims.local", "pw_%u").unwrap();
        assert_eq!(u[0].impu, "user0001@ims.local");
        assert_eq!(u[0].impi, "user0001");
        assert_eq!(u[0].password, "pw_user0001");
        assert_eq!(u[2].user(), "user0003");
        assert_eq!(u[2].uri(), "sip:user0003@ims.local");
        let u = from_pattern("+1555%06d", 10, 1, "d", "secret%d").unwrap();
        assert_eq!(u[0].impi, "+1555000010");
        assert_eq!(u[0].password, "secret10");
        assert!(matches!(
            from_pattern("alice", 1, 1, "d", "x"),
            Err(PopulationError::PatternWithoutIndex(_))
        ));
    }

    #[test]
    fn csv_reads_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("u.csv");
        std::fs::write(&f, "impu,impi,password\nsip:a@d,a@d,pa\n# c\nb@d, b , pb\n").unwrap();
        let u = from_csv(&f).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].impi, "b");
        std::fs::write(&f, "a@d,a\n").unwrap();
        let e = from_csv(&f).unwrap_err().to_string();
        assert!(e.contains(":1:") && e.contains("2 columns"), "{e}");
        std::fs::write(&f, "nodomain,a,b\n").unwrap();
        assert!(from_csv(&f)
            .unwrap_err()
            .to_string()
            .contains("not user@domain"));
        let e = from_csv(&dir.path().join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read users file"), "{e}");
    }

    const K1: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
    const OP1: &str = "cdc202d5123e20f62b6d676ac72cb318";
    const OPC1: &str = "cd63cb71954a9f4e48a5994e37a02baf";

    #[test]
    fn csv_aka_columns_by_name_and_by_position() {
        let u = parse_csv(
            "h.csv",
            &format!(
                "impu,impi,k,op,amf,sqn\n\
                 sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org,001010000000001@ims.mnc001.mcc001.3gppnetwork.org,{K1},{OP1},b9b9,ff9bb4d0b607\n\
                 sip:plain@d,plain@d,,,,\n"
            ),
        )
        .unwrap();
        let a = u[0].aka.expect("AKA user");
        assert_eq!(crate::hex::encode(&a.keys.opc), OPC1, "OPc derived from OP");
        assert_eq!(a.keys.amf, [0xb9, 0xb9]);
        assert_eq!(a.sqn, 0xff9bb4d0b607);
        assert_eq!(u[0].password, "");
        assert_eq!(u[1].aka, None, "an empty k is an MD5 user");

        // Positional, old 3-column rows stay valid next to 7-column ones.
        let u = parse_csv(
            "p.csv",
            &format!("a@d,a@d,pa\nb@d,b@d,,{K1},{OPC1},8000,20\nc@d,c@d,pc,{K1},{OPC1}\n"),
        )
        .unwrap();
        assert_eq!((u[0].aka, u[0].password.as_str()), (None, "pa"));
        let b = u[1].aka.unwrap();
        assert_eq!((b.keys.amf, b.sqn), (DEFAULT_AMF, 0x20));
        assert_eq!(crate::hex::encode(&b.keys.opc), OPC1);
        assert_eq!(u[2].aka.unwrap().sqn, 0);
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let e = parse_csv("x.csv", &format!("impu,impi,k,opc\na@d,a@d,{K1},12\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.csv:2: column opc:") && e.contains("need 32"),
            "{e}"
        );
        let e = parse_csv("x.csv", "a@d,a@d,pw,zz\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.csv:1: column 4 (k):"), "{e}");
        let e = parse_csv("x.csv", &format!("a@d,a@d,pw,{K1}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column 5 (opc)") && e.contains("without OP or OPc"),
            "{e}"
        );
        let e = parse_csv("x.csv", &format!("a@d,a@d,pw,{K1},{OPC1},8000,xyz\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 7 (sqn)"), "{e}");
        let e = parse_csv("x.csv", "impu,impi,ki\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown column \"ki\""), "{e}");
        let e = parse_csv("x.csv", "impu,impi,k,op,opc\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = parse_csv("x.csv", "impu,impi,password,k\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs op or opc"), "{e}");
    }

    #[test]
    fn pattern_with_impi_pattern_and_shared_aka_keys() {
        let aka = aka_subscription(K1, None, Some(OPC1), Some("8000"), Some("0")).unwrap();
        let u = from_spec(&PatternSpec {
            user: "+1555%06d",
            first: 1,
            count: 2,
            domain: "ims.mnc001.mcc001.3gppnetwork.org",
            password: "unused",
            impi: Some("00101%010d@ims.mnc001.mcc001.3gppnetwork.org"),
            aka: Some(aka),
            tel: None,
        })
        .unwrap();
        assert_eq!(u[1].impu, "+1555000002@ims.mnc001.mcc001.3gppnetwork.org");
        assert_eq!(
            u[1].impi,
            "001010000000002@ims.mnc001.mcc001.3gppnetwork.org"
        );
        assert_eq!(u[0].aka, Some(aka));
        let u = from_spec(&PatternSpec {
            user: "u%d",
            first: 7,
            count: 1,
            domain: "d",
            password: "p",
            impi: Some("%u@d"),
            aka: None,
            tel: None,
        })
        .unwrap();
        assert_eq!(u[0].impi, "u7@d");
        assert!(matches!(
            from_spec(&PatternSpec {
                impi: Some("fixed@d"),
                ..PatternSpec {
                    user: "u%d",
                    first: 1,
                    count: 1,
                    domain: "d",
                    password: "p",
                    impi: None,
                    aka: None,
                    tel: None,
                }
            }),
            Err(PopulationError::ImpiPatternConstant(_))
        ));
        assert_eq!(
            aka_subscription(K1, Some(OP1), Some(OPC1), None, None)
                .unwrap_err()
                .column(),
            "opc"
        );
    }

    #[test]
    fn tel_impus_from_pattern_and_csv() {
        let spec = PatternSpec {
            user: "user%04d",
            first: 7,
            count: 2,
            domain: "d",
            password: "pw",
            impi: None,
            aka: None,
            tel: Some("+1555%07d"),
        };
        let u = from_spec(&spec).unwrap();
        assert_eq!(u[0].tel.as_deref(), Some("tel:+15550000007"));
        assert_eq!(u[1].tel.as_deref(), Some("tel:+15550000008"));
        for (bad, why) in [
            ("1555%07d", "must start with +"),
            ("+1555", "no %d"),
            ("+15x%d", "not + followed by digits"),
        ] {
            let e = from_spec(&PatternSpec {
                tel: Some(bad),
                ..spec.clone()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }

        let u = parse_csv(
            "t.csv",
            &format!(
                "impu,impi,k,opc,tel\na@d,a@d,{K1},{OPC1},tel:+15550001\nb@d,b@d,{K1},{OPC1},\n"
            ),
        )
        .unwrap();
        assert_eq!(u[0].tel.as_deref(), Some("tel:+15550001"));
        assert_eq!(u[1].tel, None);
        let e = parse_csv("t.csv", "impu,impi,password,tel\na@d,a@d,pw,+15550001\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.csv:2") && e.contains("column tel") && e.contains("tel: URI"),
            "{e}"
        );
        // the lab's subscriber file, positional: tel is column 8
        let u = parse_csv(
            "p.csv",
            &format!("a@d,a@d,,{K1},{OPC1},8000,0,tel:+4930123\n"),
        )
        .unwrap();
        assert_eq!(u[0].tel.as_deref(), Some("tel:+4930123"));
    }

    #[test]
    fn instance_ids_per_user() {
        let mut u = from_pattern("user%04d", 1, 2, "d", "pw").unwrap();
        set_instances(&mut u, "urn:gsma:imei:35209900-%06d-0", 1).unwrap();
        assert_eq!(
            u[0].instance.as_deref(),
            Some("urn:gsma:imei:35209900-000001-0")
        );
        assert_eq!(
            u[1].instance.as_deref(),
            Some("urn:gsma:imei:35209900-000002-0")
        );
        let e = set_instances(&mut u, "urn:gsma:imei:35209900-000001-0", 1).unwrap_err();
        assert!(e.to_string().contains("same device"), "{e}");
        let e = set_instances(&mut u, "35209900-%06d-0", 1).unwrap_err();
        assert!(e.to_string().contains("URN"), "{e}");
    }
}
