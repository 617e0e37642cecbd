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

/// How a cluster's members secure their traffic.
#[derive(Debug, Clone)]
pub enum LaunchSecurity {
    /// herd `--insecure-plaintext` with this shared token; etcd over http.
    Plaintext { token: String },
    /// Mutual TLS from one CA. herd members get the CA (`--ca-cert`,
    /// `--ca-key`: each issues its own member certificate) and, when given,
    /// a join token to register or join with; etcd members get
    /// certificates from the CA (`certs`, one per member name: cert and
    /// key files) with client-certificate auth on both ports.
    Tls {
        ca_cert: PathBuf,
        ca_key: PathBuf,
        join_token: Option<String>,
        certs: std::collections::BTreeMap<String, (PathBuf, PathBuf)>,
    },
}

impl LaunchSecurity {
    fn scheme(&self) -> &'static str {
        match self {
            LaunchSecurity::Plaintext { .. } => "http",
            LaunchSecurity::Tls { .. } => "https",
        }
    }
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
/// fsyncing before they acknowledge, secured as `security` says. `extra`
/// arguments go last (e.g. `--storage redb`).
pub fn command(
    server: Server,
    binary: &Path,
    member: &MemberSpec,
    entry: Entry<'_>,
    security: &LaunchSecurity,
    extra: &[String],
) -> Command {
    let mut c = agent_command(server, binary, member, entry, security, &[]);
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
    security: &LaunchSecurity,
    extra: &[String],
) -> Command {
    let mut c = Command::new(binary);
    let scheme = security.scheme();
    match server {
        Server::Herd => {
            c.arg("agent")
                .args(["--name", &member.name])
                .arg("--data-dir")
                .arg(&member.data_dir)
                .args(["--listen-client", &member.client.to_string()])
                .args(["--listen-peer", &member.peer.to_string()]);
            match security {
                LaunchSecurity::Plaintext { token } => {
                    c.args(["--insecure-plaintext", "--token", token]);
                }
                LaunchSecurity::Tls {
                    ca_cert,
                    ca_key,
                    join_token,
                    ..
                } => {
                    // A joiner gets its certificate by joining, not from the CA.
                    if !matches!(entry, Entry::Join(_)) {
                        c.arg("--ca-cert").arg(ca_cert).arg("--ca-key").arg(ca_key);
                    }
                    if let Some(t) = join_token {
                        c.args(["--token", t]);
                    }
                }
            }
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
                .map(|m| format!("{}={scheme}://{}", m.name, m.peer))
                .collect();
            c.args(["--name", &member.name])
                .arg("--data-dir")
                .arg(&member.data_dir)
                .args([
                    "--listen-client-urls",
                    &format!("{scheme}://{}", member.client),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("{scheme}://{}", member.client),
                ])
                .args(["--listen-peer-urls", &format!("{scheme}://{}", member.peer)])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("{scheme}://{}", member.peer),
                ])
                .args(["--initial-cluster", &list.join(",")])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "herd-launch",
                ]);
            if let LaunchSecurity::Tls { ca_cert, certs, .. } = security {
                let (cert, key) = certs
                    .get(&member.name)
                    .unwrap_or_else(|| panic!("no certificate for etcd member {}", member.name));
                c.arg("--trusted-ca-file")
                    .arg(ca_cert)
                    .arg("--cert-file")
                    .arg(cert)
                    .arg("--key-file")
                    .arg(key)
                    .arg("--client-cert-auth")
                    .arg("--peer-trusted-ca-file")
                    .arg(ca_cert)
                    .arg("--peer-cert-file")
                    .arg(cert)
                    .arg("--peer-key-file")
                    .arg(key)
                    .arg("--peer-client-cert-auth");
            }
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

/// Files of a TLS cluster made in `dir`: a CA, a certificate per member
/// (for etcd; herd members issue their own from the CA), a client
/// certificate for `root`. No join token: make one for each machine that
/// joins (`herd admin token create`), as an operator would.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub security: LaunchSecurity,
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub root: herd_pki::CertKey,
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
}

/// Makes a CA and certificates for `members` under `dir` (see [`TestPki`]).
pub fn test_pki(dir: &Path, members: &[MemberSpec]) -> Result<TestPki, herd_pki::PkiError> {
    use herd_pki::{ClusterCa, Identity, ca::LEAF_VALIDITY, files::write_atomic};
    let ca = ClusterCa::generate("test")?;
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    write_atomic(&ca_cert, ca.pair.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&ca_key, ca.pair.key_pem.as_bytes(), 0o600)?;
    let local = [std::net::IpAddr::from([127, 0, 0, 1])];
    let mut certs = std::collections::BTreeMap::new();
    for m in members {
        let mut ips = local.to_vec();
        ips.extend([m.client.ip(), m.peer.ip()]);
        let pair = ca.issue(
            &Identity::Member(m.name.clone()),
            std::slice::from_ref(&m.name),
            &ips,
            LEAF_VALIDITY,
        )?;
        let (cert, key) = (
            dir.join(format!("{}.crt", m.name)),
            dir.join(format!("{}.key", m.name)),
        );
        write_atomic(&cert, pair.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&key, pair.key_pem.as_bytes(), 0o600)?;
        certs.insert(m.name.clone(), (cert, key));
    }
    let root = ca.issue(&Identity::User("root".into()), &[], &[], LEAF_VALIDITY)?;
    let (root_cert, root_key) = (dir.join("root.crt"), dir.join("root.key"));
    write_atomic(&root_cert, root.cert_pem.as_bytes(), 0o644)?;
    write_atomic(&root_key, root.key_pem.as_bytes(), 0o600)?;
    Ok(TestPki {
        security: LaunchSecurity::Tls {
            ca_cert: ca_cert.clone(),
            ca_key,
            join_token: None,
            certs,
        },
        ca_cert,
        ca_pem: ca.pair.cert_pem,
        root,
        root_cert,
        root_key,
    })
}
