//! The provisioning server: DHCP, TFTP, iPXE scripts, HTTP boot, cloud-config, machine inventory and the Omaha update server.

pub mod cli;
pub mod dhcp;
pub mod http;
pub mod inventory;
pub mod profile;
pub mod reload;
pub mod server;
pub mod tftp;
pub mod update;
