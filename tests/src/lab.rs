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

/// A machine's console (its serial log), which starts afresh with each
/// power-on; empty before its first.
pub fn serial(lab_dir: &Path, machine: &str) -> String {
    std::fs::read_to_string(lab_dir.join(machine).join("serial.log")).unwrap_or_default()
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

/// What every machine's console says about the store's membership (joins,
/// promotions, membership changes, refused peers, warnings and errors),
/// without colours: what a failed wait for a leader or a voter needs.
pub fn membership_story(lab_dir: &Path) -> String {
    const SAID: [&str; 10] = [
        "admitted",
        "join",
        "promot",
        "learner",
        "membership",
        "refused",
        "store member",
        "elect",
        "WARN",
        "ERROR",
    ];
    let mut out = String::new();
    let Ok(dir) = std::fs::read_dir(lab_dir) else {
        return out;
    };
    let mut machines: Vec<_> = dir.flatten().map(|e| e.path()).collect();
    machines.sort();
    for m in machines {
        let Ok(log) = std::fs::read(m.join("serial.log")) else {
            continue;
        };
        let log = strip_ansi(&String::from_utf8_lossy(&log));
        out.push_str(&format!("--- {}:\n", m.display()));
        for line in log.lines().filter(|l| SAID.iter().any(|w| l.contains(w))) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
pub struct Down<'a> {
    lab_dir: &'a Path,
    watchdog: Option<std::process::Child>,
}

impl<'a> Down<'a> {
    /// Arms the guard, and a watchdog for when no destructor runs: a
    /// nextest timeout SIGKILLs the test, and the lab's VMs (which left the
    /// test's process group) would go on taking the CPU of the tests after
    /// it. The watchdog, in a process group of its own, waits for its stdin
    /// (a pipe only this process holds) to close, then takes the lab down.
    pub fn arm(lab_dir: &'a Path) -> Down<'a> {
        use std::os::unix::process::CommandExt;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"read _; exec "$0" lab down --lab-dir "$1" >/dev/null 2>&1"#)
            .arg(bin::herd())
            .arg(lab_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        Down { lab_dir, watchdog }
    }
}

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = Command::new(bin::herd())
            .args(["lab", "down", "--lab-dir"])
            .arg(self.lab_dir)
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
