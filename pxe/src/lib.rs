//! The provisioning server: DHCP, TFTP, iPXE scripts, HTTP boot, cloud-config and machine inventory.

pub mod cli;
pub mod dhcp;
pub mod http;
pub mod inventory;
pub mod profile;
pub mod reload;
pub mod server;
pub mod tftp;
