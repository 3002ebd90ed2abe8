//! Who the simulated users are: identities and passwords, from a printf-style pattern or a CSV
//! file of `impu,impi,password`.

use std::path::Path;

/// One subscriber as the network knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Public identity (IMPU) without the `sip:` scheme, e.g. `user0001@ims.local`.
    pub impu: String,
    /// Private identity (IMPI), the digest username.
    pub impi: String,
    pub password: String,
}

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
    #[error("cannot read users file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {why} (expected: impu,impi,password — e.g. sip:alice@ims.local,alice@ims.local,secret)")]
    BadLine {
        path: String,
        line: usize,
        why: String,
    },
    #[error("users file {0} holds no users")]
    Empty(String),
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
    if expand_index(pattern, 0).is_none() {
        return Err(PopulationError::PatternWithoutIndex(pattern.to_string()));
    }
    Ok((0..count as u64)
        .map(|k| {
            let idx = first + k;
            let user = expand_index(pattern, idx).unwrap_or_default();
            let pw_rule = password_rule.replace("%u", &user);
            let password = expand_index(&pw_rule, idx).unwrap_or(pw_rule);
            Identity {
                impu: format!("{user}@{domain}"),
                impi: user,
                password,
            }
        })
        .collect())
}

/// Users from a CSV file of `impu,impi,password` (a header line starting with `impu` and lines
/// starting with `#` are skipped; `sip:` in front of the IMPU is optional).
pub fn from_csv(path: &Path) -> Result<Vec<Identity>, PopulationError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PopulationError::Read {
        path: p.clone(),
        source,
    })?;
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (n == 0 && line.starts_with("impu")) {
            continue;
        }
        let bad = |why: &str| PopulationError::BadLine {
            path: p.clone(),
            line: n + 1,
            why: why.to_string(),
        };
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        if cols.len() < 3 {
            return Err(bad(&format!("{} columns, need 3", cols.len())));
        }
        let impu = cols[0].strip_prefix("sip:").unwrap_or(cols[0]);
        if !impu.contains('@') || impu.starts_with('@') {
            return Err(bad(&format!(
                "public identity {:?} is not user@domain",
                cols[0]
            )));
        }
        if cols[1].is_empty() {
            return Err(bad("private identity is empty"));
        }
        users.push(Identity {
            impu: impu.to_string(),
            impi: cols[1].to_string(),
            password: cols[2].to_string(),
        });
    }
    if users.is_empty() {
        return Err(PopulationError::Empty(p));
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
}
