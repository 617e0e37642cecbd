//! Units: fleet's role in herd — a cluster-wide init system for systemd
//! unit files. A [`unit`] file is parsed at the edge into types; the
//! [`engine`] (one per cluster, elected) places each unit on a machine;
//! the [`runner`] on every machine supervises the processes of the units
//! placed on it; [`records`] are what they share through the store; the
//! [`api`] serves a machine's unit status and journals; [`health`] tells
//! the update role's gate whether this machine's units run; [`cli`] is
//! `herd units`; [`bench`] is `herd bench units`.

pub mod api;
pub mod bench;
pub mod cli;
pub mod engine;
pub mod health;
pub mod records;
pub mod role;
pub mod runner;
pub mod store;
pub mod unit;
