//! The namespace controller: a namespace being deleted (`Terminating`)
//! has its objects deleted, kind by kind; once it is empty, it goes.

use std::sync::Arc;
use std::time::Duration;

use herd_client::kit::{Action, Controller, Request, Scope};
use tokio_util::sync::CancellationToken;

use super::Elected;
use crate::api::{
    ApiError, ApiObject, Deployment, Endpoints, Event, Namespace, Pod, ReplicaSet,
    ReplicationController, Service,
};
use crate::registry::{DeleteOptions, Registry, from_cache};

pub async fn run(e: Elected, cancel: CancellationToken) {
    let controller = Controller::<Namespace>::new("pods-namespaces", e.client.clone(), Scope::All);
    controller.run(Arc::new(e), reconcile, cancel).await;
}

/// Deletes every `T` in `namespace`; returns how many there were.
async fn delete_all<T: ApiObject>(registry: &Registry, namespace: &str) -> Result<usize, ApiError> {
    let (objects, _) = registry.list::<T>(Some(namespace)).await?;
    for o in &objects {
        if o.meta().deletion_timestamp.is_some() {
            continue;
        }
        match registry
            .delete::<T>(namespace, &o.meta().name, &DeleteOptions::default())
            .await
        {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    Ok(objects.len())
}

async fn reconcile(e: Arc<Elected>, req: Request<Namespace>) -> Result<Action, ApiError> {
    let Some(object) = req.object else {
        return Ok(Action::AwaitChange);
    };
    let ns = from_cache(&object);
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::AwaitChange);
    }
    let r = &e.registry;
    let name = ns.metadata.name.as_str();
    let left = delete_all::<Deployment>(r, name).await?
        + delete_all::<ReplicaSet>(r, name).await?
        + delete_all::<ReplicationController>(r, name).await?
        + delete_all::<Pod>(r, name).await?
        + delete_all::<Service>(r, name).await?
        + delete_all::<Endpoints>(r, name).await?
        + delete_all::<Event>(r, name).await?;
    if left > 0 {
        return Ok(Action::Requeue(Duration::from_secs(1)));
    }
    r.remove(&ns).await?;
    tracing::info!(namespace = name, "namespace emptied and removed");
    Ok(Action::AwaitChange)
}
