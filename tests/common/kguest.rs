//! Running one test of this binary again under Debian's kernel (`lab/kguest/run.sh`: a QEMU
//! guest that sees the host's tree read-only), for what the host kernel lacks (ESP).

use std::path::Path;
use std::process::Command;

/// Runs test `name` of the current test binary in the kernel guest. `None` (with the reason
/// printed) when this machine cannot run the guest (run.sh's exit 125: not root, no QEMU, no
/// guest kernel). Otherwise the test's output, after asserting that it passed there; a guest
/// that ran but could not run the test (126) fails here, never skips.
pub fn rerun_in_kguest(name: &str) -> Option<String> {
    if std::env::var_os("KGUEST").is_some() {
        panic!("already in the kernel guest: {name} must not ask for it again");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/kguest/run.sh");
    let exe = std::env::current_exe().expect("the test binary's path");
    let o = Command::new("bash")
        .arg(&script)
        .args(["--timeout", "900", "--"])
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .output()
        .expect("run lab/kguest/run.sh");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if o.status.code() == Some(125) {
        eprintln!("the kernel guest cannot run here, so {name} ran on this kernel only:\n{out}");
        return None;
    }
    assert!(
        o.status.success() && out.contains("test result: ok. 1 passed"),
        "{name} under Debian's kernel (lab/kguest) failed ({}):\n{out}",
        o.status
    );
    Some(out)
}
