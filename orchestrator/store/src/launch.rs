//! How a store member of herd or of etcd is started as a process, in one
//! place: the benchmark (`herd bench kv`) and the tests that run clusters
//! build their command lines here, so both systems are always started the
//! same way (same durability, same addresses), whoever runs them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which server a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    Herd,
    Etcd,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Server::Herd => "herd",
            Server::Etcd => "etcd",
        })
    }
}

/// One member to start.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
}

/// How the members of one cluster enter it.
#[derive(Debug, Clone)]
pub enum Entry<'a> {
    /// Bootstrapped together: every member of the cluster.
    Together(&'a [MemberSpec]),
    /// herd only: a single member on its own (no flag at all).
    Alone,
    /// herd only: join through this member's peer address.
    Join(SocketAddr),
}

/// The command that starts `member`: `herd agent --store-only …` (with
/// `herd`, the herd binary: the store member alone, no registration or
/// roles writing to it) or `etcd …` (with `etcd`, the etcd binary), both
/// fsyncing before they acknowledge, with `token` as the cluster token.
/// `extra` arguments go last (e.g. `--storage redb`).
pub fn command(
    server: Server,
    binary: &Path,
    member: &MemberSpec,
    entry: Entry<'_>,
    token: &str,
    extra: &[String],
) -> Command {
    let mut c = agent_command(server, binary, member, entry, token, &[]);
    if server == Server::Herd {
        c.arg("--store-only");
    }
    c.args(extra);
    c
}

/// [`command`] for a whole herd agent (registration and roles included):
/// the cluster tests of the roles.
pub fn agent_command(
    server: Server,
    binary: &Path,
    member: &MemberSpec,
    entry: Entry<'_>,
    token: &str,
    extra: &[String],
) -> Command {
    let mut c = Command::new(binary);
    match server {
        Server::Herd => {
            c.arg("agent")
                .args(["--name", &member.name])
                .arg("--data-dir")
                .arg(&member.data_dir)
                .args(["--listen-client", &member.client.to_string()])
                .args(["--listen-peer", &member.peer.to_string()])
                .args(["--token", token]);
            match entry {
                Entry::Together(all) => {
                    let list: Vec<String> = all
                        .iter()
                        .map(|m| format!("{}={}", m.name, m.peer))
                        .collect();
                    c.args(["--initial-cluster", &list.join(",")]);
                }
                Entry::Join(peer) => {
                    c.args(["--join", &peer.to_string()]);
                }
                Entry::Alone => {}
            }
            c.env("HERD_LOG", "info,openraft=warn");
        }
        Server::Etcd => {
            let alone = [member.clone()];
            let all = match entry {
                Entry::Together(all) => all,
                Entry::Alone => &alone[..],
                Entry::Join(_) => panic!("etcd members are started together"),
            };
            let list: Vec<String> = all
                .iter()
                .map(|m| format!("{}=http://{}", m.name, m.peer))
                .collect();
            c.args(["--name", &member.name])
                .arg("--data-dir")
                .arg(&member.data_dir)
                .args(["--listen-client-urls", &format!("http://{}", member.client)])
                .args([
                    "--advertise-client-urls",
                    &format!("http://{}", member.client),
                ])
                .args(["--listen-peer-urls", &format!("http://{}", member.peer)])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://{}", member.peer),
                ])
                .args(["--initial-cluster", &list.join(",")])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    token,
                ]);
        }
    }
    c.args(extra);
    c
}

/// A free loopback address for a member to bind later.
///
/// The port is picked below the kernel's ephemeral range: a port the kernel
/// gave out (`bind(:0)`) can be handed to any outgoing connection between
/// now and the member binding it, or while a killed member is down before
/// its restart on the same port.
pub fn free_addr() -> SocketAddr {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1000 {
        for _ in 0..1000 {
            let port = rand::random_range(LOWEST..ephemeral_low);
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                return l.local_addr().expect("local_addr");
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    l.local_addr().expect("local_addr")
}

/// `n` members named `{prefix}0…` with fresh loopback addresses and data
/// dirs under `dir`.
pub fn members(n: usize, prefix: &str, dir: &Path) -> Vec<MemberSpec> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            MemberSpec {
                data_dir: dir.join(&name),
                client: free_addr(),
                peer: free_addr(),
                name,
            }
        })
        .collect()
}
