//! Watches: the changes of one kind from a resourceVersion on, as
//! Kubernetes watch events (ADDED, MODIFIED, DELETED, ERROR). A watch
//! from a revision the store compacted away ends with a 410 `Expired`
//! error; a label or field selector turns an object that stops (starts)
//! matching into a DELETED (ADDED) event, as the API server does.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use herd_client::Client;
use herd_client::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use herd_client::proto::mvccpb::event::EventType;

use super::{Registry, decode};
use crate::api::selector::{FieldQuery, LabelQuery};
use crate::api::{ApiError, ApiObject};

/// One change of an object of `T`, as the store reported it.
#[derive(Debug)]
pub struct Change<T> {
    pub revision: i64,
    /// The object after the change (`None`: deleted).
    pub object: Option<Arc<T>>,
    /// The object before the change (`None`: created).
    pub prev: Option<Arc<T>>,
}

/// Why a stream of store changes stopped.
#[derive(Debug)]
pub enum Stop {
    /// The revision was compacted away (up to this one).
    Compacted(i64),
    /// The store connection failed or ended.
    Failed(String),
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum Watched<T> {
    Event(EventKind, Arc<T>),
    /// The watch ends with this error (410 when it fell behind).
    Error(ApiError),
}

pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Watched<T>> + Send>>;
pub type ChangeStream<T> = Pin<Box<dyn Stream<Item = Result<Change<T>, Stop>> + Send>>;

/// Which objects a watcher wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelQuery,
    pub fields: FieldQuery,
}

impl Filter {
    pub fn matches<T: ApiObject>(&self, object: &T) -> bool {
        let m = object.meta();
        self.namespace.as_deref().is_none_or(|ns| m.namespace == ns)
            && self.labels.matches(&m.labels)
            && (self.fields.is_empty()
                || self
                    .fields
                    .matches(&serde_json::to_value(object).expect("API objects serialize")))
    }
}

/// The changes under `T`'s prefix from revision `from` + 1 on, decoded
/// once. Values that do not decode are skipped with a warning.
pub fn store_changes<T: ApiObject>(client: Client, from: i64) -> ChangeStream<T> {
    let prefix = T::INFO.prefix.as_str().as_bytes().to_vec();
    let stream = async_stream(move |tx| async move {
        let (req_tx, req_rx) = tokio::sync::mpsc::channel(1);
        req_tx
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: prefix.clone(),
                        range_end: herd_client::prefix_end(&prefix),
                        start_revision: from + 1,
                        prev_kv: true,
                        ..Default::default()
                    },
                )),
            })
            .await
            .expect("a fresh channel has room");
        let mut responses = match client
            .watch()
            .watch(tokio_stream::wrappers::ReceiverStream::new(req_rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let _ = tx.send(Err(Stop::Failed(s.to_string()))).await;
                return;
            }
        };
        loop {
            let resp = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    let _ = tx
                        .send(Err(Stop::Failed("the watch stream ended".into())))
                        .await;
                    return;
                }
                Err(s) => {
                    let _ = tx.send(Err(Stop::Failed(s.to_string()))).await;
                    return;
                }
            };
            if resp.canceled {
                let stop = if resp.compact_revision > 0 {
                    Stop::Compacted(resp.compact_revision)
                } else {
                    Stop::Failed(format!(
                        "the store canceled the watch: {}",
                        resp.cancel_reason
                    ))
                };
                let _ = tx.send(Err(stop)).await;
                return;
            }
            for ev in resp.events {
                let Some(kv) = ev.kv else { continue };
                let revision = kv.mod_revision;
                let prev = ev
                    .prev_kv
                    .as_ref()
                    .and_then(|p| decode::<T>(p).ok())
                    .map(Arc::new);
                let change = if ev.r#type == EventType::Delete as i32 {
                    Change {
                        revision,
                        object: None,
                        prev,
                    }
                } else {
                    match decode::<T>(&kv) {
                        Ok(o) => Change {
                            revision,
                            object: Some(Arc::new(o)),
                            prev,
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "skipping a stored object that does not decode");
                            continue;
                        }
                    }
                };
                if tx.send(Ok(change)).await.is_err() {
                    return;
                }
            }
        }
    });
    Box::pin(stream)
}

/// A stream fed by a task that owns it: the task stops when the stream is
/// dropped (its sends fail), so nothing outlives the watcher.
pub fn async_stream<I, F, Fut>(f: F) -> impl Stream<Item = I> + Send
where
    I: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<I>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(f(tx));
    let guard = AbortOnDrop(task);
    tokio_stream::wrappers::ReceiverStream::new(rx).map(move |i| {
        let _ = &guard;
        i
    })
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The watch events `change` means for a watcher with `filter`.
pub fn event_for<T: ApiObject>(change: &Change<T>, filter: &Filter) -> Option<Watched<T>> {
    let was = change.prev.as_ref().filter(|p| filter.matches(p.as_ref()));
    let is = change
        .object
        .as_ref()
        .filter(|o| filter.matches(o.as_ref()));
    match (was, is) {
        (None, Some(o)) => Some(Watched::Event(EventKind::Added, Arc::clone(o))),
        (Some(_), Some(o)) => Some(Watched::Event(EventKind::Modified, Arc::clone(o))),
        (Some(p), None) => {
            // The last state, at the revision it went (or stopped matching).
            let mut gone = match &change.object {
                Some(o) => o.as_ref().clone(),
                None => p.as_ref().clone(),
            };
            gone.meta_mut().resource_version = change.revision.to_string();
            Some(Watched::Event(EventKind::Deleted, Arc::new(gone)))
        }
        (None, None) => None,
    }
}

fn expired(why: &str) -> ApiError {
    ApiError::gone(format!("too old resource version: {why}"))
}

/// Turns changes into a watcher's events, ending with an error event
/// when the changes stop.
pub fn events<T: ApiObject>(changes: ChangeStream<T>, filter: Filter) -> WatchStream<T> {
    Box::pin(async_stream(move |tx| async move {
        let mut changes = changes;
        while let Some(item) = changes.next().await {
            let event = match item {
                Ok(change) => match event_for(&change, &filter) {
                    Some(e) => e,
                    None => continue,
                },
                Err(Stop::Compacted(rev)) => {
                    Watched::Error(expired(&format!("the store compacted history up to {rev}")))
                }
                Err(Stop::Failed(why)) => {
                    tracing::debug!(%why, "a watch ended");
                    return;
                }
            };
            let end = matches!(event, Watched::Error(_));
            if tx.send(event).await.is_err() || end {
                return;
            }
        }
    }))
}

impl Registry {
    /// Watches `T` from resourceVersion `from` (`None` or 0: the objects
    /// that exist now, as ADDED events, then their changes).
    pub async fn watch<T: ApiObject>(
        &self,
        from: Option<i64>,
        filter: Filter,
    ) -> Result<WatchStream<T>, ApiError> {
        let (initial, from) = match from.filter(|r| *r > 0) {
            Some(rev) => (Vec::new(), rev),
            None => {
                let (objects, rev) = self.list::<T>(filter.namespace.as_deref()).await?;
                let initial: Vec<Watched<T>> = objects
                    .into_iter()
                    .filter(|o| filter.matches(o))
                    .map(|o| Watched::Event(EventKind::Added, Arc::new(o)))
                    .collect();
                (initial, rev)
            }
        };
        let changes = match self.hubs.subscribe::<T>(&self.client, from) {
            Some(changes) => changes,
            None => store_changes::<T>(self.client.clone(), from),
        };
        let live = events(changes, filter);
        Ok(Box::pin(futures::stream::iter(initial).chain(live)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Pod;

    fn pod(labels: &[(&str, &str)]) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.metadata.namespace = "default".into();
        p.metadata.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(p)
    }

    fn kind(w: Option<Watched<Pod>>) -> Option<EventKind> {
        match w {
            Some(Watched::Event(k, _)) => Some(k),
            _ => None,
        }
    }

    #[test]
    fn selectors_turn_relabels_into_adds_and_deletes() {
        let filter = Filter {
            labels: LabelQuery::parse("app=web").unwrap(),
            ..Default::default()
        };
        let change = |prev, object| Change {
            revision: 9,
            object,
            prev,
        };
        let web = pod(&[("app", "web")]);
        let other = pod(&[("app", "db")]);
        assert_eq!(
            kind(event_for(&change(None, Some(web.clone())), &filter)),
            Some(EventKind::Added)
        );
        assert_eq!(
            kind(event_for(
                &change(Some(web.clone()), Some(web.clone())),
                &filter
            )),
            Some(EventKind::Modified)
        );
        assert_eq!(
            kind(event_for(
                &change(Some(web.clone()), Some(other.clone())),
                &filter
            )),
            Some(EventKind::Deleted)
        );
        assert_eq!(
            kind(event_for(
                &change(Some(other.clone()), Some(web.clone())),
                &filter
            )),
            Some(EventKind::Added)
        );
        assert_eq!(
            kind(event_for(&change(Some(other.clone()), None), &filter)),
            None
        );
        match event_for(&change(Some(web), None), &filter) {
            Some(Watched::Event(EventKind::Deleted, o)) => {
                assert_eq!(o.metadata.resource_version, "9")
            }
            other => panic!("{other:?}"),
        }
    }
}
