//! `cargo bench --bench sip_parse`: the message layer decision in numbers. Parses a 700-byte
//! 200 OK to INVITE and reads what the load engine reads from every response (status, top Via
//! branch, CSeq, Call-ID, To tag, Contact, Record-Route), with our zero-copy scanner and with
//! rsip 0.4, in the same process, and prints messages/s and the ratio.

use imsload::sip::{HeaderName, Message};
use rsip::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn ok_700() -> Vec<u8> {
    let body = "v=0\r\no=imsload 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 40002 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";
    let head = format!(
        "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1a2b3c.1f.0;rport=5070;received=127.0.0.1\r\n\
Record-Route: <sip:127.0.0.1:5060;lr;nat=yes>\r\n\
From: <sip:user0001@ims.local>;tag=6f1e2d3c4b5a6978\r\n\
To: <sip:user0002@ims.local>;tag=1a2b3c4d5e6f7081\r\n\
Call-ID: c1a2b3c.1f.0@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:user0002@127.0.0.1:5071;transport=udp>\r\n\
Server: imsload/0.1.0\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE\r\n\
Supported: path, timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n",
        body.len()
    );
    format!("{head}{body}").into_bytes()
}

fn bench(name: &str, f: impl Fn() -> usize) -> f64 {
    // Warm up, then run for ~1 s and report the best of three runs (the machine is shared).
    for _ in 0..10_000 {
        black_box(f());
    }
    let mut best = 0.0f64;
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_millis(700) {
            for _ in 0..1000 {
                black_box(f());
            }
            n += 1000;
        }
        best = best.max(n as f64 / t0.elapsed().as_secs_f64());
    }
    println!(
        "{name:<44} {:>10.0} msg/s  ({:.0} ns/msg)",
        best,
        1e9 / best
    );
    best
}

fn main() {
    let msg = ok_700();
    println!("message: {} bytes (200 OK to INVITE with SDP)", msg.len());
    let ours = bench("imsload scanner: parse + 7 field reads", || {
        let m = Message::parse(black_box(&msg)).expect("valid");
        let mut x = m.status().unwrap_or(0) as usize;
        x += m.top_via().and_then(|v| v.branch).map_or(0, str::len);
        x += m.cseq().map_or(0, |c| c.0 as usize);
        x += m.call_id().len();
        x += m.to_tag().map_or(0, str::len);
        x += m.contact_uri().map_or(0, str::len);
        x += m.header_values(HeaderName::RecordRoute).count();
        x
    });
    let ours_parse = bench("imsload scanner: parse only", || {
        Message::parse(black_box(&msg)).expect("valid").len
    });
    let theirs = bench("rsip 0.4: parse + the same reads", || {
        let m = rsip::SipMessage::try_from(black_box(msg.as_slice())).expect("valid");
        let mut x = match &m {
            rsip::SipMessage::Response(r) => u16::from(r.status_code.clone()) as usize,
            _ => 0,
        };
        x += m
            .via_header()
            .ok()
            .and_then(|v| v.typed().ok())
            .and_then(|v| v.branch().map(|b| b.to_string().len()))
            .unwrap_or(0);
        x += m.cseq_header().ok().and_then(|c| c.seq().ok()).unwrap_or(0) as usize;
        x += m.call_id_header().map_or(0, |c| c.value().len());
        x += m
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .map_or(0, |t| t.to_string().len());
        x += m.contact_header().map_or(0, |c| c.value().len());
        x += m
            .headers()
            .iter()
            .filter(|h| matches!(h, rsip::Header::RecordRoute(_)))
            .count();
        x
    });
    let parse_only = bench("rsip 0.4: parse only", || {
        let m = rsip::SipMessage::try_from(black_box(msg.as_slice())).expect("valid");
        m.headers().iter().count()
    });
    println!(
        "ratio: scanner is {:.1}x rsip with reads, {:.1}x rsip parse-only",
        ours / theirs,
        ours_parse / parse_only
    );
    stream_framing();
}

/// TCP framing: one message with a 16 KiB header section (a long Route/Path set; the framer
/// takes up to 64 KiB) and a 700-byte message, each framed from segments of 64 bytes and of
/// 1,460 (an Ethernet MSS) against the whole message pushed at once. A framer that rescans
/// what it has already searched on every push costs more per byte the more segments a header
/// arrives in; one that resumes costs about the same per byte whatever the cut.
fn stream_framing() {
    let route =
        "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr>\r\n".repeat(16 * 1024 / 64);
    let big = format!(
        "MESSAGE sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n{route}Content-Length: 5\r\n\r\nhello"
    )
    .into_bytes();
    for (name, msg) in [("16 KiB header", big), ("700 B 200 OK", ok_700())] {
        let frame = |step: usize| {
            let mut f = imsload::sip::transport::StreamFramer::default();
            let mut n = 0;
            for c in black_box(&msg).chunks(step) {
                f.push(c);
                while let Some(m) = f.next_message().expect("valid") {
                    n += m.len();
                }
            }
            n
        };
        let whole = bench(&format!("framing {name}: whole"), || frame(usize::MAX));
        for step in [1460, 64] {
            let cut = bench(&format!("framing {name}: {step}-byte segments"), || {
                frame(step)
            });
            println!(
                "ratio: {step}-byte segments take {:.1}x the time of one push",
                whole / cut
            );
        }
    }
}
