//! Store clusters for tests: `herd agent` members (or real etcd members, to
//! check the test harness itself against the reference) on loopback ports,
//! each a child process that dies with the test, plus an `etcdctl` runner.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::process::{Guard, spawn};
use crate::{bin, require, wait};

/// Which server a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Herd,
    Etcd,
}

/// One member: its addresses, data dir and (while running) its process.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    process: Option<Guard>,
}

/// A cluster of members in a scratch directory (removed on drop).
#[derive(Debug)]
pub struct Cluster {
    pub server: Server,
    pub members: Vec<Member>,
    pub token: String,
    pub dir: tempfile::TempDir,
}

/// A loopback address with a port the kernel just gave out.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local_addr")
}

/// Path of Debian's etcdctl (fails the test with the apt line if missing).
pub fn etcdctl_path() -> PathBuf {
    require::tool("etcdctl", "etcd-client")
}

/// Runs `ETCDCTL_API=3 etcdctl --endpoints=… ARGS` with `stdin`, killed after 30 s.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    etcdctl_for(Duration::from_secs(30), endpoints, args, stdin)
}

/// [`etcdctl`] with a custom time limit.
pub fn etcdctl_for(limit: Duration, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg(limit.as_secs().to_string())
        .arg(etcdctl_path())
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running etcdctl");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing etcdctl stdin");
    }
    child.wait_with_output().expect("waiting for etcdctl")
}

impl Member {
    fn command(
        &self,
        server: Server,
        initial: &str,
        token: &str,
        join: Option<SocketAddr>,
    ) -> Command {
        match server {
            Server::Herd => {
                let mut c = Command::new(bin::herd());
                c.arg("agent")
                    .args(["--name", &self.name])
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .args(["--listen-client", &self.client.to_string()])
                    .args(["--listen-peer", &self.peer.to_string()])
                    .args(["--token", token]);
                match join {
                    Some(j) => c.args(["--join", &j.to_string()]),
                    None if initial.is_empty() => &mut c,
                    None => c.args(["--initial-cluster", initial]),
                };
                c.env("HERD_LOG", "info,openraft=warn");
                c
            }
            Server::Etcd => {
                let mut c = Command::new(require::tool("etcd", "etcd-server"));
                c.args(["--name", &self.name])
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .args(["--listen-client-urls", &format!("http://{}", self.client)])
                    .args([
                        "--advertise-client-urls",
                        &format!("http://{}", self.client),
                    ])
                    .args(["--listen-peer-urls", &format!("http://{}", self.peer)])
                    .args([
                        "--initial-advertise-peer-urls",
                        &format!("http://{}", self.peer),
                    ])
                    .args(["--initial-cluster", initial])
                    .args([
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        token,
                    ]);
                c
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Guard::is_running)
    }

    /// The member's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Cluster {
    /// Starts `n` members bootstrapped together and waits until each serves a write.
    pub fn start(server: Server, n: usize) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("herd-store-test")
            .tempdir()
            .expect("creating a scratch directory");
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client: free_addr(),
                    peer: free_addr(),
                    process: None,
                }
            })
            .collect();
        let mut cluster = Cluster {
            server,
            members,
            token: "test-token".to_owned(),
            dir,
        };
        for i in 0..n {
            cluster.launch(i, None);
        }
        for i in 0..n {
            cluster.wait_serving(i);
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        if self.members.len() == 1 && self.server == Server::Herd {
            // No flag at all: the single-member default.
            return String::new();
        }
        self.members
            .iter()
            .map(|m| match self.server {
                Server::Herd => format!("{}={}", m.name, m.peer),
                Server::Etcd => format!("{}=http://{}", m.name, m.peer),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn launch(&mut self, i: usize, join: Option<SocketAddr>) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("opening the member log");
        let mut cmd = m.command(self.server, &initial, &self.token, join);
        cmd.stdout(log.try_clone().expect("dup log")).stderr(log);
        let guard = spawn(&m.name, &mut cmd);
        self.members[i].process = Some(guard);
    }

    /// Waits until member `i` answers a linearizable read.
    pub fn wait_serving(&self, i: usize) {
        let m = &self.members[i];
        wait::until(
            &format!("member {} to serve (log: {})", m.name, m.log.display()),
            Duration::from_secs(60),
            Duration::from_millis(300),
            || {
                let out = etcdctl(
                    &m.client.to_string(),
                    &["get", "--command-timeout=2s", "health-probe"],
                    None,
                );
                out.status.success().then_some(())
            },
        );
    }

    /// All client endpoints, comma separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILLs member `i` (a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut g) = self.members[i].process.take() {
            g.kill();
        }
    }

    /// Sends `signal` to member `i` (SIGSTOP/SIGCONT pause and resume it).
    pub fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(g) = &self.members[i].process {
            g.signal(signal);
        }
    }

    /// SIGTERMs member `i` and returns whether it exited cleanly.
    pub fn terminate(&mut self, i: usize) -> bool {
        match self.members[i].process.take() {
            Some(mut g) => g
                .terminate(Duration::from_secs(20))
                .is_some_and(|s| s.success()),
            None => true,
        }
    }

    /// Restarts a stopped member from its data dir and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        self.launch(i, None);
        self.wait_serving(i);
    }

    /// Adds a new member that joins through member `via`'s peer address.
    pub fn join_new(&mut self, via: usize) -> usize {
        let i = self.members.len();
        let name = format!("m{i}");
        self.members.push(Member {
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            name,
            client: free_addr(),
            peer: free_addr(),
            process: None,
        });
        let via = self.members[via].peer;
        self.launch(i, Some(via));
        self.wait_serving(i);
        i
    }

    /// The index of the member the cluster reports as leader.
    pub fn leader(&self) -> usize {
        wait::until(
            "a leader",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                self.members.iter().find_map(|m| {
                    let out = etcdctl(
                        &m.client.to_string(),
                        &["endpoint", "status", "-w", "json"],
                        None,
                    );
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                    let status = &v[0]["Status"];
                    let leader = status["leader"].as_u64()?;
                    if leader == 0 {
                        return None;
                    }
                    self.members.iter().position(|c| {
                        let out = etcdctl(
                            &c.client.to_string(),
                            &["endpoint", "status", "-w", "json"],
                            None,
                        );
                        serde_json::from_slice::<serde_json::Value>(&out.stdout)
                            .ok()
                            .and_then(|v| v[0]["Status"]["header"]["member_id"].as_u64())
                            == Some(leader)
                    })
                })
            },
        )
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }
}
