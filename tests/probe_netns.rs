//! The IP layer against a real cut link: two network namespaces created here (addresses from
//! 198.51.100.0/24 and 2001:db8::/64 exist only inside them), joined by a veth pair; imsprobe
//! runs in one and probes the other with ICMP (or ICMPv6) echo while the test sets the target's
//! link down for a known time and up again. Both views of the outage, the reply gap and the loss
//! window, must match it within 2 probe intervals + 5 ms (plus the uncertainty of when `ip`
//! applied the change).
//!
//! Needs root (or CAP_NET_ADMIN + CAP_NET_RAW) and iproute2; skipped elsewhere, an error in CI.

mod common;

use common::{f, ip, pcap_only, probe_report};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sysctl(ns: &str, setting: &str) -> Result<(), String> {
    let (key, value) = setting.split_once('=').unwrap_or((setting, ""));
    let path = key.replace('.', "/");
    let o = Command::new("ip")
        // Written to /proc inside the namespace: no dependency on procps' sysctl.
        .args(["netns", "exec", ns, "sh", "-c"])
        .arg(format!("echo {value} > /proc/sys/{path}"))
        .output()
        .map_err(|e| format!("sysctl: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "sysctl {setting} in {ns}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

fn mac(ns: &str, dev: &str) -> String {
    let o = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", dev])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    s.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("veth MAC")
        .to_string()
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Lab {
    probe_ns: String,
    target_ns: String,
    target_dev: String,
    /// The target's address.
    target: &'static str,
}

impl Lab {
    fn create(v6: bool) -> Result<Lab, String> {
        // Tests of this file run in parallel: one lab per family.
        let id = format!("{}{}", std::process::id(), if v6 { "6" } else { "" });
        let (paddr, taddr, target) = if v6 {
            ("2001:db8::1/64", "2001:db8::2/64", "2001:db8::2")
        } else {
            ("198.51.100.1/24", "198.51.100.2/24", "198.51.100.2")
        };
        let lab = Lab {
            probe_ns: format!("imsprobe-p{id}"),
            target_ns: format!("imsprobe-t{id}"),
            target_dev: format!("ipt{id}"),
            target,
        };
        let pdev = format!("ipp{id}");
        ip(&["netns", "add", &lab.probe_ns])?;
        ip(&["netns", "add", &lab.target_ns])?;
        ip(&[
            "link",
            "add",
            &pdev,
            "type",
            "veth",
            "peer",
            "name",
            &lab.target_dev,
        ])?;
        ip(&["link", "set", &pdev, "netns", &lab.probe_ns])?;
        ip(&["link", "set", &lab.target_dev, "netns", &lab.target_ns])?;
        for (ns, dev, addr) in [
            (&lab.probe_ns, &pdev, paddr),
            (&lab.target_ns, &lab.target_dev, taddr),
        ] {
            if v6 {
                // IPv6 addresses are flushed when a link goes down, unless told otherwise: the
                // test cuts the link, it does not renumber the host.
                sysctl(ns, "net.ipv6.conf.all.keep_addr_on_down=1")?;
                // No duplicate address detection: the address is usable at once.
                ip(&["-n", ns, "addr", "add", addr, "dev", dev, "nodad"])?;
            } else {
                ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            }
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        // Permanent neighbours: a carrier loss flushes learned ARP / neighbour-discovery
        // entries, and re-resolving after the link is back would add up to a second of retry
        // timer to the outage.
        let (pmac, tmac) = (
            mac(&lab.probe_ns, &pdev),
            mac(&lab.target_ns, &lab.target_dev),
        );
        ip(&[
            "-n",
            &lab.probe_ns,
            "neigh",
            "replace",
            lab.target,
            "lladdr",
            &tmac,
            "dev",
            &pdev,
            "nud",
            "permanent",
        ])?;
        ip(&[
            "-n",
            &lab.target_ns,
            "neigh",
            "replace",
            paddr.split('/').next().unwrap_or_default(),
            "lladdr",
            &pmac,
            "dev",
            &lab.target_dev,
            "nud",
            "permanent",
        ])?;
        Ok(lab)
    }

    /// Sets the target's link up or down; returns (before, after) the command.
    fn target_link(&self, up: bool) -> (Instant, Instant) {
        let a = Instant::now();
        ip(&[
            "-n",
            &self.target_ns,
            "link",
            "set",
            &self.target_dev,
            if up { "up" } else { "down" },
        ])
        .unwrap();
        (a, Instant::now())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair with them.
        let _ = ip(&["netns", "del", &self.probe_ns]);
        let _ = ip(&["netns", "del", &self.target_ns]);
    }
}

#[test]
fn a_cut_link_shows_as_reply_gap_and_loss_window() {
    cut_link(false);
}

#[test]
fn a_cut_ipv6_link_shows_as_reply_gap_and_loss_window() {
    cut_link(true);
}

fn cut_link(v6: bool) {
    let lab = match Lab::create(v6) {
        Ok(l) => l,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot build the namespace lab in CI: {e}"
            );
            eprintln!("skipped: cannot build the namespace lab (needs root and iproute2): {e}");
            return;
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("imsprobe-netns")
        .tempdir()
        .unwrap();
    let out = dir.path().join("run");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.probe_ns,
            env!("CARGO_BIN_EXE_imsprobe"),
        ])
        .args([
            "--target",
            lab.target,
            "--icmp",
            "--rate",
            "1000",
            "--duration",
            "5s",
            "--quiet",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec imsprobe");
    std::thread::sleep(Duration::from_millis(1500));
    let down = lab.target_link(false);
    std::thread::sleep(Duration::from_millis(1000));
    let up = lab.target_link(true);
    // The outage as the test knows it: between the midpoints of the two `ip` commands, give or
    // take half of each command's duration.
    let mid = |(a, b): (Instant, Instant)| a + (b - a) / 2;
    let outage_ms = (mid(up) - mid(down)).as_secs_f64() * 1000.0;
    let slack_ms = ((down.1 - down.0) + (up.1 - up.0)).as_secs_f64() * 1000.0 / 2.0;

    let rep = probe_report(child, &out, Duration::from_secs(20));
    let l = &rep["layers"][0];
    assert_eq!(l["layer"], "icmp");
    assert_eq!(l["receive_timestamps"], "kernel");
    assert_eq!(rep["target"]["host"], lab.target);
    assert_eq!(
        rep["capture"]["error"],
        Value::Null,
        "capture in the namespace: {}",
        rep["capture"]
    );
    let interval = f(&rep["params"]["interval_ms"]);
    let tol = 2.0 * interval + 5.0 + slack_ms;
    let gaps = l["reply_gaps"].as_array().unwrap();
    let lws = l["loss_windows"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "one reply gap: {gaps:#?}");
    assert_eq!(lws.len(), 1, "one loss window: {lws:#?}");
    let (g, w) = (f(&gaps[0]["duration_ms"]), f(&lws[0]["duration_ms"]));
    eprintln!(
        "link down {outage_ms:.3} ms (±{slack_ms:.3}): reply gap {g:.3} ms ({:+.3}), loss window {w:.3} ms ({:+.3}), \
         loss estimate {} ms, lost {}, tolerance {tol:.3} ms",
        g - outage_ms,
        w - outage_ms,
        lws[0]["loss_estimate_ms"],
        lws[0]["probes_lost"]
    );
    assert!(
        (g - outage_ms).abs() <= tol,
        "reply gap {g} vs outage {outage_ms} (tolerance {tol})"
    );
    assert!(
        (w - outage_ms).abs() <= tol,
        "loss window {w} vs outage {outage_ms} (tolerance {tol})"
    );
    // A cut link loses the probes (nothing is answered late).
    let lost = lws[0]["probes_lost"].as_u64().unwrap() as f64;
    assert!(
        (lost - outage_ms / interval).abs() <= tol / interval,
        "lost {lost}"
    );
    assert_eq!(gaps[0]["late_replies"], 0);

    // The capture, read back on its own (`--pcap-only`), tells the same outage.
    let ana = dir.path().join("ana");
    let re = pcap_only(&out.join("capture.pcap"), &ana);
    let c = &re["layers"][0];
    assert_eq!(c["layer"], "icmp", "{re}");
    // The probes sent while the link had no carrier never reached the wire (the kernel drops
    // them before the capture point), so the capture has fewer requests; every reply is there,
    // and so is the reply gap.
    assert_eq!(c["summary"]["ok"], l["summary"]["ok"], "{c}");
    let cg = c["reply_gaps"].as_array().unwrap();
    assert_eq!(cg.len(), 1, "one reply gap in the capture: {cg:#?}");
    let d = f(&cg[0]["duration_ms"]) - g;
    assert!(
        d.abs() <= 2.0 * interval,
        "capture's reply gap {d:+} ms off the live one"
    );
}
