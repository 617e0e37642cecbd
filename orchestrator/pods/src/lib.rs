//! Pods: herd hosts the Kubernetes API and its controllers, with
//! every object in the store under `/registry/` as Kubernetes keeps them
//! in etcd, so the `kubectl` users already have works unchanged.
//!
//! - [`api`]: the kinds as typed Rust (unknown fields refused by path),
//!   their validation, defaults, selectors, tables and `Status` errors.
//! - [`node`]: the kubelet every agent runs — its Node, and the pods
//!   bound to it run on its Docker daemon.
//! - [`proxy`]: the service proxy on every machine (nftables DNAT from
//!   service IPs and node ports to ready endpoints).
pub mod api;
pub mod cli;
pub mod controllers;
pub mod node;
pub mod proxy;
pub mod registry;
pub mod role;
pub mod server;
