//! A namespace lab for the kubelet: whole `herd agent`s, each in its own
//! network namespace with the cluster network role (host-gw over the
//! peer switch), the Kubernetes API, and its own real dockerd (Debian's
//! `docker.io`: own data-root, exec-root, socket and pidfile, no
//! iptables), started and stopped by the lab. No registry is reachable,
//! so the test images are `docker import`s of a busybox rootfs (Debian's
//! `busybox-static`): `herd/pause:1` (the default infra image, whose
//! command sleeps) and [`BUSYBOX`].

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::netns::Netns;
use crate::pods::{API_PORT, Kubectl, api_http, api_url, root_kubeconfig};
use crate::process::{Guard, spawn};
use crate::store::{Cluster, Topology};
use crate::{require, wait};

/// The image app containers of the tests run.
pub const BUSYBOX: &str = "herd-test/busybox:1";

/// Debian's docker CLI (the `docker.io` package), matching its dockerd.
pub fn docker_cli() -> PathBuf {
    require::tool("dockerd", "docker.io");
    let p = PathBuf::from("/usr/bin/docker");
    assert!(
        p.exists(),
        "/usr/bin/docker is missing: apt-get install docker.io"
    );
    p
}

/// One dockerd of the lab, in a machine's network namespace.
pub struct Dockerd {
    pub socket: PathBuf,
    guard: Option<Guard>,
    log: PathBuf,
}

impl Dockerd {
    /// Starts dockerd in `ns` with its state under `dir`; waits until it answers.
    pub fn start(ns: &Netns, dir: &Path, i: usize) -> Dockerd {
        let socket = dir.join(format!("d{i}.sock"));
        let log = dir.join(format!("dockerd-{i}.log"));
        let out = std::fs::File::create(&log).expect("creating the dockerd log");
        // nsenter, not `ip netns exec`: the latter remounts /sys, hiding
        // the cgroup hierarchy dockerd needs.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", ns.name()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(dir.join(format!("data-{i}")))
            .arg("--exec-root")
            .arg(dir.join(format!("x{i}")))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(dir.join(format!("d{i}.pid")))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out);
        let guard = spawn(&format!("dockerd-{i}"), &mut cmd);
        let d = Dockerd {
            socket,
            guard: Some(guard),
            log,
        };
        wait::until(
            "dockerd to answer",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || d.docker(&["version"]).status.success().then_some(()),
        );
        d
    }

    /// `unix://<socket>`, for `--docker-host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs `docker ARGS` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(docker_cli())
            .arg("-H")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running docker")
    }

    /// `docker ARGS` that must succeed; its trimmed stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker import`s the busybox rootfs `tar` as `image`, with `changes`.
    pub fn import(&self, tar: &Path, image: &str, changes: &[&str]) {
        let mut cmd = Command::new(docker_cli());
        cmd.arg("-H").arg(self.host()).arg("import");
        for c in changes {
            cmd.args(["-c", c]);
        }
        let out = cmd
            .arg(tar)
            .arg(image)
            .stdin(Stdio::null())
            .output()
            .expect("running docker import");
        assert!(
            out.status.success(),
            "docker import {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Ids of the containers carrying `label` (`key=value`), running or not.
    pub fn containers(&self, label: &str) -> Vec<String> {
        self.docker_ok(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label={label}"),
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// The end of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(30).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Removes every container, then stops the daemon (SIGTERM).
    pub fn stop(&mut self) {
        if self.guard.is_none() {
            return;
        }
        let all = self.docker(&["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&all.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        if let Some(mut g) = self.guard.take() {
            g.terminate(Duration::from_secs(20));
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes a busybox rootfs tarball (Debian's static busybox and its applets) to `dir`.
pub fn busybox_tar(dir: &Path) -> PathBuf {
    let busybox = require::tool("busybox", "busybox-static");
    let root = dir.join("rootfs");
    for d in ["bin", "tmp", "www", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).expect("making the rootfs");
    }
    std::fs::copy(&busybox, root.join("bin/busybox")).expect("copying busybox");
    for applet in [
        "sh", "sleep", "httpd", "wget", "env", "cat", "echo", "ls", "mkdir", "touch", "rm",
        "hostname", "ps", "ip", "nc", "true", "false", "test", "ping", "stty", "tty", "seq",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .expect("linking an applet");
    }
    let tar = dir.join("busybox.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(status.success(), "tar of the rootfs failed");
    tar
}

/// The lab: agents with the network and pods roles, a dockerd each.
pub struct NodeLab {
    // Declared first: the daemons (and their containers) go before the
    // agents and their namespaces.
    pub dockerds: Vec<Dockerd>,
    pub cluster: Cluster,
    pub rt: tokio::runtime::Runtime,
    pub http: herd_http::Client,
    pub kubeconfig: PathBuf,
    /// subnet.env of each machine.
    pub envs: Vec<PathBuf>,
    _scratch: tempfile::TempDir,
}

impl NodeLab {
    /// `n` machines, each with its dockerd, every Node Ready.
    pub fn start(n: usize) -> NodeLab {
        NodeLab::start_with(n, |_| Vec::new())
    }

    /// As [`NodeLab::start`], machine `i`'s agent with `extra(i)` flags too.
    pub fn start_with(
        n: usize,
        extra: impl Fn(usize) -> Vec<String> + Send + Sync + 'static,
    ) -> NodeLab {
        require::root();
        require::tool("ip", "iproute2");
        require::tool("nsenter", "util-linux");
        docker_cli();
        let scratch = tempfile::Builder::new()
            .prefix("kl")
            .tempdir_in("/tmp")
            .expect("a scratch dir");
        let dir = scratch.path().to_owned();
        let envs: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("m{i}.env"))).collect();
        let sockets: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("d{i}.sock"))).collect();
        let (e, s) = (envs.clone(), sockets.clone());
        let cluster = Cluster::start_agents_in_namespaces(n, move |i| {
            let mut flags = crate::net::machine_flags(&e[i], i);
            flags.extend([
                "--route-check-interval".into(),
                "1".into(),
                "--docker-host".into(),
                format!("unix://{}", s[i].display()),
                "--listen-api".into(),
                format!("{}:{API_PORT}", Topology::client_ip(i)),
            ]);
            flags.extend(extra(i));
            flags
        });
        crate::net::set_host_gw(&cluster);
        let rt = cluster.client_runtime();
        let http = api_http(&cluster.credentials());
        // No dockerd yet: each kubelet registers its Node NotReady, saying why.
        for i in 0..n {
            let url = format!("{}/api/v1/nodes/m{i}", api_url(0));
            wait::until(
                &format!("node m{i} to be registered NotReady for its missing dockerd"),
                Duration::from_secs(90),
                Duration::from_millis(500),
                || {
                    let (http, url) = (http.clone(), url.clone());
                    let node: Value = rt
                        .block_on(rt.spawn(async move { http.get_json::<Value>(&url).await }))
                        .ok()?
                        .ok()?;
                    let c = node["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .find(|c| c["type"] == "Ready")?
                        .clone();
                    (c["status"] == "False"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("container runtime is down")))
                    .then_some(())
                },
            );
        }
        let tar = busybox_tar(&dir);
        let dockerds: Vec<Dockerd> = (0..n)
            .map(|i| {
                let d = Dockerd::start(cluster.member_netns(i), &dir, i);
                d.import(
                    &tar,
                    "herd/pause:1",
                    &[r#"CMD ["/bin/sleep", "2147483647"]"#],
                );
                d.import(&tar, BUSYBOX, &[r#"CMD ["/bin/sh"]"#]);
                d
            })
            .collect();
        let kubeconfig = dir.join("kubeconfig");
        let pki = cluster.pki.as_ref().expect("a TLS cluster");
        std::fs::write(&kubeconfig, root_kubeconfig(&api_url(0), pki))
            .expect("writing the kubeconfig");
        let lab = NodeLab {
            dockerds,
            cluster,
            rt,
            http,
            kubeconfig,
            envs,
            _scratch: scratch,
        };
        for i in 0..n {
            let name = format!("m{i}");
            wait::until(
                &format!("node {name} to be Ready"),
                Duration::from_secs(90),
                Duration::from_millis(500),
                || {
                    let node = lab.get(&format!("/api/v1/nodes/{name}")).ok()?;
                    ready(&node).then_some(())
                },
            );
        }
        lab
    }

    /// `GET path` on agent 0's API, as JSON.
    pub fn get(&self, path: &str) -> Result<Value, herd_http::Error> {
        let (http, url) = (self.http.clone(), format!("{}{path}", api_url(0)));
        self.rt
            .block_on(
                self.rt
                    .spawn(async move { http.get_json::<Value>(&url).await }),
            )
            .expect("the request task")
    }

    /// Sends `method path` with a JSON `body`; status and body.
    pub fn send(&self, method: herd_http::Method, path: &str, body: &Value) -> (u16, Value) {
        let (http, url) = (self.http.clone(), format!("{}{path}", api_url(0)));
        let req = herd_http::Request::new(method, url)
            .header("content-type", "application/json")
            .body(body.to_string());
        let resp = self
            .rt
            .block_on(self.rt.spawn(async move { http.fetch(req).await }))
            .expect("the request task")
            .expect("the API answers");
        (
            resp.status.as_u16(),
            serde_json::from_slice(&resp.body).unwrap_or(Value::Null),
        )
    }

    /// Creates `object` at `path`; fails the test unless the API takes it.
    pub fn create(&self, path: &str, object: &Value) -> Value {
        let (code, body) = self.send(herd_http::Method::POST, path, object);
        assert!(code == 201 || code == 200, "POST {path}: {code} {body}");
        body
    }

    /// Deletes `path`.
    pub fn delete(&self, path: &str) {
        let (code, body) = self.send(herd_http::Method::DELETE, path, &serde_json::json!({}));
        assert!(code == 200 || code == 202, "DELETE {path}: {code} {body}");
    }

    /// The pod `name` of `default`, if it exists.
    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get(&format!("/api/v1/namespaces/default/pods/{name}"))
            .ok()
    }

    /// The events about object `name` in `default` (none if the API fails).
    pub fn events_for(&self, name: &str) -> Vec<Value> {
        self.get(&format!(
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{name}"
        ))
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
    }

    /// Waits until pod `name` satisfies `check`; returns it.
    pub fn wait_pod(&self, what: &str, name: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait::until(
            what,
            Duration::from_secs(90),
            Duration::from_millis(300),
            || self.pod(name).filter(|p| check(p)),
        )
    }

    /// Runs the newest kubectl this machine has in the client namespace
    /// against agent 0.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(Kubectl::present()[0], args, None)
    }

    /// Runs kubectl `version` with `stdin` (if any) as its input.
    pub fn kubectl_as(&self, version: Kubectl, args: &[&str], stdin: Option<&str>) -> Output {
        let config = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut full = vec![config.as_str()];
        full.extend_from_slice(args);
        self.client_run(&version.path(), &full, stdin)
    }

    /// The lines of every agent's log that mention `needle` (for a
    /// failure's message), each with its agent's name.
    pub fn agent_log_lines(&self, needle: &str) -> String {
        let mut lines = Vec::new();
        for m in &self.cluster.members {
            let log = std::fs::read_to_string(&m.log).unwrap_or_default();
            lines.extend(
                log.lines()
                    .filter(|l| l.contains(needle))
                    .map(|l| format!("{}: {l}", m.name)),
            );
        }
        lines.join("\n")
    }

    /// Runs a `herd` verb (`herd exec …`) in the client namespace against
    /// agent 0's API.
    pub fn herd_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        // The flag goes right after the verb: exec's command follows `--`.
        let server = api_url(0);
        let mut full = args[..1].to_vec();
        full.extend(["--server", server.as_str()]);
        full.extend_from_slice(&args[1..]);
        self.client_run(&crate::bin::herd(), &full, stdin)
    }

    /// Runs a `herd` verb as [`NodeLab::herd_with_stdin`] does, but in a
    /// terminal of 45 rows × 123 columns (script(1)'s pseudo-terminal).
    pub fn herd_in_terminal(&self, args: &[&str]) -> Output {
        let server = api_url(0);
        let herd = crate::bin::herd().display().to_string();
        let mut words = vec![herd.as_str(), args[0], "--server", server.as_str()];
        words.extend_from_slice(&args[1..]);
        self.in_terminal(&words)
    }

    /// Runs kubectl `version` as [`NodeLab::kubectl_as`] does, but in
    /// the terminal [`NodeLab::herd_in_terminal`] gives.
    pub fn kubectl_in_terminal(&self, version: Kubectl, args: &[&str]) -> Output {
        let kubectl = version.path().display().to_string();
        let config = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut words = vec![kubectl.as_str(), config.as_str()];
        words.extend_from_slice(args);
        self.in_terminal(&words)
    }

    fn in_terminal(&self, words: &[&str]) -> Output {
        let quoted: Vec<String> = words
            .iter()
            .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
            .collect();
        let line = format!("stty cols 123 rows 45; exec {}", quoted.join(" "));
        self.client_run(
            Path::new("/usr/bin/script"),
            &["-qec", &line, "/dev/null"],
            None,
        )
    }

    fn client_run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let net = self.cluster.net.as_ref().expect("a namespace lab");
        let mut child = net
            .client
            .command("timeout")
            .arg("60")
            .arg(program)
            .args(args)
            // herd's verbs find root's credentials here (kubectl its kubeconfig).
            .envs(self.cluster.client_env())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes())
                .expect("writing kubectl's stdin");
        }
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// The kubelet's pod veths (`hv…`) in machine `i`'s namespace (the
    /// lab's own `peer0`/`client0` are veths too).
    pub fn veths(&self, i: usize) -> Vec<String> {
        let out = self
            .cluster
            .member_netns(i)
            .ip(&["-o", "link", "show", "type", "veth"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("hv"))
            .collect()
    }

    /// The dockerd of the machine the pod runs on, by its nodeName `m<i>`.
    pub fn dockerd_of(&self, pod: &Value) -> (usize, &Dockerd) {
        let node = pod["spec"]["nodeName"].as_str().expect("a bound pod");
        let i: usize = node
            .trim_start_matches('m')
            .parse()
            .expect("a lab node name");
        (i, &self.dockerds[i])
    }

    /// Logs of every agent and dockerd, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, m) in self.cluster.members.iter().enumerate() {
            s.push_str(&format!("--- agent {i}\n{}\n", m.log_tail()));
        }
        for (i, d) in self.dockerds.iter().enumerate() {
            s.push_str(&format!("--- dockerd {i}\n{}\n", d.log_tail()));
        }
        s
    }
}

/// The index of the machine a pod is bound to, by its nodeName `m<i>`.
pub fn machine_of(pod: &Value) -> usize {
    let node = pod["spec"]["nodeName"].as_str().expect("a bound pod");
    node.trim_start_matches('m')
        .parse()
        .expect("a lab node name")
}

/// Whether a Node (or a pod) has condition Ready=True.
pub fn ready(object: &Value) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The running container id of container `name` in a pod's status.
pub fn container_id(pod: &Value, name: &str) -> Option<String> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name && !c["state"]["running"].is_null())
        .and_then(|c| c["containerID"].as_str())
        .map(|id| id.trim_start_matches("docker://").to_owned())
}
