//! The one exit-code policy of the three binaries (README, "Exit codes"): a usage or setup error
//! exits 2 with a message naming the problem; `imsload --dry-run` prints the resolved settings.
//! And the one way the three report diagnostics (`imsload::logging`): stamped lines on stderr,
//! more with `-v`, filtered by `RUST_LOG`. Nothing here sends a packet but one TCP connection
//! to an imshss on loopback (and imsload's embedded target, which binds a loopback port, is
//! stopped before any user registers).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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

/// imshss on a loopback port of its choosing, until SIGTERM; returns its exit code and stderr.
/// `connect` opens and closes one TCP connection first (found from the "listening on" line).
fn imshss_lines(args: &[&str], rust_log: Option<&str>, connect: bool) -> (Option<i32>, String) {
    use std::io::Read;
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let subs = dir.path().join("subscribers.csv");
    std::fs::write(
        &subs,
        "impu,impi,password,k,opc,amf,sqn\nsip:u1@ims.local,u1@ims.local,pw,\
465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000001\n",
    )
    .unwrap();
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(IMSHSS);
    cmd.args(["--listen", "127.0.0.1:0", "--subscribers"])
        .arg(&subs)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    if let Some(f) = rust_log {
        cmd.env("RUST_LOG", f);
    }
    let child = cmd.spawn().expect("spawn imshss");
    let read = || {
        let mut s = String::new();
        std::fs::File::open(&err_path)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let t0 = Instant::now();
    if connect {
        let port = loop {
            let text = read();
            if let Some(p) = text
                .lines()
                .find_map(|l| l.split_once("listening on 127.0.0.1:"))
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<u16>().ok())
            {
                break p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no listening line: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to imshss"));
        // The HSS logs the connection and its close: wait for the close before stopping it.
        while !read().contains(": closed") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no close line: {}",
                read()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    } else {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(common::send_signal(child.id() as i32, libc::SIGTERM));
    let out = common::wait_bounded(child, Duration::from_secs(10), "imshss after SIGTERM");
    (out.status.code(), read())
}

#[test]
fn diagnostics_are_stamped_lines_that_verbosity_and_rust_log_control() {
    // Default: info lines, each stamped in RFC 3339 UTC (the records' form), no module path.
    let (code, err) = imshss_lines(&[], None, true);
    assert_eq!(code, Some(0), "{err}");
    let info: Vec<&str> = err.lines().filter(|l| l.contains(" INFO ")).collect();
    for want in [
        "listening on 127.0.0.1:",
        "connection from 127.0.0.1:",
        ": closed",
        "stopped",
    ] {
        assert!(
            info.iter().any(|l| l.contains(want)),
            "{want:?} not in {err}"
        );
    }
    for l in &info {
        let stamp = l.split_whitespace().next().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'),
            "not an RFC 3339 UTC stamp: {l}"
        );
        assert!(!l.contains("imsload::hss"), "module path without -v: {l}");
    }
    // -v: the module each line comes from.
    let (code, err) = imshss_lines(&["-v"], None, true);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("imsload::hss::server: listening on")),
        "{err}"
    );
    // RUST_LOG overrides the default: at warn, none of those lines.
    let (code, err) = imshss_lines(&[], Some("warn"), false);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains(" INFO "), "{err}");
    // A filter that does not parse is named, and the default used.
    let (code, err) = imshss_lines(&[], Some("imsload=[bad"), true);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("RUST_LOG=\"imsload=[bad\" is not a valid filter"),
        "{err}"
    );
    assert!(
        err.contains(" INFO ") && err.contains("listening on"),
        "{err}"
    );
}

/// An error found after the embedded target started (no --target) ends the run with exit 2,
/// naming it; it hung before: the target's thread kept the runtime's drop waiting, and the
/// signal watcher was gone with the runtime, so only SIGKILL ended it.
#[test]
fn an_error_after_the_embedded_target_started_still_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("missing.wav");
    let wav = wav.to_str().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    // Each case, and what its error must name.
    for (late_error, named) in [
        (["--media", "g711", "--media-file", wav].as_slice(), wav),
        (["--metrics", &addr].as_slice(), addr.as_str()),
    ] {
        let mut args = late_error.to_vec();
        args.extend(["--users", "4", "--cps", "2", "--duration", "2s", "--quiet"]);
        let child = Command::new(IMSLOAD)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("imsload");
        let out = common::wait_bounded(child, Duration::from_secs(20), &format!("{args:?}"));
        let (code, err) = (out.status.code(), String::from_utf8_lossy(&out.stderr));
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
}
