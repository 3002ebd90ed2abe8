//! imsload's media plane (`--media`) against real peers: SIPp's UAS echoing RTP
//! (`sipp -sn uas -rtp_echo`), and imsload users calling each other through Kamailio, with
//! tshark reading the RTP off the wire. Assertions read imsload's JSON report, the capture and
//! Kamailio's view; nothing here fakes a peer.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");

/// imsload with `args`, writing its report to `report`, started and left running.
fn spawn_imsload(args: &[&str], report: &Path) -> std::process::Child {
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

/// Waits (at most `limit`) for an imsload of [`spawn_imsload`] to succeed; its report.
fn imsload_report(child: std::process::Child, report: &Path, limit: Duration) -> Value {
    let out = wait_bounded(child, limit, "imsload");
    let text = std::fs::read_to_string(report).unwrap_or_else(|e| {
        panic!(
            "no report ({e})\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "imsload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).expect("the report is JSON")
}

fn imsload(args: &[&str], report: &Path, limit: Duration) -> Value {
    imsload_report(spawn_imsload(args, report), report, limit)
}

fn counter(r: &Value, name: &str) -> u64 {
    r["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {r}"))
}

/// `sipp -sn uas -rtp_echo` on free ports: (child, SIP port, media port).
fn sipp_echo() -> (std::process::Child, u16, u16) {
    sipp_echoing(&["-sn", "uas"])
}

/// SIPp playing `scenario` (`-sn uas`, `-sf file`) with `-rtp_echo`: (child, SIP port, media
/// port).
fn sipp_echoing(scenario: &[&str]) -> (std::process::Child, u16, u16) {
    for _ in 0..3 {
        let (sip, media) = (free_port().unwrap(), free_port().unwrap());
        let child = Command::new("sipp")
            .args(scenario)
            .args(["-rtp_echo", "-i", LISTEN_IP])
            .args([
                "-p",
                &sip.to_string(),
                "-mp",
                &media.to_string(),
                "-nostdin",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sipp");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if port_bound(sip, Transport::Udp) && port_bound(media, Transport::Udp) {
                return (child, sip, media);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut c = child;
        let _ = c.kill();
        let _ = c.wait();
    }
    panic!("sipp -rtp_echo did not come up on three pairs of free ports");
}

#[test]
fn calls_to_sipp_rtp_echo_get_their_own_audio_back_and_tshark_reads_it() {
    if !sipp_or_skip("calls_to_sipp_rtp_echo_get_their_own_audio_back_and_tshark_reads_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut sipp, sip_port, media_port) = sipp_echo();
    let pcap = dir.path().join("media.pcapng");
    let cap = dumpcap(
        &pcap,
        &format!(
            "udp port {sip_port} or udp port {media_port} or udp port {}",
            media_port + 1
        ),
        &["-B", "32"],
    );
    let target = format!("127.0.0.1:{sip_port}");
    let ruri = format!("sip:echo@{target}");
    let r = imsload(
        &[
            "--target",
            &target,
            "--ruri",
            &ruri,
            "--bind",
            "127.0.0.1",
            "--users",
            "0",
            "--cps",
            "10",
            "--calls",
            "20",
            "--hold",
            "2s",
            "--duration",
            "15s",
            "--media",
            "g711",
        ],
        &dir.path().join("r.json"),
        Duration::from_secs(60),
    );
    // The last datagrams reach the capture buffer first; SIGINT makes dumpcap write them all.
    std::thread::sleep(Duration::from_millis(300));
    assert!(send_signal(cap.id() as i32, SIGINT), "SIGINT dumpcap");
    let out = wait_bounded(cap, Duration::from_secs(10), "dumpcap after SIGINT");
    eprintln!("dumpcap: {}", String::from_utf8_lossy(&out.stderr).trim());
    let _ = sipp.kill();
    let _ = sipp.wait();

    assert_eq!(counter(&r, "calls_completed"), 20, "{r}");
    assert_eq!(counter(&r, "media_streams_started"), 20);
    assert_eq!(counter(&r, "media_streams_ended"), 20, "{}", r["counters"]);
    let sent = counter(&r, "media_packets_sent");
    // 20 calls of 2 s at 50 packets/s, each starting with its ACK and ending with its BYE.
    assert!((1900..=2100).contains(&sent), "sent {sent}");
    // Every packet came back as itself (SIPp echoes): what did not arrive before its stream
    // ended (its BYE) is counted as unmatched, nothing is lost on loopback.
    let received = counter(&r, "media_packets_received");
    assert_eq!(counter(&r, "media_packets_echoed"), received);
    assert_eq!(
        received + counter(&r, "media_unmatched"),
        sent,
        "{}",
        r["counters"]
    );
    assert_eq!(counter(&r, "media_packets_lost"), 0);
    assert_eq!(r["media"]["streams"], 20);
    assert!(
        r["media"]["mos_min"].as_f64().unwrap() > 4.3,
        "{}",
        r["media"]
    );

    // The wire: tshark decodes our packets as RTP, PCMU, one SSRC per call (the one imsload
    // derives from the call's Call-ID), sequence numbers without holes, as many as we counted.
    let to_echo = tshark_fields(
        &pcap,
        &["-d", &format!("udp.port=={media_port},rtp")],
        &format!("rtp && udp.dstport=={media_port}"),
        &["rtp.ssrc", "rtp.seq", "rtp.p_type", "rtp.marker"],
    );
    assert_eq!(
        to_echo.len() as u64,
        sent,
        "RTP packets on the wire vs the report"
    );
    let mut by_ssrc: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    for f in &to_echo {
        assert_eq!(f[2], "0", "payload type PCMU: {f:?}");
        let ssrc = u32::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap();
        by_ssrc.entry(ssrc).or_default().push(f[1].parse().unwrap());
    }
    let call_ids: BTreeSet<String> =
        tshark_fields(&pcap, &[], "sip.Method == \"INVITE\"", &["sip.Call-ID"])
            .into_iter()
            .map(|f| f[0].clone())
            .collect();
    let expected: BTreeSet<u32> = call_ids
        .iter()
        .map(|c| imsload::media::engine::ssrc_of(c, 0))
        .collect();
    assert_eq!(by_ssrc.keys().copied().collect::<BTreeSet<u32>>(), expected);
    for (ssrc, seqs) in &by_ssrc {
        for w in seqs.windows(2) {
            assert_eq!(
                w[1],
                w[0].wrapping_add(1),
                "SSRC {ssrc:#x}: a hole or reordering in what we sent"
            );
        }
    }

    // Our RTCP, to the RTP port + 1 (SIPp's SDP names no other; nobody listens there): every
    // stream's reports are SRs with our CNAME, the last ends with a BYE, and its packet count
    // is what the wire carried under that SSRC.
    let rtcp_port = media_port + 1;
    let rtcp = tshark_fields(
        &pcap,
        &["-d", &format!("udp.port=={rtcp_port},rtcp")],
        &format!("rtcp && udp.dstport=={rtcp_port}"),
        &[
            "rtcp.pt",
            "rtcp.senderssrc",
            "rtcp.sender.packetcount",
            "rtcp.sdes.text",
        ],
    );
    assert_eq!(
        rtcp.len() as u64,
        r["media"]["rtcp_sent"].as_u64().unwrap(),
        "RTCP on the wire vs the report: {rtcp:?}"
    );
    let mut last: BTreeMap<u32, &Vec<String>> = BTreeMap::new();
    for f in &rtcp {
        assert!(f[0].starts_with("200,202"), "an SR, then SDES: {f:?}");
        assert_eq!(f[3], "imsload@127.0.0.1", "{f:?}");
        let ssrc = u32::from_str_radix(f[1].trim_start_matches("0x"), 16).unwrap();
        last.insert(ssrc, f);
    }
    assert_eq!(last.keys().copied().collect::<BTreeSet<u32>>(), expected);
    for (ssrc, f) in last {
        assert_eq!(
            f[0], "200,202,203",
            "SSRC {ssrc:#x}: the last report ends with a BYE"
        );
        assert_eq!(
            f[2].parse::<usize>().unwrap(),
            by_ssrc[&ssrc].len(),
            "SSRC {ssrc:#x}: the SR's packet count vs the RTP on the wire"
        );
    }
}

#[test]
fn a_callee_that_holds_and_resumes_is_answered_in_kind_and_its_hold_is_no_gap() {
    if !sipp_or_skip("a_callee_that_holds_and_resumes_is_answered_in_kind_and_its_hold_is_no_gap") {
        return;
    }
    // tests/sipp/hold_uas.xml: 1.5 s after the ACK a re-INVITE with a=inactive, 1.5 s later
    // one with a=sendrecv; the caller (imsload) hangs up after 5 s. SIPp echoes our RTP.
    let dir = tempfile::tempdir().unwrap();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/hold_uas.xml");
    let (mut sipp, sip_port, media_port) = sipp_echoing(&["-sf", scenario]);
    let pcap = dir.path().join("hold.pcapng");
    let cap = dumpcap(
        &pcap,
        &format!("udp port {sip_port} or udp port {media_port}"),
        &["-B", "32"],
    );
    let target = format!("127.0.0.1:{sip_port}");
    let ruri = format!("sip:hold@{target}");
    let media_log = dir.path().join("media.csv");
    let r = imsload(
        &[
            "--target",
            &target,
            "--ruri",
            &ruri,
            "--bind",
            "127.0.0.1",
            "--users",
            "0",
            "--cps",
            "4",
            "--calls",
            "6",
            "--hold",
            "5s",
            "--duration",
            "15s",
            "--media",
            "g711",
            "--media-log",
            media_log.to_str().unwrap(),
        ],
        &dir.path().join("r.json"),
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(send_signal(cap.id() as i32, SIGINT), "SIGINT dumpcap");
    wait_bounded(cap, Duration::from_secs(10), "dumpcap after SIGINT");
    let _ = sipp.kill();
    let _ = sipp.wait();

    assert_eq!(counter(&r, "calls_completed"), 6, "{r}");
    assert_eq!(counter(&r, "reinvites_answered"), 12, "{}", r["counters"]);
    assert_eq!(
        (counter(&r, "media_holds"), counter(&r, "media_resumes")),
        (6, 6),
        "{}",
        r["counters"]
    );
    // Our 200s to the re-INVITEs answer in kind (RFC 3264 §6.1): inactive, then sendrecv,
    // each with a higher o= version.
    let ok = tshark_fields(
        &pcap,
        &[],
        &format!(
            "sip.Status-Code == 200 && sip.CSeq.method == \"INVITE\" && udp.dstport == {sip_port}"
        ),
        &[
            "sip.Call-ID",
            "sip.CSeq.seq",
            "sdp.media_attr",
            "sdp.owner.version",
            "sdp.media",
        ],
    );
    let mut by_call: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for f in &ok {
        // SIPp offers PCMU alone: an answer plays only what the offer has (RFC 3264 §6.1),
        // one m= line for its one.
        assert!(
            f[4].starts_with("audio ") && f[4].ends_with(" RTP/AVP 0") && !f[4].contains(','),
            "our answer's m= line: {f:?}"
        );
        let dir = ["inactive", "sendrecv", "sendonly", "recvonly"]
            .into_iter()
            .find(|d| f[2].split(',').any(|a| a == *d))
            .unwrap_or("none");
        by_call
            .entry(f[0].clone())
            .or_default()
            .push((dir.to_string(), f[3].clone()));
    }
    assert_eq!(by_call.len(), 6, "{ok:?}");
    for (call, answers) in &by_call {
        assert_eq!(
            answers,
            &[
                ("inactive".to_string(), "2".to_string()),
                ("sendrecv".to_string(), "3".to_string())
            ],
            "call {call}: our answers to its re-INVITEs"
        );
    }
    // On the wire: while a call was on hold we sent it no RTP; after the resume the RTP clock
    // had moved on by the time we were quiet (RFC 3550 §5.1), within a packet time.
    let rtp = tshark_fields(
        &pcap,
        &["-d", &format!("udp.port=={media_port},rtp")],
        &format!("rtp && udp.dstport=={media_port}"),
        &["frame.time_epoch", "rtp.ssrc", "rtp.timestamp"],
    );
    let mut streams: BTreeMap<String, Vec<(f64, u32)>> = BTreeMap::new();
    for f in &rtp {
        streams
            .entry(f[1].clone())
            .or_default()
            .push((f[0].parse().unwrap(), f[2].parse().unwrap()));
    }
    assert_eq!(streams.len(), 6);
    for (ssrc, pkts) in &streams {
        let holes: Vec<(f64, f64)> = pkts
            .windows(2)
            .filter(|w| w[1].0 - w[0].0 > 0.2)
            .map(|w| {
                let dt = w[1].0 - w[0].0;
                (dt, f64::from(w[1].1.wrapping_sub(w[0].1)) / 8000.0)
            })
            .collect();
        assert_eq!(
            holes.len(),
            1,
            "SSRC {ssrc}: one silence, the hold: {holes:?}"
        );
        let (dt, dts) = holes[0];
        assert!((1.3..=1.7).contains(&dt), "SSRC {ssrc}: hold of {dt:.3} s");
        assert!(
            (dts - dt).abs() <= 0.02,
            "SSRC {ssrc}: RTP clock moved {dts:.3} s over a silence of {dt:.3} s"
        );
    }
    // The hold is no gap: each stream's longest silence is a packet time or so.
    let gap = &r["media"]["longest_gap"];
    assert_eq!(gap["count"], 6);
    assert!(f(&gap["max_ms"]) < 100.0, "{}", r["media"]);
    assert_eq!(counter(&r, "media_packets_lost"), 0);
}

/// 10 calls between 20 imsload users registered with a fresh Kamailio (two workers, 5 calls/s,
/// each held `hold`, media `codec`), with `extra` arguments; the report is written in `dir`.
fn ten_calls_through_kamailio(dir: &Path, hold: &str, codec: &str, extra: &[&str]) -> Value {
    let k = Kamailio::start(KamailioOpts {
        users: 20,
        ..KamailioOpts::default()
    })
    .expect("kamailio start");
    let target = k.addr().to_string();
    let mut args = vec![
        "--target",
        &target,
        "--users",
        "20",
        "--cps",
        "5",
        "--calls",
        "10",
        "--hold",
        hold,
        "--duration",
        "20s",
        "--workers",
        "2",
        "--media",
        codec,
    ];
    args.extend_from_slice(extra);
    imsload(&args, &dir.join("r.json"), Duration::from_secs(60))
}

/// `legs` call legs of 2 s between imsload users, both ends ours: each sent ~100 packets, and
/// what one leg sent reached the other unless it left just before that leg ended or just
/// before it began (the answer and the BYE race the first and last packets). (sent, received).
fn legs_hear_each_other(r: &Value, legs: u64) -> (u64, u64) {
    let (sent, received) = (
        counter(r, "media_packets_sent"),
        counter(r, "media_packets_received"),
    );
    assert!(
        sent >= legs * 90,
        "each leg sends ~100 packets in 2 s: {sent}"
    );
    assert_eq!(
        received + counter(r, "media_unmatched"),
        sent,
        "{}",
        r["counters"]
    );
    (sent, received)
}

#[test]
fn imsload_users_call_each_other_through_kamailio_with_audio_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("series.csv");
    let r = ten_calls_through_kamailio(
        dir.path(),
        "2s",
        "pcma",
        &["--series", series.to_str().unwrap()],
    );
    assert_eq!(counter(&r, "calls_completed"), 10, "{r}");
    // Each call has two legs, both ours: the caller's and the callee's.
    assert_eq!(
        counter(&r, "media_streams_started"),
        20,
        "{}",
        r["counters"]
    );
    assert_eq!(counter(&r, "media_streams_ended"), 20, "{}", r["counters"]);
    assert_eq!(counter(&r, "media_packets_echoed"), 0);
    assert_eq!(counter(&r, "media_packets_lost"), 0, "{}", r["media"]);
    assert_eq!(counter(&r, "media_sdp_unusable"), 0);
    let (sent, received) = legs_hear_each_other(&r, 20);
    assert!(
        received as f64 > sent as f64 * 0.95,
        "received {received} of {sent}"
    );
    // The series carries the media counters, adding up to the totals.
    let csv = std::fs::read_to_string(&series).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "media_packets_sent")
        .expect("media column");
    let live = header
        .iter()
        .position(|h| *h == "media_streams")
        .expect("media gauge");
    let rows: Vec<&str> = lines.collect();
    // 5 calls/s of 2 s: some second has streams running (both legs of each call up).
    assert!(
        rows.iter().any(|l| l.split(',').nth(live).unwrap() != "0"),
        "the media_streams gauge never moved"
    );
    let lines = rows.into_iter();
    let total: u64 = lines
        .map(|l| l.split(',').nth(col).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, sent);
}

#[test]
fn imsload_callers_hold_and_resume_through_kamailio_and_the_media_follows_the_answers() {
    // Both legs are imsload's, through Kamailio (which record-routes, so the re-INVITEs take
    // the dialog's route set): each caller re-INVITEs with a=sendonly 1 s after the answer and
    // with a=sendrecv 1.5 s after the hold was answered; the callee answers recvonly, then
    // sendrecv, and stops sending while held.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("media.csv");
    let r = ten_calls_through_kamailio(
        dir.path(),
        "4s",
        "pcmu",
        &[
            "--call-hold",
            "1s,1.5s",
            "--media-log",
            log.to_str().unwrap(),
        ],
    );
    let c = &r["counters"];
    assert_eq!(counter(&r, "calls_completed"), 10, "{r}");
    assert_eq!(counter(&r, "call_holds"), 10, "{c}");
    assert_eq!(counter(&r, "call_resumes"), 10, "{c}");
    assert_eq!(counter(&r, "reinvites_failed"), 0, "{c}");
    // Our callees answered both re-INVITEs of every call.
    assert_eq!(counter(&r, "reinvites_answered"), 20, "{c}");
    // Only the held side (the callee, answering recvonly) stopped sending, once per call.
    assert_eq!(counter(&r, "media_holds"), 10, "{c}");
    assert_eq!(counter(&r, "media_resumes"), 10, "{c}");
    assert_eq!(counter(&r, "media_packets_lost"), 0, "{}", r["media"]);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (leg, sent, gap) = (col("leg"), col("sent"), col("longest_gap_ms"));
    let streams: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(streams.len(), 20, "{text}");
    for s in &streams {
        let n: u64 = s[sent].parse().unwrap();
        // 4 s of 20 ms packets is 200; the held callee is quiet for 1.5 s of them (75).
        let want = match s[leg] {
            "caller" => 190..=210,
            "callee" => 115..=135,
            other => panic!("leg {other}: {s:?}"),
        };
        assert!(want.contains(&n), "{} sent {n}: {s:?}", s[leg]);
        // A hold is no gap: neither side expected audio it was not offered.
        let g: f64 = s[gap].parse().unwrap();
        assert!(g < 100.0, "longest gap {g} ms: {s:?}");
    }
}

/// Seconds since the epoch of a series row's `utc` label (`2026-12-05T00:09:16.807Z` or
/// without fraction).
fn utc_s(label: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(label)
        .unwrap_or_else(|e| panic!("utc {label:?}: {e}"))
        .timestamp_millis() as f64
        / 1000.0
}

#[test]
fn a_paused_rtpengine_is_a_media_gap_of_its_length_on_every_call_up() {
    if let Some(why) = rtpengine_missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let rtpe = Rtpengine::start(41000..=41999).expect("rtpengine start");
    let k = Kamailio::start(KamailioOpts {
        users: 20,
        rtpengine: Some(rtpe.ng_port()),
        ..KamailioOpts::default()
    })
    .expect("kamailio start");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let series = dir.path().join("series.csv");
    let media_log = dir.path().join("media.csv");
    let target = k.addr().to_string();
    // 10 calls placed in the first half second of the call phase, each held 6 s: all are up
    // from about 0.7 s to 6 s after imsload starts; the pause comes at 3 s.
    let (series_s, log_s) = (series.to_str().unwrap(), media_log.to_str().unwrap());
    let child = spawn_imsload(
        &[
            "--target",
            &target,
            "--users",
            "20",
            "--reg-rate",
            "1000",
            "--cps",
            "20",
            "--calls",
            "10",
            "--hold",
            "6s",
            "--duration",
            "30s",
            "--media",
            "g711",
            "--series",
            series_s,
            "--media-log",
            log_s,
        ],
        &report,
    );
    std::thread::sleep(Duration::from_secs(3));
    let pause = Pause::inject(rtpe.pid(), 0.5);
    let r = imsload_report(child, &report, Duration::from_secs(60));
    let m = &r["media"];
    eprintln!("pause {:.1} ms; media {m}", pause.ms());
    assert_eq!(counter(&r, "calls_completed"), 10, "{r}");
    // Both legs of each call, every packet through rtpengine (its addresses in the SDP, its
    // SSRCs kept): all 20 streams received audio.
    assert_eq!(counter(&r, "media_streams_ended"), 20, "{}", r["counters"]);
    assert_eq!(m["jitter"]["count"], 20, "{m}\n{}", rtpe.log_tail());
    // Every stream was up across the pause, so each one's longest silence is the pause, to
    // within two packet times (the last packet before it, rtpengine's first after it).
    let (lo, hi) = (pause.ms() - 40.0, pause.ms() + 40.0);
    let gap = &m["longest_gap"];
    assert_eq!(gap["count"], 20, "{m}");
    let (min, max) = (f(&gap["min_ms"]), f(&gap["max_ms"]));
    assert!(
        lo <= min && max <= hi,
        "gaps {min:.1}..{max:.1} ms for a {:.1} ms pause",
        pause.ms()
    );
    // Each stream's own line says when its longest gap began: where the pause did (its last
    // packet before the stop, at most a packet time and the signal's own moments earlier).
    let log = std::fs::read_to_string(&media_log).unwrap();
    let mut lines = log.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header
        .iter()
        .position(|h| *h == "longest_gap_at_utc")
        .unwrap();
    let len = header.iter().position(|h| *h == "longest_gap_ms").unwrap();
    let streams: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(streams.len(), 20, "{log}");
    let stop = pause.stop_sent_ns as f64 / 1e9;
    for s in &streams {
        let began = utc_s(s[at]);
        assert!(
            (stop - 0.1..=stop + 0.1).contains(&began),
            "a stream's gap began at {began}, the pause at {stop}: {s:?}"
        );
        let ms: f64 = s[len].parse().unwrap();
        assert!(lo <= ms && ms <= hi, "{s:?}");
    }
    // RTCP went through rtpengine both ways: every stream heard its far end's report on it (no
    // loss: a report sent in the pause counts what had come, not what was held), and some of
    // them gave a round trip (our SR, then the far end's next report). Loopback through a
    // relay takes milliseconds; a report held by the pause up to its length.
    assert_eq!(m["rtcp_malformed"], 0, "{m}");
    assert!(f(&m["rtcp_received"]) >= 20.0, "{m}");
    let far = header.iter().position(|h| *h == "far_lost").unwrap();
    for s in &streams {
        assert_eq!(s[far], "0", "the far end's report on this stream: {s:?}");
    }
    let rtt = &m["rtcp_rtt"];
    assert!(f(&rtt["count"]) >= 1.0, "{m}");
    assert!(f(&rtt["max_ms"]) < pause.ms() + 200.0, "{m}");

    // The series shows it: 20 gaps ended, all in the second the audio came back.
    let csv = std::fs::read_to_string(&series).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .unwrap_or_else(|| panic!("no {n}"))
    };
    let (gaps, utc) = (col("media_gaps"), col("utc"));
    let rows: Vec<(f64, u64)> = lines
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            (utc_s(v[utc]), v[gaps].parse().unwrap())
        })
        .collect();
    assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 20, "{rows:?}");
    let resumed = pause.cont_sent_ns as f64 / 1e9;
    for (t, n) in &rows {
        if *n > 0 {
            // A row covers the second that ends at its label.
            assert!(
                *t - 1.0 <= resumed + 0.1 && resumed - 0.1 <= *t + 0.1,
                "gaps at {t} for a resume at {resumed}: {rows:?}"
            );
        }
    }
}

/// `--media-gso`: a worker's RTP to the other worker leaves in GSO trains, and the other worker
/// reads every packet back out of them. A capture on `lo` taps a train before it is cut and
/// shows it as one datagram of several whole packets (why the option is off by default,
/// docs/media.md); without the option, the same capture shows one packet per datagram.
#[test]
fn with_media_gso_rtp_leaves_in_trains_and_every_packet_arrives() {
    // The UEs and their media sockets on an address of their own: the capture sees only the
    // RTP and RTCP between our two workers, none of the other tests' traffic.
    let run = |ip: &str, gso: bool| {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("rtp.pcapng");
        let cap = dumpcap(
            &pcap,
            &format!("udp and src host {ip} and dst host {ip}"),
            &["-B", "32"],
        );
        let mut args = vec![
            "--bind",
            ip,
            "--users",
            "200",
            "--cps",
            "100",
            "--calls",
            "100",
            "--hold",
            "2s",
            "--duration",
            "10s",
            "--workers",
            "2",
            "--media",
            "g711",
            // Turns of 5 ms: each sends the ~50 packets that came due, to two sockets.
            "--timer-resol",
            "5ms",
        ];
        if gso {
            args.push("--media-gso");
        }
        let r = imsload(&args, &dir.path().join("r.json"), Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        assert!(send_signal(cap.id() as i32, SIGINT), "SIGINT dumpcap");
        wait_bounded(cap, Duration::from_secs(10), "dumpcap after SIGINT");
        assert_eq!(counter(&r, "calls_completed"), 100, "{r}");
        assert_eq!(counter(&r, "media_streams_started"), 200);
        assert_eq!(counter(&r, "media_packets_lost"), 0, "{}", r["media"]);
        let (sent, _) = legs_hear_each_other(&r, 200);
        // UDP payload sizes on the wire: RTP is 172 bytes (12 + 160), RTCP less.
        let sizes: Vec<u64> = tshark_fields(&pcap, &[], "udp", &["udp.length"])
            .iter()
            .map(|f| f[0].parse::<u64>().unwrap() - 8)
            .collect();
        let rtp: u64 = sizes
            .iter()
            .filter(|&&n| n % 172 == 0)
            .map(|n| n / 172)
            .sum();
        let trains = sizes.iter().filter(|&&n| n > 172).count();
        (sent, rtp, trains, sizes)
    };
    let (sent, rtp, trains, sizes) = run("127.0.0.94", true);
    assert!(
        trains > 0,
        "no train on the wire: {:?}",
        &sizes[..sizes.len().min(40)]
    );
    // A train holds whole packets (the last may be shorter: none is, all RTP here is 172).
    for n in &sizes {
        assert!(
            *n <= 172 || n % 172 == 0,
            "a {n}-byte datagram is no train of packets"
        );
    }
    // The capture holds what was sent, counted in packets, trains or not.
    assert_eq!(rtp, sent);
    let (sent, rtp, trains, _) = run("127.0.0.95", false);
    assert_eq!(
        (trains, rtp),
        (0, sent),
        "without --media-gso, one packet per datagram"
    );
}
