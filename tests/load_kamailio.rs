//! imsload against real peers: Kamailio from Debian (lab/kamailio/kamailio.cfg) as the P-CSCF,
//! and SIPp as the answering side and as the caller. The binary is run as a user runs it; the
//! assertions read its JSON report and Kamailio's own location table.

mod common;

use common::*;
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");

fn kam(users: usize, invite_auth: bool) -> Kamailio {
    Kamailio::start(KamailioOpts {
        users,
        invite_auth,
        ..KamailioOpts::default()
    })
    .expect("kamailio start")
}

struct Run {
    code: i32,
    report: Value,
    stdout: String,
    stderr: String,
}

fn spawn(args: &[&str], report: &Path) -> Child {
    Command::new(IMSLOAD)
        .args(args)
        .arg("--report")
        .arg(report)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run imsload")
}

fn finish(child: Child, report: &Path, limit: Duration) -> Run {
    let out = wait_bounded(child, limit, "imsload");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("no report ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let report: Value = serde_json::from_str(&text).expect("the report is valid JSON");
    Run {
        code: out.status.code().unwrap_or(-1),
        report,
        stdout,
        stderr,
    }
}

fn run(args: &[&str], limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    finish(spawn(args, &report), &report, limit)
}

fn counter(r: &Run, name: &str) -> u64 {
    r.report["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {}", r.report))
}

fn explain(r: &Run) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    )
}

/// Polls `f` until it returns true or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn two_hundred_users_register_call_and_deregister_through_kamailio() {
    let k = kam(200, false);
    let target = k.addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let series = dir.path().join("series.csv");
    let child = spawn(
        &[
            "--target",
            &target,
            "--users",
            "200",
            "--reg-rate",
            "400",
            "--cps",
            "20",
            "--calls",
            "60",
            "--hold",
            "1s",
            "--duration",
            "30s",
            "--workers",
            "2",
            "--series",
            series.to_str().unwrap(),
        ],
        &report,
    );
    // Kamailio's own table must show all 200 while the calls run.
    let mut seen = 0;
    let all = wait_for(Duration::from_secs(20), || {
        seen = k.registered_contacts().unwrap_or(0);
        seen == 200
    });
    let r = finish(child, &report, Duration::from_secs(60));
    assert!(
        all,
        "Kamailio saw {seen} contacts, not 200\n{}",
        explain(&r)
    );
    assert_eq!(r.code, 0, "{}", explain(&r));
    assert_eq!(counter(&r, "reg_attempts"), 200);
    assert_eq!(counter(&r, "reg_ok"), 200, "{}", explain(&r));
    assert_eq!(counter(&r, "reg_failed"), 0);
    assert_eq!(counter(&r, "calls_attempted"), 60);
    assert_eq!(counter(&r, "calls_answered"), 60, "{}", explain(&r));
    assert_eq!(counter(&r, "calls_completed"), 60);
    // Kamailio's tm sends 100 Trying before the callee's 180, and its children may relay our
    // back-to-back 180 and 200 out of order: a call counts as ringing when a 180 came first, so
    // not all 60 need to; none at all would mean the 100 hid the 180 (a bug seen once).
    let ringing = counter(&r, "calls_ringing");
    assert!((1..=60).contains(&ringing), "{ringing}");
    // Both sides of every call are ours: 60 INVITEs answered, 60 BYEs received.
    assert_eq!(counter(&r, "uas_invites"), 60);
    assert_eq!(counter(&r, "uas_byes"), 60);
    assert_eq!(counter(&r, "dereg_ok"), 200);
    // Kamailio challenges every REGISTER procedure: 200 registrations + 200 de-registrations.
    assert_eq!(r.report["status_codes"]["REGISTER 401"], 400);
    assert_eq!(
        r.report["rfc6076"]["session_establishment_ratio_pct"],
        100.0
    );
    assert_eq!(
        r.report["rfc6076"]["registration_request_delay"]["count"],
        200
    );
    assert_eq!(
        k.registered_contacts().unwrap(),
        0,
        "de-registration leaves the location table empty"
    );
    // The per-second series has a header and one row per second, each with the counters.
    let csv = std::fs::read_to_string(&series).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert!(header.contains(&"calls_answered") && header.contains(&"registered"));
    let col = header.iter().position(|h| *h == "calls_answered").unwrap();
    let answered: u64 = lines
        .map(|l| l.split(',').nth(col).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(answered, 60, "the series adds up to the totals");
}

#[test]
fn wrong_passwords_are_rejected_and_counted() {
    let k = kam(20, false);
    let r = run(
        &[
            "--target",
            &k.addr().to_string(),
            "--users",
            "20",
            "--password",
            "wrong_%u",
            "--cps",
            "0",
            "--duration",
            "1s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 1, "failures give exit code 1\n{}", explain(&r));
    assert_eq!(counter(&r, "reg_attempts"), 20);
    assert_eq!(counter(&r, "reg_ok"), 0);
    assert_eq!(counter(&r, "reg_failed"), 20);
    assert_eq!(counter(&r, "reg_auth_rejected"), 20);
    assert_eq!(
        r.report["rfc6076"]["ineffective_registration_attempts_pct"],
        100.0
    );
    assert_eq!(k.registered_contacts().unwrap(), 0);
}

#[test]
fn calls_over_tcp_through_kamailio() {
    let k = kam(20, false);
    let r = run(
        &[
            "--target",
            &k.addr().to_string(),
            "--transport",
            "tcp",
            "--users",
            "20",
            "--cps",
            "10",
            "--calls",
            "20",
            "--hold",
            "500ms",
            "--duration",
            "20s",
            "--workers",
            "1",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}", explain(&r));
    assert_eq!(counter(&r, "reg_ok"), 20);
    assert_eq!(counter(&r, "calls_answered"), 20, "{}", explain(&r));
    assert_eq!(counter(&r, "calls_completed"), 20);
    assert_eq!(counter(&r, "retransmits"), 0, "no retransmissions over TCP");
    assert_eq!(counter(&r, "dereg_ok"), 20);
    assert_eq!(k.registered_contacts().unwrap(), 0);
}

#[test]
fn invite_challenge_is_answered() {
    let k = kam(10, true);
    let r = run(
        &[
            "--target",
            &k.addr().to_string(),
            "--users",
            "10",
            "--cps",
            "10",
            "--calls",
            "10",
            "--hold",
            "200ms",
            "--duration",
            "20s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}", explain(&r));
    assert_eq!(r.report["status_codes"]["INVITE 407"], 10, "{}", r.report);
    assert_eq!(
        counter(&r, "calls_attempted"),
        10,
        "auth rounds are not new attempts"
    );
    assert_eq!(counter(&r, "calls_answered"), 10);
    assert_eq!(counter(&r, "calls_completed"), 10);
}

#[test]
fn calls_sipp_uas_without_registration() {
    if !sipp_or_skip("calls_sipp_uas_without_registration") {
        return;
    }
    let uas = Sipp::uas().expect("sipp uas");
    let ruri = format!("sip:service@{}", uas.addr());
    let r = run(
        &[
            "--target",
            &uas.addr().to_string(),
            "--ruri",
            &ruri,
            "--cps",
            "50",
            "--calls",
            "100",
            "--hold",
            "100ms",
            "--duration",
            "20s",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 0, "{}\nsipp: {}", explain(&r), uas.log_tail());
    assert_eq!(counter(&r, "reg_attempts"), 0);
    assert_eq!(counter(&r, "calls_attempted"), 100);
    assert_eq!(counter(&r, "calls_answered"), 100);
    assert_eq!(counter(&r, "calls_completed"), 100);
}

#[test]
fn sipp_uac_calls_the_embedded_target() {
    if !sipp_or_skip("sipp_uac_calls_the_embedded_target") {
        return;
    }
    let port = free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Command::new(IMSLOAD)
        .args(["serve", "--listen", &listen, "--duration", "40s", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = listen.parse().unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || options_ping(
            addr,
            Duration::from_millis(300)
        )
        .is_ok()),
        "imsload serve does not answer OPTIONS"
    );
    let res = run_sipp_uac(addr, 50, 25, 30).expect("sipp uac ran");
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(res.all_ok(50), "{res:?}");
}

#[test]
fn interrupt_deregisters_and_writes_the_report() {
    let k = kam(30, false);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let child = spawn(
        &[
            "--target",
            &k.addr().to_string(),
            "--users",
            "30",
            "--cps",
            "20",
            "--hold",
            "30s",
        ],
        &report,
    );
    assert!(wait_for(Duration::from_secs(20), || k
        .registered_contacts()
        .unwrap_or(0)
        == 30));
    std::thread::sleep(Duration::from_secs(2));
    assert!(send_signal(child.id() as i32, SIGINT), "SIGINT");
    let r = finish(child, &report, Duration::from_secs(30));
    assert_eq!(r.report["stop_reason"], "interrupted", "{}", explain(&r));
    let answered = counter(&r, "calls_answered");
    assert!(answered >= 20, "{}", explain(&r));
    // Calls held for 30 s were ended by BYE at the interrupt, not abandoned.
    assert_eq!(counter(&r, "calls_completed"), answered);
    assert_eq!(counter(&r, "dereg_ok"), 30);
    assert_eq!(k.registered_contacts().unwrap(), 0);
}

#[test]
fn hostile_datagrams_are_counted_not_fatal() {
    let k = kam(10, false);
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report: PathBuf = dir.path().join("r.json");
    let child = spawn(
        &[
            "--target",
            &k.addr().to_string(),
            "--users",
            "10",
            "--cps",
            "5",
            "--calls",
            "10",
            "--hold",
            "1s",
            "--duration",
            "20s",
            "--workers",
            "1",
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
        &report,
    );
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let junk: [&[u8]; 5] = [
        b"HELLO WORLD\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x\r\n", // truncated
        b"INVITE sip:x SIP/2.0\r\nContent-Length: 9999\r\n\r\n", // body shorter: truncated
        // Over the 64 KiB body limit; 2^64-1 used to wrap the bounds check (issue 10).
        b"INVITE sip:x SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKnotours\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
    ];
    for j in junk {
        s.send_to(j, ("127.0.0.1", port)).unwrap();
    }
    let r = finish(child, &report, Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}", explain(&r));
    assert_eq!(counter(&r, "malformed"), 4, "{}", r.report);
    // The forged response is stray; on a loaded machine a late 2xx retransmission may be too.
    assert!(counter(&r, "stray_responses") >= 1, "{}", r.report);
    assert_eq!(counter(&r, "calls_completed"), 10);
    let kinds = &r.report["malformed_by_kind"];
    assert_eq!(kinds["truncated"], 2, "{kinds}");
    assert_eq!(kinds["bad_start_line"], 1, "{kinds}");
    assert_eq!(kinds["bad_content_length"], 1, "{kinds}");
}

#[test]
fn silent_target_ends_with_counted_timeouts_not_a_hang() {
    // Nothing listens on this port: every REGISTER times out after 64·T1 (T1 = 50 ms here).
    let port = free_port().unwrap();
    let t0 = Instant::now();
    let r = run(
        &[
            "--target",
            &format!("127.0.0.1:{port}"),
            "--users",
            "4",
            "--t1",
            "50ms",
            "--duration",
            "1s",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, 1, "{}", explain(&r));
    assert_eq!(counter(&r, "reg_timeouts"), 4);
    assert_eq!(r.report["status_codes"]["REGISTER timeout"], 4);
    // Timer E retransmissions are ours and counted as such: 50, 100, 200, 400 ms, then every
    // 4 s would be T2, but 64·T1 = 3.2 s ends it first.
    assert!(counter(&r, "retransmits") >= 4 * 5, "{}", r.report);
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(
        r.stdout.contains("no user registered"),
        "the summary says what went wrong\n{}",
        r.stdout
    );
}

/// `--ue-ports users`: every user registers from its own port, so Kamailio's location table
/// holds one contact per user at a distinct address:port (with one socket per worker it holds
/// as many contacts, but at one or two ports), and calls still complete between them.
#[test]
fn ue_ports_give_each_user_its_own_contact_port_in_kamailio() {
    let k = kam(40, false);
    let target = k.addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let child = spawn(
        &[
            "--target",
            &target,
            "--users",
            "40",
            "--ue-ports",
            "users",
            "--workers",
            "2",
            "--reg-rate",
            "200",
            "--cps",
            "10",
            "--calls",
            "20",
            "--hold",
            "500ms",
            "--duration",
            "20s",
        ],
        &report,
    );
    let mut contacts = Vec::new();
    let all = wait_for(Duration::from_secs(20), || {
        contacts = k.contact_addresses().unwrap_or_default();
        contacts.len() == 40
    });
    let r = finish(child, &report, Duration::from_secs(60));
    assert!(all, "Kamailio holds {contacts:?}\n{}", explain(&r));
    let port = |addr: &str| -> String {
        // sip:user0001@127.0.0.1:40123;transport=udp → 127.0.0.1:40123
        let hp = addr.split('@').nth(1).unwrap_or("");
        hp.split([';', '>']).next().unwrap_or("").to_string()
    };
    let ports: std::collections::HashSet<String> = contacts.iter().map(|(_, a)| port(a)).collect();
    assert_eq!(ports.len(), 40, "one address:port per user: {contacts:?}");
    for (aor, addr) in &contacts {
        let user = aor.split('@').next().unwrap();
        assert!(addr.starts_with(&format!("sip:{user}@")), "{aor} → {addr}");
    }
    assert_eq!(r.code, 0, "{}", explain(&r));
    assert_eq!(counter(&r, "reg_ok"), 40, "{}", explain(&r));
    assert_eq!(counter(&r, "calls_completed"), 20, "{}", explain(&r));
    assert_eq!(counter(&r, "uas_invites"), 20);
    assert_eq!(counter(&r, "stray_responses"), 0);
    assert_eq!(counter(&r, "dereg_ok"), 40);
    assert_eq!(k.registered_contacts().unwrap(), 0);
}

#[test]
fn ue_ports_over_tcp_is_refused_with_a_reason() {
    let k = kam(4, false);
    let out = Command::new(IMSLOAD)
        .args(["--target", &k.addr().to_string(), "--transport", "tcp"])
        .args([
            "--users",
            "4",
            "--ue-ports",
            "2",
            "--duration",
            "1s",
            "--quiet",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("UDP only"), "{err}");
}
