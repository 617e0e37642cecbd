//! Reconcile objects by name, level-triggered, with requeue and backoff
//! (see the kit's module doc for the contracts).

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::cache::Cache;
use super::queue::Queue;
use super::resource::{Object, Resource, Scope};
use super::watcher::{Event, Watcher};
use crate::client::Client;

/// What to do after reconciling one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Done until the object (or something mapped to it) changes.
    AwaitChange,
    /// Reconcile again after this delay even if nothing changes (for state
    /// outside the store: processes, routes, containers).
    Requeue(Duration),
}

/// One call of the reconciler.
#[derive(Debug, Clone)]
pub struct Request<T> {
    pub name: String,
    /// The object as the cache holds it; `None` once deleted.
    pub object: Option<Object<T>>,
}

type Feed = Pin<Box<dyn Future<Output = ()> + Send>>;
type FeedStarter =
    Box<dyn FnOnce(mpsc::UnboundedSender<Vec<String>>, CancellationToken) -> Feed + Send>;

/// A controller of kind `T` (see the kit's module doc).
pub struct Controller<T: Resource> {
    name: &'static str,
    client: Client,
    scope: Scope,
    cache: Cache<T>,
    feeds: Vec<FeedStarter>,
    readiness: Vec<Pin<Box<dyn Future<Output = ()> + Send>>>,
    concurrency: usize,
    grace: Duration,
    seeds: Vec<String>,
}

/// Follows `watcher` into `cache`, sending the changed names (mapped by
/// `map`) until cancelled.
async fn feed<U: Resource>(
    mut watcher: Watcher<U>,
    cache: Cache<U>,
    map: impl Fn(&str, Option<&Object<U>>, Option<&Object<U>>) -> Vec<String> + Send,
    tx: mpsc::UnboundedSender<Vec<String>>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = watcher.next() => e,
        };
        // The objects before the change, for mapping deletions.
        let before: HashMap<String, Object<U>> = match &event {
            Event::Listed { .. } => cache
                .list()
                .into_iter()
                .map(|o| (o.name.clone(), o))
                .collect(),
            Event::Deleted { name, .. } => cache
                .get(name)
                .map(|o| (name.clone(), o))
                .into_iter()
                .collect(),
            _ => HashMap::new(),
        };
        let changed = cache.apply(event);
        let mut names = Vec::new();
        for n in changed {
            names.extend(map(&n, before.get(&n), cache.get(&n).as_ref()));
        }
        if !names.is_empty() && tx.send(names).is_err() {
            return;
        }
    }
}

impl<T: Resource> Controller<T> {
    /// A controller named `name` (for logs) of the objects of `T` in `scope`.
    pub fn new(name: &'static str, client: Client, scope: Scope) -> Controller<T> {
        let cache = Cache::new();
        let primary = {
            let (client, scope, cache) = (client.clone(), scope.clone(), cache.clone());
            Box::new(move |tx, cancel| {
                Box::pin(feed(
                    Watcher::<T>::new(client, scope),
                    cache,
                    |name: &str, _: Option<&Object<T>>, _: Option<&Object<T>>| {
                        vec![name.to_owned()]
                    },
                    tx,
                    cancel,
                )) as Feed
            }) as FeedStarter
        };
        let ready = cache.clone();
        Controller {
            name,
            client,
            scope,
            cache,
            feeds: vec![primary],
            readiness: vec![Box::pin(async move { ready.ready().await })],
            concurrency: 4,
            grace: Duration::from_secs(10),
            seeds: Vec::new(),
        }
    }

    /// Names reconciled once the caches are listed even if no object of
    /// that name exists: for controllers whose job is to create their
    /// object (a machine's own registration, a subnet lease).
    pub fn seed(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.seeds.extend(names);
        self
    }

    /// Also watches objects of `U` in `scope`: each change of one queues the
    /// names `map` returns (given the object before and after the change;
    /// `None` when it did not or no longer exists). Returns `U`'s cache, for
    /// the reconciler to read.
    pub fn watches<U: Resource>(
        &mut self,
        scope: Scope,
        map: impl Fn(Option<&Object<U>>, Option<&Object<U>>) -> Vec<String> + Send + Sync + 'static,
    ) -> Cache<U> {
        let cache = Cache::<U>::new();
        let (client, feed_cache) = (self.client.clone(), cache.clone());
        self.feeds.push(Box::new(move |tx, cancel| {
            Box::pin(feed(
                Watcher::<U>::new(client, scope),
                feed_cache,
                move |_: &str, before: Option<&Object<U>>, after: Option<&Object<U>>| {
                    map(before, after)
                },
                tx,
                cancel,
            ))
        }));
        let ready = cache.clone();
        self.readiness
            .push(Box::pin(async move { ready.ready().await }));
        cache
    }

    /// How many objects are reconciled at once (default 4).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The cache of `T` the reconciler's requests come from.
    pub fn cache(&self) -> Cache<T> {
        self.cache.clone()
    }

    /// Runs until `cancel` fires: watches, queues, reconciles. `reconcile`
    /// gets `ctx` and one [`Request`]; errors are logged and requeued with
    /// backoff per name.
    pub async fn run<C, F, Fut, E>(self, ctx: Arc<C>, reconcile: F, cancel: CancellationToken)
    where
        C: Send + Sync + 'static,
        F: Fn(Arc<C>, Request<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let name = self.name;
        tracing::debug!(controller = name, kind = T::KIND, scope = ?self.scope, "controller starting");
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
        let mut feeds = JoinSet::new();
        for start in self.feeds {
            feeds.spawn(start(tx.clone(), cancel.child_token()));
        }
        drop(tx);
        let mut all_ready = Box::pin(futures::future::join_all(self.readiness));
        let mut ready = false;
        let mut seeds = self.seeds;
        let reconcile = Arc::new(reconcile);
        let mut queue = Queue::default();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut dirty: HashSet<String> = HashSet::new();
        let mut backoffs: HashMap<String, Backoff> = HashMap::new();
        let mut workers: JoinSet<Result<Action, String>> = JoinSet::new();
        let far = || Instant::now() + Duration::from_secs(3600);
        loop {
            // Start what is due, up to the concurrency.
            if ready {
                let now = Instant::now();
                while workers.len() < self.concurrency {
                    let Some(n) = queue.pop_due(now) else { break };
                    let request = Request {
                        object: self.cache.get(&n),
                        name: n.clone(),
                    };
                    let (ctx, reconcile) = (Arc::clone(&ctx), Arc::clone(&reconcile));
                    let handle = workers.spawn(async move {
                        reconcile(ctx, request).await.map_err(|e| e.to_string())
                    });
                    running.insert(handle.id(), n.clone());
                    busy.insert(n);
                }
            }
            let next = if ready && workers.len() < self.concurrency {
                queue.next_due().unwrap_or_else(far)
            } else {
                far()
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = &mut all_ready, if !ready => {
                    ready = true;
                    let now = Instant::now();
                    for n in std::mem::take(&mut seeds) {
                        queue.push(n, now);
                    }
                    tracing::debug!(controller = name, objects = self.cache.len(), "caches listed; reconciling");
                }
                names = rx.recv() => {
                    let Some(names) = names else { break };
                    let now = Instant::now();
                    for n in names {
                        if busy.contains(&n) {
                            dirty.insert(n);
                        } else {
                            queue.push(n, now);
                        }
                    }
                }
                Some(done) = workers.join_next_with_id() => {
                    let (id, result) = match done {
                        Ok((id, r)) => (id, r),
                        Err(e) => (e.id(), Err(format!("the reconciler panicked: {e}"))),
                    };
                    let n = running.remove(&id).expect("every worker is recorded");
                    busy.remove(&n);
                    let now = Instant::now();
                    let at = match result {
                        Ok(Action::AwaitChange) => {
                            backoffs.remove(&n);
                            None
                        }
                        Ok(Action::Requeue(after)) => {
                            backoffs.remove(&n);
                            Some(now + after)
                        }
                        Err(e) => {
                            let delay = backoffs.entry(n.clone()).or_default().next_delay();
                            tracing::warn!(controller = name, object = %n, error = %e, ?delay, "reconcile failed; retrying");
                            Some(now + delay)
                        }
                    };
                    if dirty.remove(&n) {
                        queue.push(n, now);
                    } else if let Some(at) = at {
                        queue.push(n, at);
                    }
                }
                () = tokio::time::sleep_until(next) => {}
            }
        }
        // Stop: no new work; running reconciles get a grace period.
        feeds.abort_all();
        let drain = async { while workers.join_next().await.is_some() {} };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            tracing::warn!(
                controller = name,
                "reconciles still running after the grace period; dropping them"
            );
            workers.abort_all();
        }
        tracing::debug!(controller = name, "controller stopped");
    }
}
