//! The QEMU lab: a network namespace bridge, PXE-booted VMs, and the demo.

pub mod cli;
