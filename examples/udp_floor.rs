//! The floor under imsload's hot path: the same calls, datagram for datagram, with no SIP in them.
//!
//! `udp_floor serve` answers like `imsload serve` answers `imsload --ruri` (INVITE → 180 + 200,
//! ACK → nothing, BYE → 200) and `udp_floor call` places calls like `imsload --ruri --hold 0s`
//! (INVITE; on the 200, ACK and BYE; done at the BYE's 200), with datagrams of the sizes imsload
//! and its target really send, on the project's own driver (`io::Driver`: recvmmsg, sendmmsg, the
//! timer quantum). What is left is the kernel's loopback UDP and our I/O layer: the CPU per call
//! and the highest rate any SIP engine on this I/O layer and this machine could reach. The
//! engine's goals (issue 11) are judged against it in `bench/floor.sh`.
//!
//! No retransmission, no timers per call, no parsing: a message is told by its first byte and its
//! call by the next 8. Not a SIP tool; never point it at a SIP element.

use imsload::io::driver::{Driver, Endpoint, MAX_SLEEP};
use imsload::sip::transport::{buffer, Transmit};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// UDP payload sizes of one call between `imsload --ruri` and `imsload serve` (tshark, this
/// tree): INVITE with SDP, 180, 200 with SDP, ACK, BYE, BYE's 200.
const INVITE: usize = 659;
const RINGING: usize = 340;
const OK_INVITE: usize = 560;
const ACK: usize = 319;
const BYE: usize = 339;
const OK_BYE: usize = 278;

fn message(kind: u8, call: u64, len: usize) -> Transmit {
    let mut data = buffer(len);
    data.push(kind);
    data.extend_from_slice(&call.to_le_bytes());
    data.resize(len, b'x');
    Transmit {
        src: 0,
        dest: SocketAddr::from(([127, 0, 0, 1], 0)),
        data,
    }
}

fn call_of(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(1..9)?.try_into().ok()?))
}

/// The answering side: stateless, as cheap as an answer can be.
#[derive(Default)]
struct Reflector {
    out: Vec<Transmit>,
    answered: u64,
}

impl Endpoint for Reflector {
    fn handle_input(&mut self, _now: Instant, data: &[u8], from: SocketAddr, _socket: u32) {
        let Some(call) = call_of(data) else { return };
        let mut reply = |kind, len| {
            let mut t = message(kind, call, len);
            t.dest = from;
            self.out.push(t);
        };
        match data[0] {
            b'I' => {
                reply(b'R', RINGING);
                reply(b'O', OK_INVITE);
                self.answered += 1;
            }
            b'B' => reply(b'b', OK_BYE),
            _ => {}
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// One caller thread's share: open-loop arrivals at `rate`, evenly spaced.
struct Caller {
    target: SocketAddr,
    start: Instant,
    rate: f64,
    placed: u64,
    done: u64,
    until: Instant,
    out: Vec<Transmit>,
}

impl Caller {
    fn send(&mut self, kind: u8, call: u64, len: usize) {
        let mut t = message(kind, call, len);
        t.dest = self.target;
        self.out.push(t);
    }
    fn next_arrival(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.placed as f64 / self.rate)
    }
}

impl Endpoint for Caller {
    fn handle_input(&mut self, _now: Instant, data: &[u8], _from: SocketAddr, _socket: u32) {
        let Some(call) = call_of(data) else { return };
        match data[0] {
            b'O' => {
                self.send(b'A', call, ACK);
                self.send(b'B', call, BYE);
            }
            b'b' => self.done += 1,
            _ => {}
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        while self.next_arrival() <= now && now < self.until {
            let call = self.placed;
            self.send(b'I', call, INVITE);
            self.placed += 1;
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        let next = self.next_arrival();
        (next < self.until).then_some(next)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: udp_floor serve ADDR SECS [QUANTUM_US]\n       udp_floor call TARGET CPS SECS [THREADS] [QUANTUM_US]"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    match args.get(i).map(|s| s.parse()) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("udp_floor: argument {i} ({what}) is missing or not a number");
            usage()
        }
    }
}

fn driver(sock: UdpSocket, quantum_us: u64) -> Driver {
    let mut d = Driver::udp("udp_floor", vec![sock]).expect("an epoll set and a UDP socket");
    d.set_timer_resolution(Duration::from_micros(quantum_us));
    d
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let addr: SocketAddr = arg(&args, 2, "ADDR");
            let secs: f64 = arg(&args, 3, "SECS");
            let quantum = args.get(4).map_or(1000, |_| arg(&args, 4, "QUANTUM_US"));
            let sock = UdpSocket::bind(addr).expect("bind the listening address");
            set_buffers(&sock);
            let mut d = driver(sock, quantum);
            let mut ep = Reflector::default();
            let end = Instant::now() + Duration::from_secs_f64(secs);
            while Instant::now() < end {
                d.turn(&mut ep, (Instant::now() + MAX_SLEEP).min(end))
                    .expect("the event loop");
            }
            println!("{{\"answered\":{}}}", ep.answered);
        }
        Some("call") => {
            let target: SocketAddr = arg(&args, 2, "TARGET");
            let cps: f64 = arg(&args, 3, "CPS");
            let secs: f64 = arg(&args, 4, "SECS");
            let threads: usize = args.get(5).map_or(2, |_| arg(&args, 5, "THREADS"));
            let quantum = args.get(6).map_or(1000, |_| arg(&args, 6, "QUANTUM_US"));
            let start = Instant::now() + Duration::from_millis(10);
            let until = start + Duration::from_secs_f64(secs);
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::spawn(move || {
                        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a caller socket");
                        set_buffers(&sock);
                        let mut d = driver(sock, quantum);
                        let mut ep = Caller {
                            target,
                            start,
                            rate: cps / threads as f64,
                            placed: 0,
                            done: 0,
                            until,
                            out: Vec::new(),
                        };
                        // The last calls' answers: half a second after the last INVITE.
                        let drain = until + Duration::from_millis(500);
                        while Instant::now() < drain {
                            d.turn(&mut ep, (Instant::now() + MAX_SLEEP).min(drain))
                                .expect("the event loop");
                        }
                        (ep.placed, ep.done)
                    })
                })
                .collect();
            let (mut placed, mut done) = (0, 0);
            for w in workers {
                let (p, d) = w.join().expect("a caller thread");
                placed += p;
                done += d;
            }
            println!(
                "{{\"placed\":{placed},\"completed\":{done},\"achieved_cps\":{:.1}}}",
                done as f64 / secs
            );
        }
        _ => usage(),
    }
}

/// The buffers imsload's own sockets get.
fn set_buffers(sock: &UdpSocket) {
    let s = socket2::SockRef::from(sock);
    imsload::sip::transport::set_big_buffers(&s);
}
