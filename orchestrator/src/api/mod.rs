//! The etcd-v3-compatible client API: gRPC services over the store, and the
//! client-side helpers (connection, lease sessions, locks, elections) built
//! on that API.

pub mod client;
mod cluster;
mod concurrency;
pub mod convert;
pub mod election;
mod kv;
mod lease;
pub mod lock;
mod maintenance;
mod server;
pub mod session;
mod watch;

#[cfg(test)]
mod tests;

pub use server::{Listener, ServeError, ServeOptions, serve, serve_with};
