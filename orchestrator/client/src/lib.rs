//! The store's client, as every other crate sees the store: the etcd v3
//! gRPC stubs ([`proto`]), a [`Client`] over them, lease [`session`]s,
//! distributed [`lock`]s and [`election`]s, typed [`keys`] for each prefix
//! of the store, the [`stage`]s an agent reports, and the controller
//! [`kit`] every role is written with.
//!
//! It works against herd's store and against a real etcd alike.

mod client;
pub mod connect;
pub mod election;
pub mod keys;
pub mod kit;
pub mod lock;
pub mod proto;
pub mod session;
pub mod stage;

pub use client::{Client, ClientError, Credentials, Transport, prefix_end};
