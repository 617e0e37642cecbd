//! The update role's wiring on a disk boot: the machine's facts, its
//! store client and the health checks the other roles contribute (its
//! units run; its node and pods are ready, when it runs a kubelet),
//! handed to `herd_update`. Setting it up reads the disk; if that fails the role
//! keeps retrying (and says why) instead of taking the store down with it.

use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use herd_client::keys::MachineRecord;
use herd_client::kit::Backoff;
use herd_update::{CheckFuture, HealthCheck, Verdict};
use tokio_util::sync::CancellationToken;

/// The units role's check: every unit placed here to be launched runs.
struct UnitsRun {
    client: Client,
    machine_id: String,
}

impl HealthCheck for UnitsRun {
    fn name(&self) -> &'static str {
        "units"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async {
            verdict(herd_units::health::machine_units(&self.client, &self.machine_id).await)
        })
    }
}

/// The kubelet's check: the Node is Ready and its pods are.
struct NodeReady {
    client: Client,
    node: String,
}

impl HealthCheck for NodeReady {
    fn name(&self) -> &'static str {
        "node"
    }

    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async {
            verdict(herd_pods::node::health::node_and_pods(&self.client, &self.node).await)
        })
    }
}

fn verdict(r: Result<(), String>) -> Verdict {
    match r {
        Ok(()) => Verdict::Healthy,
        Err(why) => Verdict::NotYet(why),
    }
}

/// Runs the update role until `cancel` fires; `node` is the kubelet's
/// Node, when this machine runs one.
pub async fn run(
    settings: herd_update::UpdateSettings,
    record: MachineRecord,
    node: Option<String>,
    client: Client,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    let engine = loop {
        let (s, r, c) = (settings.clone(), record.clone(), client.clone());
        let mut extra: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(UnitsRun {
            client: client.clone(),
            machine_id: record.machine_id.clone(),
        })];
        if let Some(node) = &node {
            extra.push(Arc::new(NodeReady {
                client: client.clone(),
                node: node.clone(),
            }));
        }
        let built = tokio::task::spawn_blocking(move || {
            herd_update::local_engine(s, &r.machine_id, &r.hostname, &r.boot_id, c, extra)
        })
        .await;
        match built {
            Ok(Ok(engine)) => break Arc::new(engine),
            Ok(Err(e)) => {
                let delay = backoff.next_delay();
                tracing::error!(error = %e, ?delay, "the update role cannot start; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "setting up the update role panicked");
                cancel.cancelled().await;
                return;
            }
        }
    };
    herd_update::run(engine, cancel).await;
}
