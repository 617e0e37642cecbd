//! DHCPv4 and proxyDHCP for PXE: address pool with durable leases, PXE boot decisions, relay support.
//!
//! The public surface is [`Config`] (what to serve), [`Server`] (bind, then
//! [`Server::run`] until a cancellation token fires), [`Event`] (what the
//! inventory learns about each machine) and [`ServerHandle`] (swap the boot
//! configuration on reload without touching leases).
//!
//! ```no_run
//! # async fn demo() -> Result<(), herd_pxe::dhcp::Error> {
//! use herd_pxe::dhcp::{BootConfig, Config, Mode, Pool, Server};
//! let pool = Pool::new("10.99.0.0/24".parse()?, "10.99.0.100".parse().unwrap(), "10.99.0.200".parse().unwrap())?;
//! let mut config = Config::new("br0", "10.99.0.1".parse().unwrap(), pool, "/var/lib/herd/pxe".into());
//! config.mode = Mode::Authoritative;
//! config.boot = BootConfig::new("10.99.0.1".parse().unwrap(), "http://10.99.0.1:8080/boot.ipxe?mac=${mac}");
//! let (events_tx, _events_rx) = tokio::sync::mpsc::channel(1024);
//! let server = Server::bind(config, events_tx).await?;
//! let handle = server.handle(); // handle.set_boot(new_boot) on reload
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! server.run(shutdown).await
//! # }
//! ```

pub mod bench;
pub mod boot_file;
mod config;
pub mod handler;
pub mod leases;
mod server;
mod socket;
pub mod validate;

pub use boot_file::{BootConfig, BootDecision, ClientArch, ClientInfo};
pub use config::{Config, ConfigError, MacAddr, Mode, Pool, Subnet};
pub use handler::{Event, EventKind};
pub use server::{Server, ServerHandle};

use std::net::Ipv4Addr;

/// Everything that can go wrong starting or running the DHCP server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid DHCP configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("binding DHCP socket on interface {interface} port {port}: {source}")]
    Bind {
        interface: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("lease store in {path}: {source}")]
    Leases {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("lease store in {path}, line {line}: {message}")]
    LeaseRecord {
        path: std::path::PathBuf,
        line: usize,
        message: String,
    },
    #[error("DHCP socket on {interface}: {source}")]
    Io {
        interface: String,
        source: std::io::Error,
    },
}

/// The DHCP server port (RFC 2131).
pub const SERVER_PORT: u16 = 67;
/// The DHCP client port (RFC 2131).
pub const CLIENT_PORT: u16 = 68;
/// The PXE boot server port a proxyDHCP client sends its REQUEST to (PXE 2.1).
pub const PROXY_PORT: u16 = 4011;

/// The limited broadcast address replies go to when the client cannot take unicast.
pub const BROADCAST: Ipv4Addr = Ipv4Addr::BROADCAST;
