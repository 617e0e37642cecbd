//! The daemon on every machine: replicated store, and the per-machine and per-cluster roles.

pub mod cli;
