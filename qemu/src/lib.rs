//! The QEMU lab: a network namespace bridge, PXE-booted VMs, and the demo.

pub mod bench;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod lab;
pub mod layout;
pub mod net;
pub mod nsnet;
pub mod pki;
pub mod prereq;
pub mod process;
pub mod pxe;
pub mod ra;
pub mod registry;
pub mod stage;
pub mod state;
pub mod status;
pub mod vm;
pub mod watch;
