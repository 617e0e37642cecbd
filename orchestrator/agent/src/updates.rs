//! The update role's wiring on a disk boot: the machine's facts, its
//! store client and the health checks the other roles contribute, handed
//! to `herd_update`. Setting it up reads the disk; if that fails the role
//! keeps retrying (and says why) instead of taking the store down with it.

use std::sync::Arc;
use std::time::Duration;

use herd_client::Client;
use herd_client::keys::MachineRecord;
use herd_client::kit::Backoff;
use tokio_util::sync::CancellationToken;

/// Runs the update role until `cancel` fires.
pub async fn run(
    settings: herd_update::UpdateSettings,
    record: MachineRecord,
    client: Client,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(300));
    let engine = loop {
        let (s, r, c) = (settings.clone(), record.clone(), client.clone());
        let built = tokio::task::spawn_blocking(move || {
            // Units and pods add their checks here as they land.
            let extra: Vec<Arc<dyn herd_update::HealthCheck>> = Vec::new();
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
