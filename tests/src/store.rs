//! Store clusters for tests: `herd agent` members (or real etcd members, to
//! check the test harness itself against the reference) on loopback ports or
//! each in its own network namespace (so a member's peer link can be cut),
//! each a child process that dies with the test, plus an `etcdctl` runner.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use herd_client::Credentials;
use herd_store::launch::{Entry, LaunchSecurity, MemberSpec, TestPki};

use crate::netns::Netns;
use crate::process::{Guard, spawn};
use crate::{bin, require, wait};

pub use herd_store::launch::{Server, free_addr};

/// One member: its addresses, data dir and (while running) its process.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Arguments added to the member's command line (e.g. a role's flags).
    pub extra: Vec<String>,
    process: Option<Guard>,
}

/// A cluster of members in a scratch directory (removed on drop).
#[derive(Debug)]
pub struct Cluster {
    pub server: Server,
    // Declared before `net`: members are killed before their namespaces go.
    pub members: Vec<Member>,
    /// How members are started: mutual TLS from a test CA (the default) or
    /// `--insecure-plaintext`.
    pub security: LaunchSecurity,
    /// The test CA's files, `root`'s certificate and the join token (TLS).
    pub pki: Option<TestPki>,
    pub dir: tempfile::TempDir,
    /// `None`: every member listens on loopback in the test's own namespace.
    pub net: Option<Topology>,
    /// `Some`: members are whole agents (registration, roles, API) with
    /// these extra arguments each, by member index; `None`: store only.
    pub agents: Option<AgentArgs>,
}

/// Extra arguments of each whole agent, by member index.
pub struct AgentArgs(pub Box<dyn Fn(usize) -> Vec<String> + Send + Sync>);

impl std::fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentArgs(..)")
    }
}

/// Namespaces of a cluster whose members each run in their own namespace,
/// plugged into two switches in a hub namespace: a peer network (Raft
/// traffic) and a client network shared with a client namespace. Cutting a
/// member's peer link partitions it from the other members while clients
/// still reach it, as in etcd's robustness tests where clients keep talking
/// to every member.
#[derive(Debug)]
pub struct Topology {
    pub hub: Netns,
    /// One per member, same order as [`Cluster::members`].
    pub members: Vec<Netns>,
    /// The hub-side end of each member's peer link.
    peer_links: Vec<String>,
    /// Where test clients (and `etcdctl`) run.
    pub client: Netns,
}

/// What a member reports about itself (`endpoint status`), served locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub member_id: u64,
    /// The leader it knows of (0: none).
    pub leader: u64,
    pub term: u64,
    pub revision: i64,
}

const PEER_NET: &str = "10.77.1";
const CLIENT_NET: &str = "10.77.2";

impl Topology {
    fn new(n: usize) -> Topology {
        let hub = Netns::new();
        hub.bridge("brpeer", &format!("{PEER_NET}.1/24"));
        hub.bridge("brclient", &format!("{CLIENT_NET}.1/24"));
        let client = Netns::new();
        let outer = hub.ifname("vc");
        hub.veth_to(
            "brclient",
            &outer,
            &client,
            "client0",
            &format!("{CLIENT_NET}.100/24"),
        );
        let mut topology = Topology {
            hub,
            members: Vec::new(),
            peer_links: Vec::new(),
            client,
        };
        for _ in 0..n {
            topology.add_member();
        }
        topology
    }

    /// One more member namespace, plugged into both switches.
    fn add_member(&mut self) {
        let i = self.members.len();
        let ns = Netns::new();
        let outer = self.hub.ifname("vp");
        self.hub.veth_to(
            "brpeer",
            &outer,
            &ns,
            "peer0",
            &format!("{PEER_NET}.{}/24", 11 + i),
        );
        let outer_client = self.hub.ifname("vc");
        self.hub.veth_to(
            "brclient",
            &outer_client,
            &ns,
            "client0",
            &format!("{CLIENT_NET}.{}/24", 11 + i),
        );
        self.peer_links.push(outer);
        self.members.push(ns);
    }

    fn peer_addr(i: usize) -> SocketAddr {
        format!("{PEER_NET}.{}:2380", 11 + i)
            .parse()
            .expect("valid address")
    }

    /// Member `i`'s address on the client network (where clients reach it).
    pub fn client_ip(i: usize) -> std::net::IpAddr {
        format!("{CLIENT_NET}.{}", 11 + i)
            .parse()
            .expect("valid address")
    }

    fn client_addr(i: usize) -> SocketAddr {
        format!("{CLIENT_NET}.{}:2379", 11 + i)
            .parse()
            .expect("valid address")
    }
}

/// `inner` rewritten to run under `ip netns exec` in `ns`.
fn in_namespace(ns: &Netns, inner: &Command) -> Command {
    let mut cmd = ns.command(inner.get_program());
    cmd.args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// Path of Debian's etcdctl (fails the test with the apt line if missing).
pub fn etcdctl_path() -> PathBuf {
    require::tool("etcdctl", "etcd-client")
}

/// Debian's `etcdctl` as a cluster's clients run it: in the client
/// namespace (if any) and, for a TLS cluster, with the CA and `root`'s
/// certificate (`--cacert --cert --key`).
#[derive(Debug, Clone, Default)]
pub struct Etcdctl {
    pub netns: Option<String>,
    /// `--cacert`: the CA that signed the server (TLS endpoints).
    pub cacert: Option<PathBuf>,
    /// `--cert`, `--key`: the client's certificate.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Etcdctl {
    /// `etcdctl --endpoints=… [TLS flags]` (in the namespace, if any), to
    /// add arguments to: for commands that run until stopped.
    pub fn command(&self, endpoints: &str) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(etcdctl_path());
                c
            }
            None => Command::new(etcdctl_path()),
        };
        cmd.arg(format!("--endpoints={endpoints}"));
        if let Some(ca) = &self.cacert {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some((cert, key)) = &self.identity {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        cmd.env("ETCDCTL_API", "3");
        cmd
    }

    /// Runs `ETCDCTL_API=3 etcdctl --endpoints=… ARGS` with `stdin`, killed after 30 s.
    pub fn run(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_for(Duration::from_secs(30), endpoints, args, stdin)
    }

    /// [`Etcdctl::run`] that must succeed; returns its stdout, or panics
    /// with both of its outputs.
    pub fn ok(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(endpoints, args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// [`Etcdctl::run`] with a custom time limit.
    pub fn run_for(
        &self,
        limit: Duration,
        endpoints: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let inner = self.command(endpoints);
        let mut cmd = Command::new("timeout");
        cmd.arg(limit.as_secs().to_string())
            .arg(inner.get_program())
            .args(inner.get_args())
            .args(args)
            .env("ETCDCTL_API", "3");
        cmd.stdin(if stdin.is_some() {
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
}

impl Member {
    fn spec(&self) -> MemberSpec {
        MemberSpec {
            name: self.name.clone(),
            client: self.client,
            peer: self.peer,
            data_dir: self.data_dir.clone(),
        }
    }

    fn command(
        &self,
        server: Server,
        all: &[MemberSpec],
        security: &LaunchSecurity,
        join: Option<SocketAddr>,
        agent: Option<&[String]>,
    ) -> Command {
        let binary = match server {
            Server::Herd => bin::herd(),
            Server::Etcd => require::tool("etcd", "etcd-server"),
        };
        let entry = match join {
            Some(peer) => Entry::Join(peer),
            // No flag at all: the single-member default.
            None if all.len() == 1 && server == Server::Herd => Entry::Alone,
            None => Entry::Together(all),
        };
        // Whole agents (the roles' tests) or the store member alone, with
        // this member's extra flags (a role that runs without the rest,
        // like the network's).
        match agent {
            Some(agent) => {
                let extra: Vec<String> = agent.iter().chain(&self.extra).cloned().collect();
                herd_store::launch::agent_command(
                    server,
                    &binary,
                    &self.spec(),
                    entry,
                    security,
                    &extra,
                )
            }
            None => herd_store::launch::command(
                server,
                &binary,
                &self.spec(),
                entry,
                security,
                &self.extra,
            ),
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
    /// Starts `n` members bootstrapped together, with mutual TLS from a
    /// test CA, and waits until each serves a write.
    pub fn start(server: Server, n: usize) -> Cluster {
        Cluster::start_secured(server, n, true)
    }

    /// [`Cluster::start`] over plaintext (herd's `--insecure-plaintext`).
    pub fn start_plaintext(server: Server, n: usize) -> Cluster {
        Cluster::start_secured(server, n, false)
    }

    fn start_secured(server: Server, n: usize, tls: bool) -> Cluster {
        let mut cluster = Cluster::unlaunched(server, n, "m", tls, |_| (free_addr(), free_addr()));
        for i in 0..n {
            cluster.launch(i);
        }
        for i in 0..n {
            cluster.wait_serving(i);
        }
        cluster
    }

    /// `n` members named `{prefix}0`, `{prefix}1`, … with data dirs in one
    /// scratch directory and `(client, peer)` addresses from `addrs`, none started.
    fn unlaunched(
        server: Server,
        n: usize,
        prefix: &str,
        tls: bool,
        addrs: impl Fn(usize) -> (SocketAddr, SocketAddr),
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("herd-store-test")
            .tempdir()
            .expect("creating a scratch directory");
        let members = (0..n)
            .map(|i| {
                let name = format!("{prefix}{i}");
                let (client, peer) = addrs(i);
                Member {
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client,
                    peer,
                    extra: Vec::new(),
                    process: None,
                }
            })
            .collect::<Vec<Member>>();
        let (security, pki) = if tls {
            let specs: Vec<MemberSpec> = members.iter().map(Member::spec).collect();
            let pki = herd_store::launch::test_pki(dir.path(), &specs).expect("making a test CA");
            (pki.security.clone(), Some(pki))
        } else {
            let token = "test-token".to_owned();
            (LaunchSecurity::Plaintext { token }, None)
        };
        Cluster {
            server,
            members,
            security,
            pki,
            dir,
            net: None,
            agents: None,
        }
    }

    /// `n` herd members named `{prefix}0`, `{prefix}1`, … with fresh loopback
    /// addresses and data dirs, none started yet: for data dirs prepared
    /// before the first start (`herd kv snapshot restore`). Start them with
    /// [`Cluster::start_all`].
    pub fn unstarted(n: usize, prefix: &str) -> Cluster {
        Cluster::unlaunched(Server::Herd, n, prefix, true, |_| {
            (free_addr(), free_addr())
        })
    }

    /// Starts every member that is not running and waits until each serves.
    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if !self.members[i].is_running() {
                self.launch(i);
            }
        }
        for i in 0..self.members.len() {
            self.wait_serving(i);
        }
    }

    /// Every member as `NAME=HOST:PORT`, comma separated (herd's
    /// `--initial-cluster` form, also for a single member).
    pub fn peer_list(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts `n` herd members bootstrapped together, each in its own network
    /// namespace (see [`Topology`]), and waits until each serves a write.
    pub fn start_in_namespaces(n: usize) -> Cluster {
        Cluster::start_in_namespaces_with(n, |_| Vec::new())
    }

    /// [`Cluster::start_in_namespaces`], member `i` started with the extra
    /// arguments `extra(i)` (a role's flags).
    pub fn start_in_namespaces_with(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let mut cluster = Cluster::unlaunched(Server::Herd, n, "m", true, |i| {
            (Topology::client_addr(i), Topology::peer_addr(i))
        });
        for (i, m) in cluster.members.iter_mut().enumerate() {
            m.extra = extra(i);
        }
        cluster.net = Some(Topology::new(n));
        for i in 0..n {
            cluster.launch(i);
        }
        for i in 0..n {
            cluster.wait_serving(i);
        }
        cluster
    }

    /// Starts `n` whole herd agents (registration, roles, agent API), each
    /// in its own network namespace, with `extra(i)` arguments for member
    /// `i`, and waits until each serves a write.
    pub fn start_agents_in_namespaces(
        n: usize,
        extra: impl Fn(usize) -> Vec<String> + Send + Sync + 'static,
    ) -> Cluster {
        let mut cluster = Cluster::unlaunched(Server::Herd, n, "m", true, |i| {
            (Topology::client_addr(i), Topology::peer_addr(i))
        });
        cluster.net = Some(Topology::new(n));
        cluster.agents = Some(AgentArgs(Box::new(extra)));
        for i in 0..n {
            cluster.launch(i);
        }
        for i in 0..n {
            cluster.wait_serving(i);
        }
        cluster
    }

    /// The namespace member `i` runs in (namespace clusters only).
    pub fn member_netns(&self, i: usize) -> &Netns {
        &self.net.as_ref().expect("a namespace cluster").members[i]
    }

    /// Member `i`'s client address's host (namespace clusters only).
    pub fn member_ip(i: usize) -> std::net::IpAddr {
        Topology::client_addr(i).ip()
    }

    /// Runs `program args` inside member `i`'s namespace (or here).
    pub fn command_on(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.net {
            Some(net) => net.members[i].command(program),
            None => Command::new(program),
        }
    }

    /// Cuts member `i`'s peer link (both directions, at the switch): it can
    /// no longer reach the other members nor they it, while clients still can.
    pub fn cut_peer_link(&self, i: usize) {
        let net = self
            .net
            .as_ref()
            .expect("cut_peer_link needs start_in_namespaces");
        net.hub.ip(&["link", "set", &net.peer_links[i], "down"]);
    }

    /// Restores member `i`'s peer link.
    pub fn restore_peer_link(&self, i: usize) {
        let net = self
            .net
            .as_ref()
            .expect("restore_peer_link needs start_in_namespaces");
        net.hub.ip(&["link", "set", &net.peer_links[i], "up"]);
    }

    /// A tokio runtime whose threads open their sockets where the members'
    /// clients are reachable: the client namespace, or here for loopback
    /// clusters. Connect only from tasks spawned on it (`rt.spawn`): a future
    /// given to `block_on` runs on the calling thread, outside the namespace.
    pub fn client_runtime(&self) -> tokio::runtime::Runtime {
        match &self.net {
            Some(net) => net.client.entry().runtime(),
            None => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    /// `etcdctl` as this cluster's clients run it (see [`Etcdctl`]).
    pub fn etcdctl_tool(&self) -> Etcdctl {
        Etcdctl {
            netns: self.net.as_ref().map(|n| n.client.name().to_owned()),
            cacert: self.pki.as_ref().map(|p| p.ca_cert.clone()),
            identity: self
                .pki
                .as_ref()
                .map(|p| (p.root_cert.clone(), p.root_key.clone())),
        }
    }

    /// Issues `user` a client certificate from this cluster's CA with
    /// `herd admin credentials`, into `out`; returns its (cert, key).
    pub fn user_certificate(&self, user: &str, out: &Path) -> (PathBuf, PathBuf) {
        let pki = self.pki.as_ref().expect("a TLS cluster");
        let output = Command::new(bin::herd())
            .args(["admin", "credentials", "--user", user])
            .arg("--ca-cert")
            .arg(&pki.ca_cert)
            .arg("--ca-key")
            .arg(pki.ca_cert.with_file_name("ca.key"))
            .arg("--out")
            .arg(out)
            .output()
            .expect("herd admin credentials");
        assert!(
            output.status.success(),
            "herd admin credentials --user {user}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (
            out.join(format!("{user}.crt")),
            out.join(format!("{user}.key")),
        )
    }

    /// `--cacert --cert --key` for `root` on a TLS cluster (etcdctl's and
    /// `herd kv`'s flags), nothing on a plaintext one.
    pub fn client_flags(&self) -> Vec<String> {
        match &self.pki {
            Some(p) => [
                ("--cacert", &p.ca_cert),
                ("--cert", &p.root_cert),
                ("--key", &p.root_key),
            ]
            .into_iter()
            .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
            .collect(),
            None => Vec::new(),
        }
    }

    /// Runs `etcdctl` where clients run, with the cluster's credentials.
    pub fn etcdctl(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.etcdctl_tool().run(endpoints, args, stdin)
    }

    /// [`Cluster::etcdctl`] that must succeed; returns its stdout.
    pub fn etcdctl_ok(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> String {
        self.etcdctl_tool().ok(endpoints, args, stdin)
    }

    /// Writes (`on`) or removes machine `machine`'s drain record, as the
    /// update role does around an OS update's reboot.
    pub fn set_drain(&self, machine: &str, on: bool) {
        let key = herd_client::keys::DRAIN.key(machine);
        let endpoints = self.endpoints();
        if on {
            let record = herd_client::keys::DrainRecord {
                machine_id: machine.into(),
                hostname: machine.into(),
                version: "0.2.0".into(),
                since: 0,
            };
            let value = String::from_utf8(herd_client::kit::Resource::encode(&record))
                .expect("a drain record is JSON");
            self.etcdctl_ok(&endpoints, &["put", &key, &value], None);
        } else {
            self.etcdctl_ok(&endpoints, &["del", &key], None);
        }
    }

    /// [`Cluster::etcdctl`] with a custom time limit.
    pub fn etcdctl_for(
        &self,
        limit: Duration,
        endpoints: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        self.etcdctl_tool().run_for(limit, endpoints, args, stdin)
    }

    /// Credentials for herd's client (`root`'s certificate on a TLS cluster).
    pub fn credentials(&self) -> Credentials {
        match &self.pki {
            Some(p) => Credentials::Tls {
                ca_pem: p.ca_pem.clone(),
                identity: Some(p.root.clone()),
            },
            None => Credentials::Plaintext,
        }
    }

    /// A herd client for `endpoint` that connects on first use.
    pub fn client(&self, endpoint: &str) -> herd_client::Client {
        herd_client::Client::lazy_with(endpoint, &self.credentials()).expect("a client endpoint")
    }

    /// Options for the `etcd-client` crate with the cluster's credentials.
    pub fn etcd_client_options(&self) -> etcd_client::ConnectOptions {
        let options = etcd_client::ConnectOptions::new();
        match &self.pki {
            Some(p) => options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&p.ca_pem))
                    .identity(etcd_client::Identity::from_pem(
                        &p.root.cert_pem,
                        &p.root.key_pem,
                    )),
            ),
            None => options,
        }
    }

    /// Member `i`'s own view (`endpoint status`), or `None` if it does not answer.
    pub fn status(&self, i: usize) -> Option<Status> {
        let out = self.etcdctl_for(
            Duration::from_secs(10),
            &self.members[i].client.to_string(),
            &["endpoint", "status", "-w", "json", "--command-timeout=3s"],
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let status = &v[0]["Status"];
        Some(Status {
            member_id: status["header"]["member_id"].as_u64()?,
            // etcdctl's JSON leaves out fields that are zero.
            leader: status["leader"].as_u64().unwrap_or(0),
            term: status["raftTerm"].as_u64().unwrap_or(0),
            revision: status["header"]["revision"].as_i64().unwrap_or(0),
        })
    }

    /// Starts stopped member `i` from its data dir without waiting for it
    /// (a fault schedule restarting members on the clock).
    pub fn launch(&mut self, i: usize) {
        self.launch_joining(i, None);
    }

    fn launch_joining(&mut self, i: usize, join: Option<SocketAddr>) {
        let all: Vec<MemberSpec> = self.members.iter().map(Member::spec).collect();
        let mut security = self.security.clone();
        if let (Some(_), LaunchSecurity::Tls { join_token, .. }) = (join, &mut security) {
            *join_token = Some(self.admin_token(&self.members[i].name));
        }
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("opening the member log");
        let extra = self.agents.as_ref().map(|f| (f.0)(i));
        let mut cmd = m.command(self.server, &all, &security, join, extra.as_deref());
        if let Some(net) = &self.net {
            cmd = in_namespace(&net.members[i], &cmd);
        }
        cmd.stdout(log.try_clone().expect("dup log")).stderr(log);
        let guard = spawn(&m.name, &mut cmd);
        self.members[i].process = Some(guard);
    }

    /// Waits until member `i` answers a linearizable read.
    pub fn wait_serving(&self, i: usize) {
        let m = &self.members[i];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.etcdctl(
                &m.client.to_string(),
                &["get", "--command-timeout=2s", "health-probe"],
                None,
            );
            if out.status.success() {
                return;
            }
            // The scratch dir (and the log) goes with the cluster: show it now.
            assert!(
                std::time::Instant::now() < deadline,
                "member {} does not serve after 60 s; etcdctl: {}\nits log ends with:\n{}",
                m.name,
                String::from_utf8_lossy(&out.stderr).trim(),
                m.log_tail()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
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
        self.launch(i);
        self.wait_serving(i);
    }

    /// Adds a new member that joins through member `via`'s peer address.
    pub fn join_new(&mut self, via: usize) -> usize {
        assert!(
            self.net.is_none(),
            "join_new supports loopback clusters only"
        );
        let i = self.members.len();
        let name = format!("m{i}");
        self.members.push(Member {
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            name,
            client: free_addr(),
            peer: free_addr(),
            extra: Vec::new(),
            process: None,
        });
        let via = self.members[via].peer;
        self.launch_joining(i, Some(via));
        self.wait_serving(i);
        i
    }

    /// A one-use join token for machine `name`, made with `herd admin
    /// token create` as root.
    pub fn admin_token(&self, name: &str) -> String {
        // Where clients run: a namespaced cluster is out of reach from here.
        let endpoints = self.endpoints();
        let out = self.herd(&[
            "admin",
            "token",
            "create",
            "--endpoints",
            &endpoints,
            "--machine",
            name,
            "--uses",
            "1",
        ]);
        assert!(
            out.status.success(),
            "herd admin token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Adds a member in a namespace of its own (see [`Topology`]) that
    /// joins through member `via`, started with `extra` arguments; waits
    /// until it serves.
    pub fn join_new_in_namespace(&mut self, via: usize, extra: Vec<String>) -> usize {
        let net = self
            .net
            .as_mut()
            .expect("join_new_in_namespace needs start_in_namespaces");
        net.add_member();
        let i = self.members.len();
        let name = format!("m{i}");
        self.members.push(Member {
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            name,
            client: Topology::client_addr(i),
            peer: Topology::peer_addr(i),
            extra,
            process: None,
        });
        let via = self.members[via].peer;
        self.launch_joining(i, Some(via));
        self.wait_serving(i);
        i
    }

    /// Member `i`'s namespace (clusters started in namespaces).
    pub fn member_ns(&self, i: usize) -> &Netns {
        &self.net.as_ref().expect("a namespaced cluster").members[i]
    }

    /// Runs `herd ARGS` where clients run (the client namespace, if any).
    pub fn herd(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin::herd());
        cmd.args(args);
        if let Some(net) = &self.net {
            cmd = in_namespace(&net.client, &cmd);
        }
        cmd.envs(self.client_env());
        cmd.output().expect("running herd")
    }

    /// `HERD_CACERT`, `HERD_CERT`, `HERD_KEY` for root on a TLS cluster
    /// (what `herd kv`, `herd net`, `herd units` and `herd admin` read),
    /// nothing on a plaintext one.
    pub fn client_env(&self) -> Vec<(&'static str, PathBuf)> {
        match &self.pki {
            Some(p) => vec![
                ("HERD_CACERT", p.ca_cert.clone()),
                ("HERD_CERT", p.root_cert.clone()),
                ("HERD_KEY", p.root_key.clone()),
            ],
            None => Vec::new(),
        }
    }

    /// The index of the member the cluster reports as leader.
    pub fn leader(&self) -> usize {
        wait::until(
            "a leader",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                self.members.iter().find_map(|m| {
                    let out = self.etcdctl(
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
                        let out = self.etcdctl(
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
