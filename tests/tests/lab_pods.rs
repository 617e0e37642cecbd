//! Pods on the QEMU lab. `herd lab up --docker` installs machines whose
//! OS carries Docker, pulling the pause image from the lab registry at
//! boot. kubectl, run inside the lab network, creates a web pod that
//! must land on m1, a service in front of it, and a client pod on m2
//! that fetches the service's cluster IP. The client's answer, read with
//! `kubectl logs` through m2's agent, is the web pod's own hostname:
//! scheduling, the kubelet on a real VM's dockerd, the infra image from
//! the registry, host-gw routes between the machines and the service
//! proxy's nftables rules all worked, on the herd OS.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use herd_tests::lab::{Down, exec, lab};
use herd_tests::pods::{Kubectl, kubeconfig};
use herd_tests::{require, wait};
use serde_json::Value;

const WEB_IMAGE: &str = "10.77.0.1:5000/herd/web:1";

fn manifests() -> String {
    // busybox-static's applets run through /bin/busybox: the image has
    // no applet links. (Its wget crashes without glibc's NSS modules, so
    // the client speaks HTTP through nc.)
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {{app: web}}
spec:
  nodeSelector: {{kubernetes.io/hostname: m1}}
  containers:
  - name: web
    image: {WEB_IMAGE}
    command: ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /www && /bin/busybox hostname > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /, port: 8080}}
      periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

fn client(vip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeSelector: {{kubernetes.io/hostname: m2}}
  restartPolicy: Never
  containers:
  - name: client
    image: {WEB_IMAGE}
    command: ["/bin/busybox", "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 5 {vip} 80 > /tmp/out && /bin/busybox grep -q ' 200 ' /tmp/out; then /bin/busybox cat /tmp/out; exit 0; fi; /bin/busybox sleep 3; done; /bin/busybox cat /tmp/out; exit 1"]
"#
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Kube<'a> {
    lab_dir: &'a Path,
    kubectl: String,
    config: String,
}

impl Kube<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut full = vec![self.kubectl.as_str(), "--kubeconfig", self.config.as_str()];
        full.extend_from_slice(args);
        exec(self.lab_dir, &full)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pod(&self, name: &str) -> Option<Value> {
        let out = self.run(&["get", "pod", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    fn describe(&self, what: &str) -> String {
        text(&self.run(&["describe", "pod", what]))
    }
}

fn serial(lab_dir: &Path, machine: &str) -> String {
    let log = std::fs::read_to_string(lab_dir.join(machine).join("serial.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn qemu_lab_docker_pod_on_one_machine_answers_another_through_its_service() {
    require::root();
    require::tool("qemu-system-x86_64", "qemu-system-x86");
    require::tool("docker-registry", "docker-registry");
    require::file("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf");
    let kubectl = Kubectl::present()[0].path();

    let dir = tempfile::tempdir().unwrap();
    let lab_dir = dir.path().join("lab");
    let netns = format!("herd-lab-p{}", std::process::id());
    let _down = Down::arm(&lab_dir);

    let up = lab(
        &lab_dir,
        &[
            "up",
            "--machines",
            "2",
            "--docker",
            "--netns",
            &netns,
            "--timeout",
            "15m",
        ],
    );
    let up_text = text(&up);
    assert!(
        up.status.success() && up_text.contains("cluster healthy: 2 machines joined"),
        "{up_text}\nm1:\n{}\nm2:\n{}",
        serial(&lab_dir, "m1"),
        serial(&lab_dir, "m2")
    );

    // The app's image, built from Debian's busybox-static and pushed to
    // the lab registry from inside the lab network.
    let image = dir.path().join("web");
    let herd = herd_tests::bin::herd();
    let build = std::process::Command::new(&herd)
        .args(["image", "container", "--packages", "busybox-static"])
        .args(["--tag", "1", "--out"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build));
    let image_dir = image.display().to_string();
    let herd_path = herd.display().to_string();
    let push = exec(
        &lab_dir,
        &[
            &herd_path,
            "image",
            "push",
            &image_dir,
            WEB_IMAGE,
            "--insecure",
        ],
    );
    assert!(push.status.success(), "{}", text(&push));

    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig("http://10.77.0.11:6443")).unwrap();
    let kube = Kube {
        lab_dir: &lab_dir,
        kubectl: kubectl.display().to_string(),
        config: config.display().to_string(),
    };
    // Both kubelets registered their nodes, Ready once their dockerd answers.
    wait::until(
        "both nodes Ready",
        Duration::from_secs(300),
        Duration::from_secs(3),
        || {
            let out = kube.run(&["get", "nodes", "--no-headers"]);
            let t = String::from_utf8_lossy(&out.stdout).into_owned();
            (t.lines().filter(|l| l.contains(" Ready")).count() == 2).then_some(())
        },
    );

    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, manifests()).unwrap();
    kube.ok(&["apply", "-f", &manifest.display().to_string()]);
    let web = wait::until(
        "the web pod Ready on m1",
        Duration::from_secs(600),
        Duration::from_secs(3),
        || {
            let pod = kube.pod("web")?;
            let ready = pod["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(pod)
        },
    );
    assert_eq!(web["spec"]["nodeName"], "m1", "{web}");
    let svc: Value = serde_json::from_str(&kube.ok(&["get", "service", "web", "-o", "json"]))
        .expect("the service as JSON");
    let vip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .to_owned();

    let client_manifest = dir.path().join("client.yaml");
    std::fs::write(&client_manifest, client(&vip)).unwrap();
    kube.ok(&["apply", "-f", &client_manifest.display().to_string()]);
    let phase = wait::until(
        "the client pod to finish",
        Duration::from_secs(600),
        Duration::from_secs(3),
        || {
            let pod = kube.pod("client")?;
            let phase = pod["status"]["phase"].as_str()?.to_owned();
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some((phase, pod))
        },
    );
    let logs = text(&kube.run(&["logs", "client"]));
    assert_eq!(
        phase.0,
        "Succeeded",
        "the client on m2 never got an answer from {vip}: {logs}\n{}\n{}",
        kube.describe("client"),
        kube.describe("web")
    );
    assert_eq!(phase.1["spec"]["nodeName"], "m2", "{}", phase.1);
    // The web pod's hostname is its pod name: the answer came from it.
    assert_eq!(logs.trim().lines().last(), Some("web"), "{logs}");

    lab(&lab_dir, &["down"]);
}
