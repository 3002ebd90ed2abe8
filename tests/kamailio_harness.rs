//! Tests of the real-peer harness (tests/common) and of lab/kamailio/kamailio.cfg.
//! They need Kamailio, sqlite3 and SIPp from Debian (`.ci/run` installs them).

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::*;

fn kam(users: usize) -> Kamailio {
    Kamailio::start(KamailioOpts {
        users,
        ..KamailioOpts::default()
    })
    .expect("kamailio start")
}

/// Copies Via/From/To/Call-ID/CSeq of `req` into a response.
fn response_to(req: &str, status: &str, to_tag: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\n{}Content-Length: 0\r\n\r\n",
        dialog_headers(req, to_tag)
    )
}

#[test]
fn two_instances_start_in_parallel_and_answer_options() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| kam(5));
        let b = s.spawn(|| kam(5));
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!(
        "startup: {:?} ({} processes), {:?} ({} processes)",
        a.startup_time(),
        a.pids().len(),
        b.startup_time(),
        b.pids().len()
    );
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.run_dir(), b.run_dir());
    for k in [&a, &b] {
        let reply = options_ping(k.addr(), Duration::from_secs(2)).unwrap();
        assert_eq!(status_code(&reply), Some(200), "{reply}");
        assert!(k.addr().ip().is_loopback());
    }
    // disjoint process groups
    assert!(a.pids().iter().all(|p| !b.pids().contains(p)));
}

#[test]
fn options_over_tcp_gets_200() {
    let k = kam(1);
    let mut s = TcpStream::connect(k.addr()).unwrap();
    let local = s.local_addr().unwrap();
    let addr = k.addr();
    let msg = format!(
        "OPTIONS sip:{addr};transport=tcp SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-tcpopt;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:harness@127.0.0.1>;tag=t1\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: tcp-options@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.write_all(msg.as_bytes()).unwrap();
    let reply = read_sip_message(&mut s, Duration::from_secs(5)).unwrap();
    assert_eq!(status_code(&reply), Some(200), "{reply}");
}

#[test]
fn fresh_instance_has_no_contacts() {
    let k = kam(3);
    assert_eq!(k.registered_contacts().unwrap(), 0);
    assert_eq!(k.domain(), "ims.local");
    assert_eq!(k.password_for("user0002"), "pw_user0002");
}

#[test]
fn drop_stops_every_process() {
    let k = Kamailio::start(KamailioOpts {
        children: 3,
        ..KamailioOpts::default()
    })
    .unwrap();
    let pids = k.pids();
    // main + 3 udp + 3 tcp workers + tcp main + timers/ctl/...
    assert!(pids.len() >= 8, "only {} processes: {pids:?}", pids.len());
    assert!(pids.contains(&k.pgid()));
    let pgid = k.pgid();
    drop(k);
    let alive: Vec<i32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
    assert!(alive.is_empty(), "still alive after drop: {alive:?}");
    assert!(group_pids(pgid).is_empty());
}

#[test]
fn stopped_instance_is_silent_until_resumed() {
    let k = kam(1);
    assert!(k.pause());
    assert!(options_ping(k.addr(), Duration::from_millis(500)).is_err());
    assert!(k.resume());
    // the queued OPTIONS from above is answered too; a fresh one must get 200
    let reply = options_ping(k.addr(), Duration::from_secs(3)).unwrap();
    assert_eq!(status_code(&reply), Some(200), "{reply}");
    // drop must also work on a stopped instance
    assert!(k.pause());
}

#[test]
fn register_one_user_with_md5_digest() {
    let k = kam(5);
    let contact = "sip:user0001@127.0.0.1:5999";
    // wrong password: challenged again
    let code = register(k.addr(), k.domain(), "user0001", "wrong", contact, 600).unwrap();
    assert_eq!(code, 401);
    // unknown user: challenged again
    let code = register(
        k.addr(),
        k.domain(),
        "user0099",
        "pw_user0099",
        contact,
        600,
    )
    .unwrap();
    assert_eq!(code, 401);
    assert_eq!(k.registered_contacts().unwrap(), 0);

    let code = k.register("user0001", contact, 600).unwrap();
    assert_eq!(code, 200, "{}", k.log_tail());
    assert_eq!(k.registered_contacts().unwrap(), 1);
    // refresh of the same binding: still one contact
    assert_eq!(k.register("user0001", contact, 600).unwrap(), 200);
    assert_eq!(k.registered_contacts().unwrap(), 1);
    // second user
    assert_eq!(
        k.register("user0002", "sip:user0002@127.0.0.1:5998", 600)
            .unwrap(),
        200
    );
    assert_eq!(k.registered_contacts().unwrap(), 2);
    // de-registration removes the contact at once
    assert_eq!(k.register("user0001", contact, 0).unwrap(), 200);
    assert_eq!(k.registered_contacts().unwrap(), 1);
}

/// More contacts than kamcmd can dump (its replies stop at 64 KB, ~100 contacts):
/// the JSON-RPC fifo count must stay exact.
#[test]
fn registered_contacts_is_exact_beyond_kamcmd_limits() {
    let n = 300;
    let k = Kamailio::start(KamailioOpts {
        users: n,
        children: 4,
        ..Default::default()
    })
    .unwrap();
    std::thread::scope(|s| {
        for t in 0..6 {
            let k = &k;
            s.spawn(move || {
                for i in (1..=n).filter(|i| i % 6 == t) {
                    let u = user_name(i);
                    let contact = format!("sip:{u}@127.0.0.1:{}", 20000 + i);
                    assert_eq!(k.register(&u, &contact, 600).unwrap(), 200, "{u}");
                }
            });
        }
    });
    assert_eq!(k.registered_contacts().unwrap(), n);
    assert_eq!(k.contacts_counter().unwrap(), n);
    assert!(
        k.kamcmd(&["ul.dump"]).is_err(),
        "kamcmd grew a bigger reply buffer?"
    );
}

#[test]
fn expired_contacts_are_not_counted() {
    let k = kam(2);
    assert_eq!(
        k.register("user0001", "sip:user0001@127.0.0.1:5999", 1)
            .unwrap(),
        200
    );
    assert_eq!(k.registered_contacts().unwrap(), 1);
    std::thread::sleep(Duration::from_millis(2100));
    // still in the table until the usrloc timer runs, but expired
    assert_eq!(k.registered_contacts().unwrap(), 0);
}

#[test]
fn user_registered_over_tcp_is_reached_over_its_connection() {
    let k = kam(3);
    let (user, domain) = ("user0002", k.domain().to_string());
    let mut tcp = TcpStream::connect(k.addr()).unwrap();
    let local = tcp.local_addr().unwrap();
    // Contact names a port nobody listens on and no transport: only the connection reaches us
    let contact = format!("sip:{user}@127.0.0.1:{}", free_port().unwrap());
    let reg = |cseq: u32, auth: Option<&str>| {
        format!(
            "REGISTER sip:{domain} SIP/2.0\r\n\
             Via: SIP/2.0/TCP {local};branch=z9hG4bK-tcpreg{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag=tr1\r\n\
             To: <sip:{user}@{domain}>\r\n\
             Call-ID: tcp-reg@127.0.0.1\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>\r\n\
             Expires: 600\r\n\
             {}Content-Length: 0\r\n\r\n",
            auth.map(|a| format!("Authorization: {a}\r\n"))
                .unwrap_or_default()
        )
    };
    tcp.write_all(reg(1, None).as_bytes()).unwrap();
    let r = read_sip_message(&mut tcp, Duration::from_secs(5)).unwrap();
    assert_eq!(status_code(&r), Some(401), "{r}");
    let ch = header(&r, "WWW-Authenticate").unwrap();
    assert_eq!(digest_param(ch, "qop").as_deref(), Some("auth"));
    assert_eq!(digest_param(ch, "realm").as_deref(), Some(domain.as_str()));
    let auth = digest_authorization(
        ch,
        user,
        &password_for(user),
        "REGISTER",
        &format!("sip:{domain}"),
    )
    .unwrap();
    tcp.write_all(reg(2, Some(&auth)).as_bytes()).unwrap();
    let r = read_sip_message(&mut tcp, Duration::from_secs(5)).unwrap();
    assert_eq!(status_code(&r), Some(200), "{r}\n{}", k.log_tail());
    assert_eq!(k.registered_contacts().unwrap(), 1);

    // MESSAGE from a UDP user to the TCP user
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(k.addr()).unwrap();
    let ul = udp.local_addr().unwrap();
    let msg = format!(
        "MESSAGE sip:{user}@{domain} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ul};branch=z9hG4bK-msg1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:user0001@{domain}>;tag=m1\r\n\
         To: <sip:{user}@{domain}>\r\n\
         Call-ID: tcp-msg@127.0.0.1\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 5\r\n\r\nhello"
    );
    udp.send(msg.as_bytes()).unwrap();
    let req = read_sip_message(&mut tcp, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("MESSAGE did not arrive over TCP: {e}\n{}", k.log_tail()));
    assert!(req.starts_with("MESSAGE "), "{req}");
    assert!(req.ends_with("hello"), "{req}");
    tcp.write_all(response_to(&req, "200 OK", "callee1").as_bytes())
        .unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = udp.recv(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(status_code(&reply), Some(200), "{reply}");
}

fn invite_from(k: &Kamailio, from: &str, to: &str) -> String {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(k.addr()).unwrap();
    let ul = udp.local_addr().unwrap();
    let d = k.domain();
    let msg = format!(
        "INVITE sip:{to}@{d} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ul};branch=z9hG4bK-inv-{from};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from}@{d}>;tag=i1\r\n\
         To: <sip:{to}@{d}>\r\n\
         Call-ID: inv-{from}-{ul}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:{from}@{ul}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    udp.send(msg.as_bytes()).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = udp.recv(&mut buf).unwrap();
        let r = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_code(&r).is_some_and(|c| c >= 200) {
            return r;
        }
    }
}

#[test]
fn invite_auth_is_optional() {
    let (plain, authed) = std::thread::scope(|s| {
        let a = s.spawn(|| kam(3));
        let b = s.spawn(|| {
            Kamailio::start(KamailioOpts {
                users: 3,
                invite_auth: true,
                ..Default::default()
            })
            .unwrap()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    // without WITH_INVITE_AUTH: straight to the location lookup (callee not registered)
    let r = invite_from(&plain, "user0001", "user0002");
    assert_eq!(status_code(&r), Some(404), "{r}");
    // with it: 407 with a qop=auth challenge
    let r = invite_from(&authed, "user0001", "user0002");
    assert_eq!(status_code(&r), Some(407), "{r}");
    let ch = header(&r, "Proxy-Authenticate").expect("Proxy-Authenticate");
    assert_eq!(digest_param(ch, "qop").as_deref(), Some("auth"));
}

#[test]
fn sipp_calls_directly() {
    if !sipp_or_skip("sipp_calls_directly") {
        return;
    }
    let uas = Sipp::uas().unwrap();
    let r = run_sipp_uac(uas.addr(), 5, 10, 20).unwrap();
    assert!(r.all_ok(5), "{r:?}\nUAS: {}", uas.log_tail());
}

#[test]
fn sipp_calls_through_kamailio_udp_and_tcp() {
    if !sipp_or_skip("sipp_calls_through_kamailio_udp_and_tcp") {
        return;
    }
    let k = kam(5);
    let uas_udp = Sipp::uas().unwrap();
    let uas_tcp = Sipp::uas_on(Transport::Tcp).unwrap();
    assert_eq!(
        k.register("user0001", &uas_udp.contact_uri("user0001"), 600)
            .unwrap(),
        200
    );
    assert_eq!(
        k.register("user0002", &uas_tcp.contact_uri("user0002"), 600)
            .unwrap(),
        200
    );
    assert_eq!(k.registered_contacts().unwrap(), 2);

    let r = run_sipp_uac_to(k.addr(), "user0001", Transport::Udp, 10, 20, 30).unwrap();
    assert!(
        r.all_ok(10),
        "udp: {r:?}\nUAS: {}\nkamailio:\n{}",
        uas_udp.log_tail(),
        k.log_tail()
    );
    let r = run_sipp_uac_to(k.addr(), "user0002", Transport::Tcp, 10, 20, 30).unwrap();
    assert!(
        r.all_ok(10),
        "tcp: {r:?}\nUAS: {}\nkamailio:\n{}",
        uas_tcp.log_tail(),
        k.log_tail()
    );
    // not registered: every call fails with 404, SIPp says so
    let r = run_sipp_uac_to(k.addr(), "user0003", Transport::Udp, 2, 10, 10).unwrap();
    assert_eq!((r.successful, r.failed), (0, 2), "{r:?}");
    assert_ne!(r.exit_code, 0);
}

#[test]
fn wait_bounded_returns_the_output_of_a_child_that_ends() {
    // More than a pipe holds: read while the child runs, or it would block and be killed.
    let child = std::process::Command::new("sh")
        .args(["-c", "head -c 1000000 /dev/zero; echo err >&2; exit 3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(child, Duration::from_secs(20), "sh");
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(o.stdout.len(), 1_000_000);
    assert_eq!(o.stderr, b"err\n");
}

#[test]
fn wait_bounded_kills_a_child_past_its_limit() {
    let child = std::process::Command::new("sh")
        .args(["-c", "echo started; exec sleep 30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let t0 = std::time::Instant::now();
    let r = std::panic::catch_unwind(move || {
        wait_bounded(child, Duration::from_millis(300), "sleeper")
    });
    let msg = *r.expect_err("no panic").downcast::<String>().unwrap();
    assert!(msg.starts_with("sleeper: still running 300ms"), "{msg}");
    assert!(msg.contains("started"), "{msg}");
    assert!(!pid_alive(pid), "still alive");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}
