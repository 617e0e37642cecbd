//! The service proxy (kube-proxy's job) on every machine that runs the
//! pods role: a controller of Services and Endpoints that keeps one
//! nftables table, `ip herd-proxy`, equal to them — kernel DNAT from each
//! service's cluster IP (and node ports) to its ready endpoints, no
//! userspace copy of the data.
//!
//! - [`plan`]: Service + Endpoints → what one service needs, parsed.
//! - [`render`]: plans → the table as data → one `nft -f` transaction.
//! - [`nft`]: running Debian's `nft`.
//! - [`sync`]: the loop that applies the table whenever something changed
//!   and re-applies all of it periodically (repairing what was deleted
//!   behind its back).
//! - [`controller`]: the kit controller that feeds it and reports bad
//!   objects.
//! - [`bench`]: `herd bench proxy`.
//!
//! The table stays in place when the agent stops (as kube-proxy leaves its
//! rules): services keep working through an agent restart or upgrade, and
//! the next start takes the table over. Turning the proxy off
//! (`--no-service-proxy`) removes it.

pub mod bench;
pub mod controller;
pub mod nft;
pub mod plan;
pub mod render;
pub mod sync;

use std::net::Ipv4Addr;
use std::time::Duration;

use herd_client::Client;
use tokio_util::sync::CancellationToken;

/// The pod bridge the cluster network (`herd-net`) makes on every machine.
pub const POD_BRIDGE: &str = "herd0";

/// The proxy's flags (on the agent).
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// Do not run the service proxy (it runs wherever the pods role does),
    /// and remove its nftables table if an earlier run left one.
    #[arg(long)]
    pub no_service_proxy: bool,
    /// Seconds between full re-applications of the proxy's rules (changes
    /// are applied as they come; this repairs rules deleted by hand).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub proxy_sync_interval: u64,
}

/// The proxy's settings, however the agent got them.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The service range (the API's `--service-cluster-ip-range`): a
    /// cluster IP outside it is reported, not programmed.
    pub service_cidr: (Ipv4Addr, u8),
    pub sync_interval: Duration,
    /// The pod bridge whose clients need no masquerade.
    pub bridge: String,
    /// This machine's name, in the events the proxy writes.
    pub instance: String,
}

/// Runs the proxy until `cancel`; its rules stay (see the module doc).
pub async fn run(client: Client, config: ProxyConfig, cancel: CancellationToken) {
    controller::run(client, config, cancel).await;
}
