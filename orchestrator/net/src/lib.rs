//! The cluster network (flannel's role), a role of the agent: every
//! machine leases a subnet of one cluster network in the store, sticky to
//! its machine id, and routes to every other machine's subnet — host-gw
//! (a route via the owner's address) or vxlan (a VXLAN device with FDB and
//! neighbour entries) — through the pod bridge `herd0`, with masquerade for
//! traffic leaving the cluster network and flannel's `subnet.env`.
//!
//! - [`cidr`], [`config`], [`lease`]: the types and the choice of a subnet.
//! - [`registry`]: the store's records and their compare-and-swap writes.
//! - [`netlink`], [`masq`], [`host`], [`env_file`]: the kernel side.
//! - [`keeper`], [`routes`]: the two controllers; [`role`] runs them.
//! - [`cli`]: `herd net …` and `herd bench net`.

pub mod bench;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod env_file;
pub mod host;
pub mod keeper;
pub mod lease;
pub mod masq;
pub mod netlink;
pub mod registry;
pub mod role;
pub mod routes;

pub use role::{NetError, NetSettings, run};
