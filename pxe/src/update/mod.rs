//! The Omaha update server (Nebraska's role) inside the provisioning
//! server: releases published from `herd image build` output, groups
//! (Omaha tracks) with a rollout policy — canaries, safe mode, rate,
//! office hours, timeout — and every machine's update state, all durable
//! in `<state-dir>/updates/`. Machines talk Omaha v3 to `POST /v1/update/`.

pub mod cli;
pub mod client;
pub mod policy;
pub mod publish;
pub mod rollout;
pub mod routes;
pub mod service;
pub mod state;

pub use service::{UpdateService, UpdatesStatus};
