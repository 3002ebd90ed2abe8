//! The load core against the embedded target, in memory and under a virtual clock: whole runs
//! (register, call, hang up, de-register) in microseconds of real time, with loss injected
//! where a test asks for it.

use super::config::{ByeBy, CoreConfig};
use super::core::{LoadCore, Phase};
use super::population::{aka_subscription, from_pattern, from_spec, Identity, PatternSpec};
use super::stats::{Interval, Rfc6076};
use crate::sip::aka::AkaKeys;
use crate::target::core::{TargetAka, TargetConfig, TargetCore};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Net {
    now: Instant,
    load: LoadCore,
    target: TargetCore,
    /// Drop every n-th datagram (0 = none).
    drop_every: u64,
    sent: u64,
    dropped: u64,
    totals: Interval,
    /// Every message the load side sent, in order (for tests that read the wire).
    from_load: Vec<String>,
    /// The load side's socket addresses (user i on `locals[i % len]`).
    locals: Vec<SocketAddr>,
    /// The source address of each message in `from_load`, and where it went.
    from_load_src: Vec<SocketAddr>,
    from_load_dest: Vec<SocketAddr>,
    /// What the target sent to the load side (kept with several sockets only): the socket it
    /// reached, and the message.
    to_load: Vec<(SocketAddr, String)>,
    /// Deliver each 180 from the target only after the target's next message (the 200 that
    /// follows it): a proxy with several processes relays them in either order.
    hold_back_180: bool,
    held: Vec<(Vec<u8>, u32)>,
    /// Lose the load side's first ACK (the target then retransmits its 200).
    lose_first_ack: bool,
    /// Plays a P-CSCF doing sec-agree: this Security-Server goes into every 401 to a
    /// REGISTER, and requests to `protected_dest` reach the target too.
    security_server: Option<String>,
    protected_dest: Option<SocketAddr>,
    /// Plays a P-CSCF renewing SAs (TS 33.203 §7.4): a 401 to a REGISTER that came with
    /// Security-Verify gets a Security-Server of new SPIs and a new client port (the server
    /// port stays), the n-th such 401 the n-th of [`renewal_server`]. The Call-ID and CSeq of
    /// those REGISTERs, and how many 401s were renewals.
    renew: bool,
    protected_regs: std::collections::HashSet<(String, String)>,
    renewals: u32,
    /// Installs the "kernel" takes before it refuses them all.
    refuse_sas_after: Option<usize>,
    /// Whether replaced pairs keep carrying packets, and how often their use was read.
    replaced_in_use: bool,
    sa_use_reads: u64,
    /// The SA changes the load side asked for (install?, user, SAs), in order, and whether
    /// the "kernel" refuses installs.
    ipsec: Vec<(bool, u32, Vec<crate::ipsec::Sa>)>,
    refuse_sas: bool,
    /// The fresh ports the load side asked for: (user, its new plain, port-c, port-s) for a
    /// restart, (user, its new plain) for a renewal's offer.
    rebinds: Vec<(u32, Vec<SocketAddr>)>,
    top_port: u16,
}

const LOAD: ([u8; 4], u16) = ([127, 0, 0, 2], 5070);
const TARGET: ([u8; 4], u16) = ([127, 0, 0, 1], 5060);

impl Net {
    fn new(cfg: CoreConfig, users: usize, password: &str) -> Net {
        let pop = from_pattern("user%04d", 1, users, "ims.local", password).unwrap();
        Net::with(cfg, pop, TargetConfig::default())
    }

    fn with(cfg: CoreConfig, pop: Vec<Identity>, target: TargetConfig) -> Net {
        Net::with_locals(cfg, pop, target, vec![SocketAddr::from(LOAD)])
    }

    fn with_locals(
        cfg: CoreConfig,
        pop: Vec<Identity>,
        target: TargetConfig,
        locals: Vec<SocketAddr>,
    ) -> Net {
        let now = Instant::now();
        let mut load = LoadCore::new(cfg, &locals, pop, 0, now);
        load.start(now);
        let target = TargetCore::new(target, SocketAddr::from(TARGET), now);
        Net {
            now,
            load,
            target,
            drop_every: 0,
            sent: 0,
            dropped: 0,
            totals: Interval::default(),
            from_load: Vec::new(),
            locals,
            from_load_src: Vec::new(),
            from_load_dest: Vec::new(),
            to_load: Vec::new(),
            hold_back_180: false,
            held: Vec::new(),
            lose_first_ack: false,
            security_server: None,
            protected_dest: None,
            renew: false,
            protected_regs: Default::default(),
            renewals: 0,
            refuse_sas_after: None,
            replaced_in_use: false,
            sa_use_reads: 0,
            ipsec: Vec::new(),
            refuse_sas: false,
            rebinds: Vec::new(),
            top_port: 0,
        }
    }

    /// Moves datagrams and time until the load side is done or `limit` of virtual time passes.
    fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        let t = SocketAddr::from(TARGET);
        for _ in 0..5_000_000 {
            let mut moved = false;
            while let Some(a) = self.load.poll_ipsec() {
                use super::core::IpsecAction;
                let (install, user, sas) = match &a {
                    IpsecAction::Install { user, sas, .. } => (true, *user, sas.to_vec()),
                    IpsecAction::Remove { user, sas, .. } => (false, *user, sas.to_vec()),
                    IpsecAction::ReadUse { user, id, .. } => {
                        // A P-CSCF that keeps sending through replaced pairs, or one that moves
                        // at once.
                        self.sa_use_reads += 1;
                        let n = if self.replaced_in_use {
                            self.sa_use_reads
                        } else {
                            0
                        };
                        self.load.handle_sa_use(self.now, *user, *id, Ok(n));
                        continue;
                    }
                    IpsecAction::Rebind { user, socks } => {
                        // Fresh ports, as a kernel would pick them: above all ever in use.
                        let top = self.locals.iter().map(|l| l.port()).max().unwrap_or(0);
                        self.top_port = self.top_port.max(top);
                        let mut fresh = Vec::new();
                        for i in socks.iter() {
                            self.top_port += 1;
                            let l = &mut self.locals[*i as usize];
                            l.set_port(self.top_port);
                            fresh.push(*l);
                        }
                        self.rebinds.push((*user, fresh.clone()));
                        self.load.handle_rebind(self.now, *user, Ok(fresh));
                        continue;
                    }
                };
                self.ipsec.push((install, user, sas));
                let installs = self.ipsec.iter().filter(|(i, _, _)| *i).count();
                let refuse = self.refuse_sas || self.refuse_sas_after.is_some_and(|n| installs > n);
                let r = if install && refuse {
                    Err(crate::ipsec::xfrm::XfrmError::Refused {
                        what: "install an SA".into(),
                        err: std::io::Error::from_raw_os_error(libc::EPERM),
                    })
                } else {
                    Ok(())
                };
                self.load.handle_ipsec(self.now, &a, r);
            }
            while let Some(x) = self.load.poll_transmit() {
                moved = true;
                assert!(
                    x.dest == t || Some(x.dest) == self.protected_dest,
                    "the load side only talks to its outbound proxy"
                );
                let l = self.locals[x.src as usize];
                let text = String::from_utf8_lossy(&x.data).into_owned();
                if self.renew
                    && text.starts_with("REGISTER ")
                    && text.contains("\r\nSecurity-Verify: ")
                {
                    self.protected_regs.insert(call_id_cseq(&text));
                }
                self.from_load.push(text);
                self.from_load_src.push(l);
                self.from_load_dest.push(x.dest);
                if self.lose_first_ack && x.data.starts_with(b"ACK ") {
                    self.lose_first_ack = false;
                    continue;
                }
                if self.deliver() {
                    self.target.handle_input(self.now, &x.data, l);
                }
            }
            while let Some(x) = self.target.poll_transmit() {
                moved = true;
                let mut sock = self
                    .locals
                    .iter()
                    .position(|l| *l == x.dest)
                    .expect("the target only sends to the load side's sockets");
                // A P-CSCF doing sec-agree sends its requests to a UE's protected server port
                // (the target binds the REGISTER's source, the protected client port).
                if self.security_server.is_some() && !x.data.starts_with(b"SIP/2.0 ") {
                    sock = 3 * (sock / 3) + 2;
                }
                if self.locals.len() > 1 {
                    self.to_load
                        .push((x.dest, String::from_utf8_lossy(&x.data).into_owned()));
                }
                let mut x = x;
                if let Some(ss) = &self.security_server {
                    let text = String::from_utf8_lossy(&x.data).into_owned();
                    if text.starts_with("SIP/2.0 401") && text.contains(" REGISTER\r\n") {
                        let ss = if self.protected_regs.contains(&call_id_cseq(&text)) {
                            self.renewals += 1;
                            renewal_server(self.renewals)
                        } else {
                            ss.clone()
                        };
                        x.data = text
                            .replacen("\r\n", &format!("\r\nSecurity-Server: {ss}\r\n"), 1)
                            .into_bytes();
                    }
                }
                if self.hold_back_180 && x.data.starts_with(b"SIP/2.0 180") {
                    self.held.push((x.data, sock as u32));
                    continue;
                }
                if self.deliver() {
                    self.load.handle_input(self.now, &x.data, t, sock as u32);
                }
                for (data, sock) in std::mem::take(&mut self.held) {
                    self.load.handle_input(self.now, &data, t, sock);
                }
            }
            if moved {
                continue;
            }
            if self.load.is_done() {
                break;
            }
            let next = [self.load.poll_timeout(), self.target.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            if next > end {
                break;
            }
            // A 1 ms network: time never stands still between exchanges.
            self.now = next.max(self.now);
            self.load.handle_timeout(self.now);
            self.target.handle_timeout(self.now);
        }
        self.totals.add(&self.load.take_stats());
    }

    fn deliver(&mut self) -> bool {
        self.sent += 1;
        if self.drop_every > 0 && self.sent % self.drop_every == 0 {
            self.dropped += 1;
            return false;
        }
        true
    }
}

fn cfg() -> CoreConfig {
    CoreConfig {
        target: SocketAddr::from(TARGET),
        reg_rate: 50.0,
        cps: 5.0,
        hold: Duration::from_secs(2),
        duration: Some(Duration::from_secs(10)),
        ..CoreConfig::default()
    }
}

#[test]
fn full_run_registers_calls_and_deregisters() {
    let mut net = Net::new(cfg(), 20, "pw_%u");
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!((c.reg_attempts, c.reg_ok, c.reg_failed), (20, 20, 0));
    // 10 s at 5 calls/s, evenly spaced from t=0: 50 offered, all placed and completed.
    assert_eq!(c.calls_offered, 50);
    assert_eq!(c.calls_attempted, 50);
    assert_eq!(c.calls_answered, 50);
    assert_eq!(c.calls_ringing, 50);
    assert_eq!(c.calls_completed, 50);
    assert_eq!(c.dereg_ok, 20);
    assert_eq!(c.retransmits, 0);
    assert_eq!(
        net.target.registered(net.now),
        0,
        "de-registration empties the registrar"
    );
    // Every call crossed the proxy: INVITE, ACK, BYE each forwarded to the callee.
    assert!(net.target.stats().proxied_requests >= 150);
    assert_eq!(net.totals.status.get("REGISTER 401"), Some(&40));
    let m = Rfc6076::of(&net.totals);
    assert_eq!(m.session_establishment_ratio_pct, Some(100.0));
    assert_eq!(m.session_completion_ratio_pct, Some(100.0));
    assert_eq!(m.registration_request_delay.count, 20);
    // Session duration is the hold time (virtual clock: exact to the histogram's precision).
    assert!((m.session_duration_time.p50_ms - 2000.0).abs() < 2.0);
}

/// Issue 10: Kamailio with two children relayed a callee's 200 before its 180; the 2xx ended the
/// INVITE transaction, so the late 180 found none and was counted as a stray response. It is a
/// late provisional for a call we placed, and every call still completes.
#[test]
fn a_180_overtaken_by_its_200_is_a_late_provisional_not_a_stray() {
    let mut net = Net::new(cfg(), 20, "pw_%u");
    net.hold_back_180 = true;
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(c.calls_attempted, 50);
    assert_eq!(c.calls_completed, 50);
    assert_eq!(
        c.late_provisionals, 50,
        "each call's 180 came after its 200"
    );
    assert_eq!(c.stray_responses, 0);
}

#[test]
fn wrong_password_is_counted_as_a_failed_registration() {
    let mut net = Net::new(cfg(), 5, "wrong_%u");
    net.run(Duration::from_secs(60));
    let c = &net.totals.counters;
    assert_eq!((c.reg_attempts, c.reg_ok, c.reg_failed), (5, 0, 5));
    assert_eq!(c.reg_auth_rejected, 5);
    // Nobody registered: calls are offered but cannot be placed.
    assert_eq!(c.calls_attempted, 0);
    assert!(c.calls_unplaced > 0);
    assert_eq!(
        Rfc6076::of(&net.totals).ineffective_registration_attempts_pct,
        Some(100.0)
    );
}

/// Registrations live 4 s here: every user must refresh at half the lifetime all through the
/// 10 s call phase, or the registrar forgets it and calls to it fail.
#[test]
fn registrations_are_refreshed_before_they_expire() {
    let mut net = Net::new(
        CoreConfig {
            expires: 4,
            ..cfg()
        },
        5,
        "pw_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(c.reg_ok, 5);
    // Refreshes at 2, 4, 6, 8 s into the call phase at least (the one due as it ends lapses).
    assert!(c.rereg_attempts >= 5 * 4, "{}", c.rereg_attempts);
    assert_eq!(c.rereg_ok, c.rereg_attempts);
    assert_eq!(c.rereg_failed, 0);
    assert_eq!(c.calls_attempted, 50);
    assert_eq!(c.calls_completed, 50, "every callee stayed registered");
    assert_eq!(c.dereg_ok, 5);
    let refreshes: Vec<&String> = net
        .from_load
        .iter()
        .filter(|m| m.starts_with("REGISTER ") && m.contains("\r\nExpires: 4\r\n"))
        .collect();
    // Each refresh is a REGISTER and its answer to the challenge, initial ones included.
    assert!(refreshes.len() >= 2 * (5 + 5 * 4), "{}", refreshes.len());
}

/// A failed registration is tried again `reg_retry` later while the run is on, and no more once
/// it stops.
#[test]
fn failed_registrations_are_retried_until_the_run_stops() {
    let mut net = Net::new(
        CoreConfig {
            reg_retry: Some(Duration::from_secs(3)),
            ..cfg()
        },
        5,
        "wrong_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(c.reg_attempts, 5, "retries are not new attempts");
    // The first try, then retries about 3, 6 and 9 s into the 10 s call phase.
    assert_eq!(c.reg_failed, 5 * 4);
    assert_eq!(c.reg_auth_rejected, 5 * 4);
    assert_eq!(c.reg_ok, 0);
}

#[test]
fn a_retransmitted_200_gets_the_same_ack_again() {
    let mut c = cfg();
    c.max_total_calls = Some(1);
    let mut net = Net::new(c, 2, "pw_%u");
    net.lose_first_ack = true;
    net.run(Duration::from_secs(60));
    let acks: Vec<&String> = net
        .from_load
        .iter()
        .filter(|m| m.starts_with("ACK "))
        .collect();
    assert_eq!(acks.len(), 2, "the lost ACK and its repeat");
    assert_eq!(acks[0], acks[1], "rebuilt from the dialog, byte for byte");
    let c = &net.totals.counters;
    assert_eq!((c.calls_answered, c.calls_completed), (1, 1));
    assert!(c.duplicates_received >= 1);
    assert_eq!(net.target.stats().answerer.ack_timeouts, 0);
}

#[test]
fn loss_is_repaired_by_retransmission_and_counted_as_ours() {
    let mut net = Net::new(cfg(), 20, "pw_%u");
    net.drop_every = 7;
    net.run(Duration::from_secs(300));
    let c = &net.totals.counters;
    assert!(net.dropped > 20);
    assert!(c.retransmits > 0);
    assert_eq!(c.reg_ok, 20);
    assert_eq!(c.calls_attempted, 50);
    // Every call ends one way or another, and none is lost from the books.
    assert_eq!(
        c.calls_answered + c.calls_failed + c.calls_timeout + c.calls_cancelled,
        50
    );
    assert_eq!(
        c.calls_answered, 50,
        "one lost datagram in seven is repaired by Timer A/E"
    );
}

#[test]
fn callee_hangs_up_when_asked() {
    let mut net = Net::new(
        CoreConfig {
            bye_by: ByeBy::Callee,
            hold: Duration::from_millis(1500),
            ..cfg()
        },
        10,
        "pw_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(c.calls_answered, 50);
    assert_eq!(c.calls_completed, 50);
    // Calls placed at 8.6 s .. 9.8 s were still up when the call phase ended at 10 s: the
    // caller ends those (7 of them); the callee hung up all the others.
    assert_eq!(c.uas_byes, 7);
    assert_eq!(net.totals.delays.sdt.len(), 50);
}

/// Issue 10 fix 3 seen from the load side: our users' answering side at its cap refuses new
/// calls with 503 (counted on both sides) instead of holding them, and the calls it holds
/// complete.
#[test]
fn callees_at_their_cap_refuse_with_503_and_both_sides_count_it() {
    let mut net = Net::new(
        CoreConfig {
            uas_max_calls: 3,
            cps: 5.0,
            hold: Duration::from_secs(2),
            ..cfg()
        },
        10,
        "pw_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    // 5 calls/s of 2 s: 10 in progress wanted, 3 allowed on the one worker's answering side.
    assert_eq!(c.calls_attempted, 50);
    assert!(c.uas_refused_overload >= 20, "{c:?}");
    assert_eq!(c.calls_failed, c.uas_refused_overload);
    assert_eq!(
        net.totals.status.get("INVITE 503").copied(),
        Some(c.uas_refused_overload)
    );
    assert_eq!(c.calls_answered + c.calls_failed, 50);
    assert_eq!(c.calls_completed, c.calls_answered);
    assert_eq!(c.uas_invites, 50);
    assert_eq!(c.uas_answered, c.calls_answered);
    assert!(net.load.take_stats().gauges.answering_calls <= 50);
}

/// The embedded target's answering side (no-registration calls end there) at its cap: 503s
/// counted in the target's own stats, the caller's calls failed, none stored.
#[test]
fn the_targets_answerer_at_its_cap_refuses_with_503() {
    let target = TargetConfig {
        answerer: crate::ua::answerer::AnswererConfig {
            max_calls: 4,
            ..Default::default()
        },
        ..TargetConfig::default()
    };
    let pop = from_pattern("user%04d", 1, 2, "ims.local", "pw_%u").unwrap();
    let mut net = Net::with(
        CoreConfig {
            register: false,
            fixed_ruri: Some(format!("sip:service@{}", SocketAddr::from(TARGET))),
            cps: 10.0,
            hold: Duration::from_secs(1),
            ..cfg()
        },
        pop,
        target,
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    let t = net.target.stats().answerer;
    assert_eq!(c.calls_attempted, 100);
    assert!(t.calls_refused_overload > 0, "{t:?}");
    assert_eq!(c.calls_failed, t.calls_refused_overload);
    assert_eq!(t.calls_answered, c.calls_answered);
    assert_eq!(c.calls_completed, c.calls_answered);
    assert_eq!(t.byes_received, c.calls_completed);
    assert_eq!(t.invites, 100);
}

/// The callee rings longer than the INVITE timeout: every call is CANCELled on its INVITE's
/// branch and CSeq number (RFC 3261 §9.1). The in-process target forwards the CANCEL on a branch
/// of its own, so the callee never matches it and answers at the end of its ring time: that 200
/// crosses the CANCEL, and the caller ACKs it and hangs up at once.
#[test]
fn calls_ringing_past_the_invite_timeout_are_cancelled_and_a_crossing_200_hung_up() {
    let mut net = Net::new(
        CoreConfig {
            ring: Duration::from_secs(5),
            invite_timeout: Duration::from_secs(1),
            ..cfg()
        },
        10,
        "pw_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(c.calls_attempted, 50);
    assert_eq!(c.calls_ringing, 50);
    assert_eq!((c.calls_answered, c.calls_completed), (50, 50));
    assert_eq!(
        (c.calls_cancelled, c.calls_failed, c.calls_timeout),
        (0, 0, 0)
    );
    assert_eq!(net.totals.delays.sdt.len(), 50);
    let header = |m: &str, name: &str| {
        m.lines()
            .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(": ")?.to_string()))
    };
    let sent = |method: &str| -> Vec<(Option<String>, Option<String>)> {
        net.from_load
            .iter()
            .filter(|m| m.starts_with(&format!("{method} ")))
            .map(|m| (header(m, "Via"), header(m, "CSeq")))
            .collect()
    };
    let invites = sent("INVITE");
    let cancels = sent("CANCEL");
    assert_eq!(cancels.len(), 50);
    for (via, cseq) in &cancels {
        assert!(
            invites
                .iter()
                .any(|(v, c)| v == via && c.as_deref() == Some("1 INVITE")),
            "{via:?} is not an INVITE's branch"
        );
        assert_eq!(cseq.as_deref(), Some("1 CANCEL"));
    }
    // Each crossing 200 is ACKed and the call hung up in the same instant.
    for (i, m) in net.from_load.iter().enumerate() {
        if m.starts_with("ACK ") {
            assert!(
                net.from_load[i + 1].starts_with("BYE "),
                "{}",
                net.from_load[i + 1]
            );
        }
    }
    assert_eq!(sent("ACK").len(), 50);
}

#[test]
fn max_calls_limits_and_open_loop_keeps_offering() {
    let mut net = Net::new(
        CoreConfig {
            max_calls: 3,
            cps: 10.0,
            hold: Duration::from_secs(5),
            ..cfg()
        },
        10,
        "pw_%u",
    );
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(
        c.calls_offered, 100,
        "the offered rate does not bend to the limit"
    );
    assert!(c.calls_limited > 80);
    assert_eq!(c.calls_attempted + c.calls_limited, 100);
}

#[test]
fn unanswered_target_ends_with_timeouts_not_a_hang() {
    let mut net = Net::new(cfg(), 3, "pw_%u");
    net.drop_every = 1; // everything is lost
    net.run(Duration::from_secs(600));
    let c = &net.totals.counters;
    assert_eq!(c.reg_timeouts, 3);
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(net.totals.status.get("REGISTER timeout"), Some(&3));
}

// ---------------------------------------------------------------- IMS AKA (AKAv1-MD5)

/// TS 35.208 test set 1's K and OPc: any K would do, these are recognisable in a capture.
fn lab_keys() -> AkaKeys {
    aka_subscription(
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        None,
        Some("cd63cb71954a9f4e48a5994e37a02baf"),
        Some("8000"),
        None,
    )
    .unwrap()
    .keys
}

/// `count` AKA users with the lab's IMSI-style IMPIs, K from `k` (hex) and the UE's SQN.
fn aka_net(cfg: CoreConfig, count: usize, k: &str, ue_sqn: &str) -> Net {
    aka_net_on(cfg, count, k, ue_sqn, vec![SocketAddr::from(LOAD)])
}

fn aka_net_on(
    cfg: CoreConfig,
    count: usize,
    k: &str,
    ue_sqn: &str,
    locals: Vec<SocketAddr>,
) -> Net {
    let sub = aka_subscription(
        k,
        None,
        Some("cd63cb71954a9f4e48a5994e37a02baf"),
        Some("8000"),
        Some(ue_sqn),
    )
    .unwrap();
    let pop = from_spec(&PatternSpec {
        user: "+1555%06d",
        first: 1,
        count,
        domain: "ims.local",
        password: "not-used-by-aka",
        impi: Some("00101%010d@ims.local"),
        aka: Some(sub),
        tel: None,
    })
    .unwrap();
    let target = TargetConfig {
        aka: Some(TargetAka::all(lab_keys())),
        ..TargetConfig::default()
    };
    Net::with_locals(cfg, pop, target, locals)
}

// ---------------------------------------------------------------- IMS security agreement

/// `users` AKA UEs with `--ipsec` (three sockets each) against the target playing a P-CSCF
/// that offers port-c 5100, port-s 5200.
fn ipsec_net(users: usize) -> Net {
    ipsec_net_with(users, |_| {})
}

fn ipsec_net_with(users: usize, tweak: impl FnOnce(&mut CoreConfig)) -> Net {
    ipsec_net_sqn(users, "0", tweak)
}

/// [`ipsec_net_with`], the UEs' USIMs at SQN `ue_sqn` (hex).
fn ipsec_net_sqn(users: usize, ue_sqn: &str, tweak: impl FnOnce(&mut CoreConfig)) -> Net {
    use crate::sip::secagree::{AuthAlg, EncAlg};
    let mut cfg = CoreConfig {
        ipsec: Some(crate::ua::security::SecurityConfig {
            alg: AuthAlg::HmacSha1_96,
            ealg: EncAlg::AesCbc,
            pcscf: SocketAddr::from(TARGET).ip(),
        }),
        max_total_calls: Some(4),
        ..cfg()
    };
    tweak(&mut cfg);
    let locals = (0..3 * users)
        .map(|i| SocketAddr::from(([127, 0, 0, 2], 40000 + i as u16)))
        .collect();
    let mut net = aka_net_on(
        cfg,
        users,
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        ue_sqn,
        locals,
    );
    net.security_server = Some(
        "ipsec-3gpp;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5100;port-s=5200;alg=hmac-sha-1-96;ealg=aes-cbc".into(),
    );
    net.protected_dest = Some(SocketAddr::from(([127, 0, 0, 1], 5200)));
    net
}

/// Each UE's first REGISTER leaves its unprotected socket with no port in Via and Contact
/// and offers Security-Client; the 401's Security-Server and AKA keys make four SAs, and the
/// protected REGISTER waits for them, then leaves the protected client port for the P-CSCF's
/// port-s with Security-Verify. Calls go the same way; the SAs are taken away after the
/// de-registration.
#[test]
fn ipsec_ues_send_through_their_sas_once_made() {
    use crate::ipsec::Dir;
    let mut net = ipsec_net(2);
    // (the plain socket is bound afresh once the UE is protected, for a renewal's offer)
    let (plain, uc, us) = (net.locals[0], net.locals[1], net.locals[2]);
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(
        (c.reg_ok, c.ipsec_sa_setups, c.ipsec_sa_teardowns),
        (2, 2, 2)
    );
    assert_eq!(c.calls_completed, 4);
    assert_eq!(c.dereg_ok, 2);
    // Installs first, removals after the de-registrations, each UE's SAs once.
    let kinds: Vec<(bool, u32)> = net.ipsec.iter().map(|(i, u, _)| (*i, *u)).collect();
    assert_eq!(kinds, [(true, 0), (true, 1), (false, 0), (false, 1)]);
    let (_, _, sas) = &net.ipsec[0];
    let out = &sas[0];
    assert_eq!(
        (out.dir, out.sport, out.dport, out.spi),
        (Dir::Out, uc.port(), 5200, 4097),
        "the UE's requests go to the P-CSCF's port-s under its spi-s"
    );
    assert_eq!(out.enc_key.len(), 16, "aes-cbc is keyed with CK");
    assert_inbound_on(sas, uc, us);
    // User 0's REGISTERs: the first in clear, the rest protected.
    let regs: Vec<(SocketAddr, &String)> = net
        .from_load
        .iter()
        .zip(&net.from_load_src)
        .filter(|(m, src)| m.starts_with("REGISTER ") && [plain, uc].contains(src))
        .map(|(m, src)| (*src, m))
        .collect();
    // First, protected, and the de-registration twice: this target challenges it too, and
    // the answer goes through the SAs already made (no second agreement).
    assert_eq!(regs.len(), 4, "{regs:#?}");
    let (src, first) = regs[0];
    assert_eq!(src, plain);
    assert!(
        first.contains("Via: SIP/2.0/UDP 127.0.0.2;branch="),
        "{first}"
    );
    assert!(first.contains("@127.0.0.2;transport=udp>"), "{first}");
    assert!(first.contains(&format!(
        "Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c={};spi-s={};port-c={};port-s={}",
        0x10_0000 + uc.port() as u32,
        0x10_0000 + us.port() as u32,
        uc.port(),
        us.port()
    )), "{first}");
    assert!(first.contains("Require: sec-agree\r\n") && !first.contains("Security-Verify"));
    for (src, m) in &regs[1..] {
        assert_eq!(*src, uc);
        assert!(m.contains(&format!("Via: SIP/2.0/UDP {us};branch=")), "{m}");
        assert!(m.contains(&format!("@{us};transport=udp>")), "{m}");
        assert!(
            m.contains("Security-Verify: ipsec-3gpp;prot=esp;mod=trans;spi-c=4096"),
            "{m}"
        );
    }
    // Every INVITE left a protected client port.
    let invites: Vec<&SocketAddr> = net
        .from_load
        .iter()
        .zip(&net.from_load_src)
        .filter(|(m, _)| m.starts_with("INVITE "))
        .map(|(_, s)| s)
        .collect();
    assert!(!invites.is_empty());
    assert!(
        invites.iter().all(|s| s.port() % 3 == 40000 % 3 + 1),
        "{invites:?}"
    );
}

/// `--bye-by callee` under `--ipsec`: the callee's BYE is a request of the UE like any other,
/// so it leaves the UE's protected client port for the P-CSCF's port-s (its SA pair), while the
/// 180 and 200 it sent answer from the protected server port the INVITE reached.
#[test]
fn ipsec_callee_bye_leaves_the_protected_client_port() {
    let mut net = ipsec_net_with(2, |c| c.bye_by = super::config::ByeBy::Callee);
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(c.calls_completed, 4, "{c:?}");
    let sent = |start: &str| -> Vec<(SocketAddr, SocketAddr)> {
        net.from_load
            .iter()
            .zip(net.from_load_src.iter().zip(&net.from_load_dest))
            .filter(|(m, _)| m.starts_with(start))
            .map(|(_, (s, d))| (*s, *d))
            .collect()
    };
    let port_c = |a: &SocketAddr| net.locals.iter().position(|l| l == a).unwrap() % 3 == 1;
    let port_s = |a: &SocketAddr| net.locals.iter().position(|l| l == a).unwrap() % 3 == 2;
    let byes = sent("BYE ");
    assert_eq!(byes.len(), 4, "{byes:?}");
    for (src, dest) in &byes {
        assert!(port_c(src), "BYE from {src}, not a port-c");
        assert_eq!(dest.port(), 5200, "BYE to {dest}, not the P-CSCF's port-s");
    }
    let answers = sent("SIP/2.0 ");
    assert!(!answers.is_empty());
    assert!(answers.iter().all(|(s, _)| port_s(s)), "{answers:?}");
}

/// A UE's inbound SAs are on its port-c `uc` and port-s `us`, each under the SPI it chose from
/// the port (`0x100000 +` port).
fn assert_inbound_on(sas: &[crate::ipsec::Sa], uc: SocketAddr, us: SocketAddr) {
    let inbound: Vec<(u16, u32)> = sas
        .iter()
        .filter(|s| s.dir == crate::ipsec::Dir::In)
        .map(|s| (s.dport, s.spi))
        .collect();
    assert_eq!(
        inbound,
        [
            (uc.port(), 0x10_0000 + uc.port() as u32),
            (us.port(), 0x10_0000 + us.port() as u32)
        ]
    );
}

/// The Call-ID and CSeq of a message.
fn call_id_cseq(m: &str) -> (String, String) {
    let h = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .to_string()
    };
    (h("Call-ID: "), h("CSeq: "))
}

/// The Security-Server of the `n`-th renewal (from 1) of [`Net::renew`]: new SPIs, a new
/// client port, the server port of [`ipsec_net`]'s first agreement.
fn renewal_server(n: u32) -> String {
    format!(
        "ipsec-3gpp;prot=esp;mod=trans;spi-c={};spi-s={};port-c={};port-s=5200;alg=hmac-sha-1-96;ealg=aes-cbc",
        8000 + 2 * n,
        8001 + 2 * n,
        5100 + n
    )
}

/// The Security-Client of a REGISTER: (spi-c, spi-s, port-c, port-s).
fn security_client(m: &str) -> (u32, u32, u16, u16) {
    let v = m
        .lines()
        .find_map(|l| l.strip_prefix("Security-Client: "))
        .unwrap_or_else(|| panic!("no Security-Client in {m}"));
    sec_params(v)
}

/// (spi-c, spi-s, port-c, port-s) of one `ipsec-3gpp` offer.
fn sec_params(v: &str) -> (u32, u32, u16, u16) {
    let p = |k: &str| -> u32 {
        v.split(';')
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {v}"))
            .parse()
            .unwrap()
    };
    (
        p("spi-c="),
        p("spi-s="),
        p("port-c=") as u16,
        p("port-s=") as u16,
    )
}

/// A UE whose USIM is ahead of the network answers the first challenge with AUTS. That
/// REGISTER goes unprotected like the first, so it leaves a fresh port and offers SPIs and
/// ports never offered before (a P-CSCF keeps a UE's first Security-Client per address and
/// port and has made SAs on its SPIs already: docs/ipsec.md §0). The fresh challenge then
/// makes the SAs on the new ones, and everything after goes through them.
#[test]
fn ipsec_ue_resynchronising_offers_fresh_ports_and_spis() {
    let mut net = ipsec_net_sqn(2, "1000", |_| {});
    let first = (net.locals[0], net.locals[1], net.locals[2]);
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(
        (c.reg_ok, c.reg_aka_resyncs, c.ipsec_fresh_ports),
        (2, 2, 2)
    );
    assert_eq!((c.ipsec_sa_setups, c.ipsec_sa_teardowns), (2, 2));
    assert_eq!((c.calls_completed, c.dereg_ok), (4, 2));
    let (u, &[plain, uc, us]) = (net.rebinds[0].0, &net.rebinds[0].1[..]) else {
        panic!("a restart rebinds three sockets: {:?}", net.rebinds[0]);
    };
    assert_eq!(u, 0);
    assert_eq!(plain.ip(), first.0.ip(), "the UE keeps its address");
    assert!(![first.0, first.1, first.2].contains(&plain));
    let regs: Vec<(SocketAddr, &String)> = net
        .from_load
        .iter()
        .zip(&net.from_load_src)
        .filter(|(m, src)| m.starts_with("REGISTER ") && [first.0, plain, uc].contains(src))
        .map(|(m, src)| (*src, m))
        .collect();
    // The first, the AUTS answer, the protected one; then the de-registration.
    assert!(regs.len() >= 4, "{regs:#?}");
    assert_eq!(regs[0].0, first.0);
    assert_eq!(
        security_client(regs[0].1),
        (
            0x10_0000 + first.1.port() as u32,
            0x10_0000 + first.2.port() as u32,
            first.1.port(),
            first.2.port()
        )
    );
    assert_eq!(regs[1].0, plain, "AUTS from the fresh plain socket");
    assert!(regs[1].1.contains("auts=\""), "{}", regs[1].1);
    assert_eq!(
        security_client(regs[1].1),
        (
            0x10_0000 + uc.port() as u32,
            0x10_0000 + us.port() as u32,
            uc.port(),
            us.port()
        )
    );
    assert!(!regs[1].1.contains("Security-Verify"));
    for (src, m) in &regs[2..] {
        assert_eq!(*src, uc, "{m}");
        assert!(m.contains(&format!("@{us};transport=udp>")), "{m}");
    }
    // The SAs were made on the new ports and SPIs.
    assert_inbound_on(&net.ipsec[0].2, uc, us);
}

/// A registration that failed (the kernel refused the SAs) and is retried (`--reg-retry`)
/// starts over unprotected on fresh ports and SPIs, each retry on new ones.
#[test]
fn ipsec_retry_starts_over_on_fresh_ports_and_spis() {
    let mut net = ipsec_net_with(1, |c| {
        c.reg_retry = Some(Duration::from_secs(2));
        c.duration = Some(Duration::from_secs(7));
        c.max_total_calls = None;
    });
    net.refuse_sas = true;
    net.run(Duration::from_secs(60));
    let c = &net.totals.counters;
    assert!(c.reg_failed >= 3, "{c:?}");
    assert_eq!(c.ipsec_fresh_ports, c.reg_failed - 1, "{c:?}");
    let offers: Vec<(u32, u32, u16, u16)> = net
        .from_load
        .iter()
        .filter(|m| m.starts_with("REGISTER "))
        .map(|m| security_client(m))
        .collect();
    assert_eq!(offers.len() as u64, c.reg_failed, "{offers:?}");
    let distinct: std::collections::HashSet<_> = offers.iter().collect();
    assert_eq!(
        distinct.len(),
        offers.len(),
        "an offer repeated: {offers:?}"
    );
}

/// A kernel that refuses the SAs: the protected REGISTER is never sent, the registration
/// fails, and the refusal is counted by name.
#[test]
fn ipsec_sas_refused_fail_the_registration_unsent() {
    let mut net = ipsec_net(2);
    net.refuse_sas = true;
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!((c.reg_ok, c.reg_failed), (0, 2));
    assert_eq!((c.ipsec_sa_install_failed, c.ipsec_sa_setups), (2, 0));
    assert_eq!(
        c.ipsec_sa_teardowns, 0,
        "nothing made, nothing to take away"
    );
    let registers = net
        .from_load
        .iter()
        .filter(|m| m.starts_with("REGISTER "))
        .count();
    assert_eq!(registers, 2, "only the unprotected ones");
}

/// A P-CSCF that does not do sec-agree (a 401 without Security-Server): no SA, the failure
/// named.
#[test]
fn ipsec_without_security_server_is_named() {
    let mut net = ipsec_net(2);
    net.security_server = None;
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(
        (c.reg_ok, c.reg_failed, c.ipsec_no_security_server),
        (0, 2, 2)
    );
    assert!(net.ipsec.is_empty());
}

#[test]
fn aka_users_register_call_and_deregister() {
    let mut net = aka_net(cfg(), 20, "465b5ce8b199b49faa5f0a2ee238a6bc", "0");
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!((c.reg_attempts, c.reg_ok, c.reg_failed), (20, 20, 0));
    assert_eq!((c.reg_aka_mac_failures, c.reg_aka_resyncs), (0, 0));
    assert_eq!(c.calls_attempted, 50);
    assert_eq!(c.calls_completed, 50);
    assert_eq!(c.dereg_ok, 20);
    assert_eq!(net.target.registered(net.now), 0);
    // Every REGISTER (initial and de-registration) was challenged once with AKA and answered.
    assert_eq!(net.totals.status.get("REGISTER 401"), Some(&40));
    assert_eq!(net.target.stats().challenges, 40);
    assert_eq!(net.target.stats().auth_failures, 0);
}

#[test]
fn aka_wrong_k_is_a_counted_mac_failure() {
    let mut net = aka_net(cfg(), 4, "00112233445566778899aabbccddeeff", "0");
    net.run(Duration::from_secs(60));
    let c = &net.totals.counters;
    assert_eq!((c.reg_attempts, c.reg_ok, c.reg_failed), (4, 0, 4));
    assert_eq!(c.reg_aka_mac_failures, 4);
    assert_eq!(c.reg_auth_rejected, 4);
    // The UE told the network (empty response), and the network refused it with 403.
    assert_eq!(net.totals.status.get("REGISTER 403"), Some(&4));
    assert_eq!(net.target.stats().auth_failures, 4);
    assert_eq!(c.calls_attempted, 0);
}

#[test]
fn aka_ue_ahead_of_the_network_resynchronises_then_registers() {
    // The UEs have accepted SQN 0x1000 already; the target starts from 0 and would send 0x20.
    let mut net = aka_net(cfg(), 3, "465b5ce8b199b49faa5f0a2ee238a6bc", "1000");
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!((c.reg_attempts, c.reg_ok, c.reg_failed), (3, 3, 0));
    assert_eq!(c.reg_aka_resyncs, 3);
    assert_eq!(c.reg_aka_mac_failures, 0);
    assert_eq!(net.target.stats().aka_resyncs, 3);
    // Initial: challenge, AUTS, fresh challenge, 200; then the de-registration's own round,
    // whose SQN follows the re-synchronised one and needs no second AUTS.
    assert_eq!(net.totals.status.get("REGISTER 401"), Some(&(3 * 3)));
    assert_eq!(c.dereg_ok, 3);
}

/// The REGISTERs an AKA UE puts on the wire: the IMS initial form (IMPI, empty nonce and
/// response), the AKA answer echoing the algorithm, and AUTS with a response over an empty
/// password when re-synchronising.
#[test]
fn aka_register_requests_on_the_wire() {
    let mut net = aka_net(
        CoreConfig {
            cps: 0.0,
            duration: Some(Duration::from_secs(1)),
            ..cfg()
        },
        1,
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        "1000",
    );
    net.run(Duration::from_secs(60));
    let regs: Vec<&String> = net
        .from_load
        .iter()
        .filter(|m| m.starts_with("REGISTER "))
        .collect();
    assert!(regs.len() >= 3, "{regs:#?}");
    let authz = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("Authorization: "))
            .unwrap_or_else(|| panic!("no Authorization in {m}"))
            .to_string()
    };
    assert!(regs[0].contains("Supported: path"));
    assert_eq!(
        authz(regs[0]),
        "Authorization: Digest username=\"001010000000001@ims.local\", realm=\"ims.local\", \
         nonce=\"\", uri=\"sip:ims.local\", response=\"\""
    );
    let resync = authz(regs[1]);
    assert!(resync.contains("auts=\""), "{resync}");
    assert!(resync.contains("algorithm=AKAv1-MD5"), "{resync}");
    let answer = authz(regs[2]);
    assert!(!answer.contains("auts="), "{answer}");
    assert!(answer.contains("algorithm=AKAv1-MD5") && answer.contains("qop=auth"));
    assert_eq!(net.totals.counters.reg_ok, 1);
}

#[test]
fn calls_left_open_at_the_drain_deadline_are_counted_as_unanswered() {
    let mut net = Net::new(
        CoreConfig {
            hold: Duration::from_secs(60),
            duration: Some(Duration::from_secs(5)),
            drain: Duration::from_secs(2),
            ..cfg()
        },
        20,
        "pw_%u",
    );
    // Registration (0.4 s) and most of the call phase run normally; then the target goes silent,
    // so no BYE and no de-registration is ever answered.
    net.run(Duration::from_millis(4900));
    net.drop_every = 1;
    net.run(Duration::from_secs(60));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    // Calls start at 0.4 s, every 0.2 s: 23 are answered before 4.9 s, 2 more ring into silence.
    assert_eq!(c.calls_attempted, 25);
    assert_eq!(c.calls_answered, 23);
    assert_eq!(c.calls_completed, 0);
    // Every open call is in the books, and as what it is: each was waiting for an answer to its
    // INVITE or BYE (a silent target), none was work we chose not to finish.
    assert_eq!(c.calls_unanswered, 25, "every open call is in the books");
    assert_eq!(c.calls_abandoned, 0);
    assert_eq!(c.dereg_attempts, 20);
    assert_eq!(c.dereg_unanswered, 20);
    assert_eq!(c.dereg_abandoned, 0);
}

/// Kamailio 5.6's S-CSCF may answer a correct AKA response with a fresh challenge (its vector
/// was not stored yet when the answer came): the UE answers the new vector instead of giving
/// up, at most three rounds, and counts the extra rounds. A repeated nonce is a rejection.
#[test]
fn aka_fresh_challenge_after_credentials_is_answered_again() {
    use crate::sip::aka;
    use crate::sip::builder::Writer;
    use crate::sip::Message;
    let keys = lab_keys();
    let sub = aka_subscription(
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        None,
        Some("cd63cb71954a9f4e48a5994e37a02baf"),
        Some("8000"),
        Some("1000"),
    )
    .unwrap();
    let pop = from_spec(&PatternSpec {
        user: "+1555%06d",
        first: 1,
        count: 1,
        domain: "ims.local",
        password: "x",
        impi: Some("00101%010d@ims.local"),
        aka: Some(sub),
        tel: None,
    })
    .unwrap();
    let now = Instant::now();
    let cfg = CoreConfig { cps: 0.0, ..cfg() };
    let mut ue = LoadCore::new(cfg, &[SocketAddr::from(LOAD)], pop, 0, now);
    ue.start(now);
    ue.handle_timeout(now);
    let from = SocketAddr::from(TARGET);
    let challenge = |ue: &mut LoadCore, nonce: &str| -> Option<String> {
        let req = ue.poll_transmit()?.data;
        let m = Message::parse(&req).unwrap();
        let mut w = Writer::response_to(&m, 401, "Unauthorized", Some("t"));
        w.header(
            "WWW-Authenticate",
            format_args!(
                "Digest realm=\"ims.local\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, qop=\"auth\""
            ),
        );
        ue.handle_input(now, &w.finish(None, b""), from, 0);
        Some(String::from_utf8(req).unwrap())
    };
    let v1 = aka::generate(&keys, [1; 16], 0x1000 + 32).nonce();
    let v2 = aka::generate(&keys, [2; 16], 0x1000 + 64).nonce();
    let first = challenge(&mut ue, &v1).expect("initial REGISTER");
    assert!(first.contains("nonce=\"\""));
    let answered_v1 = challenge(&mut ue, &v2).expect("answer to the first vector");
    assert!(answered_v1.contains(&v1));
    // The repeated challenge is answered after a think time, not at once.
    assert!(
        ue.poll_transmit().is_none(),
        "answer waits for its think time"
    );
    ue.handle_timeout(now + Duration::from_millis(20));
    let answered_v2 = challenge(&mut ue, &v2).expect("the fresh vector is answered again");
    assert!(answered_v2.contains(&v2) && answered_v2.contains("response=\""));
    // The same nonce once more: that is a rejection, not another round.
    assert!(ue.poll_transmit().is_none(), "no fourth REGISTER");
    let s = ue.take_stats();
    assert_eq!(s.counters.reg_extra_challenges, 1);
    assert_eq!(s.counters.reg_failed, 1);
    assert_eq!(s.counters.reg_auth_rejected, 1);
    assert_eq!(s.counters.reg_aka_mac_failures, 0);
}

#[test]
fn scenario_mix_runs_every_kind_and_books_each() {
    use super::config::Mix;
    let mut net = Net::new(
        CoreConfig {
            cps: 20.0,
            duration: None,
            preregistered: 0.5,
            mix: Mix {
                call: 0.3,
                register: 0.1,
                reregister: 0.1,
                deregister: 0.1,
                message: 0.2,
                options: 0.2,
            },
            ..cfg()
        },
        40,
        "pw_%u",
    );
    // Pre-registration of 20 users at 50/s takes 0.4 s; then 10 s of attempts at 20/s.
    net.run(Duration::from_millis(10_350));
    let mid = net.totals.counters.clone();
    assert_eq!(mid.scenarios_offered, 200);
    assert_eq!(
        mid.calls_offered
            + mid.msg_attempts
            + mid.opt_attempts
            + (mid.reg_attempts - 20)
            + mid.rereg_attempts
            + mid.dereg_attempts
            + mid.scenarios_unplaced,
        mid.scenarios_offered,
        "every attempt is one scenario, booked once"
    );
    let now = net.now;
    net.load.stop(now);
    net.run(Duration::from_secs(60));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    // Half the population registered first; the mix's register attempts add more.
    assert!(c.reg_attempts > 30, "{}", c.reg_attempts);
    assert!(c.msg_attempts > 20 && c.opt_attempts > 20, "{c:?}");
    assert_eq!(c.msg_ok, c.msg_attempts, "every MESSAGE answered 200");
    assert_eq!(c.opt_ok, c.opt_attempts);
    assert!(
        mid.rereg_attempts > 5 && c.rereg_ok == c.rereg_attempts,
        "{c:?}"
    );
    // Mid-run de-registrations plus the final ones, all answered.
    assert!(
        mid.dereg_attempts > 5 && c.dereg_ok == c.dereg_attempts,
        "{c:?}"
    );
    assert_eq!(net.totals.delays.message.len(), c.msg_ok);
    assert_eq!(net.target.registered(net.now), 0);
}

#[test]
fn rate_changes_take_effect_at_once_and_keep_the_spacing() {
    let mut net = Net::new(
        CoreConfig {
            cps: 10.0,
            duration: None,
            hold: Duration::from_millis(200),
            ..cfg()
        },
        20,
        "pw_%u",
    );
    // Registration of 20 users at 50/s takes 0.4 s; then 10/s for 2 s.
    net.run(Duration::from_millis(2400));
    let first = net.totals.counters.scenarios_offered;
    assert!((19..=21).contains(&first), "{first}");
    let now = net.now;
    net.load.set_rate(now, 50.0);
    net.run(Duration::from_secs(2));
    let second = net.totals.counters.scenarios_offered - first;
    assert!((99..=101).contains(&second), "{second} at 50/s for 2 s");
    let now = net.now;
    net.load.set_rate(now, 0.0);
    net.run(Duration::from_secs(2));
    assert_eq!(net.totals.counters.scenarios_offered, first + second);
    // Slow rates still fire when they change every second (constant spacing is kept).
    for _ in 0..4 {
        let now = net.now;
        let r = net.load.rate();
        net.load.set_rate(now, if r == 0.6 { 0.7 } else { 0.6 });
        net.run(Duration::from_secs(1));
    }
    let slow = net.totals.counters.scenarios_offered - first - second;
    assert!((2..=3).contains(&slow), "{slow} arrivals in 4 s at ~0.65/s");
    let now = net.now;
    net.load.stop(now);
    net.run(Duration::from_secs(30));
    assert_eq!(net.load.phase(), Phase::Done);
}

/// What a worker does at its ticks: the rate of the next second is known before its tick and
/// handed over with the tick's instant. A worker that wakes late for the tick runs its due
/// timers at once; arrivals due past the tick must follow the new rate all the same. With the
/// rate applied when the worker got to it, a 6 s phase at 5/s placed a 31st arrival whenever
/// the wake-up came later than the first arrival's offset from the tick (seen: a shard of
/// tests/container.rs offered 31 calls, not 30, on a loaded machine).
#[test]
fn a_rate_told_ahead_takes_effect_at_its_instant_however_late_the_timers_run() {
    let mut net = Net::new(
        CoreConfig {
            cps: 0.0,
            duration: None,
            hold: Duration::from_millis(200),
            ..cfg()
        },
        20,
        "pw_%u",
    );
    // Registration of 20 users at 50/s takes 0.4 s; then the calling phase, at rate 0.
    net.run(Duration::from_millis(1000));
    assert_eq!(net.load.phase(), Phase::Calling);
    let tick = net.now + Duration::from_millis(500);
    net.load.set_rate_at(tick, 5.0);
    net.run(Duration::from_millis(490));
    assert_eq!(
        net.totals.counters.scenarios_offered, 0,
        "nothing before the tick"
    );
    net.run(tick + Duration::from_millis(5500) - net.now);
    net.load.set_rate_at(tick + Duration::from_secs(6), 0.0);
    // The worker wakes 50 ms late for the tick that ends the phase.
    net.now = tick + Duration::from_millis(6050);
    net.load.handle_timeout(net.now);
    net.run(Duration::from_secs(2));
    // At the tick, t + 0.2 s, ..., t + 5.8 s: 30 arrivals; the one due at t + 6 s is not.
    assert_eq!(net.totals.counters.scenarios_offered, 30);
    assert_eq!(net.load.rate(), 0.0);
    // A change told for an instant already past (a rate that came late) applies from that
    // instant: the arrivals since then are placed at once, none lost.
    let past = net.now;
    net.run(Duration::from_millis(400));
    net.load.set_rate_at(past, 10.0);
    net.load.handle_timeout(net.now);
    net.run(Duration::from_millis(50));
    let c = net.totals.counters.scenarios_offered - 30;
    assert!(
        (4..=6).contains(&c),
        "{c} arrivals for the 0.4 s since the change at 10/s"
    );
    let now = net.now;
    net.load.stop(now);
    net.run(Duration::from_secs(30));
    assert_eq!(net.load.phase(), Phase::Done);
}

/// The IMS options reach the wire: P-Access-Network-Info on REGISTER, INVITE and MESSAGE;
/// `Supported: path` and the Contact's `+sip.instance` / `+g.3gpp.icsi-ref` on REGISTER;
/// P-Preferred-Identity (the tel: IMPU here) on INVITE and MESSAGE only.
#[test]
fn ims_headers_and_contact_parameters_on_the_wire() {
    use super::config::{ImsOptions, Mix, PreferredIdentity};
    use super::population::set_instances;
    let mut pop = from_spec(&PatternSpec {
        user: "user%04d",
        first: 1,
        count: 6,
        domain: "ims.local",
        password: "pw_%u",
        impi: None,
        aka: None,
        tel: Some("+1555%07d"),
    })
    .unwrap();
    set_instances(&mut pop, "urn:gsma:imei:35209900-%06d-0", 1).unwrap();
    let pani = "3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=00101000000001";
    let mut net = Net::with(
        CoreConfig {
            cps: 10.0,
            duration: Some(Duration::from_secs(3)),
            hold: Duration::from_millis(200),
            mix: Mix {
                call: 0.4,
                message: 0.3,
                options: 0.3,
                ..Mix::default()
            },
            ims: ImsOptions {
                pani: Some(pani.into()),
                preferred_identity: Some(PreferredIdentity::Tel),
                icsi_ref: Some("urn:urn-7:3gpp-service.ims.icsi.mmtel".into()),
            },
            ..cfg()
        },
        pop,
        TargetConfig::default(),
    );
    net.run(Duration::from_secs(60));
    assert_eq!(net.load.phase(), Phase::Done);
    let c = &net.totals.counters;
    assert_eq!(c.reg_ok, 6);
    assert!(
        c.calls_completed > 0 && c.msg_ok > 0 && c.opt_ok > 0,
        "{c:?}"
    );
    let header = |m: &str, name: &str| -> Option<String> {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map(str::to_string)
    };
    let user_of = |m: &str| {
        let from = header(m, "From").unwrap();
        from[from.find("user").unwrap()..][..8].to_string()
    };
    let mut seen = [0; 4];
    for m in &net.from_load {
        let method = m.split(' ').next().unwrap();
        let ppi = header(m, "P-Preferred-Identity");
        match method {
            "REGISTER" => {
                seen[0] += 1;
                let u = user_of(m);
                let n: u32 = u[4..].parse().unwrap();
                assert_eq!(header(m, "P-Access-Network-Info").as_deref(), Some(pani));
                assert_eq!(header(m, "Supported").as_deref(), Some("path"));
                assert_eq!(
                    header(m, "Contact").unwrap(),
                    format!(
                        "<sip:{u}@127.0.0.2:5070;transport=udp>;\
                         +sip.instance=\"<urn:gsma:imei:35209900-{n:06}-0>\";\
                         +g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\""
                    )
                );
                assert_eq!(ppi, None, "no P-Preferred-Identity on REGISTER");
            }
            "INVITE" | "MESSAGE" => {
                seen[if method == "INVITE" { 1 } else { 2 }] += 1;
                let n: u32 = user_of(m)[4..].parse().unwrap();
                assert_eq!(ppi, Some(format!("<tel:+1555{n:07}>")), "{m}");
                assert_eq!(header(m, "P-Access-Network-Info").as_deref(), Some(pani));
            }
            "OPTIONS" => {
                seen[3] += 1;
                assert_eq!(ppi, None);
                assert_eq!(header(m, "P-Access-Network-Info"), None);
            }
            _ => {}
        }
    }
    assert!(
        seen.iter().all(|&n| n > 0),
        "REGISTER/INVITE/MESSAGE/OPTIONS seen: {seen:?}"
    );
    // The embedded registrar lists only the sip: IMPU: every user misses its tel: IMPU.
    assert_eq!(c.reg_associated_uris, 6);
    assert_eq!(c.reg_no_associated_uri, 0);
    assert_eq!(c.reg_associated_missing_own, 6);
}

/// What the 2xx to REGISTER says is kept per user: P-Associated-URI (sip: and tel:), Path;
/// a 2xx without P-Associated-URI is counted.
#[test]
fn registration_keeps_associated_identities_and_path() {
    use crate::sip::builder::Writer;
    use crate::sip::Message;
    let pop = from_spec(&PatternSpec {
        user: "user%04d",
        first: 1,
        count: 2,
        domain: "ims.local",
        password: "pw",
        impi: None,
        aka: None,
        tel: Some("+1555%07d"),
    })
    .unwrap();
    let now = Instant::now();
    let cfg = CoreConfig {
        cps: 0.0,
        reg_rate: 1000.0,
        ..cfg()
    };
    let mut ue = LoadCore::new(cfg, &[SocketAddr::from(LOAD)], pop, 0, now);
    ue.start(now);
    ue.handle_timeout(now + Duration::from_millis(5));
    let from = SocketAddr::from(TARGET);
    for (i, with_pau) in [(1, true), (2, false)] {
        let req = ue.poll_transmit().expect("a REGISTER per user").data;
        let m = Message::parse(&req).unwrap();
        let mut w = Writer::response_to(&m, 200, "OK", Some("t"));
        w.header("Contact", "<sip:x@127.0.0.2:5070>;expires=600");
        w.header("Path", "<sip:term@pcscf.ims.local;lr>");
        w.header("Service-Route", "<sip:orig@scscf.ims.local;lr>");
        if with_pau {
            w.header(
                "P-Associated-URI",
                format_args!("<sip:user{i:04}@ims.local>, <tel:+1555{i:07}>"),
            );
        }
        ue.handle_input(now, &w.finish(None, b""), from, 0);
    }
    let (assoc, path) = ue.registration_of("user0001").unwrap();
    assert_eq!(assoc, ["sip:user0001@ims.local", "tel:+15550000001"]);
    assert_eq!(path, ["sip:term@pcscf.ims.local;lr"]);
    let (assoc, _) = ue.registration_of("user0002").unwrap();
    assert!(assoc.is_empty());
    let c = ue.take_stats().counters;
    assert_eq!(c.reg_ok, 2);
    assert_eq!(c.reg_associated_uris, 2);
    assert_eq!(c.reg_no_associated_uri, 1);
    assert_eq!(c.reg_associated_missing_own, 0);
}

/// `--ue-ports`: users on several local sockets. Each user's REGISTER leaves from its own
/// socket with that socket's port in Via and Contact (what a P-CSCF keys UEs by), calls are
/// delivered to the callee's socket, and every transaction still completes.
#[test]
fn users_on_several_sockets_register_and_call_from_their_own_ports() {
    use crate::sip::message::{name_addr_uri, uri_user};
    use crate::sip::{HeaderName, Message};
    let locals: Vec<SocketAddr> = (0..3)
        .map(|j| SocketAddr::from(([127, 0, 0, 2], 5070 + j)))
        .collect();
    let pop = from_pattern("user%04d", 1, 6, "ims.local", "pw_%u").unwrap();
    let mut net = Net::with_locals(cfg(), pop, TargetConfig::default(), locals.clone());
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!((c.reg_ok, c.reg_failed, c.stray_responses), (6, 0, 0));
    assert_eq!((c.calls_attempted, c.calls_completed), (50, 50));
    assert_eq!(c.dereg_ok, 6);
    let mut registers = 0;
    for (msg, src) in net.from_load.iter().zip(&net.from_load_src) {
        let m = Message::parse(msg.as_bytes()).unwrap();
        if m.method() != Some("REGISTER") {
            continue;
        }
        registers += 1;
        let user = m
            .header(HeaderName::From)
            .map(name_addr_uri)
            .and_then(uri_user)
            .unwrap();
        let i: usize = user.trim_start_matches("user").parse().unwrap();
        let own = locals[(i - 1) % 3];
        assert_eq!(*src, own, "{user} sends from its own socket");
        assert_eq!(net.load.user_local(user), Some(own));
        assert!(
            m.header(HeaderName::Via)
                .unwrap()
                .contains(&format!(" {own};")),
            "{user}: Via sent-by is its socket: {msg}"
        );
        assert!(
            m.header(HeaderName::Contact)
                .unwrap()
                .contains(&format!("@{own};")),
            "{user}: Contact is its socket: {msg}"
        );
    }
    // Initial (with the challenge round) and de-registration: 6 users × 3 REGISTERs at least.
    assert!(registers >= 18);
    for l in &locals {
        assert!(net.from_load_src.contains(l), "socket {l} unused");
    }
    // Each INVITE reached its callee's socket, each ACK and BYE of a dialog its user's socket.
    let mut invites = 0;
    for (dest, msg) in &net.to_load {
        let m = Message::parse(msg.as_bytes()).unwrap();
        if m.method() == Some("INVITE") {
            invites += 1;
            let user = m.request_uri().and_then(uri_user).unwrap();
            assert_eq!(net.load.user_local(user), Some(*dest), "INVITE to {user}");
        }
    }
    assert_eq!(invites, 50);
}

/// Responses are matched by Via branch alone: one that arrives on another socket than its
/// request left from (a P-CSCF answering from a different port, or NAT) still completes it.
#[test]
fn a_response_on_another_socket_still_matches() {
    use crate::sip::builder::Writer;
    use crate::sip::Message;
    let locals: Vec<SocketAddr> = (0..2)
        .map(|j| SocketAddr::from(([127, 0, 0, 2], 5070 + j)))
        .collect();
    let pop = from_pattern("user%04d", 1, 2, "ims.local", "pw").unwrap();
    let now = Instant::now();
    let cfg = CoreConfig {
        cps: 0.0,
        reg_rate: 1000.0,
        ..cfg()
    };
    let mut ue = LoadCore::new(cfg, &locals, pop, 0, now);
    ue.start(now);
    ue.handle_timeout(now + Duration::from_millis(5));
    for sock in [1, 0] {
        let x = ue.poll_transmit().expect("a REGISTER per user");
        assert_eq!(x.src, 1 - sock, "user i on socket i % 2");
        let m = Message::parse(&x.data).unwrap();
        let mut w = Writer::response_to(&m, 200, "OK", Some("t"));
        w.header("Contact", "<sip:x@127.0.0.2:5070>;expires=600");
        ue.handle_input(now, &w.finish(None, b""), SocketAddr::from(TARGET), sock);
    }
    let c = ue.take_stats().counters;
    assert_eq!((c.reg_ok, c.stray_responses), (2, 0));
}

/// A re-registration that replaces one still in flight goes out under the branch of the
/// transaction that carries it: its answer is matched, not taken for a stray. (The branch used
/// to be drawn before the replaced transaction freed its slot, which the new one then took.)
#[test]
fn a_reregistration_replacing_one_in_flight_gets_its_answer() {
    use super::config::Mix;
    use crate::sip::builder::Writer;
    use crate::sip::Message;
    let pop = from_pattern("user%04d", 1, 1, "ims.local", "pw").unwrap();
    let now = Instant::now();
    let cfg = CoreConfig {
        cps: 10.0,
        mix: Mix {
            call: 0.0,
            reregister: 1.0,
            ..Mix::default()
        },
        ..cfg()
    };
    let mut ue = LoadCore::new(cfg, &[SocketAddr::from(LOAD)], pop, 0, now);
    ue.start(now);
    ue.handle_timeout(now);
    let from = SocketAddr::from(TARGET);
    let ok = |ue: &mut LoadCore, at: Instant| {
        let req = ue.poll_transmit().expect("a REGISTER").data;
        assert!(req.starts_with(b"REGISTER "));
        let m = Message::parse(&req).unwrap();
        let mut w = Writer::response_to(&m, 200, "OK", Some("t"));
        w.header("Contact", "<sip:x@127.0.0.2:5070>;expires=600");
        ue.handle_input(at, &w.finish(None, b""), from, 0);
    };
    ok(&mut ue, now);
    // The call phase's first arrival (a re-registration) is due at once: leave it unanswered,
    // and let the next arrival 100 ms later replace it.
    ue.handle_timeout(now);
    let first = ue.poll_transmit().expect("the first re-REGISTER").data;
    let later = now + Duration::from_millis(100);
    ue.handle_timeout(later);
    ok(&mut ue, later);
    assert!(ue.poll_transmit().is_none());
    let s = ue.take_stats();
    assert_eq!(s.counters.rereg_attempts, 2);
    assert_eq!(
        s.counters.rereg_ok, 1,
        "the replacing REGISTER's 200 was matched"
    );
    assert_eq!(s.counters.stray_responses, 0);
    // The replaced one is forgotten: its late answer is a stray, and changes nothing.
    let m = Message::parse(&first).unwrap();
    let w = Writer::response_to(&m, 200, "OK", Some("t"));
    ue.handle_input(later, &w.finish(None, b""), from, 0);
    let s = ue.take_stats();
    assert_eq!((s.counters.rereg_ok, s.counters.stray_responses), (0, 1));
}

/// [`ipsec_net_with`] `users` UEs registering for `expires` s, calling at `cps` for `secs` s,
/// against a P-CSCF that renews the SAs at every challenged refresh ([`Net::renew`]; this
/// target challenges them all).
fn renewing_net(users: usize, expires: u32, secs: u64, cps: f64) -> Net {
    let mut net = ipsec_net_with(users, |c| {
        c.expires = expires;
        c.duration = Some(Duration::from_secs(secs));
        c.max_total_calls = None;
        c.cps = cps;
    });
    net.renew = true;
    net
}

/// Re-authentication renews the SAs (TS 33.203 §7.4, TS 24.229 §5.1.1.4.1): every refresh
/// REGISTER leaves the client port in force, offering a fresh client port, the same server
/// port and SPIs never offered before, beside Security-Verify of the agreement in force. The
/// 401 (this target challenges every refresh) brings new SPIs and a new client port of the
/// P-CSCF; the SAs on those are made, the answer leaves the fresh port for the P-CSCF's
/// server port with Security-Verify of the new offer, and after its 200 the UE's requests
/// leave the fresh port. Calls carry on across the renewals; every pair made is taken away.
#[test]
fn ipsec_re_authentication_renews_the_sas_through_a_fresh_client_port() {
    use crate::ipsec::Dir;
    let mut net = renewing_net(2, 20, 45, 1.0);
    let (uc0, us0) = (net.locals[1], net.locals[2]);
    net.run(Duration::from_secs(200));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!((c.reg_ok, c.dereg_ok), (2, 2), "{c:?}");
    assert!(c.rereg_attempts >= 2 * 3, "{c:?}");
    assert_eq!((c.rereg_ok, c.rereg_failed), (c.rereg_attempts, 0), "{c:?}");
    assert_eq!(
        (c.ipsec_sa_renewals, c.ipsec_sa_renewals_failed),
        (c.rereg_ok, 0),
        "every challenged refresh renews: {c:?}"
    );
    assert_eq!(c.ipsec_sa_setups, 2 + c.ipsec_sa_renewals);
    assert_eq!(
        c.ipsec_sa_teardowns, c.ipsec_sa_setups,
        "every pair taken away"
    );
    // The target challenges the protected de-registrations too: answered through the SAs in
    // force, which go with the registration.
    assert_eq!(u64::from(net.renewals), c.ipsec_sa_renewals + c.dereg_ok);
    assert!(c.calls_attempted >= 40, "{c:?}");
    assert_eq!(c.calls_completed, c.calls_attempted, "{c:?}");

    // User 0's REGISTERs from its first protected one on, in order, with their sockets.
    let regs: Vec<(SocketAddr, SocketAddr, &String)> = net
        .from_load
        .iter()
        .zip(net.from_load_src.iter().zip(&net.from_load_dest))
        .filter(|(m, _)| m.starts_with("REGISTER ") && m.contains("<sip:+1555000001@"))
        .map(|(m, (s, d))| (*s, *d, m))
        .skip(1)
        .collect();
    let verify = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("Security-Verify: "))
            .unwrap_or_else(|| panic!("no Security-Verify in {m}"))
            .to_string()
    };
    let mut c_in_force = uc0;
    let mut spis_in_force = (0x10_0000 + uc0.port() as u32, 0x10_0000 + us0.port() as u32);
    let mut verify_in_force = verify(regs[0].2);
    let mut renewed = 0;
    let mut pairs = net.ipsec.iter().filter(|(i, u, _)| *i && *u == 0).skip(1);
    let mut i = 1;
    while i + 1 < regs.len() && regs[i].2.contains("\r\nExpires: 20\r\n") {
        let ((src, _, refresh), (asrc, adest, answer)) = (regs[i], regs[i + 1]);
        assert_eq!(src, c_in_force, "a refresh leaves the client port in force");
        assert_eq!(verify(refresh), verify_in_force);
        let (spi_c, spi_s, port_c, port_s) = security_client(refresh);
        assert_eq!(port_s, us0.port(), "the server port stays");
        assert_ne!(port_c, c_in_force.port(), "a fresh client port");
        assert!(spi_c != spis_in_force.0 && spi_s != spis_in_force.1);
        // The answer: from the offered port, through the new pair, verifying the new offer.
        assert!(answer.contains("response=\"") && !answer.contains("response=\"\""));
        assert_eq!((asrc.ip(), asrc.port()), (us0.ip(), port_c), "{answer}");
        assert_eq!(adest.port(), 5200);
        renewed += 1;
        let (p_spi_c, p_spi_s, p_port_c, p_port_s) = sec_params(&verify(answer));
        assert_eq!(p_port_s, 5200, "{answer}");
        assert_ne!(verify(answer), verify_in_force, "the 401's new offer");
        assert_eq!(security_client(answer), (spi_c, spi_s, port_c, port_s));
        let (_, _, sas) = pairs.next().expect("the renewal's SAs were made");
        let flows = |dir| -> Vec<(u16, u16, u32)> {
            sas.iter()
                .filter(|s| s.dir == dir)
                .map(|s| (s.sport, s.dport, s.spi))
                .collect()
        };
        assert_eq!(
            flows(Dir::In),
            [(5200, port_c, spi_c), (p_port_c, port_s, spi_s)],
            "the UE's inbound SAs, on its new SPIs"
        );
        assert_eq!(
            flows(Dir::Out),
            [(port_c, 5200, p_spi_s), (port_s, p_port_c, p_spi_c)],
            "the UE's outbound SAs, on the P-CSCF's new SPIs"
        );
        c_in_force = asrc;
        spis_in_force = (spi_c, spi_s);
        verify_in_force = verify(answer);
        i += 2;
    }
    assert!(renewed >= 3, "{renewed} renewals of user 0");
    // The de-registration leaves the last renewal's client port, verifying its offer.
    let (src, _, dereg) = regs.last().unwrap();
    assert!(dereg.contains("\r\nExpires: 0\r\n"), "{dereg}");
    assert_eq!((*src, verify(dereg)), (c_in_force, verify_in_force));
    // INVITEs left the client port in force when they were sent: never the server port.
    let invites: Vec<&SocketAddr> = net
        .from_load
        .iter()
        .zip(&net.from_load_src)
        .filter(|(m, s)| m.starts_with("INVITE ") && s.ip() == us0.ip() && **s != us0)
        .map(|(_, s)| s)
        .collect();
    assert!(invites.iter().any(|s| **s == c_in_force), "{invites:?}");
}

/// A renewal whose SAs the kernel refuses: the answer is never sent, the refresh fails and
/// is counted as a failed renewal, and the pair in force goes with the registration.
#[test]
fn ipsec_renewal_refused_by_the_kernel_fails_the_refresh_and_removes_the_pair() {
    let mut net = renewing_net(2, 20, 15, 0.2);
    net.refuse_sas_after = Some(2);
    net.run(Duration::from_secs(120));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert_eq!(
        (c.reg_ok, c.rereg_attempts, c.rereg_failed),
        (2, 2, 2),
        "{c:?}"
    );
    assert_eq!(
        (
            c.ipsec_sa_install_failed,
            c.ipsec_sa_renewals_failed,
            c.ipsec_sa_renewals
        ),
        (2, 2, 0),
        "{c:?}"
    );
    assert_eq!((c.ipsec_sa_setups, c.ipsec_sa_teardowns), (2, 2), "{c:?}");
    // Each UE: its first REGISTER, the protected one, the refresh; no answer to its 401.
    let registers = net
        .from_load
        .iter()
        .filter(|m| m.starts_with("REGISTER "))
        .count();
    assert_eq!(registers, 2 * 3);
}

/// A P-CSCF that keeps sending through the pairs a renewal replaced (Kamailio 5.6.3 does,
/// docs/ipsec.md): each replaced pair is looked at 64·T1 after, found still in use, counted
/// and kept, while renewals go on; the de-registration takes every pair away.
#[test]
fn ipsec_replaced_pairs_still_in_use_are_kept_and_counted() {
    let mut net = renewing_net(2, 20, 60, 1.0);
    net.replaced_in_use = true;
    net.run(Duration::from_secs(200));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    assert!(c.ipsec_sa_renewals >= 2 * 5, "{c:?}");
    assert_eq!(c.ipsec_sa_renewals, c.rereg_ok, "{c:?}");
    assert!(c.ipsec_sa_replaced_in_use >= 2 * 2, "{c:?}");
    assert_eq!(c.calls_completed, c.calls_attempted, "{c:?}");
    // Nothing removed before the de-registrations, then everything.
    let removals: Vec<usize> = net
        .ipsec
        .iter()
        .enumerate()
        .filter(|(_, (i, _, _))| !i)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(removals.len() as u64, c.ipsec_sa_setups, "{c:?}");
    let last_install = net.ipsec.iter().rposition(|(i, _, _)| *i).unwrap();
    assert!(
        removals.iter().all(|k| *k > last_install),
        "{:?}",
        net.ipsec.len()
    );
}

/// A P-CSCF that moves to the new pair at once: each replaced pair carried nothing since the
/// renewal when it is looked at 64·T1 later, and goes then, long before the run ends.
#[test]
fn ipsec_replaced_pairs_left_alone_are_taken_away_after_64_t1() {
    let mut net = renewing_net(1, 80, 100, 0.5);
    net.run(Duration::from_secs(300));
    let c = &net.totals.counters;
    assert_eq!(net.load.phase(), Phase::Done);
    // Refreshes at 40 and 80 s into the run: two renewals, each pair gone 32 s after.
    assert_eq!(c.ipsec_sa_renewals, 2, "{c:?}");
    assert_eq!(c.ipsec_sa_replaced_in_use, 0, "{c:?}");
    assert_eq!((c.ipsec_sa_setups, c.ipsec_sa_teardowns), (3, 3), "{c:?}");
    let kinds: Vec<bool> = net.ipsec.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(
        kinds,
        [true, true, false, true, false, false],
        "install, renew, retire the first 64·T1 later, renew, de-register (the second replaced pair and the one in force)"
    );
}
