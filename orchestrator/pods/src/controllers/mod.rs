//! The controllers of the pods role, each once per cluster under its own
//! election (`herd_client::kit::run_elected`), each written with the kit.

use herd_client::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::registry::Registry;
use crate::role::PodsConfig;

/// Starts every controller on `tasks`; they stop when `cancel` fires.
pub fn spawn_all(
    _tasks: &mut JoinSet<()>,
    _client: &Client,
    _registry: &Registry,
    _config: &PodsConfig,
    _cancel: &CancellationToken,
) {
}
