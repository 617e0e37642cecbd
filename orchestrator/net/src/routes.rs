//! Routes to every other machine's subnet, written with the kit: a
//! controller over all subnet leases. host-gw: a route to the subnet via
//! the owner's public address on the cluster interface. vxlan: a route via
//! the subnet's network address on the VXLAN device (onlink), that
//! address's neighbour entry (the owner's VTEP MAC), and the MAC's FDB
//! entry (the owner's public address). A lease that goes takes its route
//! along; every name is looked at again periodically, which puts back a
//! route deleted behind herd's back. A route to a subnet that herd did not
//! add is left alone and reported.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::cidr::Ipv4Net;
use crate::lease::SubnetLease;
use crate::netlink::{Added, Kernel, KernelError, Route, mac_string, parse_mac};

/// How often each route is checked even when nothing changes.
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_secs(10);

/// Why a subnet's route could not be programmed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(
        "a route herd did not add occupies subnet {subnet} of machine {machine}: {route}; delete it, or take the subnet out of the network config"
    )]
    Foreign {
        subnet: Ipv4Net,
        machine: String,
        route: Route,
    },
    #[error("the lease of {subnet} (machine {machine}) has no valid VtepMAC for the vxlan backend")]
    NoVtep { subnet: Ipv4Net, machine: String },
}

/// How this machine reaches others.
#[derive(Debug, Clone)]
pub enum Path {
    HostGw { uplink: u32 },
    Vxlan { device: u32 },
}

/// What was programmed for one remote subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    route: Route,
    /// vxlan: the remote VTEP MAC and its public address.
    vtep: Option<([u8; 6], Ipv4Addr)>,
}

/// Counters for the benchmark and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub added: std::sync::atomic::AtomicU64,
    pub removed: std::sync::atomic::AtomicU64,
    pub repaired: std::sync::atomic::AtomicU64,
}

pub struct Ctx {
    kernel: Arc<Kernel>,
    machine_id: String,
    own: Ipv4Net,
    network: Ipv4Net,
    path: Path,
    repair: Duration,
    programmed: Mutex<HashMap<Ipv4Net, Programmed>>,
    pub stats: Stats,
}

impl Ctx {
    pub fn new(
        kernel: Arc<Kernel>,
        machine_id: String,
        own: Ipv4Net,
        network: Ipv4Net,
        path: Path,
        repair: Duration,
    ) -> Ctx {
        Ctx {
            kernel,
            machine_id,
            own,
            network,
            path,
            repair,
            programmed: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        }
    }

    async fn remove(&self, subnet: Ipv4Net) -> Result<(), RouteError> {
        let Some(p) = self.programmed.lock().await.remove(&subnet) else {
            return Ok(());
        };
        self.kernel.delete_route(&p.route).await?;
        if let (Path::Vxlan { device }, Some((mac, remote))) = (&self.path, p.vtep) {
            self.kernel
                .delete_vxlan_peer(*device, subnet.addr(), &mac, remote)
                .await?;
        }
        self.stats
            .removed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%subnet, "route removed: the subnet's lease is gone");
        Ok(())
    }

    async fn ensure(
        &self,
        subnet: Ipv4Net,
        lease: &SubnetLease,
        public_ip: Ipv4Addr,
    ) -> Result<(), RouteError> {
        let (vtep, oif, gateway, onlink) = match self.path {
            Path::HostGw { uplink } => (None, uplink, public_ip, false),
            Path::Vxlan { device } => {
                let mac = lease
                    .backend_data
                    .as_ref()
                    .and_then(|d| parse_mac(&d.vtep_mac))
                    .ok_or_else(|| RouteError::NoVtep {
                        subnet,
                        machine: lease.machine_id.clone(),
                    })?;
                (Some((mac, public_ip)), device, subnet.addr(), true)
            }
        };
        let want = Programmed {
            route: Route {
                dst: subnet,
                gateway: Some(gateway),
                oif: Some(oif),
                protocol: rtnetlink::packet_route::route::RouteProtocol::Other(
                    crate::netlink::ROUTE_PROTOCOL,
                ),
            },
            vtep,
        };
        let before = self.programmed.lock().await.get(&subnet).cloned();
        if let Some((mac, remote)) = vtep {
            if let Some(Some((old_mac, old_remote))) = before.as_ref().map(|p| p.vtep)
                && (old_mac, old_remote) != (mac, remote)
            {
                self.kernel
                    .delete_vxlan_peer(oif, subnet.addr(), &old_mac, old_remote)
                    .await?;
            }
            // Both are replaced in place: cheap, and repairs them too.
            self.kernel.set_neighbour(oif, subnet.addr(), &mac).await?;
            self.kernel.set_fdb(oif, &mac, remote).await?;
        }
        match self.kernel.add_route(subnet, gateway, oif, onlink).await? {
            Added::Created => {
                let stat = if before.is_some() {
                    tracing::warn!(%subnet, via = %gateway, "route was missing (deleted behind herd's back?); put back");
                    &self.stats.repaired
                } else {
                    tracing::debug!(%subnet, via = %gateway, machine = %lease.machine_id, "route added");
                    &self.stats.added
                };
                stat.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Added::Existed if before.as_ref() == Some(&want) => {}
            Added::Existed => {
                let existing = self.kernel.routes_to(subnet).await?;
                if let Some(foreign) = existing.iter().find(|r| !r.is_herds()) {
                    return Err(RouteError::Foreign {
                        subnet,
                        machine: lease.machine_id.clone(),
                        route: foreign.clone(),
                    });
                }
                // Herd's own, from an earlier run or an older address.
                if !existing
                    .iter()
                    .any(|r| r.gateway == Some(gateway) && r.oif == Some(oif))
                {
                    self.kernel
                        .replace_route(subnet, gateway, oif, onlink)
                        .await?;
                    tracing::info!(%subnet, via = %gateway, "route updated");
                }
                self.stats
                    .added
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.programmed.lock().await.insert(subnet, want);
        Ok(())
    }

    /// Deletes herd's routes inside the network that no lease in `cache`
    /// accounts for (leases that went while this agent was down).
    async fn sweep(&self, cache: &Cache<SubnetLease>) -> Result<(), RouteError> {
        for route in self.kernel.routes().await? {
            if route.is_herds()
                && self.network.contains_net(route.dst)
                && route.dst != self.own
                && cache.get(&route.dst.key_name()).is_none()
            {
                self.kernel.delete_route(&route).await?;
                tracing::info!(%route, "stale route removed: its lease went while the agent was down");
            }
        }
        Ok(())
    }
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<SubnetLease>) -> Result<Action, RouteError> {
    let Some(subnet) = Ipv4Net::from_key_name(&req.name) else {
        return Ok(Action::AwaitChange);
    };
    if subnet == ctx.own {
        return Ok(Action::AwaitChange);
    }
    let remote = req.object.as_ref().and_then(|o| {
        let l = &o.value;
        (l.machine_id != ctx.machine_id && ctx.network.contains_net(subnet))
            .then_some(())
            .and(l.public_ip.map(|ip| (l, ip)))
    });
    match remote {
        None => {
            ctx.remove(subnet).await?;
            Ok(Action::AwaitChange)
        }
        Some((lease, ip)) => {
            ctx.ensure(subnet, lease, ip).await?;
            Ok(Action::Requeue(ctx.repair))
        }
    }
}

/// Programs routes to every other lease until `cancel` fires. Routes stay
/// when it returns (an agent restart keeps pod traffic flowing).
pub async fn run(client: Client, ctx: Arc<Ctx>, cancel: CancellationToken) {
    let controller =
        Controller::<SubnetLease>::new("subnet-routes", client, Scope::All).concurrency(16);
    let cache = controller.cache();
    let sweeper = {
        let ctx = Arc::clone(&ctx);
        async move {
            cache.ready().await;
            if let Err(e) = ctx.sweep(&cache).await {
                tracing::warn!(error = %e, "sweeping stale routes");
            }
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = controller.run(ctx, reconcile, cancel.clone()) => {}
        () = sweeper => {}
    }
}

/// The VTEP MAC as leases carry it.
pub fn vtep_string(mac: &[u8]) -> String {
    mac_string(mac)
}
