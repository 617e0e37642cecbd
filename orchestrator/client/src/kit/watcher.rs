//! List a scope at a revision, watch from the next one, re-list when the
//! store compacted the revision away; resume after any failure.
//!
//! A [`Watcher`] never gives up: a store that is unreachable, electing a
//! leader or restarting only delays events (retried with backoff, logged).
//! Values that do not decode as the kind are left out with a warning naming
//! the key, so one bad write cannot stop a controller.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Streaming;

use super::backoff::Backoff;
use super::resource::{Object, Resource, Scope};
use crate::client::{Client, ClientError};
use crate::proto::etcdserverpb::{
    RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse, watch_request,
};
use crate::proto::mvccpb::event::EventType;

/// What changed in the watched scope.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<T> {
    /// Everything in the scope as of `revision`: the first listing, or a
    /// re-listing after the watch fell behind compaction. It replaces what
    /// was known before.
    Listed {
        objects: Vec<Object<T>>,
        revision: i64,
    },
    /// An object was created or changed.
    Applied(Object<T>),
    /// An object was deleted (or its lease expired) at `revision`.
    Deleted { name: String, revision: i64 },
    /// Nothing changed up to `revision` (a progress notice).
    Progress(i64),
}

/// Follows one scope of one kind; see the module doc.
pub struct Watcher<T> {
    client: Client,
    scope: Scope,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// Every event up to this revision was delivered.
    revision: i64,
    listed: bool,
    stream: Option<(mpsc::Sender<WatchRequest>, Streaming<WatchResponse>)>,
    pending: VecDeque<Event<T>>,
    backoff: Backoff,
    _kind: PhantomData<fn() -> T>,
}

/// Why one step of the watcher failed (retried; for logs).
#[derive(Debug, thiserror::Error)]
enum Step {
    #[error("listing: {0}")]
    List(ClientError),
    #[error("opening the watch: {0}")]
    Open(ClientError),
    #[error("the watch stream broke: {0}")]
    Stream(tonic::Status),
    #[error("the watch stream ended")]
    Ended,
    #[error("the store canceled the watch: {0}")]
    Canceled(String),
}

impl<T: Resource> Watcher<T> {
    pub fn new(client: Client, scope: Scope) -> Watcher<T> {
        let (key, range_end) = scope.range(T::PREFIX);
        Watcher {
            client,
            scope,
            key,
            range_end,
            revision: 0,
            listed: false,
            stream: None,
            pending: VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            _kind: PhantomData,
        }
    }

    /// The revision every delivered event is at or below.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next event (see the module doc: it waits through failures).
    pub async fn next(&mut self) -> Event<T> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            if let Err(e) = self.step().await {
                let delay = self.backoff.next_delay();
                tracing::warn!(kind = T::KIND, scope = ?self.scope, error = %e, ?delay, "watching the store; retrying");
                self.stream = None;
                tokio::time::sleep(delay).await;
            }
        }
    }

    fn decode(&self, kv: &crate::proto::mvccpb::KeyValue) -> Option<Object<T>> {
        match Object::<T>::decode(kv)? {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a value that is not a {}", T::KIND);
                None
            }
        }
    }

    async fn step(&mut self) -> Result<(), Step> {
        if !self.listed {
            return self.list().await;
        }
        if self.stream.is_none() {
            self.open().await?;
        }
        let (_, stream) = self.stream.as_mut().expect("opened above");
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Err(Step::Ended),
            Err(status) => return Err(Step::Stream(status)),
        };
        if resp.canceled {
            self.stream = None;
            if resp.compact_revision > 0 {
                tracing::info!(
                    kind = T::KIND,
                    from = self.revision + 1,
                    compacted = resp.compact_revision,
                    "watch fell behind compaction; listing again"
                );
                self.listed = false;
                return Ok(());
            }
            return Err(Step::Canceled(resp.cancel_reason));
        }
        self.backoff.reset();
        if resp.events.is_empty() {
            let at = resp.header.map_or(0, |h| h.revision);
            if !resp.created && at > self.revision {
                self.revision = at;
                self.pending.push_back(Event::Progress(at));
            }
            return Ok(());
        }
        for ev in &resp.events {
            let Some(kv) = &ev.kv else { continue };
            self.revision = self.revision.max(kv.mod_revision);
            if ev.r#type == EventType::Delete as i32 {
                if let Some(name) = T::PREFIX.name_of(&kv.key) {
                    self.pending.push_back(Event::Deleted {
                        name: name.to_owned(),
                        revision: kv.mod_revision,
                    });
                }
            } else if let Some(object) = self.decode(kv) {
                self.pending.push_back(Event::Applied(object));
            }
        }
        Ok(())
    }

    async fn list(&mut self) -> Result<(), Step> {
        let resp = self
            .client
            .kv()
            .range(RangeRequest {
                key: self.key.clone(),
                range_end: self.range_end.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| Step::List(s.into()))?
            .into_inner();
        let revision = resp.header.map_or(0, |h| h.revision);
        let objects = resp.kvs.iter().filter_map(|kv| self.decode(kv)).collect();
        self.revision = revision;
        self.listed = true;
        self.stream = None;
        self.backoff.reset();
        self.pending.push_back(Event::Listed { objects, revision });
        Ok(())
    }

    async fn open(&mut self) -> Result<(), Step> {
        let (tx, rx) = mpsc::channel(1);
        tx.send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: self.key.clone(),
                    range_end: self.range_end.clone(),
                    start_revision: self.revision + 1,
                    // Idle scopes still learn the revision, so their resume
                    // point does not fall behind compaction.
                    progress_notify: true,
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("fresh channel has room");
        let stream = self
            .client
            .watch()
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| Step::Open(s.into()))?
            .into_inner();
        self.stream = Some((tx, stream));
        Ok(())
    }
}
