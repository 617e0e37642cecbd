//! `herd net …` (the binary's edge): the cluster network's config, its
//! subnet leases, reservations and releases.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use herd_cli::{Output, Table};
use herd_client::Client;
use herd_client::proto::etcdserverpb::LeaseTimeToLiveRequest;
use serde::Serialize;

use crate::cidr::Ipv4Net;
use crate::config::{
    Backend, BackendKind, ConfigError, DEFAULT_VNI, DEFAULT_VXLAN_PORT, NetworkConfig,
};
use crate::registry::{self, Applied};

#[derive(Debug, Args)]
pub struct NetArgs {
    /// The store and how to reach it (endpoints, TLS, user).
    #[command(flatten)]
    pub store: herd_client::connect::StoreArgs,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: NetCommand,
}

#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// The cluster network's config (set once; only the subnet bounds may change).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Every subnet lease and reservation: subnet, machine, address, backend, expiry.
    Subnets,
    /// Pin a subnet to a machine id, with no TTL (flannel's reservations).
    Reserve {
        subnet: Ipv4Net,
        #[arg(long)]
        machine: String,
    },
    /// Remove a subnet's lease or reservation, and its machine's claim on it:
    /// for a machine leaving the cluster for good (every machine drops its route).
    Release { subnet: Ipv4Net },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set the config (flags, or a flannel JSON config file).
    Set(SetArgs),
    /// Print the stored config.
    Get,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// A flannel network config (JSON) instead of the flags.
    #[arg(long, conflicts_with_all = ["network", "subnet_len", "subnet_min", "subnet_max", "backend", "vni", "port"])]
    pub from_file: Option<PathBuf>,
    /// The cluster network.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub network: Option<Ipv4Net>,
    /// Each machine's subnet length.
    #[arg(long, default_value_t = 24)]
    pub subnet_len: u8,
    /// First subnet handed out (default: the network's second).
    #[arg(long)]
    pub subnet_min: Option<Ipv4Addr>,
    /// Last subnet handed out (default: the network's last).
    #[arg(long)]
    pub subnet_max: Option<Ipv4Addr>,
    #[arg(long, value_enum, default_value_t = BackendKind::HostGw)]
    pub backend: BackendKind,
    /// VXLAN network identifier (vxlan).
    #[arg(long, default_value_t = DEFAULT_VNI)]
    pub vni: u32,
    /// VXLAN UDP port (vxlan).
    #[arg(long, default_value_t = DEFAULT_VXLAN_PORT)]
    pub port: u16,
}

impl SetArgs {
    async fn config(&self) -> anyhow::Result<NetworkConfig> {
        if let Some(path) = &self.from_file {
            let text = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            return serde_json::from_str(&text)
                .with_context(|| format!("{} is not a network config", path.display()));
        }
        Ok(NetworkConfig {
            network: self.network.unwrap_or_default_network(),
            subnet_len: self.subnet_len,
            subnet_min: self.subnet_min,
            subnet_max: self.subnet_max,
            backend: match self.backend {
                BackendKind::HostGw => Backend::HostGw,
                BackendKind::Vxlan => Backend::Vxlan {
                    vni: self.vni,
                    port: self.port,
                },
            },
        })
    }
}

trait DefaultNetwork {
    fn unwrap_or_default_network(self) -> Ipv4Net;
}

impl DefaultNetwork for Option<Ipv4Net> {
    fn unwrap_or_default_network(self) -> Ipv4Net {
        self.unwrap_or(NetworkConfig::default().network)
    }
}

/// One row of `herd net subnets`.
#[derive(Debug, Clone, Serialize)]
pub struct SubnetRow {
    pub subnet: Ipv4Net,
    pub machine_id: String,
    pub public_ip: Option<Ipv4Addr>,
    pub backend: Option<BackendKind>,
    pub vtep_mac: Option<String>,
    /// A reservation: no TTL.
    pub reserved: bool,
    /// Seconds until the lease expires unless renewed.
    pub expires_in_s: Option<i64>,
}

/// Every lease with its time to live (for `herd net subnets` and the lab).
pub async fn subnet_rows(client: &Client) -> Result<Vec<SubnetRow>, registry::RegistryError> {
    let mut rows = Vec::new();
    let mut ttls = std::collections::HashMap::new();
    for o in registry::leases(client).await? {
        let Some(subnet) = Ipv4Net::from_key_name(&o.name) else {
            continue;
        };
        let expires_in_s = if o.lease == 0 {
            None
        } else if let Some(t) = ttls.get(&o.lease) {
            *t
        } else {
            let t = client
                .lease()
                .lease_time_to_live(LeaseTimeToLiveRequest {
                    id: o.lease,
                    keys: false,
                })
                .await
                .ok()
                .map(|r| r.into_inner().ttl)
                .filter(|t| *t >= 0);
            ttls.insert(o.lease, t);
            t
        };
        rows.push(SubnetRow {
            subnet,
            machine_id: o.value.machine_id,
            public_ip: o.value.public_ip,
            backend: o.value.backend_type,
            vtep_mac: o.value.backend_data.map(|d| d.vtep_mac),
            reserved: o.lease == 0,
            expires_in_s,
        });
    }
    rows.sort_by_key(|r| r.subnet);
    Ok(rows)
}

fn subnets_table(rows: &Vec<SubnetRow>) -> String {
    let dash = || "-".to_owned();
    let mut t = Table::new(["SUBNET", "MACHINE", "PUBLIC IP", "BACKEND", "EXPIRES"]);
    for r in rows {
        t.row([
            r.subnet.to_string(),
            r.machine_id.clone(),
            r.public_ip.map_or_else(dash, |i| i.to_string()),
            r.backend.map_or_else(dash, |b| b.to_string()),
            if r.reserved {
                "reserved".to_owned()
            } else {
                r.expires_in_s
                    .map_or_else(dash, |s| format!("{}h{:02}m", s / 3600, s % 3600 / 60))
            },
        ]);
    }
    t.render()
}

fn config_table(c: &NetworkConfig) -> String {
    let (min, max) = c.range();
    let mut t = Table::new(["NETWORK", "SUBNET LEN", "SUBNETS", "BACKEND"]);
    t.row([
        c.network.to_string(),
        format!("/{}", c.subnet_len),
        format!(
            "{} ({} to {})",
            c.capacity(),
            c.network.subnet(c.subnet_len, min),
            c.network.subnet(c.subnet_len, max)
        ),
        match c.backend {
            Backend::HostGw => "host-gw".to_owned(),
            Backend::Vxlan { vni, port } => format!("vxlan (VNI {vni}, port {port})"),
        },
    ]);
    t.render()
}

/// `herd net …`.
pub async fn run(args: NetArgs) -> anyhow::Result<()> {
    let client = args
        .store
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.store.endpoints.join(",")))?;
    let out = args.output;
    match args.command {
        NetCommand::Config(ConfigCommand::Get) => {
            let Some(o) = registry::config(&client).await? else {
                bail!("the cluster has no network config yet: set it with `herd net config set`");
            };
            out.print(&o.value, config_table)?;
        }
        NetCommand::Config(ConfigCommand::Set(set)) => {
            let config = set.config().await?;
            config.validate()?;
            for m in registry::machines(&client).await? {
                if let std::net::IpAddr::V4(ip) = m.ip
                    && config.network.contains(ip)
                {
                    return Err(ConfigError::Overlap {
                        network: config.network,
                        what: format!("machine {}'s address", m.machine_id),
                        other: ip.to_string(),
                    }
                    .into());
                }
            }
            let applied = registry::set_config(&client, &config).await?;
            if !out.is_structured() {
                eprintln!(
                    "{}",
                    match applied {
                        Applied::Created => "network config set",
                        Applied::Updated => "network config updated (subnet bounds)",
                        Applied::Unchanged => "network config unchanged",
                    }
                );
            }
            out.print(&config, config_table)?;
        }
        NetCommand::Subnets => {
            let rows = subnet_rows(&client).await?;
            out.print(&rows, subnets_table)?;
        }
        NetCommand::Reserve { subnet, machine } => {
            let config = registry::config(&client)
                .await?
                .context(
                    "the cluster has no network config yet: set it with `herd net config set`",
                )?
                .value;
            if !config.allows(subnet) {
                bail!(
                    "{subnet} is not a subnet the network hands out ({} in /{}s)",
                    config.network,
                    config.subnet_len
                );
            }
            registry::reserve(&client, subnet, &machine).await?;
            eprintln!("{subnet} reserved for machine {machine}");
        }
        NetCommand::Release { subnet } => {
            let machine = registry::release(&client, subnet).await?;
            eprintln!("{subnet} released (was machine {machine}'s)");
        }
    }
    Ok(())
}
