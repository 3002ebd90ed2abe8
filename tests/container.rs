//! The image of deploy/kubernetes/Containerfile, built by podman from the Containerfile as
//! shipped, and the Indexed Job's shards run as containers of it against Kamailio on loopback.
//!
//! Only the two base images differ from a user's build: docker.io is out of reach here, so
//! `--build-arg BUILDER/BASE` name equivalents made from Debian's mirror by
//! deploy/kubernetes/local-base-images.sh (.ci/setup runs it), and the build stage gets Rust
//! from the host (its toolchain and crate cache bind-mounted, `--network none`: nothing is
//! fetched). Then, as job.yaml runs each pod: the image's entrypoint with job.yaml's
//! arguments, JOB_COMPLETION_INDEX set, the profile mounted at /etc/imsload, `--report -`; the
//! containers' stdout lines merged by the host's `imsload merge`, and Kamailio's location table
//! as the referee for the users' split (as tests/shard_kamailio.rs does with processes).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use yaml_rust2::YamlLoader;

const USERS: usize = 200;
const SHARDS: usize = 4;
/// The profile's one phase: 20 calls/s at constant arrivals for 6 s.
const CALLS: u64 = 120;
/// One tag, made again by every run and removed at its end.
const IMAGE: &str = "localhost/imsload-test:container";
const BUILDER: &str = "localhost/imsload-builder:bookworm";
const BASE: &str = "localhost/imsload-base:bookworm";
/// A cold build compiles the release binaries from nothing (about 6 min on 2 busy cores).
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

const PROFILE: &str = r#"description = "tests/container.rs: 200 users, 20 calls/s for 6 s (the whole run)."

[population]
count = 200
pattern = "user%04d"
first_index = 1
password = "pw_%u"
preregistered = 1.0
reg_rate = 200
expires = 600

[scenario]
arrival = "constant"
hold = { dist = "fixed", mean = "1s" }
ring = { dist = "fixed", mean = "0s" }

[scenario.mix]
call = 1.0

[[phase]]
name = "calls"
rate = 20
duration = "6s"
"#;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// podman with the OCI runtime runc: crun (Debian's default) refuses a host whose cgroups are
/// in hybrid mode (v1 controllers beside a v2 tree, as on the development machine), runc takes
/// both that and plain v2.
fn podman_cmd() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

/// `--ulimit` options for `podman run` and `podman build`. As root podman asks the runtime for
/// open files and processes beyond this process's own hard limits, which a root without
/// CAP_SYS_RESOURCE (a sandboxed one, as on the development machine) may not set: the container
/// fails to start. So the containers get this process's open-files limit, and 4096 processes
/// (ample for imsload's threads; podman runs its runtime under 32768).
fn ulimits() -> Vec<String> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the one struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    vec![
        "--ulimit".into(),
        format!("nofile={}:{}", r.rlim_max, r.rlim_max),
        "--ulimit".into(),
        "nproc=4096:4096".into(),
    ]
}

/// `podman ARGS`, bounded; fails the test naming `what` unless it exits 0. Returns stdout.
fn podman(args: &[&str], limit: Duration, what: &str) -> String {
    let (sub, rest) = args.split_first().expect("a podman subcommand");
    let mut c = podman_cmd();
    c.arg(sub);
    if matches!(*sub, "run" | "build") {
        c.args(ulimits());
    }
    let child = c
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: podman: {e}"));
    let out = wait_bounded(child, limit, what);
    assert!(
        out.status.success(),
        "{what}: podman {args:?} exited {:?}\n{}\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Why this test cannot run here: podman or the local base images missing. Like Kamailio
/// (tests/common/mod.rs, `kamailio_missing`), both come from .ci/setup, so their absence
/// fails the test rather than skipping it.
fn not_ready() -> Option<String> {
    let have_podman = Command::new("podman")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_podman {
        return Some(
            "podman is not installed: run .ci/setup (it installs Debian's podman and makes \
             the base images this test builds on)"
                .into(),
        );
    }
    let out = Command::new("bash")
        .arg(repo().join("deploy/kubernetes/local-base-images.sh"))
        .arg("--check")
        .output()
        .expect("run local-base-images.sh --check");
    (!out.status.success()).then(|| {
        format!(
            "the local base images are not current: run .ci/setup (or \
             deploy/kubernetes/local-base-images.sh as root): {}",
            text(&out.stderr).trim()
        )
    })
}

/// The host's Rust toolchain (a self-contained sysroot, as rustup installs) and crate cache,
/// which the build stage mounts in place of rust:1-bookworm's.
fn toolchain_and_registry() -> (PathBuf, PathBuf) {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc --print sysroot");
    let sysroot = PathBuf::from(text(&out.stdout).trim());
    assert!(
        sysroot.join("bin/cargo").is_file() && sysroot != Path::new("/usr"),
        "the build mounts the host's toolchain, which must hold its own cargo and libraries \
         (a rustup toolchain); {} does not",
        sysroot.display()
    );
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let registry = cargo_home.join("registry");
    assert!(
        registry.join("index").is_dir(),
        "no crate cache at {} (the build reads the crates this test was built with from it)",
        registry.display()
    );
    (sysroot, registry)
}

/// Removes what the test made however it ends: the shards' containers, then the image.
struct Cleanup {
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = podman_cmd()
                .args(["rm", "--force", "--time", "0", "--ignore", c])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = podman_cmd()
            .args(["rmi", "--force", "--ignore", IMAGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// job.yaml's container arguments, as the pod gets them: `$(TARGET)` and `$(START_AT)`
/// expanded (by Kubernetes from the ConfigMap; here the loopback Kamailio and a start shortly
/// ahead).
fn job_args(target: &str, start_at: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/job.yaml")).unwrap();
    let job = YamlLoader::load_from_str(&text)
        .expect("job.yaml")
        .remove(0);
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = c["args"]
        .as_vec()
        .expect("job.yaml: container args")
        .iter()
        .map(|a| {
            match a.as_str().expect("job.yaml: args are strings") {
                "$(TARGET)" => target,
                "$(START_AT)" => start_at,
                a => a,
            }
            .to_string()
        })
        .collect();
    // The job's shard count is this test's: the assertions below count 4 slices.
    let i = args.iter().position(|a| a == "--shards").expect("--shards");
    assert_eq!(args[i + 1], SHARDS.to_string(), "job.yaml's --shards");
    args
}

fn spawn_shard(name: &str, i: usize, profile_dir: &Path, args: &[String]) -> Child {
    let mount = format!("{}:/etc/imsload:ro", profile_dir.display());
    let index = format!("JOB_COMPLETION_INDEX={i}");
    let mut c = podman_cmd();
    c.args(["run", "--rm", "--name", name, "--network", "host"])
        .args(ulimits())
        .args(["--env", &index, "--volume", &mount, IMAGE])
        .args(args)
        // On a cluster each pod has its own address; on one host each shard binds its own
        // loopback address so that Kamailio tells them apart (docs/sharding.md).
        .args(["--bind", &shard_ip(i)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().expect("podman run")
}

#[test]
fn the_image_builds_from_the_containerfile_and_runs_the_jobs_shards() {
    if let Some(why) = not_ready() {
        panic!("{why}");
    }
    let (sysroot, registry) = toolchain_and_registry();
    let mut cleanup = Cleanup {
        containers: Vec::new(),
    };

    // The build, as shipped but for the two base images. --layers=false: no intermediate
    // image of the build stage (its target/ is gigabytes) is kept between runs.
    let t0 = Instant::now();
    let containerfile = repo().join("deploy/kubernetes/Containerfile");
    let toolchain = format!("{}:/opt/rust:ro", sysroot.display());
    let crates = format!("{}:/usr/local/cargo/registry", registry.display());
    podman(
        &[
            "build",
            "--layers=false",
            "--network",
            "none",
            "--file",
            &containerfile.display().to_string(),
            "--build-arg",
            &format!("BUILDER={BUILDER}"),
            "--build-arg",
            &format!("BASE={BASE}"),
            "--volume",
            &toolchain,
            "--volume",
            &crates,
            "--tag",
            IMAGE,
            &repo().display().to_string(),
        ],
        BUILD_LIMIT,
        "podman build",
    );
    let size = podman(
        &["image", "inspect", "--format", "{{.Size}}", IMAGE],
        Duration::from_secs(30),
        "podman image inspect",
    );
    eprintln!(
        "built {IMAGE} in {:.0} s, {} bytes",
        t0.elapsed().as_secs_f64(),
        size.trim()
    );

    // The entrypoint is imsload, the user the Containerfile's (nobody), and the other two
    // binaries run there (their libraries, libpcap among them, are in the image).
    let version = podman(
        &["run", "--rm", "--network", "none", IMAGE, "--version"],
        Duration::from_secs(60),
        "podman run IMAGE --version",
    );
    assert!(
        version.starts_with("imsload "),
        "the entrypoint is not imsload: {version:?}"
    );
    let id = podman(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "id",
            IMAGE,
        ],
        Duration::from_secs(60),
        "podman run id",
    );
    assert_eq!(
        id.trim(),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    );
    for bin in ["imsprobe", "imshss"] {
        let v = podman(
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                &format!("/usr/local/bin/{bin}"),
                IMAGE,
                "--version",
            ],
            Duration::from_secs(60),
            &format!("podman run {bin} --version"),
        );
        assert!(v.starts_with(&format!("{bin} ")), "{bin} --version: {v:?}");
    }

    // The shards: job.yaml's pods as containers on the host's network.
    let k = Kamailio::start(KamailioOpts {
        users: USERS,
        ..KamailioOpts::default()
    })
    .expect("kamailio start");
    let dir = tempfile::tempdir().unwrap();
    // Mounted read-only for the image's user (nobody), as the ConfigMap's volume would be.
    let profile_dir = dir.path().join("etc-imsload");
    std::fs::create_dir(&profile_dir).unwrap();
    std::fs::write(profile_dir.join("profile.toml"), PROFILE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&profile_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        profile_dir.join("profile.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // Far enough ahead for four `podman run`s to start on a busy machine: a shard that
    // starts after it is late, and the merge says so.
    let start = chrono::Utc::now() + chrono::Duration::seconds(10);
    let start = start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let args = job_args(&k.addr().to_string(), &start);
    let mut children = Vec::new();
    for i in 0..SHARDS {
        let name = format!("imsload-test-shard-{i}-{}", std::process::id());
        cleanup.containers.push(name.clone());
        children.push(spawn_shard(&name, i, &profile_dir, &args));
    }
    // Mid-run: every user registered exactly once, each from its own shard's address.
    let contacts = contacts_when_all_registered(&k, USERS, Duration::from_secs(40));
    assert_each_user_once_from_its_shard(&contacts, USERS, SHARDS);
    let outs: Vec<Output> = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| wait_bounded(c, Duration::from_secs(90), &format!("shard {i}")))
        .collect();
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(
            o.status.code(),
            Some(0),
            "shard {i}: {}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    assert_eq!(k.registered_contacts().unwrap(), 0, "all de-registered");

    // What `kubectl logs` would gather: each container's stdout, one file.
    let log = dir.path().join("shards.log");
    let all_stdout: String = outs.iter().map(|o| text(&o.stdout)).collect();
    std::fs::write(&log, &all_stdout).unwrap();
    let shards: Vec<Value> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| report_line(&text(&o.stdout), &format!("shard {i}")))
        .collect();
    let all = dir.path().join("all.json");
    let csv = dir.path().join("all.csv");
    let (code, stdout, stderr) = imsload_merge(&[&log], &all, &csv);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let merged = json(&all);
    assert_all_present_none_late(&merged, SHARDS);
    assert_counters_are_sums(&merged, &shards);
    for s in &shards {
        assert_eq!(s["users"], (USERS / SHARDS) as u64);
        assert_eq!(counters(s)["calls_attempted"], CALLS / SHARDS as u64);
    }
    // The run's totals: every user registered, every call placed, answered and completed.
    let c = counters(&merged);
    assert_eq!(c["reg_ok"], USERS as u64, "{c:?}");
    for name in ["calls_attempted", "calls_answered", "calls_completed"] {
        assert_eq!(c[name], CALLS, "{name}: {c:?}");
    }
}
