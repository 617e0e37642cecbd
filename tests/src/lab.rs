//! Driving a QEMU lab from tests: `herd lab …` against a lab dir, its
//! `status -o json`, and Debian's `etcdctl` run inside the lab network.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::bin;

/// Runs `herd lab …` against `lab_dir`, failing the test with its output on error.
pub fn lab(lab_dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(bin::herd())
        .arg("lab")
        .args(args)
        .arg("--lab-dir")
        .arg(lab_dir)
        .output()
        .expect("running herd lab");
    assert!(
        out.status.success(),
        "herd lab {} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `herd lab status -o json`.
pub fn status(lab_dir: &Path) -> Value {
    let out = lab(lab_dir, &["status", "-o", "json"]);
    serde_json::from_slice(&out.stdout).expect("status -o json is JSON")
}

/// The machine whose store member says it leads.
pub fn leader(status: &Value) -> Option<String> {
    status["cluster"]["members"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "leader")
        .and_then(|m| m["machine"].as_str())
        .map(str::to_owned)
}

/// Machines that answer as store members (leader or voter).
pub fn serving(status: &Value) -> Vec<String> {
    status["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "leader" || m["role"] == "voter")
        .filter_map(|m| m["machine"].as_str().map(str::to_owned))
        .collect()
}

/// `etcdctl` (Debian's, a real etcd v3 client) run inside the lab network,
/// over TLS with root's certificate; bare `HOST:PORT` endpoints get `https://`.
pub fn etcdctl(lab_dir: &Path, endpoints: &str, args: &[&str]) -> Output {
    let mut full = vec![
        "exec",
        "--",
        "etcdctl",
        "--dial-timeout=3s",
        "--command-timeout=5s",
    ];
    // The lab is TLS; `lab exec` hands etcdctl the root credentials.
    let endpoints = endpoints
        .split(',')
        .map(|e| match e.contains("://") {
            true => e.to_owned(),
            false => format!("https://{e}"),
        })
        .collect::<Vec<_>>()
        .join(",");
    let endpoints = format!("--endpoints={endpoints}");
    full.push(&endpoints);
    full.extend_from_slice(args);
    Command::new(bin::herd())
        .arg("lab")
        .arg("--lab-dir")
        .arg(lab_dir)
        .args(&full)
        .env("ETCDCTL_API", "3")
        .output()
        .expect("running etcdctl in the lab")
}

/// Root's credentials for the lab's store, from the files `herd lab up`
/// writes in `LAB/pki` (as a user's tools would find them).
pub fn credentials(lab_dir: &Path) -> herd_client::Credentials {
    let read = |name: &str| {
        let path = lab_dir.join("pki").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    herd_client::Credentials::Tls {
        ca_pem: read("ca.crt"),
        identity: Some(herd_pki::CertKey {
            cert_pem: read("root.crt"),
            key_pem: read("root.key"),
        }),
    }
}

/// The client endpoint of lab machine `mN` (the lab gives it 10.77.0.(10+N)).
pub fn endpoint(machine: &str) -> String {
    let n: u8 = machine
        .trim_start_matches('m')
        .parse()
        .expect("machine name");
    format!("10.77.0.{}:2379", 10 + n)
}

/// Brings the lab at the given dir down when the test ends, however it ends.
pub struct Down<'a>(pub &'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = Command::new(bin::herd())
            .args(["lab", "down", "--lab-dir"])
            .arg(self.0)
            .output();
    }
}

/// `herd lab exec -- ARGS`: a command inside the lab network.
pub fn exec(lab_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin::herd())
        .arg("lab")
        .arg("--lab-dir")
        .arg(lab_dir)
        .arg("exec")
        .arg("--")
        .args(args)
        .output()
        .expect("running herd lab exec")
}
