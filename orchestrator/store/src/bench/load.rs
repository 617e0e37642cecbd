//! One benchmark workload: N concurrent clients doing puts or linearizable
//! gets through one of two client implementations, with latencies recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use herd_client::proto::etcdserverpb::{PutRequest, RangeRequest};
use herd_client::{Client, Credentials};

use super::cluster::{Cluster, Usage};

/// Which client program drives the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// herd's own gRPC stubs (tonic, TCP_NODELAY on its side).
    Tonic,
    /// The `etcd-client` crate, as most Rust programs talk to etcd.
    EtcdClient,
}

impl std::fmt::Display for ClientKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientKind::Tonic => "tonic",
            ClientKind::EtcdClient => "etcd-client",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    /// A linearizable range of one key.
    Get,
}

/// One workload's result.
#[derive(Debug, Clone)]
pub struct Measured {
    pub ops: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// What the cluster's members used over the workload, all members summed.
    pub members_used: Usage,
}

impl Measured {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The members' CPU time per request, in microseconds.
    pub fn cpu_us_per_op(&self) -> f64 {
        self.members_used.cpu.as_secs_f64() * 1e6 / self.requests()
    }

    /// The members' context switches per request.
    pub fn switches_per_op(&self) -> f64 {
        self.members_used.switches as f64 / self.requests()
    }

    fn requests(&self) -> f64 {
        (self.ops + self.errors).max(1) as f64
    }
}

/// A connection of either kind; clones share it.
#[derive(Clone)]
enum Conn {
    Tonic(Client),
    EtcdClient(Box<etcd_client::Client>),
}

impl Conn {
    async fn open(
        kind: ClientKind,
        endpoint: &str,
        credentials: &Credentials,
    ) -> anyhow::Result<Conn> {
        Ok(match kind {
            ClientKind::Tonic => {
                Conn::Tonic(Client::connect_with(&[endpoint.to_owned()], credentials).await?)
            }
            ClientKind::EtcdClient => {
                let (url, options) = match credentials {
                    Credentials::Plaintext => (format!("http://{endpoint}"), None),
                    Credentials::Renewing(_) => {
                        anyhow::bail!(
                            "the etcd-client crate takes fixed certificates, not a member's"
                        )
                    }
                    Credentials::Tls { ca_pem, identity } => {
                        let mut tls = etcd_client::TlsOptions::new()
                            .ca_certificate(etcd_client::Certificate::from_pem(ca_pem));
                        if let Some(id) = identity {
                            tls = tls.identity(etcd_client::Identity::from_pem(
                                &id.cert_pem,
                                &id.key_pem,
                            ));
                        }
                        (
                            format!("https://{endpoint}"),
                            Some(etcd_client::ConnectOptions::new().with_tls(tls)),
                        )
                    }
                };
                Conn::EtcdClient(Box::new(
                    etcd_client::Client::connect([url], options).await?,
                ))
            }
        })
    }

    async fn call(&mut self, op: Op, key: &str, value: &[u8]) -> anyhow::Result<()> {
        match (self, op) {
            (Conn::Tonic(c), Op::Put) => {
                c.kv()
                    .put(PutRequest {
                        key: key.as_bytes().to_vec(),
                        value: value.to_vec(),
                        ..Default::default()
                    })
                    .await?;
            }
            (Conn::Tonic(c), Op::Get) => {
                c.kv()
                    .range(RangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .await?;
            }
            (Conn::EtcdClient(c), Op::Put) => {
                c.put(key, value, None).await?;
            }
            (Conn::EtcdClient(c), Op::Get) => {
                c.get(key, None).await?;
            }
        }
        Ok(())
    }
}

/// The key every read workload reads (written before any workload runs).
pub const READ_KEY: &str = "bench/ready";

/// Runs `total` operations of `op` on `cluster` from `clients` concurrent
/// clients, spread round-robin over `endpoints`.
pub async fn drive(
    kind: ClientKind,
    cluster: &Cluster,
    endpoints: &[String],
    op: Op,
    clients: usize,
    total: usize,
    value_size: usize,
) -> anyhow::Result<Measured> {
    // One connection per client up to 16, then shared, as etcd's own
    // benchmark tool does with --conns.
    let conns = clients.clamp(1, 16);
    let mut opened = Vec::with_capacity(conns);
    for i in 0..conns {
        let endpoint = &endpoints[i % endpoints.len()];
        opened.push(
            Conn::open(kind, endpoint, &cluster.credentials)
                .await
                .with_context(|| format!("connecting to {endpoint} with {kind}"))?,
        );
    }
    let value = Arc::new(vec![b'v'; value_size]);
    let used_before = cluster.usage();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut conn = opened[c % conns].clone();
        let n = total / clients + usize::from(c < total % clients);
        let value = Arc::clone(&value);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            let mut errors = 0;
            for i in 0..n {
                let key = match op {
                    Op::Put => format!("bench/{c}/{}", i % 1000),
                    Op::Get => READ_KEY.to_owned(),
                };
                let t = Instant::now();
                match conn.call(op, &key, &value).await {
                    Ok(()) => latencies.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (l, e) = joined.context("a benchmark client panicked")?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    let members_used = cluster.usage() - used_before;
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Measured {
        ops: latencies.len(),
        errors,
        elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
        members_used,
    })
}
