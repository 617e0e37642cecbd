//! Real container peers for image tests: Debian's `docker-registry` on
//! loopback and a private `dockerd` (own data root, exec root, socket and
//! pidfile, no iptables, no bridge), each started by the test with its own
//! state directory and stopped when dropped.

use crate::process::{self, Guard};
use crate::{require, wait};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Debian's docker CLI (the machine may also carry a newer one in /usr/local/bin).
pub const DOCKER: &str = "/usr/bin/docker";

/// A free TCP port on 127.0.0.1 (bound and released: a small race, fine for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A `docker-registry` serving plain HTTP on 127.0.0.1.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _guard: Guard,
}

impl Registry {
    /// Starts a registry storing under `dir/storage`, logging to `dir/registry.log`.
    pub fn start(dir: &Path) -> Registry {
        let bin = require::tool("docker-registry", "docker-registry");
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let guard = process::spawn(
            "docker-registry",
            Command::new(bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        wait::until(
            "docker-registry to answer on /v2/",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || std::net::TcpStream::connect(&addr).ok(),
        );
        Registry {
            addr,
            _guard: guard,
        }
    }
}

/// A private dockerd reached at `unix://<dir>/docker.sock`.
pub struct Dockerd {
    pub socket: PathBuf,
    exec_root: PathBuf,
    guard: Guard,
}

impl Dockerd {
    /// Starts dockerd with its state under `dir` (fresh each time).
    pub fn start(dir: &Path, extra: &[&str]) -> Dockerd {
        let bin = require::tool("dockerd", "docker.io");
        require::tool(DOCKER, "docker.io");
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("docker.sock");
        // Unix socket paths are short: containerd's live under the exec root.
        let exec_root = PathBuf::from(format!("/tmp/herd-dx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&exec_root);
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let guard = process::spawn(
            "dockerd",
            Command::new(bin)
                .arg("-H")
                .arg(format!("unix://{}", socket.display()))
                .arg("--data-root")
                .arg(dir.join("data"))
                .arg("--exec-root")
                .arg(&exec_root)
                .arg("--pidfile")
                .arg(dir.join("docker.pid"))
                .args([
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                    "--storage-driver=overlay2",
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let d = Dockerd {
            socket,
            exec_root,
            guard,
        };
        wait::until(
            "dockerd to answer `docker info`",
            Duration::from_secs(90),
            Duration::from_millis(250),
            || {
                d.docker(&["info", "--format", "{{.ServerVersion}}"])
                    .status
                    .success()
                    .then_some(())
            },
        );
        d
    }

    /// Runs the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .output()
            .expect("running docker")
    }

    /// Like [`Dockerd::docker`], failing the test (with docker's stderr) unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // dockerd stops its containers and containerd on SIGTERM.
        self.guard.terminate(Duration::from_secs(30));
        let _ = Command::new("umount")
            .arg("-R")
            .arg(&self.exec_root)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}
