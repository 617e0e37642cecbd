//! The one-node lab of `herd bench pod-start`: a fresh network namespace
//! joined to this one by a veth pair, a whole `herd agent` in it (store,
//! cluster network role as host-gw over that veth, the Kubernetes API,
//! the kubelet) and its own real dockerd (Debian's `docker.io`: own
//! data-root, exec-root, socket and pidfile, no iptables, no bridge), as
//! the kubelet tests' namespace lab sets them up. No registry is
//! reachable: both images are imports of a rootfs made of Debian's static
//! busybox, [`INFRA_IMAGE`] (the kubelet's default infra image, whose
//! command sleeps) and [`APP_IMAGE`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bollard::query_parameters::{
    CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use futures::StreamExt;
use serde_json::Value;
use tokio::process::{Child, Command};

pub(crate) use crate::cli::bench::until;
use crate::cli::client::Api;

/// The infra image (the kubelet's default, so no flag is needed).
pub const INFRA_IMAGE: &str = super::DEFAULT_INFRA_IMAGE;
/// The image of the pods' (and the anchor's) app container.
pub const APP_IMAGE: &str = "herd-bench/busybox:1";
/// The Node's name (the agent's `--name`).
pub const NODE: &str = "n0";
const API_PORT: u16 = 6443;

/// The namespace, the agent and dockerd in it, and their scratch directory.
pub struct Lab {
    pub dir: PathBuf,
    pub netns: String,
    host_link: String,
    /// The agent's address, seen from here (the veth's inner end).
    pub ip: String,
    pub api: Api,
    docker: Option<bollard::Docker>,
    pub docker_host: String,
    agent: Option<Child>,
    dockerd: Option<Child>,
    /// Set once [`Lab::tear_down`] ran.
    clean: bool,
}

/// Runs a short command to its end; its stdout, or why it failed.
pub async fn run_cmd(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn find_tool(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` is missing: apt-get install {package}"))
}

/// Whether a Node or a pod has condition Ready=True.
pub fn ready(object: &Value) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn spawn_logged(mut cmd: Command, log: &Path, what: &str) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))
}

impl Lab {
    /// Sets the lab up; on failure, whatever was made is removed again.
    pub async fn start() -> anyhow::Result<Lab> {
        let status = tokio::fs::read_to_string("/proc/self/status").await?;
        let root = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0");
        if !root {
            bail!("herd bench pod-start runs network namespaces and a dockerd: run it as root");
        }
        for (tool, package) in [
            ("ip", "iproute2"),
            ("nsenter", "util-linux"),
            ("dockerd", "docker.io"),
            ("tar", "tar"),
        ] {
            find_tool(tool, package)?;
        }
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/hbps-{pid}"));
        let netns = format!("hbps{pid}");
        let docker_host = format!("unix://{}", dir.join("d.sock").display());
        let mut lab = Lab {
            api: Api::new(herd_http::Client::new(), "http://127.0.0.1:1", None),
            dir,
            netns,
            host_link: format!("hbps{pid}h"),
            ip: String::new(),
            docker: None,
            docker_host,
            agent: None,
            dockerd: None,
            clean: false,
        };
        match lab.set_up().await {
            Ok(()) => Ok(lab),
            Err(e) => {
                let logs = lab.log_tails();
                lab.tear_down().await;
                Err(e.context(logs))
            }
        }
    }

    async fn set_up(&mut self) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        // The link: 10.253.X.1 here, 10.253.X.2 (`peer0`) in the namespace.
        let used = run_cmd("ip", &["-4", "-o", "addr"]).await?;
        let x = (0..250)
            .map(|k| (std::process::id() as usize + k) % 250)
            .find(|x| !used.contains(&format!("10.253.{x}.")))
            .context("no free 10.253.X.0/30 for the lab's link")?;
        let (outer, inner) = (format!("10.253.{x}.1/30"), format!("10.253.{x}.2/30"));
        self.ip = format!("10.253.{x}.2");
        let ns = self.netns.clone();
        run_cmd("ip", &["netns", "add", &ns]).await?;
        run_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
        let tmp_inner = format!("{}i", self.host_link);
        run_cmd(
            "ip",
            &[
                "link",
                "add",
                &self.host_link,
                "type",
                "veth",
                "peer",
                "name",
                &tmp_inner,
                "netns",
                &ns,
            ],
        )
        .await?;
        run_cmd(
            "ip",
            &["-n", &ns, "link", "set", &tmp_inner, "name", "peer0"],
        )
        .await?;
        run_cmd("ip", &["-n", &ns, "addr", "add", &inner, "dev", "peer0"]).await?;
        run_cmd("ip", &["-n", &ns, "link", "set", "peer0", "up"]).await?;
        run_cmd("ip", &["addr", "add", &outer, "dev", &self.host_link]).await?;
        run_cmd("ip", &["link", "set", &self.host_link, "up"]).await?;

        self.start_dockerd().await?;
        self.import_images().await?;
        self.start_agent().await?;
        let api = self.api.clone();
        until(
            &format!("node {NODE} to be Ready"),
            Duration::from_secs(120),
            || async {
                api.get(&format!("/api/v1/nodes/{NODE}"))
                    .await
                    .is_ok_and(|n| ready(&n))
            },
        )
        .await
    }

    async fn start_dockerd(&mut self) -> anyhow::Result<()> {
        let d = &self.dir;
        // nsenter, not `ip netns exec`: the latter remounts /sys, hiding
        // the cgroup hierarchy dockerd needs.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("x"))
            .arg("-H")
            .arg(&self.docker_host)
            .arg("--pidfile")
            .arg(d.join("d.pid"))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"]);
        self.dockerd = Some(spawn_logged(cmd, &d.join("dockerd.log"), "dockerd")?);
        let socket = d.join("d.sock");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            // The client checks that the socket exists when it is made.
            let docker = bollard::Docker::connect_with_unix(
                &socket.display().to_string(),
                120,
                // dockerd 20.10's (Debian 12), as the kubelet asks first.
                &bollard::ClientVersion {
                    major_version: 1,
                    minor_version: 41,
                },
            );
            if let Ok(docker) = docker
                && docker.version().await.is_ok()
            {
                self.docker = Some(docker);
                return Ok(());
            }
            if Instant::now() > end {
                bail!("dockerd did not answer within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client of the lab's dockerd.
    pub fn docker(&self) -> &bollard::Docker {
        self.docker.as_ref().expect("dockerd answered at set-up")
    }

    /// `docker import`s of the busybox rootfs, through the API.
    async fn import_images(&self) -> anyhow::Result<()> {
        let root = self.dir.join("rootfs");
        for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
            tokio::fs::create_dir_all(root.join(d)).await?;
        }
        let busybox = find_tool("busybox", "busybox-static")?;
        tokio::fs::copy(&busybox, root.join("bin/busybox")).await?;
        for applet in ["sh", "sleep", "true", "cat", "ls"] {
            tokio::fs::symlink("busybox", root.join("bin").join(applet)).await?;
        }
        let tar = self.dir.join("rootfs.tar");
        let (r, t) = (root.display().to_string(), tar.display().to_string());
        run_cmd("tar", &["-C", &r, "-cf", &t, "."]).await?;
        let bytes = bytes::Bytes::from(tokio::fs::read(&tar).await?);
        for (image, cmd) in [
            (INFRA_IMAGE, r#"CMD ["/bin/sleep", "2147483647"]"#),
            (APP_IMAGE, r#"CMD ["/bin/sh"]"#),
        ] {
            let (repo, tag) = super::docker::split_image(image);
            let mut progress = self.docker().create_image(
                Some(CreateImageOptions {
                    from_src: Some("-".into()),
                    repo: Some(repo.into()),
                    tag: Some(tag.into()),
                    changes: vec![cmd.into()],
                    ..Default::default()
                }),
                Some(bollard::body_full(bytes.clone())),
                None,
            );
            while let Some(step) = progress.next().await {
                step.with_context(|| format!("importing {image}"))?;
            }
        }
        Ok(())
    }

    async fn start_agent(&mut self) -> anyhow::Result<()> {
        let herd = std::env::current_exe().context("finding the herd binary")?;
        let d = &self.dir;
        let ip = &self.ip;
        // `ip netns exec`, which mounts the namespace's own /sys: the
        // agent reads its interface from /sys/class/net (dockerd, which
        // needs the cgroup hierarchy there, goes in with nsenter).
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(&herd)
            .args(["agent", "--name", NODE, "--insecure-plaintext"])
            .args(["--token", "bench"])
            .arg("--data-dir")
            .arg(d.join("agent"))
            .args(["--listen-client", &format!("{ip}:2379")])
            .args(["--listen-peer", &format!("{ip}:2380")])
            .args(["--cluster-iface", "peer0", "--machine-id", "machine-0"])
            .arg("--subnet-env")
            .arg(d.join("subnet.env"))
            .args(["--route-check-interval", "1"])
            .args(["--docker-host", &self.docker_host])
            .args(["--listen-api", &format!("{ip}:{API_PORT}")])
            .env("HERD_LOG", "info,openraft=warn");
        self.agent = Some(spawn_logged(cmd, &d.join("agent.log"), "the agent")?);
        // The cluster network's config, as `herd net config set` sets it.
        let endpoint = format!("{ip}:2379");
        let herd = herd.display().to_string();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let set = run_cmd(
                &herd,
                &[
                    "net",
                    "config",
                    "set",
                    "--endpoints",
                    &endpoint,
                    "--backend",
                    "host-gw",
                ],
            )
            .await;
            match set {
                Ok(_) => break,
                Err(e) if Instant::now() > end => return Err(e.context("the store never answered")),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
        self.api = Api::new(
            herd_http::Client::new().with_timeout(Duration::from_secs(60)),
            &format!("http://{ip}:{API_PORT}"),
            None,
        );
        let api = self.api.clone();
        until("the API to serve", Duration::from_secs(60), || async {
            api.get("/api/v1/namespaces/default").await.is_ok()
        })
        .await
    }

    /// PIDs of the agent and of dockerd (`ip netns exec` and nsenter exec
    /// them, keeping their PIDs).
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        (
            self.agent.as_ref().and_then(Child::id),
            self.dockerd.as_ref().and_then(Child::id),
        )
    }

    /// Ids of every container carrying `label` (`key=value`).
    pub async fn containers(&self, label: &str) -> anyhow::Result<Vec<String>> {
        let filters =
            std::collections::HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let list = self
            .docker()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Force-removes containers, ignoring those already gone.
    pub async fn remove_all(&self, ids: &[String]) {
        let docker = self.docker();
        futures::future::join_all(ids.iter().map(|id| async move {
            let _ = docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await;
        }))
        .await;
    }

    /// The last lines of the agent's and dockerd's logs.
    pub fn log_tails(&self) -> String {
        let tail = |f: &str| {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- agent.log\n{}\n--- dockerd.log\n{}",
            tail("agent.log"),
            tail("dockerd.log")
        )
    }

    /// Stops the agent (its containers stay), removes every container,
    /// stops dockerd, kills what is left in the namespace and deletes it
    /// (with its veth), and removes the scratch directory.
    pub async fn tear_down(&mut self) {
        if let Some(agent) = self.agent.take() {
            stop(agent, Duration::from_secs(10)).await;
        }
        if let Some(dockerd) = self.dockerd.take() {
            for label in ["io.herd.pod.uid", "io.herd.bench"] {
                if self.docker.is_some()
                    && let Ok(all) = self.containers(label).await
                {
                    self.remove_all(&all).await;
                }
            }
            stop(dockerd, Duration::from_secs(30)).await;
        }
        if let Ok(pids) = run_cmd("ip", &["netns", "pids", &self.netns]).await {
            for pid in pids.split_whitespace() {
                let _ = run_cmd("kill", &["-KILL", pid]).await;
            }
        }
        let _ = run_cmd("ip", &["netns", "del", &self.netns]).await;
        let _ = run_cmd("ip", &["link", "del", &self.host_link]).await;
        for mount in mounts_under(&self.dir) {
            let _ = run_cmd("umount", &["-l", &mount.display().to_string()]).await;
        }
        let dir = self.dir.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "the bench's scratch directory stays behind");
        }
        self.clean = true;
    }
}

/// Mount points at or under `dir`, deepest first. A dockerd whose data
/// root is not a shared mount bind-mounts it onto itself and undoes that
/// only when it shuts down cleanly; one that did not leaves the mount, and
/// the directory cannot be removed under it.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.dedup();
    found
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop(mut child: Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = run_cmd("kill", &["-TERM", &pid.to_string()]).await;
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

impl Drop for Lab {
    /// The last resort when [`Lab::tear_down`] did not run (a panic, an
    /// interrupted set-up):
    /// dockerd is asked to stop (it stops its containers), the rest goes
    /// as in [`Lab::tear_down`], blocking.
    fn drop(&mut self) {
        if self.clean {
            return;
        }
        let sync = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        if let Some(mut a) = self.agent.take() {
            let _ = a.start_kill();
        }
        if let Some(mut d) = self.dockerd.take() {
            if let Some(pid) = d.id() {
                let _ = sync("kill", &["-TERM", &pid.to_string()]);
                let end = Instant::now() + Duration::from_secs(30);
                while Instant::now() < end && matches!(d.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let _ = d.start_kill();
        }
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = sync("kill", &["-KILL", pid]);
            }
        }
        let _ = sync("ip", &["netns", "del", &self.netns]);
        let _ = sync("ip", &["link", "del", &self.host_link]);
        for mount in mounts_under(&self.dir) {
            let _ = sync("umount", &["-l", &mount.display().to_string()]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
