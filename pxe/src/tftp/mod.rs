//! Read-only TFTP (RFC 1350, 2347, 2348, 2349, 7440) for PXE firmware.

pub mod bench;
pub mod packet;
pub mod root;
pub mod server;

pub use server::{Config, Server, Subnet, TransferEvent, TransferHook};
