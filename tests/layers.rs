//! The layers the README's "Architecture" section draws, held by a test: each room of `src/`
//! (a top-level module) may name only the rooms listed for it here, so an upward import (the
//! SIP layer reaching for the load engine, the user-agent layer for a runtime) fails CI with
//! the line that made it. This is what a Cargo workspace would make the compiler check; why the
//! crate is not split (yet) is in docs/architecture.md.
//!
//! A reference is `crate::<room>` outside a comment. Doc links in comments may name any room:
//! saying who uses a layer is not depending on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each room and the rooms it may use, from the bottom up. Shared leaves (`hex`, `slab`,
/// `clock`, `exit`, `shutdown`, `chart`, `metrics`) know nothing of SIP, load or probes.
const ROOMS: &[(&str, &[&str])] = &[
    ("hex", &[]),
    ("clock", &[]),
    ("exit", &[]),
    ("shutdown", &[]),
    ("chart", &[]),
    ("metrics", &[]),
    ("diameter", &[]),
    ("logging", &["clock"]),
    // The SIP layer: messages, transactions, auth. Nothing above it.
    ("sip", &["hex"]),
    ("slab", &["sip"]),
    ("ipsec", &["sip"]),
    // The user-agent layer: sans-IO roles over the SIP layer, no runtime, no engine.
    ("ua", &["sip", "slab", "ipsec"]),
    ("media", &["sip", "slab", "ua"]),
    // The thin runtime and the HEP tap it feeds (the tap's sender batches with `io::udp`).
    ("io", &["clock", "hep", "sip"]),
    ("hep", &["io"]),
    // Engines.
    ("target", &["hep", "hex", "io", "shutdown", "sip", "ua"]),
    ("hss", &["diameter", "exit", "hex", "sip"]),
    (
        "probe",
        &[
            "chart", "clock", "diameter", "exit", "hep", "io", "metrics", "shutdown", "sip",
        ],
    ),
    (
        "load",
        &[
            "chart", "clock", "exit", "hep", "hex", "io", "ipsec", "media", "metrics", "probe",
            "profile", "shutdown", "sip", "slab", "target", "ua",
        ],
    ),
    ("profile", &["load", "sip"]),
    (
        "trials",
        &[
            "chart", "clock", "exit", "metrics", "probe", "profile", "shutdown", "sip",
        ],
    ),
    // The fuzz harness bodies drive every layer through its public face.
    (
        "fuzzing",
        &[
            "diameter", "hex", "hss", "load", "media", "probe", "sip", "target",
        ],
    ),
];

/// The rooms each room of `src/` names, with one line per reference for the message.
fn references(src: &Path) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let room = path.file_stem().unwrap().to_string_lossy().into_owned();
        if room == "bin" || room == "lib" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        let uses = out.entry(room.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = match line.find("//") {
                    Some(i) => &line[..i],
                    None => line,
                };
                for (i, _) in code.match_indices("crate::") {
                    let rest = &code[i + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != room {
                        uses.entry(name).or_default().push(format!(
                            "{}:{}: {}",
                            f.display(),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    out
}

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if p.extension().is_some_and(|e| e == "rs") {
        out.push(p.to_path_buf());
    }
}

#[test]
fn every_room_uses_only_the_rooms_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ROOMS
        .iter()
        .map(|(r, deps)| (*r, deps.iter().copied().collect()))
        .collect();
    let found = references(&src);
    let mut wrong = Vec::new();
    for (room, uses) in &found {
        let Some(ok) = allowed.get(room.as_str()) else {
            wrong.push(format!(
                "src/{room} is a room this test does not know: add it to ROOMS with what it may use"
            ));
            continue;
        };
        for (used, lines) in uses {
            if !ok.contains(used.as_str()) {
                wrong.push(format!(
                    "{room} uses {used}, which is not below it:\n    {}",
                    lines.join("\n    ")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    // The list says no more than the tree does: a room listed with a use it no longer has
    // would let that use come back unnoticed.
    for (room, deps) in ROOMS {
        let uses = found.get(*room).unwrap_or_else(|| panic!("no src/{room}"));
        for d in *deps {
            assert!(
                uses.contains_key(*d),
                "ROOMS lets {room} use {d}, which it no longer does: take it out"
            );
        }
    }
}
