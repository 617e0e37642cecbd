//! The network role of the agent: settings, then the steps in order —
//! the uplink, the remembered subnet (set up at once, so a machine keeps
//! its subnet while the store is unreachable), the cluster's config, the
//! subnet (chosen by [`crate::lease::choose`], claimed by compare-and-swap,
//! retried while the network is full), the local setup, and then the two
//! controllers: the lease keeper and the routes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use herd_client::kit::{Backoff, Event, Scope, Watcher};
use tokio_util::sync::CancellationToken;

use crate::cidr::Ipv4Net;
use crate::config::{Backend, CONFIG_NAME, NetworkConfig};
use crate::env_file::{self, Remembered};
use crate::host::{self, Files, HostError, Uplink};
use crate::keeper;
use crate::lease::{BackendData, Choice, SubnetLease, choose};
use crate::netlink::{Kernel, KernelError};
use crate::registry::{self, RegistryError};
use crate::routes::{self, Path};

/// What the network role needs from the agent.
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// This machine's id: its subnet is sticky to it.
    pub machine_id: String,
    /// The interface other machines reach this one on.
    pub cluster_iface: Option<String>,
    /// The address other machines route to (default: the interface's first).
    pub public_ip: Option<Ipv4Addr>,
    /// A config to set when the cluster has none (from cloud-config).
    pub proposed: Option<NetworkConfig>,
    pub subnet_env: PathBuf,
    /// Where the machine remembers the subnet it holds.
    pub remembered: PathBuf,
    pub lease_ttl: Duration,
    pub repair_interval: Duration,
}

/// Why the role stopped.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("the cluster network config is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Runs the role until `cancel` fires. Refuses to start (an error) when the
/// public address is not on the interface, or the pod network overlaps the
/// machines' own; everything the store causes is retried.
pub async fn run(
    client: Client,
    settings: NetSettings,
    cancel: CancellationToken,
) -> Result<(), NetError> {
    let kernel = Arc::new(Kernel::new()?);
    let uplink = host::uplink(
        &kernel,
        settings.cluster_iface.as_deref(),
        settings.public_ip,
    )
    .await?;
    tracing::info!(iface = %uplink.name, public_ip = %uplink.public_ip, machine = %settings.machine_id, "cluster network role starting");
    let files = Files {
        subnet_env: settings.subnet_env.clone(),
        remembered: settings.remembered.clone(),
    };
    let mut remembered = env_file::read_remembered(&settings.remembered)
        .await
        .filter(|r| r.machine_id == settings.machine_id);
    if let Some(r) = &remembered {
        // Before the store answers: pods keep their addresses and the
        // routes in the kernel stay as they are.
        host::set_up(
            &kernel,
            &r.config,
            &uplink,
            r.subnet,
            &settings.machine_id,
            &files,
        )
        .await?;
        tracing::info!(subnet = %r.subnet, "using the remembered subnet until the store confirms it");
    }
    let Some(config) = cluster_config(&client, settings.proposed.as_ref(), &cancel).await else {
        return Ok(());
    };
    config.validate()?;
    config.check_machine_network(
        &format!("the network of interface {}", uplink.name),
        uplink.network,
    )?;
    if let Some(r) = &remembered
        && r.config.check_change(&config).is_err()
    {
        tracing::warn!(remembered = %r.config.network, cluster = %config.network, "the cluster's network config differs from the remembered one; choosing a subnet anew");
        remembered = None;
    }
    let mut preferred = remembered.map(|r: Remembered| r.subnet);
    while !cancel.is_cancelled() {
        let Some(subnet) = acquire(
            &client,
            &config,
            &settings.machine_id,
            preferred.take(),
            &cancel,
        )
        .await
        else {
            return Ok(());
        };
        let local = host::set_up(
            &kernel,
            &config,
            &uplink,
            subnet,
            &settings.machine_id,
            &files,
        )
        .await?;
        tracing::info!(%subnet, bridge = host::BRIDGE, "subnet set up");
        let desired = SubnetLease {
            machine_id: settings.machine_id.clone(),
            public_ip: Some(uplink.public_ip),
            backend_type: Some(config.backend.kind()),
            backend_data: local.vxlan.as_ref().map(|v| BackendData {
                vtep_mac: routes::vtep_string(&v.mac),
            }),
        };
        let path = match (&config.backend, &local.vxlan) {
            (Backend::Vxlan { .. }, Some(v)) => Path::Vxlan { device: v.index },
            _ => Path::HostGw {
                uplink: uplink.link.index,
            },
        };
        let lost = CancellationToken::new();
        let stop = cancel.child_token();
        let ctx = Arc::new(routes::Ctx::new(
            Arc::clone(&kernel),
            settings.machine_id.clone(),
            subnet,
            config.network,
            path,
            settings.repair_interval,
        ));
        tokio::join!(
            keeper::run(
                client.clone(),
                subnet,
                desired,
                settings.lease_ttl,
                lost.clone(),
                stop.clone()
            ),
            async {
                tokio::select! {
                    () = routes::run(client.clone(), ctx, stop.clone()) => {}
                    () = lost.cancelled() => stop.cancel(),
                }
            },
        );
        if lost.is_cancelled() && !cancel.is_cancelled() {
            tracing::error!(%subnet, "subnet lost to another machine; choosing a new one");
        }
    }
    let _: &Uplink = &uplink;
    Ok(())
}

/// The cluster's config: waits until it exists, creating it from
/// `proposed` when the cluster has none. `None`: cancelled.
async fn cluster_config(
    client: &Client,
    proposed: Option<&NetworkConfig>,
    cancel: &CancellationToken,
) -> Option<NetworkConfig> {
    let mut watcher =
        Watcher::<NetworkConfig>::new(client.clone(), Scope::Name(CONFIG_NAME.into()));
    let mut told = false;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return None,
            e = watcher.next() => e,
        };
        let found = match event {
            Event::Listed { mut objects, .. } => objects.pop().map(|o| o.value),
            Event::Applied(o) => Some(o.value),
            _ => None,
        };
        match (found, proposed) {
            (Some(config), Some(p)) => {
                if let Err(e) = config.check_change(p) {
                    tracing::warn!(error = %e, "this machine's cloud-config asks for another cluster network; using the cluster's");
                }
                return Some(config);
            }
            (Some(config), None) => return Some(config),
            (None, Some(p)) => match registry::set_config(client, p).await {
                Ok(applied) => {
                    tracing::info!(?applied, network = %p.network, "cluster network config set from this machine's settings")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "setting the cluster network config; retrying")
                }
            },
            (None, None) if !told => {
                told = true;
                tracing::warn!(
                    "the cluster has no network config yet: set it with `herd net config set`; waiting"
                );
            }
            (None, None) => {}
        }
    }
}

/// Chooses and claims a subnet, retrying store failures and a full
/// network (saying so). `None`: cancelled.
pub async fn acquire(
    client: &Client,
    config: &NetworkConfig,
    machine_id: &str,
    preferred: Option<Ipv4Net>,
    cancel: &CancellationToken,
) -> Option<Ipv4Net> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let result: Result<Option<Ipv4Net>, RegistryError> = async {
            let held = registry::holdings(client).await?;
            match choose(config, machine_id, preferred, &held) {
                Choice::Held(s) => Ok(Some(s)),
                Choice::Claim { subnet, reclaim } => {
                    // Claimed without a store lease for a moment: the
                    // keeper moves it onto its session right away.
                    let value = SubnetLease {
                        machine_id: machine_id.to_owned(),
                        public_ip: None,
                        backend_type: Some(config.backend.kind()),
                        backend_data: None,
                    };
                    let session = herd_client::session::Session::new(client, Duration::from_secs(60))
                        .await
                        .map_err(RegistryError::Client)?;
                    let ok = registry::claim(client, subnet, &value, session.lease(), &reclaim).await?;
                    // Dropped without revoking: the record lives until the
                    // keeper rewrites it onto the 24 h lease.
                    drop(session);
                    if ok && !reclaim.is_empty() {
                        let gone: Vec<&str> = reclaim.iter().map(|(m, _)| m.as_str()).collect();
                        tracing::warn!(%subnet, previous = ?gone, "reclaimed the subnet of a machine gone from the cluster");
                    }
                    Ok(ok.then_some(subnet))
                }
                Choice::Full => {
                    tracing::error!(network = %config.network, capacity = config.capacity(), "no subnet left in the cluster network: every /{} is leased, reserved or kept for a registered machine; retrying", config.subnet_len);
                    Ok(None)
                }
            }
        }
        .await;
        match result {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "choosing a subnet; retrying"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
