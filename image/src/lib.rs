//! The image pipeline: spec to read-only A/B OS image, update payloads, slot logic, and container images from Debian packages.

pub mod apt;
pub mod build;
pub mod cli;
pub mod container;
pub mod cpio;
pub mod debindex;
pub mod debversion;
pub mod depsolve;
pub mod disk;
pub mod gpt;
pub mod grow;
pub mod install;
pub mod manifest;
pub mod payload;
pub mod rootfs;
pub mod slot;
pub mod spec;
pub mod tool;
