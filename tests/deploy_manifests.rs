//! The Kubernetes manifests in deploy/kubernetes/, read as Kubernetes would read them (YAML),
//! checked for what the sharded run relies on: an Indexed Job whose completions, parallelism
//! and `--shards` agree, the shard index from JOB_COMPLETION_INDEX, the ConfigMap keys it
//! names, the image's entrypoint being imsload, and its arguments accepted by this imsload
//! (run with `--dry-run` for every index, with the ConfigMap's profile).

mod common;

use common::wait_bounded;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

const IMSLOAD: &str = env!("CARGO_BIN_EXE_imsload");

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name)
}

fn load(name: &str) -> Yaml {
    let text = std::fs::read_to_string(deploy(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {y:?}"))
}

fn args_of(container: &Yaml) -> Vec<String> {
    container["args"]
        .as_vec()
        .expect("container args")
        .iter()
        .map(|a| str_of(a, "arg").to_string())
        .collect()
}

fn value_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    &args[i + 1]
}

#[test]
fn the_indexed_job_and_its_configmap_fit_together() {
    let job = load("job.yaml");
    let cm = load("configmap.yaml");
    assert_eq!(str_of(&job["apiVersion"], "apiVersion"), "batch/v1");
    assert_eq!(str_of(&job["kind"], "kind"), "Job");
    let spec = &job["spec"];
    assert_eq!(str_of(&spec["completionMode"], "completionMode"), "Indexed");
    let n = spec["completions"].as_i64().expect("completions");
    assert_eq!(
        spec["parallelism"].as_i64(),
        Some(n),
        "parallelism = completions"
    );
    assert_eq!(
        spec["backoffLimit"].as_i64(),
        Some(0),
        "a shard is not retried late"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(str_of(&pod["restartPolicy"], "restartPolicy"), "Never");
    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    // No command: the image's entrypoint (imsload) runs with these arguments.
    assert!(
        c["command"].is_badvalue(),
        "command overrides the entrypoint"
    );
    let args = args_of(c);
    assert_eq!(
        value_after(&args, "--shards"),
        n.to_string(),
        "--shards = completions"
    );
    assert_eq!(
        value_after(&args, "--report"),
        "-",
        "one JSON line for kubectl logs"
    );

    // The shard index comes from the completion index annotation.
    let env = c["env"].as_vec().expect("env");
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    assert_eq!(
        str_of(
            &var("JOB_COMPLETION_INDEX")["valueFrom"]["fieldRef"]["fieldPath"],
            "fieldPath"
        ),
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    // Every $(VAR) in the arguments is defined, from a key the ConfigMap has.
    let cm_name = str_of(&cm["metadata"]["name"], "ConfigMap name");
    let data = &cm["data"];
    for a in &args {
        if let Some(v) = a.strip_prefix("$(").and_then(|r| r.strip_suffix(')')) {
            let from = &var(v)["valueFrom"]["configMapKeyRef"];
            assert_eq!(str_of(&from["name"], "configMapKeyRef.name"), cm_name);
            let key = str_of(&from["key"], "configMapKeyRef.key");
            assert!(!data[key].is_badvalue(), "ConfigMap has no key {key}");
        }
    }
    // --profile is the ConfigMap's profile.toml, mounted.
    let profile = value_after(&args, "--profile");
    let mount = c["volumeMounts"].as_vec().expect("volumeMounts")[0].clone();
    let vol = pod["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume")
        .clone();
    assert_eq!(
        str_of(&vol["configMap"]["name"], "volume configMap"),
        cm_name
    );
    let item = &vol["configMap"]["items"][0];
    assert_eq!(
        format!(
            "{}/{}",
            str_of(&mount["mountPath"], "mountPath"),
            str_of(&item["path"], "path")
        ),
        profile
    );
    assert!(!data[str_of(&item["key"], "key")].is_badvalue());
}

#[test]
fn the_image_runs_imsload_and_imsload_takes_the_jobs_arguments() {
    let cf = std::fs::read_to_string(deploy("Containerfile")).unwrap();
    let entry = cf
        .lines()
        .rev()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    assert_eq!(entry, r#"ENTRYPOINT ["/usr/local/bin/imsload"]"#);
    assert!(
        cf.contains("/src/target/release/imsload"),
        "the binary is copied"
    );
    let job = load("job.yaml");
    let cm = load("configmap.yaml");
    let n = job["spec"]["completions"].as_i64().unwrap();
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.toml");
    std::fs::write(
        &profile,
        str_of(&cm["data"]["profile.toml"], "profile.toml"),
    )
    .unwrap();
    let users = 2000; // the ConfigMap profile's population
                      // As each pod would run it: $(VAR)s expanded as Kubernetes expands them, with --dry-run
                      // (the plan, nothing sent); the profile's path is this test's copy.
    for i in 0..n {
        let args: Vec<String> = args_of(c)
            .into_iter()
            .map(|a| match a.as_str() {
                "$(TARGET)" => "127.0.0.1:5060".to_string(),
                "$(START_AT)" => str_of(&cm["data"]["start_at"], "start_at").to_string(),
                "/etc/imsload/profile.toml" => profile.display().to_string(),
                _ => a,
            })
            .collect();
        let child = Command::new(IMSLOAD)
            .args(&args)
            .arg("--dry-run")
            .env("JOB_COMPLETION_INDEX", i.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_bounded(child, Duration::from_secs(20), "imsload --dry-run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let per = users / n as usize;
        let want = format!(
            "shard {i}/{n}: users {}..{} of {users}",
            i as usize * per,
            (i as usize + 1) * per
        );
        assert!(stdout.contains(&want), "{want:?} in\n{stdout}");
        // The profile's 40 calls/s, this shard's share.
        assert!(
            stdout.contains(&format!("{}", 40.0 / n as f64)),
            "rate 40/{n} in\n{stdout}"
        );
    }
}
