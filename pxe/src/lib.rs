//! The provisioning server: DHCP, TFTP, iPXE scripts, HTTP boot, cloud-config and machine inventory.

pub mod cli;
