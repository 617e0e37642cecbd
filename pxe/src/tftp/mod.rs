//! Read-only TFTP (RFC 1350, 2347, 2348, 2349, 7440) for PXE firmware.

pub mod bench;
pub mod client;
pub mod packet;
pub mod root;
pub mod server;
mod transfer;

pub use server::{Config, Server, Subnet, TransferEvent, TransferHook};
