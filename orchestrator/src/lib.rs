//! The daemon on every machine: replicated store, and the per-machine and per-cluster roles.

pub mod api;
pub mod bench;
pub mod cli;
pub mod cloud_config;
pub mod machine;
pub mod proto;
pub mod store;
