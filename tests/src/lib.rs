//! Support for herd's cross-crate tests: store clusters of `herd agent`
//! processes (or real etcd), the robustness harness and its
//! linearizability checker, helpers for driving a QEMU lab, and OS update
//! rigs without VMs (tiny A/B disks, signed releases, a boot loader). The
//! generic support (namespaces, processes, the binary, deadlines, required
//! tools) is `herd-testkit`, re-exported here.

pub use herd_testkit::{bin, netns, process, registry, require, wait};

pub mod lab;
pub mod linearizability;
pub mod net;
pub mod node_lab;
pub mod pods;
pub mod proxy;
pub mod robustness;
pub mod rollout;
pub mod rollout_cuts;
pub mod rollout_units;
pub mod store;
pub mod units;
pub mod update;
