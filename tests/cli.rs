//! The one exit-code policy of the three binaries (README, "Exit codes"): a usage or setup error
//! exits 2 with a message naming the problem; `imsload --dry-run` prints the resolved settings.
//! Nothing here sends a packet.

use std::path::Path;
use std::process::{Command, Output};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");
const IMSPROBE: &str = env!("CARGO_BIN_EXE_imsprobe");
const IMSHSS: &str = env!("CARGO_BIN_EXE_imshss");

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"))
}

/// Exit 2, and stderr names every one of `want`.
fn assert_usage_error(bin: &str, args: &[&str], want: &[&str]) {
    let out = run(bin, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {err}");
    for w in want {
        assert!(err.contains(w), "{bin} {args:?}: {w:?} not in {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_bad_flag_exits_2_naming_it() {
    for bin in [IMSLOAD, IMSPROBE, IMSHSS] {
        assert_usage_error(bin, &["--no-such-flag"], &["--no-such-flag"]);
    }
    assert_usage_error(
        IMSLOAD,
        &["--transport", "sctp"],
        &["sctp", "--transport", "udp", "tcp"],
    );
    assert_usage_error(
        IMSLOAD,
        &["--call-hold", "5s"],
        &["--call-hold", "AFTER,LENGTH"],
    );
    assert_usage_error(
        IMSLOAD,
        &["--call-hold", "5s,3s,mute"],
        &["mute", "sendonly", "inactive"],
    );
}

#[test]
fn a_missing_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    assert_usage_error(
        IMSLOAD,
        &["--profile", missing, "--dry-run"],
        &["cannot read profile", missing],
    );
    let csv = dir.path().join("missing.csv");
    let csv = csv.to_str().unwrap();
    // Read before anything is bound or sent.
    assert_usage_error(
        IMSLOAD,
        &["--users-file", csv, "--duration", "1s", "--quiet"],
        &[csv],
    );
    assert_usage_error(IMSLOAD, &["merge", csv], &[csv]);
    let pcap = dir.path().join("missing.pcap");
    let pcap = pcap.to_str().unwrap();
    assert_usage_error(IMSPROBE, &["--pcap-only", pcap], &[pcap]);
    assert_usage_error(IMSHSS, &["--subscribers", csv], &[csv]);
}

#[test]
fn dry_run_with_a_profile_prints_the_resolved_settings() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/smoke.toml");
    let out = run(
        IMSLOAD,
        &[
            "--profile",
            p.to_str().unwrap(),
            "--dry-run",
            "--transport",
            "tcp",
            "--users",
            "12",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("settings: 12 users"), "{text}");
    let json = text
        .split_once("resolved settings")
        .unwrap_or_else(|| panic!("no resolved settings in {text}"))
        .1;
    let json: serde_json::Value = serde_json::from_str(json.split_once('\n').unwrap().1)
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(json["users"], 12);
    assert_eq!(json["transport"], "tcp");
    assert_eq!(json["profile"], p.to_str().unwrap());
    for key in [
        "arrival",
        "hold",
        "hold_dist",
        "ring",
        "cps",
        "reg_rate",
        "mix",
    ] {
        assert!(json.get(key).is_some(), "{key} missing: {json}");
    }
}
