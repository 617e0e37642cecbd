//! The convergence half of `herd bench net`: 1,000 simulated leases at
//! once against one routes controller, in a network namespace of its own,
//! with the store traffic counted by a proxy.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herd_client::Client;
use herd_client::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};
use tokio_util::sync::CancellationToken;

use super::{Agent, Convergence, scratch};
use crate::cidr::Ipv4Net;
use crate::config::{Backend, NetworkConfig};
use crate::lease::{SUBNETS, SubnetLease, subnet_key};
use crate::netlink::Kernel;
use crate::routes::{self, Path as RoutePath};

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = Client::connect(&[endpoint.to_owned()]).await
            && c.kv()
                .range(RangeRequest {
                    key: b"probe".to_vec(),
                    ..Default::default()
                })
                .await
                .is_ok()
        {
            return Ok(c);
        }
        if Instant::now() > deadline {
            bail!("the store at {endpoint} did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts bytes each way between clients and `upstream`.
/// Copies `from` to `to` until either ends, adding what passes to `count`.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    count: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn counting_proxy(
    upstream: std::net::SocketAddr,
) -> anyhow::Result<(
    std::net::SocketAddr,
    Arc<(AtomicU64, AtomicU64)>,
    tokio::task::JoinHandle<()>,
)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let c = Arc::clone(&counts);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut down, _)) = listener.accept().await {
            let c = Arc::clone(&c);
            conns.spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = down.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (dr, dw) = down.split();
                let (ur, uw) = up.split();
                // Counted as the bytes pass, so a connection still open
                // when the figures are read is counted too.
                let out = pump(dr, uw, &c.1);
                let inn = pump(ur, dw, &c.0);
                tokio::join!(out, inn);
            });
        }
    });
    Ok((addr, counts, task))
}

pub(super) fn convergence(herd: &Path, machines: u32) -> anyhow::Result<Convergence> {
    // This thread gets a network namespace of its own: routes, links and
    // the store's sockets vanish with it.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("unsharing a network namespace (needs root)")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(converge(herd, machines))
}

async fn converge(herd: &Path, machines: u32) -> anyhow::Result<Convergence> {
    let kernel = Arc::new(Kernel::new()?);
    kernel.link_up("lo").await?;
    // A bridge stands in for the uplink: some kernels lack the dummy driver.
    let uplink = kernel.ensure_bridge("uplink0", 1500).await?;
    kernel
        .set_only_address(uplink.index, Ipv4Addr::new(10, 96, 0, 1), 16)
        .await?;
    let dir = scratch("store")?;
    let store = "127.0.0.1:23790";
    let _agent = Agent(
        std::process::Command::new(herd)
            .args([
                "agent",
                "--name",
                "bench",
                "--listen-client",
                store,
                "--listen-peer",
                "127.0.0.1:23800",
                // A shared secret, plaintext: the store lives in this
                // thread's own network namespace.
                "--insecure-plaintext",
                "--token",
                "bench",
            ])
            .arg("--data-dir")
            .arg(dir.join("store"))
            .env("HERD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the bench store")?,
    );
    let writer = connect(store).await?;
    let config = NetworkConfig {
        network: "10.128.0.0/9".parse().expect("valid"),
        subnet_len: 24,
        subnet_min: None,
        subnet_max: None,
        backend: Backend::HostGw,
    };
    crate::registry::set_config(&writer, &config).await?;
    let (proxy, counts, proxy_task) = counting_proxy(store.parse().expect("valid")).await?;
    let client = connect(&proxy.to_string()).await?;
    let own = config.network.subnet(24, 1);
    let ctx = Arc::new(routes::Ctx::new(
        Arc::clone(&kernel),
        "bench-self".into(),
        own,
        config.network,
        RoutePath::HostGw {
            uplink: uplink.index,
        },
        Duration::from_secs(3600),
    ));
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(routes::run(client, Arc::clone(&ctx), cancel.clone()));
    // Let the controller list the (empty) prefix and open its watch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leases: Vec<(Ipv4Net, SubnetLease)> = (0..machines)
        .map(|i| {
            (
                config.network.subnet(24, u64::from(i) + 2),
                SubnetLease {
                    machine_id: format!("sim{i:04}"),
                    public_ip: Some(Ipv4Addr::new(
                        10,
                        96,
                        (i / 250 + 1) as u8,
                        (i % 250 + 2) as u8,
                    )),
                    backend_type: Some(crate::config::BackendKind::HostGw),
                    backend_data: None,
                },
            )
        })
        .collect();
    let start = Instant::now();
    let writes = leases.chunks(100).map(|chunk| {
        let writer = writer.clone();
        let ops: Vec<RequestOp> = chunk
            .iter()
            .map(|(s, l)| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: subnet_key(*s).into_bytes(),
                    value: serde_json::to_vec(l).expect("serializes"),
                    ..Default::default()
                })),
            })
            .collect();
        async move {
            writer
                .kv()
                .txn(TxnRequest {
                    success: ops,
                    ..Default::default()
                })
                .await
        }
    });
    for r in futures::future::join_all(writes).await {
        r.context("writing the simulated leases")?;
    }
    let deadline = start + Duration::from_secs(300);
    while ctx.stats.added.load(Ordering::Relaxed) < u64::from(machines) {
        if Instant::now() > deadline {
            bail!(
                "only {} of {machines} routes after 300 s",
                ctx.stats.added.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let converge = start.elapsed();
    let in_kernel = kernel
        .routes()
        .await?
        .iter()
        .filter(|r| r.is_herds())
        .count();
    if in_kernel != machines as usize {
        bail!("{in_kernel} herd routes in the kernel, expected {machines}");
    }
    let start = Instant::now();
    let prefix = SUBNETS.as_str().as_bytes().to_vec();
    writer
        .kv()
        .delete_range(DeleteRangeRequest {
            range_end: herd_client::prefix_end(&prefix),
            key: prefix.clone(),
            ..Default::default()
        })
        .await
        .context("deleting the simulated leases")?;
    while ctx.stats.removed.load(Ordering::Relaxed) < u64::from(machines) {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("routes not removed after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let remove = start.elapsed();
    cancel.cancel();
    let _ = controller.await;
    let (store_in, store_out) = (
        counts.0.load(Ordering::Relaxed),
        counts.1.load(Ordering::Relaxed),
    );
    // One full read of what the leases were: the cost per event of a
    // controller without a cache.
    for (s, l) in &leases {
        writer
            .kv()
            .put(PutRequest {
                key: subnet_key(*s).into_bytes(),
                value: serde_json::to_vec(l).expect("serializes"),
                ..Default::default()
            })
            .await?;
    }
    let full = writer
        .kv()
        .range(RangeRequest {
            range_end: herd_client::prefix_end(&prefix),
            key: prefix,
            ..Default::default()
        })
        .await?
        .into_inner();
    let full_read_bytes = full
        .kvs
        .iter()
        .map(|kv| (kv.key.len() + kv.value.len() + 24) as u64)
        .sum();
    proxy_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Convergence {
        machines,
        converge_ms: converge.as_secs_f64() * 1e3,
        routes_per_s: f64::from(machines) / converge.as_secs_f64(),
        remove_ms: remove.as_secs_f64() * 1e3,
        store_bytes_in: store_in,
        store_bytes_out: store_out,
        full_read_bytes,
    })
}
