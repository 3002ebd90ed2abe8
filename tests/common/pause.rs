//! Pauses of a peer (SIGSTOP … SIGCONT, as a VM's stop-and-copy stops every process of it) and
//! the check that imsprobe's reply gaps tell them as the wire does.
//!
//! Why the wire and not the pause itself: the reply gap a pause leaves runs from the peer's last
//! answer before it stopped to its first answer after it was resumed, and the second depends on
//! the peer. On a busy 2-core machine a resumed Kamailio (or cdp, whose answer passes through
//! two of its processes) waits milliseconds for a CPU: a CI run saw a 511.7 ms gap for a 504.4 ms
//! pause, and the capture showed the same 511.7 ms. The capture is a witness independent of
//! imsprobe's receive path (libpcap's stamps, read by tshark), so imsprobe must agree with it
//! within the gap's own error bound, and the harness's times say which silence to compare.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{f, group_pids, proc_state, send_signal, tshark_fields, SIGCONT, SIGSTOP};

/// One pause the harness gave a peer. Each moment is CLOCK_REALTIME, the clock of a capture's
/// stamps, read right beside its signal call: compared with the wire without any mapping.
#[derive(Clone, Copy, Debug)]
pub struct Pause {
    /// Just before SIGSTOP was sent.
    pub stop_sent_ns: i64,
    /// When /proc showed every process of the peer stopped: it sends nothing after this.
    pub stopped_ns: i64,
    /// Just before SIGCONT was sent: it sent nothing before this either.
    pub cont_due_ns: i64,
    /// When the SIGCONT call returned.
    pub cont_sent_ns: i64,
}

fn realtime_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64
}

impl Pause {
    /// Stops `target` (as kill(2) takes it: a pid, or minus a process group id), waits until it
    /// is stopped, sleeps `secs`, resumes it.
    pub fn inject(target: i32, secs: f64) -> Pause {
        let stop_sent_ns = realtime_ns();
        stop_and_wait(target);
        let stopped_ns = realtime_ns();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let cont_due_ns = realtime_ns();
        assert!(send_signal(target, SIGCONT), "SIGCONT to {target}");
        let cont_sent_ns = realtime_ns();
        Pause {
            stop_sent_ns,
            stopped_ns,
            cont_due_ns,
            cont_sent_ns,
        }
    }

    /// The pause as a user would name it (ms): between the midpoints of the two signal calls.
    pub fn ms(&self) -> f64 {
        ((self.cont_due_ns + self.cont_sent_ns) - (self.stop_sent_ns + self.stopped_ns)) as f64
            / 2e6
    }
}

/// Sends SIGSTOP to `target` (a pid, or minus a process group id) and waits, at most 5 s, until
/// every process it names shows state `T` in /proc.
pub fn stop_and_wait(target: i32) {
    assert!(send_signal(target, SIGSTOP), "SIGSTOP to {target}");
    let t0 = Instant::now();
    loop {
        let pids = if target < 0 {
            group_pids(-target)
        } else {
            vec![target]
        };
        let states: Vec<(i32, Option<char>)> = pids.iter().map(|&p| (p, proc_state(p))).collect();
        if !states.is_empty() && states.iter().all(|&(_, s)| s == Some('T')) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{target} did not stop: {states:?}"
        );
        std::thread::yield_now();
    }
}

/// `1764042462.220293292` (tshark's frame.time_epoch) as unix ns.
pub fn epoch_ns(s: &str) -> i64 {
    let (a, b) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{b:0<9}");
    a.parse::<i64>().expect("epoch seconds") * 1_000_000_000
        + frac[..9].parse::<i64>().expect("epoch fraction")
}

/// Capture times (unix ns, sorted) of the frames display filter `filter` picks in `pcap`, read
/// by tshark (`pre`: its options before `-r`, e.g. `-d tcp.port==3869,diameter`).
pub fn wire_times(pcap: &Path, pre: &[&str], filter: &str) -> Vec<i64> {
    let mut t: Vec<i64> = tshark_fields(pcap, pre, filter, &["frame.time_epoch"])
        .iter()
        .map(|r| epoch_ns(&r[0]))
        .collect();
    t.sort_unstable();
    t
}

/// Capture times of every Diameter answer the peer on TCP `port` sent.
pub fn diameter_answers(pcap: &Path, port: u16) -> Vec<i64> {
    wire_times(
        pcap,
        &["-d", &format!("tcp.port=={port},diameter")],
        &format!("tcp.srcport == {port} && diameter.flags.request == 0"),
    )
}

/// Capture times of every SIP response the peer on `port` (UDP or TCP) sent.
pub fn sip_answers(pcap: &Path, port: u16) -> Vec<i64> {
    wire_times(
        pcap,
        &[
            "-d",
            &format!("udp.port=={port},sip"),
            "-d",
            &format!("tcp.port=={port},sip"),
        ],
        &format!("(udp.srcport == {port} || tcp.srcport == {port}) && sip.Status-Code"),
    )
}

/// imsprobe's long reply gaps (over 300 ms, in order) against the peer's `answers` on the wire
/// ([`wire_times`]), one per pause:
/// - the wire's silence around a pause runs from the answer before the first one sent after
///   SIGCONT was due; that answer must precede the moment the peer was known stopped (a stopped
///   peer sends nothing), so the silence covers the whole pause;
/// - imsprobe's gap equals that silence within the gap's own `error_bound_ms`.
///
/// How long the peer took to answer once resumed is its own (a CPU to wait for on a busy
/// machine): printed, not bounded.
pub fn assert_gaps_match_wire(layer: &Value, pauses: &[Pause], answers: &[i64], what: &str) {
    let gaps: Vec<&Value> = layer["reply_gaps"]
        .as_array()
        .expect("reply_gaps")
        .iter()
        .filter(|g| f(&g["duration_ms"]) > 300.0)
        .collect();
    assert_eq!(
        gaps.len(),
        pauses.len(),
        "{what}: one long reply gap per pause: {}",
        layer["reply_gaps"]
    );
    for (g, p) in gaps.iter().zip(pauses) {
        let next = answers.partition_point(|&t| t < p.cont_due_ns);
        assert!(
            next > 0 && next < answers.len(),
            "{what}: the capture has no answer on both sides of the pause {p:?}"
        );
        let (before, after) = (answers[next - 1], answers[next]);
        assert!(
            before <= p.stopped_ns,
            "{what}: the peer answered {:.3} ms after it was known stopped",
            (before - p.stopped_ns) as f64 / 1e6
        );
        let wire = (after - before) as f64 / 1e6;
        let live = f(&g["duration_ms"]);
        let bound = f(&g["error_bound_ms"]);
        eprintln!(
            "{what}: pause {:.3} ms -> wire silence {wire:.3} ms (answered {:.3} ms after SIGCONT), imsprobe gap {live:.3} ms ({:+.3}, bound {bound})",
            p.ms(),
            (after - p.cont_sent_ns) as f64 / 1e6,
            live - wire
        );
        assert!(
            (live - wire).abs() <= bound,
            "{what}: imsprobe's gap {live} ms vs the wire's {wire} ms (error bound {bound} ms)"
        );
    }
}
