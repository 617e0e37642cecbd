//! The daemon on every machine, `herd agent`: it takes its settings from
//! flags or a cloud-config, starts the machine's store member and serves
//! the etcd v3 API, registers the machine, and runs the roles — each a
//! task of one [`supervisor::Supervisor`] that stops them all together.
//! Roles meet only through the store.

pub mod api;
pub mod cli;
pub mod cloud_config;
pub mod facts;
pub mod join_token;
pub mod registration;
pub mod settings;
pub mod supervisor;
pub mod timing;
pub mod updates;

use std::sync::Arc;

use anyhow::Context;
use herd_client::stage::AgentStage;
use tokio_util::sync::CancellationToken;

pub use settings::AgentSettings;

/// The TLS of the agent's HTTP APIs, all presenting the member's
/// certificate (renewed in place) and checking callers against the
/// cluster CA; none under `--insecure-plaintext`.
struct ApiTls {
    /// Callers may show a certificate or the bearer token.
    kubernetes_api: Arc<herd_pki::tls::ServerConfig>,
    /// Callers must show a certificate (members and root get in).
    agent_api: Arc<herd_pki::tls::ServerConfig>,
    /// The Kubernetes API's calls to kubelets, as this member.
    kubelet_client: Arc<herd_pki::tls::ClientConfig>,
}

impl ApiTls {
    fn of(member: &herd_store::Member) -> Result<Option<ApiTls>, herd_pki::PkiError> {
        use herd_pki::tls::{ALPN_HTTP1, ClientAuth, client_config_live, server_config_live};
        let Some(identity) = member.identity() else {
            return Ok(None);
        };
        Ok(Some(ApiTls {
            kubernetes_api: server_config_live(
                Arc::clone(&identity),
                ClientAuth::Optional,
                &[ALPN_HTTP1],
            )?,
            agent_api: server_config_live(
                Arc::clone(&identity),
                ClientAuth::Required,
                &[ALPN_HTTP1],
            )?,
            kubelet_client: client_config_live(identity, &[ALPN_HTTP1])?,
        }))
    }
}

/// Runs the agent with `settings` until `shutdown` fires or a role fails.
pub async fn run(settings: AgentSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Bind first: a taken client port should fail before the store starts.
    let listener = herd_store::server::Listener::bind(settings.listen_client).await?;
    let api_listener = match &settings.pods {
        Some(pods) => Some(
            tokio::net::TcpListener::bind(pods.listen_api)
                .await
                .with_context(|| format!("binding the Kubernetes API on {}", pods.listen_api))?,
        ),
        None => None,
    };
    let resumed = herd_store::has_state(&settings.data_dir);
    let member = herd_store::Member::start(settings.store_config()?)
        .await
        .with_context(|| format!("starting store member {}", settings.name))?;
    // The agent's own clients of its member speak as the member.
    let credentials = match member.identity() {
        Some(identity) => herd_client::Credentials::Renewing(identity),
        // The store logs the INSECURE warning for plaintext itself.
        None => herd_client::Credentials::Plaintext,
    };
    let local =
        herd_client::Client::lazy_with(&local_endpoint(settings.listen_client), &credentials)?;
    let api_tls = ApiTls::of(&member).context("the HTTP APIs' TLS configurations")?;
    let member = Arc::new(member);
    tracing::info!(
        member = %settings.name,
        id = format!("{:x}", member.id()),
        client = %listener.local_addr(),
        "store member running"
    );
    AgentStage::StoreStarted {
        member: settings.name.clone(),
        resumed,
    }
    .report();
    let mut supervisor = supervisor::Supervisor::new(shutdown);
    let api_member = Arc::clone(&member);
    let options = herd_store::server::ServeOptions {
        watch_progress_interval: settings.watch_progress_notify_interval,
        ..herd_store::server::ServeOptions::new(settings.max_request_bytes)
    };
    let stopped = supervisor.token();
    supervisor.spawn("client-api", async move {
        herd_store::server::serve_with(api_member, listener, options, stopped.cancelled_owned())
            .await?;
        Ok(())
    });
    // A founding member registers the join token it was given, once (a
    // marker in the data dir remembers it, so a token the operator revoked
    // does not come back when the founder restarts).
    if let (Some(_), herd_store::Bootstrap::Found(_), Some(token)) =
        (member.pki(), &settings.bootstrap, settings.join_token()?)
        && !join_token::registered(&settings.data_dir)
    {
        let (client, cancel) = (local.clone(), supervisor.token());
        let data_dir = settings.data_dir.clone();
        supervisor.spawn("join-token", async move {
            join_token::register(&client, &token, &data_dir, &cancel).await?;
            cancel.cancelled().await;
            Ok(())
        });
    }
    if let Some(mut record) = settings.machine.clone() {
        let client = local.clone();
        let facts = herd_units::unit::MachineFacts {
            hostname: record.hostname.clone(),
            machine_id: record.machine_id.clone(),
            boot_id: record.boot_id.clone(),
        };
        let (units_client, units_settings) = (client.clone(), settings.units.clone());
        let units = tokio::task::spawn_blocking(move || {
            herd_units::role::UnitsRole::new(units_client, facts, units_settings)
        })
        .await
        .context("preparing the units role")??;
        let mut routes = axum::Router::new().merge(units.routes());
        let kubelet_docker = settings
            .kubelet
            .as_ref()
            .map(|k| herd_pods::node::DockerSlot::new(&k.docker_host));
        if let Some(docker) = &kubelet_docker {
            routes = routes.merge(herd_pods::node::api::routes(
                std::sync::Arc::clone(docker),
                &settings.name,
            ));
        }
        let mut daemon_port = None;
        if let Some(addr) = settings.listen_api {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the agent API to {addr}"))?;
            let bound = listener.local_addr()?;
            daemon_port = Some(bound.port());
            let host = if bound.ip().is_unspecified() {
                record.ip
            } else {
                bound.ip()
            };
            let tls = api_tls.as_ref().map(|t| Arc::clone(&t.agent_api));
            record.api_url = Some(format!(
                "{}://{}",
                if tls.is_some() { "https" } else { "http" },
                std::net::SocketAddr::new(host, bound.port())
            ));
            tracing::info!(api = %bound, "agent API listening");
            let cancel = supervisor.token();
            let app = std::mem::take(&mut routes);
            supervisor.spawn("agent-api", async move {
                api::serve(listener, app, tls, cancel).await?;
                Ok(())
            });
        }
        let cancel = supervisor.token();
        let ttl = settings.machine_ttl;
        let registered = record.clone();
        supervisor.spawn("machine-registration", async move {
            registration::run(client, registered, ttl, cancel).await;
            Ok(())
        });
        let cancel = supervisor.token();
        supervisor.spawn("units", async move {
            units.run(cancel).await;
            Ok(())
        });
        // The node whose health the update gate asks: when a kubelet runs
        // on an OS that ships a container runtime. Without one the node is
        // NotReady by design, and no release could ever pass the gate.
        let node =
            (settings.kubelet.is_some() && ships_dockerd().await).then(|| settings.name.clone());
        if let (Some(config), Some(docker)) = (settings.kubelet.clone(), kubelet_docker) {
            let kubelet = herd_pods::node::KubeletSettings {
                node_name: settings.name.clone(),
                docker_host: config.docker_host,
                infra_image: config.infra_image,
                subnet_env: config.subnet_env,
                bridge: "herd0".into(),
                root_dir: settings.data_dir.join("kubelet"),
                machine_id: record.machine_id.clone(),
                hostname: record.hostname.clone(),
                boot_id: record.boot_id.clone(),
                host_ip: record.ip,
                labels: record.metadata.clone(),
                daemon_port,
                version: record.agent_version.clone(),
                eviction: config.eviction,
            };
            let (client, cancel) = (local.clone(), supervisor.token());
            supervisor.spawn("kubelet", async move {
                herd_pods::node::run(client, kubelet, docker, cancel).await;
                Ok(())
            });
        }
        let cmdline = tokio::fs::read_to_string("/proc/cmdline")
            .await
            .unwrap_or_default();
        if facts::booted_from_disk(&cmdline) {
            let client = local.clone();
            let cancel = supervisor.token();
            let update = settings.update.clone().unwrap_or_default();
            supervisor.spawn("update", async move {
                updates::run(update, record, node, client, cancel).await;
                Ok(())
            });
        }
    }
    if let Some(net) = settings.net.clone() {
        let client = local.clone();
        let cancel = supervisor.token();
        supervisor.spawn("cluster-network", async move {
            herd_net::run(client, net, cancel).await?;
            Ok(())
        });
    }
    if let (Some(mut pods), Some(api_listener)) = (settings.pods.clone(), api_listener) {
        pods.tls = api_tls.as_ref().map(|t| Arc::clone(&t.kubernetes_api));
        // It proxies logs and exec to kubelets as this member.
        pods.kubelet.tls = api_tls.as_ref().map(|t| Arc::clone(&t.kubelet_client));
        let client = local.clone();
        let cancel = supervisor.token();
        supervisor.spawn("pods", async move {
            herd_pods::role::run(client, api_listener, pods, cancel).await?;
            Ok(())
        });
    }
    match settings.proxy.clone() {
        settings::ProxySetting::Run(proxy) => {
            let client = local.clone();
            let cancel = supervisor.token();
            supervisor.spawn("service-proxy", async move {
                herd_pods::proxy::run(client, proxy, cancel).await;
                Ok(())
            });
        }
        settings::ProxySetting::Off => {
            if let Err(e) = herd_pods::proxy::nft::delete_table().await {
                tracing::warn!(error = %e, "removing the service proxy's rules");
            }
        }
        settings::ProxySetting::NotHere => {}
    }
    let result = supervisor.run().await;
    // The API tasks are gone, so this is the last handle: stop Raft cleanly.
    match Arc::try_unwrap(member) {
        Ok(member) => member.shutdown().await,
        Err(_) => tracing::warn!("store member still referenced at shutdown; dropping it"),
    }
    AgentStage::Stopped.report();
    result
}

/// Where the agent's own clients reach its client API: its address, or
/// loopback when it listens on every address.
fn local_endpoint(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()).to_string()
    } else {
        addr.to_string()
    }
}

/// Whether this machine's OS has dockerd (Debian's `docker.io` puts it in
/// /usr/sbin).
async fn ships_dockerd() -> bool {
    for path in ["/usr/sbin/dockerd", "/usr/bin/dockerd"] {
        if tokio::fs::try_exists(path).await.unwrap_or(false) {
            return true;
        }
    }
    false
}
