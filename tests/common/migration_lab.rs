//! The QEMU migration lab (lab/migration/lab.sh) as tests use it: whether it can run here, and
//! a guard that takes a named lab down however the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub fn lab_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/migration/lab.sh")
}

/// Why the lab cannot run here, if it cannot (`lab.sh check`, with `args` such as `--ims`).
pub fn migration_lab_skip_reason(name: &str, args: &[&str]) -> Option<String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Some("not root (the lab needs network namespaces, taps and tc)".into());
    }
    if !lab_sh().is_file() {
        return Some(format!("{} is missing", lab_sh().display()));
    }
    let have_qemu = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    if !have_qemu {
        return Some("qemu-system-x86_64 is not installed (lab/migration/setup.sh)".into());
    }
    let o = Command::new(lab_sh())
        .arg("check")
        .args(args)
        .env("LAB_NAME", name)
        .output()
        .ok()?;
    (!o.status.success()).then(|| {
        format!(
            "lab.sh check says no: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )
    })
}

/// Takes the lab `name` down when dropped.
pub struct MigrationLab(pub &'static str);

impl MigrationLab {
    /// A lab of this name left over from an interrupted run is removed first.
    pub fn fresh(name: &'static str) -> MigrationLab {
        drop(MigrationLab(name));
        MigrationLab(name)
    }

    /// `lab.sh ARGS` for this lab, bounded by `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Output {
        self.run_cmd(Command::new(lab_sh()).args(args), limit)
    }

    /// `cmd` (a `lab.sh` command line) for this lab, bounded by `limit`.
    pub fn run_cmd(&self, cmd: &mut Command, limit: Duration) -> Output {
        let what = format!("{cmd:?}");
        let child = cmd
            .env("LAB_NAME", self.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        super::wait_bounded(child, limit, &what)
    }
}

impl Drop for MigrationLab {
    fn drop(&mut self) {
        let _ = Command::new(lab_sh())
            .arg("down")
            .env("LAB_NAME", self.0)
            .output();
    }
}
