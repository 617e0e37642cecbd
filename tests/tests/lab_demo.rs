//! The seed talk's demo, end to end: `herd lab demo` on a lab directory
//! with no lab brings up three Docker machines and tells the whole story
//! (Postgres behind a service, pgview with memcache, scaled to three, a
//! canary, a rolling update under load with every request answered, a
//! deleted pod replaced, a machine powered off and its pods moved). The
//! demo checks each step's claim itself and exits non-zero at the first
//! that fails; the test then looks at the result from outside with real
//! kubectl: the RC on v2 with three ready pods, the canary's pod, none of
//! them on the machine that was powered off, and a pod's output through
//! `kubectl logs`; and the demo's own `psql.yaml`, applied by kubectl,
//! queries Postgres on m1 through its cluster IP from another VM.

use std::path::Path;
use std::process::{Command, Output};

use herd_tests::lab::{Down, exec};
use herd_tests::pods::{Kubectl, UNAUTHORIZED, kubeconfig, running};
use herd_tests::require;
use serde_json::Value;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn kubectl(lab_dir: &Path, kubectl: &str, config: &Path, args: &[&str]) -> Value {
    let config = config.display().to_string();
    let mut full = vec![kubectl, "--kubeconfig", config.as_str()];
    full.extend_from_slice(args);
    full.extend(["-o", "json"]);
    let out = exec(lab_dir, &full);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("kubectl's JSON")
}

#[test]
fn qemu_lab_demo_tells_the_seed_story_end_to_end() {
    require::root();
    require::tool("qemu-system-x86_64", "qemu-system-x86");
    require::tool("docker-registry", "docker-registry");
    require::file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf");
    let kubectl_bin = Kubectl::present()[0].path().display().to_string();

    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let netns = format!("herd-lab-d{}", std::process::id());
    let _down = Down::arm(&lab_dir);

    let demo = Command::new(herd_tests::bin::herd())
        .arg("lab")
        .arg("--lab-dir")
        .arg(&lab_dir)
        .args(["demo", "--netns", &netns])
        .output()
        .expect("running herd lab demo");
    let story = text(&demo);
    let summary = story.rsplit_once("STEP").map_or(story.as_str(), |(_, s)| s);
    eprintln!("STEP{summary}");
    assert!(demo.status.success(), "herd lab demo failed:\n{story}");
    for title in [
        "0 images, route and cluster",
        "1 postgres, its volume and service",
        "2 pgview with memcache, v1",
        "3 scale to three",
        "4 canary v2 and its service",
        "5 rolling update to v2 under load",
        "6 delete a pod",
        "7 power off a machine",
    ] {
        let line = summary
            .lines()
            .find(|l| l.starts_with(title))
            .unwrap_or_else(|| panic!("no summary line for step {title:?}:\n{story}"));
        assert!(line.contains(" ok "), "{line}\n{story}");
    }
    assert!(
        story.contains(
            "$ herd lab exec -- herd rolling-update pgview --image 10.77.0.1:5000/demo/pgview:2"
        ),
        "the demo prints the commands it runs:\n{story}"
    );

    // The lab is secure by default: its API speaks TLS only, and answers
    // nobody without credentials, even one who skips checking the server.
    let anonymous = dir.path().join("kubeconfig");
    // (A token the server does not know: with no credential at all kubectl
    // asks for a password instead of calling.)
    let unknown = kubeconfig("https://10.77.0.11:6443")
        .replace("user: {}", "user: {token: not-a-credential}");
    std::fs::write(&anonymous, unknown).unwrap();
    let refused = exec(
        &lab_dir,
        &[
            &kubectl_bin,
            "--kubeconfig",
            &anonymous.display().to_string(),
            "--insecure-skip-tls-verify",
            "get",
            "pods",
        ],
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains(UNAUTHORIZED), "{}", text(&refused));
    std::fs::write(&anonymous, kubeconfig("http://10.77.0.11:6443")).unwrap();
    let plain = exec(
        &lab_dir,
        &[
            &kubectl_bin,
            "--kubeconfig",
            &anonymous.display().to_string(),
            "get",
            "pods",
        ],
    );
    assert!(
        !plain.status.success(),
        "plain HTTP answered: {}",
        text(&plain)
    );
    // `herd lab exec` hands kubectl root's kubeconfig.
    let listed = exec(&lab_dir, &[&kubectl_bin, "get", "nodes", "-o", "name"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert_eq!(
        text(&listed)
            .lines()
            .filter(|l| l.starts_with("node/"))
            .count(),
        3
    );

    // From outside, with kubectl and root's kubeconfig `herd lab up`
    // wrote: the end state the story claims.
    let config = lab_dir.join("pki/kubeconfig");
    let nodes = kubectl(&lab_dir, &kubectl_bin, &config, &["get", "nodes"]);
    let down: Vec<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            !n["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(down.len(), 1, "one machine was powered off: {nodes}");
    let rc = kubectl(&lab_dir, &kubectl_bin, &config, &["get", "rc", "pgview"]);
    assert_eq!(rc["spec"]["replicas"], 3, "{rc}");
    let image = rc["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(image.ends_with("demo/pgview:2"), "{rc}");
    let pods = kubectl(
        &lab_dir,
        &kubectl_bin,
        &config,
        &["get", "pods", "-l", "name=pgview"],
    );
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 4, "three stable pods and the canary: {pods:?}");
    for p in pods {
        assert!(running(p), "{p}");
        assert_ne!(p["spec"]["nodeName"], down[0].as_str(), "{p}");
    }
    // A container's output through kubectl, the API and its node's agent.
    let name = pods[0]["metadata"]["name"].as_str().unwrap();
    let config_arg = config.display().to_string();
    let kube = |args: &[&str]| {
        let mut full = vec![kubectl_bin.as_str(), "--kubeconfig", config_arg.as_str()];
        full.extend_from_slice(args);
        exec(&lab_dir, &full)
    };
    let logs = kube(&["logs", name, "-c", "pgview"]);
    assert!(
        logs.status.success() && text(&logs).contains("pgview v2 listening on :8080"),
        "{}",
        text(&logs)
    );

    // The demo's files work by hand with kubectl: its psql pod, scheduled
    // by kubectl onto a machine still up other than Postgres's m1, queries
    // Postgres through the service's cluster IP from that other VM.
    let alive = if down[0] == "m2" { "m3" } else { "m2" };
    let manifest = std::fs::read_to_string(lab_dir.join("demo/psql.yaml"))
        .unwrap()
        .replace(
            "kubernetes.io/hostname: m2",
            &format!("kubernetes.io/hostname: {alive}"),
        );
    let psql = dir.path().join("psql.yaml");
    std::fs::write(&psql, manifest).unwrap();
    let applied = kube(&["apply", "-f", &psql.display().to_string()]);
    assert!(applied.status.success(), "{}", text(&applied));
    let pod = herd_tests::wait::until(
        "kubectl's psql pod to finish",
        std::time::Duration::from_secs(600),
        std::time::Duration::from_secs(3),
        || {
            let pod = kubectl(&lab_dir, &kubectl_bin, &config, &["get", "pod", "psql"]);
            matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
            .then_some(pod)
        },
    );
    let logs = text(&kube(&["logs", "psql"]));
    assert_eq!(pod["status"]["phase"], "Succeeded", "{logs}\n{pod}");
    assert_eq!(pod["spec"]["nodeName"], alive, "{pod}");
    assert!(
        logs.contains("PostgreSQL 15") && logs.contains(":5432"),
        "{logs}"
    );
}
