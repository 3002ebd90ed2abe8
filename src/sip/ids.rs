//! Identifiers we generate (Via branch, Call-ID, tags) carry the index of what they belong to, so
//! a response finds its transaction or call in O(1) without a string-keyed map, and a stale reply
//! (from an earlier run, or for a slot that has been reused) is recognised by its run token and
//! generation instead of being mistaken for a current one.
//!
//! Layout: `z9hG4bK` magic cookie (RFC 3261 §8.1.1.7), then `<run>.<slot>.<gen>` in lowercase hex.

use std::fmt::Write as _;

pub const MAGIC: &str = "z9hG4bK";

/// A slot in a table plus the generation of its occupant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub slot: u32,
    pub gen: u32,
}

/// Writes and reads identifiers for one run (one worker of one process).
#[derive(Clone, Debug)]
pub struct IdScheme {
    run: u32,
    prefix: String,
}

impl IdScheme {
    pub fn new(run: u32) -> Self {
        IdScheme {
            run,
            prefix: format!("{run:x}."),
        }
    }

    /// A scheme whose identifiers start with `tag` (a letter that is not a hex digit) before the
    /// run: no plain scheme ever parses them, whatever the runs, so two roles sharing a socket
    /// tell their responses apart by branch alone.
    pub fn tagged(tag: char, run: u32) -> Self {
        debug_assert!(!tag.is_ascii_hexdigit());
        IdScheme {
            run,
            prefix: format!("{tag}{run:x}."),
        }
    }

    pub fn run(&self) -> u32 {
        self.run
    }

    /// A branch for transaction `key`; `tag` separates kinds of transaction sharing a table.
    pub fn branch(&self, key: Key) -> String {
        let mut s = String::with_capacity(32);
        self.write_branch(&mut s, key);
        s
    }

    /// [`IdScheme::branch`] appended to `out` (a Via being written), with no string of its own.
    pub fn write_branch(&self, out: &mut impl std::fmt::Write, key: Key) {
        let _ = write!(out, "{MAGIC}{}{:x}.{:x}", self.prefix, key.slot, key.gen);
    }

    pub fn parse_branch(&self, branch: &str) -> Option<Key> {
        self.parse_body(branch.strip_prefix(MAGIC)?)
    }

    /// A Call-ID for call (or registration) `key`: `<kind><run>.<slot>.<gen>@<ip>`, inline
    /// (no allocation per call): at most 1 + 10 + 8 + 1 + 8 + 1 + 45 (an IPv6 address) bytes.
    pub fn call_id(&self, kind: char, key: Key, host: std::net::IpAddr) -> CallId {
        let mut s = CallId::new();
        self.write_call_id(&mut s, kind, key, host);
        s
    }

    /// [`IdScheme::call_id`] with any host (a name may be long), appended to `out`.
    pub fn write_call_id(
        &self,
        out: &mut impl std::fmt::Write,
        kind: char,
        key: Key,
        host: impl std::fmt::Display,
    ) {
        let _ = write!(
            out,
            "{kind}{}{:x}.{:x}@{host}",
            self.prefix, key.slot, key.gen
        );
    }

    /// The kind letter and key of a Call-ID we made, `None` for anybody else's.
    pub fn parse_call_id(&self, call_id: &str) -> Option<(char, Key)> {
        let mut chars = call_id.chars();
        let kind = chars.next()?;
        let rest = chars.as_str();
        let local = rest.split('@').next()?;
        Some((kind, self.parse_body(local)?))
    }

    fn parse_body(&self, s: &str) -> Option<Key> {
        let rest = s.strip_prefix(&self.prefix)?;
        let (slot, gen) = rest.split_once('.')?;
        Some(Key {
            slot: u32::from_str_radix(slot, 16).ok()?,
            gen: u32::from_str_radix(gen, 16).ok()?,
        })
    }
}

/// A Call-ID we generate ([`IdScheme::call_id`]).
pub type CallId = arrayvec::ArrayString<80>;

/// A tag or cnonce we generate: up to 16 hex digits, inline.
pub type Token = arrayvec::ArrayString<16>;

/// A random token for tags and cnonces.
pub fn token(rng: &mut impl rand::Rng) -> Token {
    let mut t = Token::new();
    let _ = write!(t, "{:x}", rng.random::<u64>());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_ids() {
        let ids = IdScheme::new(0xabc);
        let k = Key { slot: 42, gen: 7 };
        let b = ids.branch(k);
        assert!(b.starts_with("z9hG4bK"));
        assert_eq!(ids.parse_branch(&b), Some(k));
        assert_eq!(IdScheme::new(0xabd).parse_branch(&b), None);
        assert_eq!(ids.parse_branch("z9hG4bKforeign"), None);
        let c = ids.call_id('r', k, "127.0.0.1".parse().unwrap());
        assert_eq!(ids.parse_call_id(&c), Some(('r', k)));
        assert_eq!(ids.parse_call_id("abc@host"), None);
        let tagged = IdScheme::tagged('u', 0xabc);
        let tb = tagged.branch(k);
        assert_eq!(tagged.parse_branch(&tb), Some(k));
        assert_eq!(ids.parse_branch(&tb), None);
        assert_eq!(tagged.parse_branch(&b), None);
    }
}
