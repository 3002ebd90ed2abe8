//! The CI side of fuzzing: every seed in `fuzz/corpus/<target>/` and every input that ever
//! crashed a target, in `fuzz/crashes/<target>/`, through the same harness the fuzzer runs
//! (`imsload::fuzzing`). Seconds on stable, no nightly flags; the fuzzing itself is
//! `fuzz/run.sh` (see docs/fuzzing.md).

use std::path::{Path, PathBuf};

type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 7] = [
    ("sip_message", imsload::fuzzing::sip_message),
    ("sip_stream", imsload::fuzzing::sip_stream),
    ("digest", imsload::fuzzing::digest),
    ("diameter", imsload::fuzzing::diameter),
    ("core_datagram", imsload::fuzzing::core_datagram),
    ("core_splice", imsload::fuzzing::core_splice),
    ("media", imsload::fuzzing::media),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files under `dir/<target>/`, sorted so that a failure names the same file every time.
fn inputs(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(targets) = std::fs::read_dir(dir) else {
        return out;
    };
    for t in targets {
        let t = t.unwrap().path();
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(n, _)| *n == name),
            "{}: no harness named {name}",
            t.display()
        );
        for f in std::fs::read_dir(&t).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                out.push((name.clone(), f));
            }
        }
    }
    out.sort();
    out
}

fn replay(dir: &str) -> usize {
    let files = inputs(&fuzz_dir().join(dir));
    for (target, path) in &files {
        let data = std::fs::read(path).unwrap();
        let harness = TARGETS.iter().find(|(n, _)| n == target).unwrap().1;
        // A panic names the file: rerun it with `cargo fuzz run <target> <file>`.
        eprintln!("{target}: {}", path.display());
        harness(&data);
    }
    files.len()
}

#[test]
fn every_seed_passes_its_harness() {
    let n = replay("corpus");
    assert!(n >= 50, "the seed corpus has only {n} files");
    for (t, _) in TARGETS {
        assert!(
            fuzz_dir().join("corpus").join(t).is_dir(),
            "no seeds for {t}"
        );
    }
}

#[test]
fn every_past_crash_passes_its_harness() {
    let n = replay("crashes");
    assert!(
        n >= 2,
        "the issue-10 Content-Length inputs are gone ({n} files)"
    );
}

/// Writes the generated seeds: the messages of the simulated run the core targets use, the
/// Digest values in them, and Diameter Cx messages with the HSS's answers. Run by hand when the
/// engine's messages change (`cargo test --release --test fuzz_corpus -- --ignored`); names are
/// fixed, so a rerun replaces these files and leaves the others (RFC 4475, captures) alone.
#[test]
#[ignore]
fn write_generated_seeds() {
    use imsload::diameter::{cmd, code, Avp, Message, APP_COMMON, APP_CX, VENDOR_3GPP};
    let corpus = fuzz_dir().join("corpus");
    let put = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    for aka in [false, true] {
        let kind = if aka { "aka" } else { "md5" };
        let wire = imsload::fuzzing::sim_wire(aka);
        // One message per start line and direction: enough to reach every handler.
        let mut seen = std::collections::HashSet::new();
        for (i, (to_target, m)) in wire.iter().enumerate() {
            let first = m.split(|b| *b == b'\r').next().unwrap();
            let start: Vec<u8> = if first.starts_with(b"SIP/2.0") {
                first[..11].to_vec()
            } else {
                first.split(|b| *b == b' ').next().unwrap().to_vec()
            };
            // The first REGISTER and the one answering the challenge take different paths.
            let authorized = m.windows(10).any(|w| w == b"response=\"")
                && !m.windows(12).any(|w| w == b"response=\"\"");
            if !seen.insert((*to_target, start.clone(), authorized)) {
                continue;
            }
            let what = String::from_utf8_lossy(&start).replace([' ', '/', '.'], "");
            let dir = if *to_target { "to-target" } else { "to-load" };
            let what = if authorized {
                format!("{what}-authorized")
            } else {
                what
            };
            let name = format!("sim-{kind}-{i:03}-{dir}-{what}");
            put("sip_message", &name, m);
            put("core_datagram", &name, &[&[aka as u8][..], &m[..]].concat());
            let idx = (i as u16).to_le_bytes();
            let hi = idx[1] | if aka { 0x80 } else { 0 };
            put("core_splice", &name, &[idx[0], hi, 0, 0, 0]);
            let text = String::from_utf8_lossy(m);
            for line in text.split("\r\n") {
                let Some((h, v)) = line.split_once(':') else {
                    continue;
                };
                if h.ends_with("Authenticate") || h.ends_with("Authorization") {
                    put("digest", &format!("{name}-{h}"), v.trim().as_bytes());
                }
            }
        }
        // A registration, a call and its end on one TCP connection, in two chunk patterns.
        let stream: Vec<u8> = wire
            .iter()
            .filter(|(t, _)| *t)
            .take(12)
            .flat_map(|(_, m)| [m.as_slice(), b"\r\n\r\n"].concat())
            .collect();
        put(
            "sip_stream",
            &format!("sim-{kind}-stream-bytewise"),
            &[&[0, 0], &stream[..]].concat(),
        );
        put(
            "sip_stream",
            &format!("sim-{kind}-stream-segments"),
            &[&[63, 0], &stream[..]].concat(),
        );
    }

    let origin = |m: &mut Message| {
        m.push(Avp::bytes(code::ORIGIN_HOST, "scscf.ims.local"));
        m.push(Avp::bytes(code::ORIGIN_REALM, "ims.local"));
    };
    let mut cer = Message::request(cmd::CAPABILITIES_EXCHANGE, APP_COMMON, 1, 1);
    origin(&mut cer);
    cer.push(Avp::address(code::HOST_IP_ADDRESS, [127, 0, 0, 1].into()));
    cer.push(Avp::u32(code::VENDOR_ID, VENDOR_3GPP));
    cer.push(Avp::grouped(
        code::VENDOR_SPECIFIC_APPLICATION_ID,
        &[
            Avp::u32(code::VENDOR_ID, VENDOR_3GPP),
            Avp::u32(code::AUTH_APPLICATION_ID, APP_CX),
        ],
    ));
    let cx = |command: u32, hbh: u32, avps: Vec<Avp>| {
        let mut m = Message::request(command, APP_CX, hbh, hbh);
        m.push(Avp::bytes(code::SESSION_ID, format!("scscf;{hbh}")));
        origin(&mut m);
        m.push(Avp::bytes(code::DESTINATION_REALM, "ims.local"));
        for a in avps {
            m.push(a);
        }
        m
    };
    let impu = || Avp::bytes_3gpp(code::PUBLIC_IDENTITY, "sip:user0001@ims.local");
    let impi = || Avp::bytes(code::USER_NAME, "user0001@ims.local");
    let scscf = || Avp::bytes_3gpp(code::SERVER_NAME, "sip:scscf.ims.local:6060");
    let mar = cx(
        cmd::MULTIMEDIA_AUTH,
        2,
        vec![
            impu(),
            impi(),
            scscf(),
            Avp::u32_3gpp(code::SIP_NUMBER_AUTH_ITEMS, 1),
            Avp::grouped_3gpp(
                code::SIP_AUTH_DATA_ITEM,
                &[Avp::bytes_3gpp(
                    code::SIP_AUTHENTICATION_SCHEME,
                    "Digest-AKAv1-MD5",
                )],
            ),
        ],
    );
    let uar = cx(cmd::USER_AUTHORIZATION, 3, vec![impu(), impi()]);
    let sar = cx(
        cmd::SERVER_ASSIGNMENT,
        4,
        vec![
            impu(),
            impi(),
            scscf(),
            Avp::u32_3gpp(code::SERVER_ASSIGNMENT_TYPE, 1),
        ],
    );
    let lir = cx(cmd::LOCATION_INFO, 5, vec![impu()]);
    let dwr = {
        let mut m = Message::request(cmd::DEVICE_WATCHDOG, APP_COMMON, 6, 6);
        origin(&mut m);
        m
    };
    let msgs = [
        ("cer", &cer),
        ("mar", &mar),
        ("uar", &uar),
        ("sar", &sar),
        ("lir", &lir),
        ("dwr", &dwr),
    ];
    // The HSS's answers, from a connection that saw the CER first (else it closes).
    let mut hss = imsload::hss::Hss::new(
        imsload::hss::HssConfig::for_realm("ims.local"),
        imsload::hss::Subscribers::parse(
            "impu,impi,password,k,opc,amf,sqn\nsip:user0001@ims.local,user0001@ims.local,pw,\
465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,8000,000000000000\n",
        )
        .unwrap(),
        Some(7),
    );
    let mut conn = imsload::hss::cx::Connection::default();
    let mut session = Vec::new();
    for (name, m) in msgs {
        let bytes = m.encode();
        put("diameter", &format!("cx-{name}"), &bytes);
        session.extend_from_slice(&bytes);
        let out = conn.feed(&mut hss, &bytes, [127, 0, 0, 1].into());
        if !out.send.is_empty() {
            put("diameter", &format!("cx-{name}-answer"), &out.send);
        }
    }
    // The first byte is also where the harness cuts the stream in two.
    put("diameter", "cx-session", &session);
}
