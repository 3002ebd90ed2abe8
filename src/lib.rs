//! imsload and imsprobe: put an IMS core under load, and measure its service gaps.
//!
//! # Layout
//! - [`sip`]: the SIP layer (messages, transactions, dialogs, digest auth, sockets). Knows nothing
//!   of load or probes.
//! - [`diameter`]: the Diameter base protocol codec (RFC 6733), shared by the HSS and the probe.
//! - [`ua`]: the SIP user-agent layer between `sip` and the engines, sans IO and depending on
//!   neither: the timer wheel, digest/AKA challenge answers, the registration client, the
//!   INVITE/BYE server role (`Answerer`, bounded in what a peer can make it hold), and (to come)
//!   the other user-agent roles.
//! - [`load`]: the load engine behind `imsload`: user population, the sans-IO user-agent core
//!   (registrations, calls; the answering side delegated to `ua::answerer`), the open-loop
//!   scheduler, statistics with RFC 6076 metrics, live progress and reports, the async runner
//!   that drives it all, and shards: one shard's users, rates and start (`load::shard`) and the
//!   exact merge of shards' reports (`load::merge`, `imsload merge`).
//! - [`media`]: the media plane, sans IO: RTP streams of calls (G.711 from a tone or a WAV file)
//!   on one socket per worker, RFC 3550 loss and jitter, the longest gap, an E-model MOS.
//! - [`target`]: the embedded loopback target (`imsload serve`): registrar with digest challenge,
//!   proxy for registered users, `ua::answerer` as the answering UAS for everything else.
//! - [`probe`]: the probe engine behind `imsprobe` (pacer, SIP and ICMP probers, capture, gap
//!   analysis, plots), and the command itself: its clap arguments, `trials`' included
//!   (`probe::args`), and the run or `--pcap-only` they ask for (`probe::app`).
//! - [`profile`]: load profiles (TOML schema and checks, plans, threshold conditions, monitors).
//! - [`trials`]: migration trials behind `imsprobe trials` (probes + load + migration command per
//!   trial, hypervisor output parsers, the per-trial table and its plots; `trials::app`: the
//!   checked settings from the arguments, and the run).
//! - [`ipsec`]: IMS security associations (TS 33.203): the four ESP SAs of a UE from its
//!   security agreement and AKA keys, and the XFRM netlink calls that make and remove them.
//! - [`io`]: the thin runtime under the sans-IO cores: one loop per thread over epoll, batched
//!   UDP (recvmmsg/sendmmsg) and TCP framing.
//! - [`chart`]: SVG charts and their PNGs (document, linear and log scales, panels with lines,
//!   bars, min–max columns, lanes, shaded spans, marks and callouts, legends). Knows nothing of
//!   load or probes: the `plot` modules of [`load`], [`probe`] and [`trials`] map their data
//!   onto it.
//! - [`metrics`]: Prometheus text exposition and the `/metrics` endpoint (`--metrics`); pages
//!   are built once a second from the engines' own statistics. Knows nothing of load or probes.
//! - [`shutdown`]: the one stop path every task watches.
//! - [`clock`]: monotonic inside, wall-clock only for labels.
//! - [`hep`]: HEPv3 mirroring to Homer (`--hep`): the pure encoder, and the bounded queue and
//!   sender thread that [`io`] drivers and the probe copy every SIP message into without waiting.
//! - [`hex`]: the one hex encoder and decoder (keys, SQNs, digests), errors quoting the input.
//! - [`fuzzing`]: the bodies of the cargo-fuzz targets in `fuzz/`, here so that
//!   `tests/fuzz_corpus.rs` replays the corpus and past crashes on stable (`docs/fuzzing.md`).
//! - [`exit`]: the one exit-code policy of the three binaries (0 ok, 1 failures, 2 usage/setup).
//! - [`logging`]: diagnostics are `tracing` events; the one subscriber each binary sets up
//!   (`-v`, `RUST_LOG`), lines stamped from the same clock as the records.
//!
//! The binaries in `src/bin/` parse arguments, set up [`logging`], call one function of these
//! modules and map its result to an exit code with [`exit::code`].

pub mod chart;
pub mod clock;
pub mod diameter;
pub mod exit;
pub mod fuzzing;
pub mod hep;
pub mod hex;
pub mod hss;
pub mod io;
pub mod ipsec;
pub mod load;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod probe;
pub mod profile;
pub mod shutdown;
pub mod sip;
pub mod slab;
pub mod target;
pub mod trials;
pub mod ua;
