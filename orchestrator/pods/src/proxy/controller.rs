//! The proxy's controller, written with the kit: it lists and watches
//! Services and Endpoints (mapped to the service of the same name), and
//! reconciling one checks that it renders — a service or endpoints object
//! that does not is reported once (a log line and a Warning event on the
//! service naming the field) and left out, the others unaffected — then
//! wakes the [`Syncer`], which applies the whole table from the caches.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use herd_client::Client;
use herd_client::kit::{Action, Cache, Controller, Request, Scope};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ProxyConfig;
use super::plan::{self, PlanError};
use super::sync::Syncer;
use crate::api::{ApiConfig, Endpoints, Service};
use crate::controllers::events::Recorder;
use crate::registry::{Registry, from_cache};

/// Reports objects the proxy cannot render: once per object and cause
/// (not on every sync), again when the cause changes.
#[derive(Clone)]
pub struct Reporter {
    services: Cache<Service>,
    events: Recorder,
    reported: Arc<Mutex<HashMap<String, String>>>,
}

impl Reporter {
    /// Reports `error` about service `name` unless it already was.
    async fn report(&self, name: &str, error: &PlanError) {
        let message = error.to_string();
        {
            let mut reported = self.reported.lock().expect("not poisoned");
            if reported.get(name) == Some(&message) {
                return;
            }
            reported.insert(name.to_owned(), message.clone());
        }
        tracing::warn!(service = %name, error = %message, "the service proxy skips what it cannot render");
        if let Some(object) = self.services.get(name)
            && plan::valid_id(name)
        {
            let reason = match error {
                PlanError::Endpoints { .. } => "InvalidEndpoints",
                PlanError::Conflict { .. } => "ServiceConflict",
                _ => "InvalidService",
            };
            self.events
                .warning(&from_cache(&object), reason, message)
                .await;
        }
    }

    /// `name` renders again: a later error is reported anew.
    fn clear(&self, name: &str) {
        self.reported.lock().expect("not poisoned").remove(name);
    }

    /// Reports the services dropped for conflicting with others.
    pub async fn conflicts(&self, errors: Vec<PlanError>) {
        for e in errors {
            if let PlanError::Conflict { id, .. } = &e {
                self.report(id, &e).await;
            }
        }
    }
}

struct Ctx {
    endpoints: Cache<Endpoints>,
    config: ProxyConfig,
    wake: Arc<Notify>,
    reporter: Reporter,
}

async fn reconcile(ctx: Arc<Ctx>, req: Request<Service>) -> Result<Action, Infallible> {
    ctx.wake.notify_one();
    let Some(object) = req.object else {
        ctx.reporter.clear(&req.name);
        return Ok(Action::AwaitChange);
    };
    let eps = ctx.endpoints.get(&req.name);
    match plan::plan(
        &req.name,
        &object.value,
        eps.as_ref().map(|e| &e.value),
        ctx.config.service_cidr,
    ) {
        Ok(_) => ctx.reporter.clear(&req.name),
        Err(e) => ctx.reporter.report(&req.name, &e).await,
    }
    Ok(Action::AwaitChange)
}

/// Runs the controller and its syncer until `cancel`.
pub async fn run(client: Client, config: ProxyConfig, cancel: CancellationToken) {
    let mut controller = Controller::<Service>::new("service-proxy", client.clone(), Scope::All);
    let services = controller.cache();
    let endpoints = controller.watches::<Endpoints>(Scope::All, |before, after| {
        before
            .or(after)
            .map(|o| vec![o.name.clone()])
            .unwrap_or_default()
    });
    let registry = Registry::new(
        client,
        ApiConfig {
            service_cidr: config.service_cidr,
            ..Default::default()
        },
    );
    let reporter = Reporter {
        services: services.clone(),
        events: Recorder::new(registry, "herd-proxy", &config.instance),
        reported: Arc::default(),
    };
    let wake = Arc::new(Notify::new());
    let syncer = Syncer {
        services,
        endpoints: endpoints.clone(),
        config: config.clone(),
        wake: Arc::clone(&wake),
        reporter: reporter.clone(),
    };
    let ctx = Arc::new(Ctx {
        endpoints,
        config,
        wake,
        reporter,
    });
    let sync_task = tokio::spawn(syncer.run(cancel.clone()));
    controller.run(ctx, reconcile, cancel).await;
    let _ = sync_task.await;
}
