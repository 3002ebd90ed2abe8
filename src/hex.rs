//! Hex, the one way the crate writes and reads it: lowercase out; in, either case with an
//! optional `0x`, surrounding space ignored (keys come from the command line and from CSV
//! files that people type), and errors that quote what was given.

/// Why a string is not the hex that was asked for. The text is quoted; callers put the field's
/// name in front ("K", "opc", ...).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("{text:?} has {digits} hex digits, need {need}")]
    Length {
        text: String,
        digits: usize,
        need: usize,
    },
    #[error("{text:?} is not hex")]
    NotHex { text: String },
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `b`.
pub fn encode(b: &[u8]) -> String {
    let mut out = vec![0u8; 2 * b.len()];
    encode_to_slice(b, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Lowercase hex of `b` into `out` (`2 * b.len()` bytes), for callers that keep it on the
/// stack (the digest computation chains three MD5 hexes per response).
pub fn encode_to_slice(b: &[u8], out: &mut [u8]) {
    assert_eq!(out.len(), 2 * b.len(), "hex needs two digits per byte");
    for (x, o) in b.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[(x >> 4) as usize];
        o[1] = DIGITS[(x & 15) as usize];
    }
}

/// The digits of `s` without surrounding space and an optional `0x`.
fn digits(s: &str) -> &str {
    let t = s.trim();
    t.strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t)
}

fn nibble(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Decodes hex digits pairwise into `out`, which is exactly half as long as `t`.
fn decode_into(s: &str, t: &str, out: &mut [u8]) -> Result<(), HexError> {
    // Byte-wise, never by `&str` slices: a multi-byte character would put a cut off a char
    // boundary (a panic), and `u8::from_str_radix` would take `+` for a sign.
    let not_hex = || HexError::NotHex { text: s.into() };
    for (o, pair) in out.iter_mut().zip(t.as_bytes().chunks_exact(2)) {
        *o = (nibble(pair[0]).ok_or_else(not_hex)? << 4) | nibble(pair[1]).ok_or_else(not_hex)?;
    }
    Ok(())
}

/// Exactly `N` bytes of hex.
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let t = digits(s);
    if t.len() != 2 * N {
        return Err(HexError::Length {
            text: s.into(),
            digits: t.len(),
            need: 2 * N,
        });
    }
    let mut out = [0u8; N];
    decode_into(s, t, &mut out)?;
    Ok(out)
}

/// Any even number of hex digits.
pub fn decode_vec(s: &str) -> Result<Vec<u8>, HexError> {
    let t = digits(s);
    if t.len() % 2 != 0 {
        return Err(HexError::Length {
            text: s.into(),
            digits: t.len(),
            need: t.len() + 1,
        });
    }
    let mut out = vec![0u8; t.len() / 2];
    decode_into(s, t, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_either_case_and_prefix() {
        assert_eq!(decode::<2>("0aFf"), Ok([10, 255]));
        assert_eq!(decode::<2>(" 0x8000 "), Ok([0x80, 0]));
        assert_eq!(decode_vec("0Xabcd"), Ok(vec![0xab, 0xcd]));
        assert_eq!(decode_vec(""), Ok(vec![]));
        assert_eq!(encode(&[1, 0xab]), "01ab");
        let mut buf = [0u8; 4];
        encode_to_slice(&[0xfe, 0x0d], &mut buf);
        assert_eq!(&buf, b"fe0d");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = decode::<16>("00").unwrap_err();
        assert_eq!(e.to_string(), "\"00\" has 2 hex digits, need 32");
        assert!(decode::<2>("zz00")
            .unwrap_err()
            .to_string()
            .contains("not hex"));
        assert!(decode_vec("abc")
            .unwrap_err()
            .to_string()
            .contains("3 hex digits"));
        assert!(decode_vec("zz")
            .unwrap_err()
            .to_string()
            .contains("not hex"));
    }

    /// Found by the `digest` fuzz target: a key with a multi-byte character where a digit pair is
    /// cut (K and OPc come from the command line and the subscriber CSV) panicked on a char
    /// boundary instead of being refused; `+` was taken as a sign by `from_str_radix`.
    #[test]
    fn non_hex_characters_are_refused_without_panicking() {
        for s in ["a\u{fffd}", "0xé00", "+a+b"] {
            assert!(decode::<2>(s).unwrap_err().to_string().contains("not hex"));
        }
        assert!(decode::<1>("é")
            .unwrap_err()
            .to_string()
            .contains("not hex"));
        assert!(decode_vec("é").unwrap_err().to_string().contains("not hex"));
    }
}
