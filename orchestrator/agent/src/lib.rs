//! The daemon on every machine, `herd agent`: it takes its settings from
//! flags or a cloud-config, starts the machine's store member and serves
//! the etcd v3 API, registers the machine, and runs the roles — each a
//! task of one [`supervisor::Supervisor`] that stops them all together.
//! Roles meet only through the store.

pub mod cli;
pub mod cloud_config;
pub mod facts;
pub mod registration;
pub mod settings;
pub mod supervisor;

use std::sync::Arc;

use anyhow::Context;
use herd_client::stage::AgentStage;
use tokio_util::sync::CancellationToken;

pub use settings::AgentSettings;

/// Runs the agent with `settings` until `shutdown` fires or a role fails.
pub async fn run(settings: AgentSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Bind first: a taken client port should fail before the store starts.
    let listener = herd_store::server::Listener::bind(settings.listen_client).await?;
    let api_listener = match &settings.pods {
        Some(pods) => Some(
            tokio::net::TcpListener::bind(pods.listen_api)
                .await
                .with_context(|| format!("binding the Kubernetes API on {}", pods.listen_api))?,
        ),
        None => None,
    };
    let resumed = herd_store::has_state(&settings.data_dir);
    let member = herd_store::Member::start(settings.store_config())
        .await
        .with_context(|| format!("starting store member {}", settings.name))?;
    let member = Arc::new(member);
    tracing::info!(
        member = %settings.name,
        id = format!("{:x}", member.id()),
        client = %listener.local_addr(),
        "store member running"
    );
    AgentStage::StoreStarted {
        member: settings.name.clone(),
        resumed,
    }
    .report();
    let mut supervisor = supervisor::Supervisor::new(shutdown);
    let api_member = Arc::clone(&member);
    let options = herd_store::server::ServeOptions {
        watch_progress_interval: settings.watch_progress_notify_interval,
        ..herd_store::server::ServeOptions::new(settings.max_request_bytes)
    };
    let stopped = supervisor.token();
    supervisor.spawn("client-api", async move {
        herd_store::server::serve_with(api_member, listener, options, stopped.cancelled_owned())
            .await?;
        Ok(())
    });
    if let Some(record) = settings.machine.clone() {
        let client = herd_client::Client::lazy(&settings.listen_client.to_string())?;
        let cancel = supervisor.token();
        supervisor.spawn("machine-registration", async move {
            registration::run(client, record, registration::DEFAULT_TTL, cancel).await;
            Ok(())
        });
    }
    if let (Some(pods), Some(api_listener)) = (settings.pods.clone(), api_listener) {
        let client = herd_client::Client::lazy(&settings.listen_client.to_string())?;
        let cancel = supervisor.token();
        supervisor.spawn("pods", async move {
            herd_pods::role::run(client, api_listener, pods, cancel).await?;
            Ok(())
        });
    }
    let result = supervisor.run().await;
    // The API tasks are gone, so this is the last handle: stop Raft cleanly.
    match Arc::try_unwrap(member) {
        Ok(member) => member.shutdown().await,
        Err(_) => tracing::warn!("store member still referenced at shutdown; dropping it"),
    }
    AgentStage::Stopped.report();
    result
}
