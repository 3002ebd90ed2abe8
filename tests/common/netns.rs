//! Network namespaces the tests make for themselves: two joined by a veth pair, addresses from
//! 192.0.2.0/24 (TEST-NET-1, which exists only inside them), removed on drop.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs `ip args`; the error is ip's own message.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// `ip -n ns args` and its standard output.
pub fn ip_out(ns: &str, args: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        o.status.success(),
        "ip -n {ns} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Two namespaces, `a` and `b`, joined by veth `va` (in `a`, 192.0.2.10) and `vb` (in `b`,
/// 192.0.2.1).
pub struct NsPair {
    pub a: String,
    pub b: String,
}

impl NsPair {
    pub const A_ADDR: &'static str = "192.0.2.10";
    pub const B_ADDR: &'static str = "192.0.2.1";

    /// `tag` makes the names unique with the process id (tests of one binary run in parallel).
    pub fn create(tag: &str) -> Result<NsPair, String> {
        let id = std::process::id();
        let p = NsPair {
            a: format!("imsload-{tag}-a-{id}"),
            b: format!("imsload-{tag}-b-{id}"),
        };
        ip(&["netns", "add", &p.a])?;
        ip(&["netns", "add", &p.b])?;
        ip(&[
            "link", "add", "va", "netns", &p.a, "type", "veth", "peer", "name", "vb", "netns", &p.b,
        ])?;
        for (ns, dev, addr) in [(&p.a, "va", Self::A_ADDR), (&p.b, "vb", Self::B_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(p)
    }
}

impl Drop for NsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Runs `f` on a thread of its own that has entered namespace `ns`: sockets (and netlink
/// sockets) made in `f` belong to `ns` and stay in it.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a namespace fd we hold, in a thread that ends with `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
