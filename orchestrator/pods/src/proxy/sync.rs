//! The loop that keeps the kernel's table equal to the caches: woken by
//! the controller on every change (bursts coalesce into one transaction),
//! it renders the whole table from the caches and applies only what
//! changed since the last success; every sync interval it lists the
//! kernel's table and rewrites all of it, which puts back whatever was
//! deleted or changed behind its back.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use herd_client::kit::{Backoff, Cache};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ProxyConfig;
use super::controller::Reporter;
use super::nft;
use super::plan::{self, ServicePlan};
use super::render::{self, Existing, Host, Ruleset};
use crate::api::{Endpoints, Service};

/// Changes arriving within this long of each other share a transaction.
const COALESCE: Duration = Duration::from_millis(50);

/// The plans of every service in the caches that renders (the ones that
/// do not are the controller's to report), free of conflicts (which are
/// returned for reporting).
pub fn desired(
    services: &Cache<Service>,
    endpoints: &Cache<Endpoints>,
    range: (Ipv4Addr, u8),
) -> (Vec<ServicePlan>, Vec<plan::PlanError>) {
    let mut plans = Vec::new();
    for o in services.list() {
        let eps = endpoints.get(&o.name);
        let planned = match plan::plan(&o.name, &o.value, eps.as_ref().map(|e| &e.value), range) {
            // Broken endpoints: the service still rejects (reported by the
            // controller) rather than black-holing.
            Err(plan::PlanError::Endpoints { .. }) => plan::plan(&o.name, &o.value, None, range),
            other => other,
        };
        if let Ok(Some(p)) = planned {
            plans.push(p);
        }
    }
    let conflicts = render::resolve_conflicts(&mut plans);
    (plans, conflicts)
}

/// This machine's pod bridge and the subnet on it, if it exists.
pub async fn host(bridge: &str) -> Host {
    let name = bridge.to_owned();
    let pod_subnet = tokio::task::spawn_blocking(move || bridge_subnet(&name))
        .await
        .ok()
        .flatten();
    Host {
        bridge: bridge.to_owned(),
        pod_subnet,
    }
}

fn bridge_subnet(bridge: &str) -> Option<(Ipv4Addr, u8)> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs.filter(|a| a.interface_name == bridge) {
        let (Some(ip), Some(mask)) = (
            a.address.as_ref().and_then(|s| s.as_sockaddr_in()),
            a.netmask.as_ref().and_then(|s| s.as_sockaddr_in()),
        ) else {
            continue;
        };
        let bits = u32::from(mask.ip()).count_ones() as u8;
        let net = u32::from(ip.ip()) & u32::from(mask.ip());
        return Some((Ipv4Addr::from(net), bits));
    }
    None
}

/// Renders and applies until `cancel`.
pub struct Syncer {
    pub services: Cache<Service>,
    pub endpoints: Cache<Endpoints>,
    pub config: ProxyConfig,
    pub wake: Arc<Notify>,
    pub reporter: Reporter,
}

impl Syncer {
    pub async fn run(self, cancel: CancellationToken) {
        // Nothing is applied before both caches are listed: an early sync
        // would delete the rules of every service not seen yet.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = async { self.services.ready().await; self.endpoints.ready().await } => {}
        }
        let mut applied: Option<Ruleset> = None;
        let mut last_full: Option<Instant> = None;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let full = applied.is_none()
                || last_full.is_none_or(|t| t.elapsed() >= self.config.sync_interval);
            let started = Instant::now();
            let (plans, conflicts) =
                desired(&self.services, &self.endpoints, self.config.service_cidr);
            self.reporter.conflicts(conflicts).await;
            let want = render::ruleset(&plans, &host(&self.config.bridge).await);
            match apply(
                &nft::Nft::default(),
                &want,
                if full { None } else { applied.as_ref() },
            )
            .await
            {
                Ok(changed) => {
                    if changed {
                        tracing::debug!(
                            services = plans.len(),
                            chains = want.chains.len(),
                            full,
                            took = ?started.elapsed(),
                            "service proxy rules applied"
                        );
                    }
                    applied = Some(want);
                    if full {
                        last_full = Some(Instant::now());
                    }
                    backoff.reset();
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, full, "applying the service proxy's rules; retrying");
                    if full {
                        // A table the proxy cannot take over (declarations
                        // changed behind its back) is started afresh.
                        if let Err(e) = nft::delete_table().await {
                            tracing::warn!(error = %e, "deleting the service proxy's table");
                        }
                    }
                    applied = None;
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
            let next_full = last_full.unwrap_or_else(Instant::now) + self.config.sync_interval;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next_full) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(COALESCE) => {}
            }
        }
    }
}

/// Applies `want` over `before` (`None`: lists the kernel's table and
/// rewrites all of it) with `nft`; whether a transaction was needed.
pub async fn apply(
    nft: &nft::Nft,
    want: &Ruleset,
    before: Option<&Ruleset>,
) -> Result<bool, nft::NftError> {
    let existing = match before {
        Some(b) => Existing {
            chains: b.chains.keys().cloned().collect(),
            sets: b.sets.keys().cloned().collect(),
        },
        None => nft.existing().await?,
    };
    let tx = render::transaction(want, before, &existing);
    if tx.is_empty() {
        return Ok(false);
    }
    nft.apply(&tx).await?;
    Ok(true)
}
