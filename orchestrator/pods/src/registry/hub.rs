//! One store watch per kind per API server, fanned out to every API
//! watcher of that kind (kube-apiserver's watch cache, in small): a
//! thousand `kubectl get -w` cost one store watch, each change is
//! decoded once, and a watcher that starts from a recent
//! resourceVersion replays it from memory. A watcher from a revision
//! older than the hub remembers gets its own store watch instead; one that
//! falls too far behind is ended with 410, as Kubernetes does.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use herd_client::Client;
use tokio::sync::broadcast;

use super::watch::{AbortOnDrop, Change, ChangeStream, Stop, async_stream, store_changes};
use crate::api::ApiObject;

/// Changes a hub keeps for late subscribers.
const REMEMBERED: usize = 8192;
/// Changes queued per subscriber before it counts as fallen behind.
const QUEUE: usize = 4096;

struct State<T> {
    buffer: VecDeque<Arc<Change<T>>>,
    /// Every change after this revision is in `buffer` (or still to come).
    from: i64,
    tx: broadcast::Sender<Arc<Change<T>>>,
    alive: bool,
}

struct Hub<T> {
    state: Mutex<State<T>>,
    task: Mutex<Option<AbortOnDrop>>,
}

impl<T> Hub<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The hubs of one registry, by kind.
#[derive(Default)]
pub struct Hubs {
    hubs: Mutex<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>,
}

impl Hubs {
    /// The changes of `T` after `from`, from this registry's hub for `T`
    /// (started here if needed); `None` when `from` is older than the hub
    /// remembers.
    pub fn subscribe<T: ApiObject>(&self, client: &Client, from: i64) -> Option<ChangeStream<T>> {
        let hub = {
            let mut hubs = self.hubs.lock().unwrap_or_else(|p| p.into_inner());
            let existing = hubs
                .get(T::INFO.plural)
                .cloned()
                .and_then(|h| h.downcast::<Hub<T>>().ok())
                .filter(|h| h.lock().alive);
            match existing {
                Some(h) => h,
                None => {
                    let h = start::<T>(client.clone(), from);
                    hubs.insert(T::INFO.plural, h.clone());
                    h
                }
            }
        };
        let (replay, mut rx) = {
            let state = hub.lock();
            if from < state.from {
                return None;
            }
            let replay: Vec<Arc<Change<T>>> = state
                .buffer
                .iter()
                .filter(|c| c.revision > from)
                .cloned()
                .collect();
            (replay, state.tx.subscribe())
        };
        Some(Box::pin(async_stream(move |tx| async move {
            let mut last = from;
            for c in replay {
                last = last.max(c.revision);
                if tx.send(Ok(Change::shared(&c))).await.is_err() {
                    return;
                }
            }
            loop {
                let item = match rx.recv().await {
                    Ok(c) if c.revision <= last => continue,
                    Ok(c) => Ok(Change::shared(&c)),
                    Err(broadcast::error::RecvError::Lagged(_)) => Err(Stop::Compacted(last)),
                    Err(broadcast::error::RecvError::Closed) => Err(Stop::Compacted(last)),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        })))
    }
}

impl<T> Change<T> {
    /// Another handle on the same change.
    fn shared(c: &Arc<Change<T>>) -> Change<T> {
        Change {
            revision: c.revision,
            object: c.object.clone(),
            prev: c.prev.clone(),
        }
    }
}

/// A hub following `T` from `from`.
fn start<T: ApiObject>(client: Client, from: i64) -> Arc<Hub<T>> {
    let hub = Arc::new(Hub {
        state: Mutex::new(State {
            buffer: VecDeque::new(),
            from,
            tx: broadcast::channel(QUEUE).0,
            alive: true,
        }),
        task: Mutex::new(None),
    });
    let task = tokio::spawn(follow(client, Arc::downgrade(&hub), from));
    *hub.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(AbortOnDrop(task));
    hub
}

/// The hub's store watch: resumes after failures from the last change it
/// saw; a compaction it missed ends the hub (its subscribers get 410 and
/// the next subscriber starts a new one).
async fn follow<T: ApiObject>(client: Client, hub: Weak<Hub<T>>, mut last: i64) {
    let mut backoff =
        herd_client::kit::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut changes = store_changes::<T>(client.clone(), last);
        while let Some(item) = changes.next().await {
            let Some(hub) = hub.upgrade() else { return };
            match item {
                Ok(change) => {
                    backoff.reset();
                    last = change.revision;
                    let change = Arc::new(change);
                    let mut state = hub.lock();
                    state.buffer.push_back(Arc::clone(&change));
                    while state.buffer.len() > REMEMBERED {
                        if let Some(old) = state.buffer.pop_front() {
                            state.from = old.revision;
                        }
                    }
                    let _ = state.tx.send(change);
                }
                Err(Stop::Compacted(rev)) => {
                    tracing::warn!(
                        kind = T::INFO.plural,
                        compacted = rev,
                        "watch hub fell behind compaction; closing it"
                    );
                    let mut state = hub.lock();
                    state.alive = false;
                    state.buffer.clear();
                    // Dropping the sender ends every subscriber (with 410).
                    state.tx = broadcast::channel(1).0;
                    return;
                }
                Err(Stop::Failed(why)) => {
                    tracing::debug!(kind = T::INFO.plural, %why, "watch hub lost the store; resuming");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
